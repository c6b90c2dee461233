"""render(world, pod, namespace) -> an Envoy /config_dump of what istiod sends that sidecar."""
from . import clusters as C
from . import envoyfilter, listeners as L, xds

VERSION = "istiogen"


class Proxy:
    """The sidecar being configured (istiod's model.Proxy, for what the output depends on)."""

    def __init__(self, world, pod):
        self.world = world
        self.pod = pod
        self.namespace = pod.namespace
        self.canonical_name = pod.canonical_name
        self.canonical_revision = pod.canonical_revision
        self.mesh_id = world.mesh["meshId"]
        self.sampling = world.mesh["tracingSampling"]


def resources(world, pod, namespace):
    """{"clusters": [...], "endpoints": [...], "listeners": [...], "routes": [...]}: the
    resources (dicts with @type) sorted by name."""
    proxy = Proxy(world, world.pod(pod, namespace))
    out_pairs = C.outbound(world, proxy)
    clusters = (
        [c for c, _ in out_pairs] + [c for _, _, c in C.inbound(world, proxy)] + C.fixed(world)
    )
    endpoints = {cla["cluster_name"]: cla for _, cla in out_pairs}
    clusters = envoyfilter.apply_clusters(world, proxy, clusters)
    # EDS only for the EDS clusters that remain (an EnvoyFilter may remove or add clusters).
    eds = []
    for c in clusters:
        if c.get("type") == "EDS":
            svc = (c.get("eds_cluster_config") or {}).get("service_name") or c["name"]
            eds.append(
                endpoints.get(svc)
                or {
                    "@type": xds.T + "envoy.config.endpoint.v3.ClusterLoadAssignment",
                    "cluster_name": svc,
                }
            )
    lsts, rcs = L.all_listeners(world, proxy)
    lsts = envoyfilter.apply_listeners(world, proxy, lsts)
    return {
        "clusters": sorted(clusters, key=lambda c: c["name"]),
        "endpoints": sorted(eds, key=lambda e: e["cluster_name"]),
        "listeners": lsts,
        "routes": sorted(rcs, key=lambda r: r["name"]),
    }


def render(world, pod, namespace):
    """The config dump (envoy.admin.v3.ConfigDump JSON as a dict) for sidecar <namespace>/<pod>."""
    r = resources(world, pod, namespace)
    a = "type.googleapis.com/envoy.admin.v3."
    return {
        "configs": [
            {
                "@type": a + "ClustersConfigDump",
                "version_info": VERSION,
                "dynamic_active_clusters": [
                    {"version_info": VERSION, "cluster": c} for c in r["clusters"]
                ],
            },
            {
                "@type": a + "EndpointsConfigDump",
                "dynamic_endpoint_configs": [
                    {"version_info": VERSION, "endpoint_config": e} for e in r["endpoints"]
                ],
            },
            {
                "@type": a + "ListenersConfigDump",
                "version_info": VERSION,
                "dynamic_listeners": [
                    {"name": l["name"], "active_state": {"version_info": VERSION, "listener": l}}
                    for l in r["listeners"]
                ],
            },
            {
                "@type": a + "RoutesConfigDump",
                "dynamic_route_configs": [
                    {"version_info": VERSION, "route_config": rc} for rc in r["routes"]
                ],
            },
        ]
    }


def node(world, pod, namespace):
    """The xDS node pilot-agent would announce for that pod (id, cluster, metadata subset)."""
    p = world.pod(pod, namespace)
    dom = "%s.svc.%s" % (p.namespace, world.mesh["domainSuffix"])
    labels = dict(p.labels)
    labels.setdefault("service.istio.io/canonical-name", p.canonical_name)
    labels.setdefault("service.istio.io/canonical-revision", p.canonical_revision)
    return {
        "id": "sidecar~%s~%s.%s~%s" % (p.ip, p.name, p.namespace, dom),
        "cluster": "%s.%s" % (p.canonical_name, p.namespace),
        "metadata": {
            "NAMESPACE": p.namespace,
            "NAME": p.name,
            "INSTANCE_IPS": p.ip,
            "SERVICE_ACCOUNT": p.service_account,
            "LABELS": labels,
            "WORKLOAD_NAME": p.workload_name,
            "CLUSTER_ID": world.mesh["clusterId"],
            "MESH_ID": world.mesh["meshId"],
            "ISTIO_VERSION": "1.20.8",
            "INTERCEPTION_MODE": "REDIRECT",
        },
    }

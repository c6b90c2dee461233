"""The input: Kubernetes/Istio objects (a "world") and the mesh config, and the questions istiod
asks about them (which services, which pods behind a port, which policies select a workload)."""
import copy
import os

import yaml


class IstiogenError(Exception):
    """An input the generator cannot render faithfully (unsupported or invalid): never dropped."""


SUPPORTED_KINDS = (
    "Namespace",
    "Service",
    "Pod",
    "VirtualService",
    "DestinationRule",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "EnvoyFilter",
    "MeshConfig",
)
# Workload controllers: istiod builds xDS from the pods they own, not from them. Pods stand for
# them here, so these are accepted and not used (listed so that nothing else is skipped).
IGNORED_KINDS = (
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
)

MESH_DEFAULTS = {
    "trustDomain": "cluster.local",
    "rootNamespace": "istio-system",
    "enableAutoMtls": True,
    "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
    "connectTimeout": "10s",
    "clusterId": "Kubernetes",
    "meshId": None,  # defaults to trustDomain
    "domainSuffix": "cluster.local",
    "inboundPassthroughBindAddress": "127.0.0.6",
    "tracingSampling": 100,  # percent (meshConfig.defaultConfig.tracing.sampling)
}

# Istio protocol names (port name prefix before "-", or appProtocol) -> how istiod treats them.
HTTP_PROTOCOLS = {
    "http": "http1",
    "http2": "http2",
    "grpc": "http2",
    "grpc-web": "http1",
    "http_proxy": "http1",
}
TCP_PROTOCOLS = ("tcp", "tls", "https", "mongo", "redis", "mysql")


def port_protocol(port):
    """'http1', 'http2', 'tcp', 'auto' (protocol sniffing) or 'udp' for a Service port."""
    if str(port.get("protocol", "TCP")).upper() == "UDP":
        return "udp"
    if str(port.get("protocol", "TCP")).upper() == "SCTP":
        return "udp"
    name = (port.get("appProtocol") or port.get("name") or "").lower()
    if not port.get("appProtocol"):
        name = name.split("-", 1)[0] if name not in HTTP_PROTOCOLS else name
    if name in HTTP_PROTOCOLS:
        return HTTP_PROTOCOLS[name]
    if name in TCP_PROTOCOLS:
        return "tcp"
    return "auto"


def _meta(o):
    return o.setdefault("metadata", {})


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


class Pod:
    def __init__(self, obj, world):
        self.obj = obj
        m = obj.get("metadata", {})
        self.name = m.get("name")
        self.namespace = m.get("namespace") or "default"
        self.labels = dict(m.get("labels") or {})
        self.annotations = dict(m.get("annotations") or {})
        spec = obj.get("spec") or {}
        self.service_account = (
            spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        )
        self.ip = (obj.get("status") or {}).get("podIP")
        if not self.name or not self.ip:
            raise IstiogenError(
                "Pod %s/%s: metadata.name and status.podIP are required"
                % (self.namespace, self.name)
            )
        self.containers = spec.get("containers") or []
        inject = self.annotations.get(
            "sidecar.istio.io/inject", self.labels.get("sidecar.istio.io/inject", "true")
        )
        self.has_sidecar = str(inject).lower() != "false"
        self.tls_mode = self.labels.get(
            "security.istio.io/tlsMode", "istio" if self.has_sidecar else "disabled"
        )
        if self.has_sidecar:
            self.labels.setdefault("security.istio.io/tlsMode", self.tls_mode)
        self.workload_name = self._workload_name(m)
        # The injector labels injected pods with their canonical service/revision (from these
        # fallbacks); istiod reads only the labels, so a pod without a sidecar has empty ones.
        cn = self.labels.get("service.istio.io/canonical-name")
        cr = self.labels.get("service.istio.io/canonical-revision")
        if self.has_sidecar:
            cn = (
                cn
                or self.labels.get("app.kubernetes.io/name")
                or self.labels.get("app")
                or self.workload_name
            )
            cr = (
                cr
                or self.labels.get("app.kubernetes.io/version")
                or self.labels.get("version")
                or "latest"
            )
        self.canonical_name = cn or ""
        self.canonical_revision = cr or ""
        self.trust_domain = world.mesh["trustDomain"]

    def _workload_name(self, m):
        """Istio's workload name: the Deployment of a ReplicaSet-owned pod, the owner otherwise,
        else the pod itself (annotation istiogen.msm/workload-name overrides)."""
        if self.annotations.get("istiogen.msm/workload-name"):
            return self.annotations["istiogen.msm/workload-name"]
        owners = m.get("ownerReferences") or []
        if owners:
            o = owners[0]
            if o.get("kind") == "ReplicaSet" and "-" in o.get("name", ""):
                return o["name"].rsplit("-", 1)[0]
            return o.get("name") or self.name
        return self.name

    @property
    def spiffe(self):
        return "spiffe://%s/ns/%s/sa/%s" % (self.trust_domain, self.namespace, self.service_account)

    def locality(self):
        region = self.labels.get("topology.kubernetes.io/region", "")
        zone = self.labels.get("topology.kubernetes.io/zone", "")
        subzone = self.labels.get("topology.istio.io/subzone", "")
        loc = {}
        if region:
            loc["region"] = region
        if zone:
            loc["zone"] = zone
        if subzone:
            loc["sub_zone"] = subzone
        return loc

    def container_port(self, name):
        for c in self.containers:
            for p in c.get("ports") or []:
                if p.get("name") == name:
                    return p["containerPort"]
        return None


class Service:
    def __init__(self, obj, world):
        self.obj = obj
        m = obj.get("metadata", {})
        self.name = m.get("name")
        self.namespace = m.get("namespace") or "default"
        spec = obj.get("spec") or {}
        self.selector = spec.get("selector")
        self.vip = spec.get("clusterIP")
        if not self.name:
            raise IstiogenError("Service without metadata.name")
        if not self.vip:
            raise IstiogenError(
                "Service %s/%s: spec.clusterIP is required (the listener address)"
                % (self.namespace, self.name)
            )
        if self.vip == "None":
            raise IstiogenError(
                "Service %s/%s: headless services are not supported" % (self.namespace, self.name)
            )
        if spec.get("type") == "ExternalName":
            raise IstiogenError(
                "Service %s/%s: ExternalName services are not supported"
                % (self.namespace, self.name)
            )
        self.hostname = "%s.%s.svc.%s" % (self.name, self.namespace, world.mesh["domainSuffix"])
        self.ports = []
        for p in spec.get("ports") or []:
            p = dict(p)
            p.setdefault("targetPort", p["port"])
            p["_protocol"] = port_protocol(p)
            self.ports.append(p)
        self.export_to = (_meta(obj).get("annotations") or {}).get("networking.istio.io/exportTo")

    def port(self, number):
        for p in self.ports:
            if p["port"] == number:
                return p
        return None

    def meta(self):
        return {"host": self.hostname, "name": self.name, "namespace": self.namespace}


class World:
    """Objects by kind, plus the mesh config. Load with World.load(paths_or_dicts, mesh=None)."""

    def __init__(self, objects, mesh=None):
        self.mesh = dict(MESH_DEFAULTS)
        self.objects = {}
        for o in objects:
            if o.get("kind") == "MeshConfig":
                self.mesh.update(o.get("spec") or {})
        self.mesh.update(mesh or {})
        if not self.mesh.get("meshId"):
            self.mesh["meshId"] = self.mesh["trustDomain"]
        for o in objects:
            kind = o.get("kind")
            if kind in IGNORED_KINDS or kind == "MeshConfig":
                continue
            if kind not in SUPPORTED_KINDS:
                raise IstiogenError(
                    "kind %r (%s) is not supported by istiogen; supported: %s"
                    % (kind, _meta(o).get("name"), ", ".join(SUPPORTED_KINDS))
                )
            o = copy.deepcopy(o)
            _meta(o).setdefault("namespace", "default")
            self.objects.setdefault(kind, []).append(o)
        self.services = [Service(o, self) for o in self.objects.get("Service", [])]
        self.pods = [Pod(o, self) for o in self.objects.get("Pod", [])]

    @classmethod
    def load(cls, sources, mesh=None):
        """<sources>: a path, a dict (one object), a list of dicts, or a list mixing paths and
        dicts. YAML files may hold several documents; a `kind: List` is flattened."""
        if isinstance(sources, (str, os.PathLike, dict)):
            sources = [sources]
        objects = []

        def add(o):
            if not o:
                return
            if o.get("kind") == "List" or (o.get("kind", "").endswith("List") and "items" in o):
                for i in o.get("items") or []:
                    add(i)
                return
            objects.append(o)

        for s in sources:
            if isinstance(s, dict):
                add(s)
            elif isinstance(s, (list, tuple)):
                for o in s:
                    add(o)
            else:
                with open(s) as f:
                    for o in yaml.safe_load_all(f):
                        add(o)
        return cls(objects, mesh)

    # ---- queries ---------------------------------------------------------------------------

    def kind(self, kind):
        return self.objects.get(kind, [])

    def pod(self, name, namespace):
        for p in self.pods:
            if p.name == name and p.namespace == namespace:
                return p
        raise IstiogenError("no Pod %s/%s in the world" % (namespace, name))

    def visible_services(self, proxy):
        """Services a sidecar sees (exportTo annotation honoured for '.' and '*')."""
        out = []
        for s in self.services:
            exp = s.export_to
            if exp:
                vals = [v.strip() for v in exp.split(",")]
                if (
                    "*" not in vals
                    and not ("." in vals and s.namespace == proxy.namespace)
                    and proxy.namespace not in vals
                ):
                    continue
            out.append(s)
        return sorted(out, key=lambda s: s.hostname)

    def endpoints(self, svc, port):
        """Pods behind <svc> port <port dict>: [(pod, target port number)]."""
        if not svc.selector:
            return []
        out = []
        for p in self.pods:
            if p.namespace != svc.namespace or not labels_match(svc.selector, p.labels):
                continue
            tp = port["targetPort"]
            if isinstance(tp, str):
                tp = p.container_port(tp)
                if tp is None:
                    continue
            out.append((p, tp))
        return sorted(out, key=lambda e: (e[0].ip, e[1]))

    def services_of(self, pod):
        return [
            s
            for s in self.services
            if s.namespace == pod.namespace and s.selector and labels_match(s.selector, pod.labels)
        ]

    def resolve_host(self, host, namespace):
        """A VirtualService/DestinationRule host (short or FQDN) -> FQDN."""
        if "." not in host and host != "*":
            return "%s.%s.svc.%s" % (host, namespace, self.mesh["domainSuffix"])
        return host

    def service_by_host(self, host):
        for s in self.services:
            if s.hostname == host:
                return s
        return None

    def selects(self, obj, pod, selector_key="selector"):
        """Whether a namespaced policy applies to <pod>: same namespace (or the root namespace,
        mesh-wide) and its workload selector matches."""
        m = obj["metadata"]
        spec = obj.get("spec") or {}
        if "targetRef" in spec or "targetRefs" in spec:
            raise IstiogenError(
                "%s %s/%s: targetRef(s) are not supported (sidecars use selectors)"
                % (obj["kind"], m["namespace"], m.get("name"))
            )
        sel = spec.get(selector_key)
        labels = (
            (sel or {}).get("matchLabels")
            if selector_key == "selector"
            else (sel or {}).get("labels")
        )
        if sel and set(sel) - {"matchLabels", "labels"}:
            raise IstiogenError(
                "%s %s/%s: selector %s not supported (matchLabels only)"
                % (obj["kind"], m["namespace"], m.get("name"), sorted(sel))
            )
        if m["namespace"] == self.mesh["rootNamespace"] and not labels:
            return True
        if m["namespace"] != pod.namespace:
            return m["namespace"] == self.mesh["rootNamespace"] and labels_match(labels, pod.labels)
        return labels_match(labels, pod.labels)

"""CDS and EDS: outbound|PORT|SUBSET|HOST clusters with their ClusterLoadAssignments, inbound|PORT||
clusters, and the fixed BlackHole/Passthrough/InboundPassthrough clusters."""
from . import xds
from .world import IstiogenError, labels_match

DR_POLICY_KEYS = {"loadBalancer", "connectionPool", "outlierDetection", "tls", "portLevelSettings"}
LB_SIMPLE = {
    "ROUND_ROBIN": None,
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
    "UNSPECIFIED": "LEAST_REQUEST",
}
OUTLIER_KEYS = {
    "consecutive5xxErrors",
    "consecutiveGatewayErrors",
    "interval",
    "baseEjectionTime",
    "maxEjectionPercent",
    "minHealthPercent",
}
POOL_KEYS = {
    "tcp": {"maxConnections", "connectTimeout"},
    "http": {"http1MaxPendingRequests", "http2MaxRequests", "maxRetries"},
}


def dr_path(dr):
    m = dr["metadata"]
    return "/apis/networking.istio.io/v1alpha3/namespaces/%s/destination-rule/%s" % (
        m["namespace"],
        m["name"],
    )


def destination_rule(world, proxy, svc):
    """The DestinationRule for <svc> as seen by <proxy>: the proxy's namespace first, then the
    service's, then the root namespace (istiod's lookup order)."""
    found = {}
    for dr in world.kind("DestinationRule"):
        spec = dr.get("spec") or {}
        ns = dr["metadata"]["namespace"]
        if world.resolve_host(spec.get("host", ""), ns) != svc.hostname:
            continue
        sel = spec.get("workloadSelector")
        if sel and (
            ns != proxy.namespace or not labels_match(sel.get("matchLabels"), proxy.pod.labels)
        ):
            continue
        found.setdefault(ns, dr)
    for ns in (proxy.namespace, svc.namespace, world.mesh["rootNamespace"]):
        if ns in found:
            return found[ns]
    return None


def _check_policy(dr, tp, where):
    name = "DestinationRule %s/%s %s" % (dr["metadata"]["namespace"], dr["metadata"]["name"], where)
    bad = set(tp) - DR_POLICY_KEYS
    if bad:
        raise IstiogenError("%s: trafficPolicy fields %s are not supported" % (name, sorted(bad)))
    lb = tp.get("loadBalancer")
    if lb and (set(lb) - {"simple"} or lb.get("simple") not in LB_SIMPLE):
        raise IstiogenError(
            "%s: loadBalancer %s is not supported (simple ROUND_ROBIN, "
            "LEAST_REQUEST, RANDOM only)" % (name, lb)
        )
    od = tp.get("outlierDetection")
    if od and set(od) - OUTLIER_KEYS:
        raise IstiogenError(
            "%s: outlierDetection fields %s are not supported"
            % (name, sorted(set(od) - OUTLIER_KEYS))
        )
    cp = tp.get("connectionPool") or {}
    for k, v in cp.items():
        if k not in POOL_KEYS or set(v or {}) - POOL_KEYS[k]:
            raise IstiogenError("%s: connectionPool.%s %s is not supported" % (name, k, v))
    tls = tp.get("tls")
    if tls and (
        tls.get("mode") not in ("ISTIO_MUTUAL", "DISABLE")
        or set(tls) - {"mode", "sni", "subjectAltNames"}
    ):
        raise IstiogenError(
            "%s: tls %s is not supported (ISTIO_MUTUAL or DISABLE only)" % (name, tls)
        )
    for pls in tp.get("portLevelSettings") or []:
        if "port" not in pls or set(pls["port"]) != {"number"}:
            raise IstiogenError("%s: portLevelSettings need port.number" % name)
        _check_policy(
            dr, {k: v for k, v in pls.items() if k != "port"}, where + " portLevelSettings"
        )


def traffic_policy(dr, port, subset=None):
    """Effective traffic policy for (port, subset): top level, its port-level settings, then the
    subset's policy and its port-level settings, each overriding whole fields (istiod's merge)."""
    if not dr:
        return {}
    spec = dr.get("spec") or {}
    eff = {}

    def apply(tp, where):
        if not tp:
            return
        _check_policy(dr, tp, where)
        for k, v in tp.items():
            if k != "portLevelSettings":
                eff[k] = v
        for pls in tp.get("portLevelSettings") or []:
            if pls["port"]["number"] == port:
                for k, v in pls.items():
                    if k != "port":
                        eff[k] = v

    apply(spec.get("trafficPolicy"), "trafficPolicy")
    if subset is not None:
        apply(subset.get("trafficPolicy"), "subset %s" % subset.get("name"))
    return eff


def peer_mtls_disabled(world, svc):
    """Auto mTLS sends plaintext to a destination whose PeerAuthentication says DISABLE (for
    every endpoint)."""
    from .listeners import mtls_mode  # noqa: circular at import time only

    eps = world.endpoints(svc, svc.ports[0]) if svc.ports else []
    return bool(eps) and all(mtls_mode(world, p, tp) == "DISABLE" for p, tp in eps)


def outbound_cluster(world, proxy, svc, port, dr, subset=None):
    host = svc.hostname
    sname = subset["name"] if subset else ""
    name = "outbound|%d|%s|%s" % (port["port"], sname, host)
    tp = traffic_policy(dr, port["port"], subset)
    c = {
        "@type": xds.T + "envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": dict(xds.ADS), "service_name": name},
        "connect_timeout": ((tp.get("connectionPool") or {}).get("tcp") or {}).get(
            "connectTimeout", world.mesh["connectTimeout"]
        ),
    }
    lb = LB_SIMPLE[(tp.get("loadBalancer") or {}).get("simple", "UNSPECIFIED")]
    if lb:
        c["lb_policy"] = lb
    c["circuit_breakers"] = xds.circuit_breakers(tp.get("connectionPool"))
    istio_md = {"services": [svc.meta()]}
    if dr:
        istio_md["config"] = dr_path(dr)
    if subset:
        istio_md["subset"] = sname
    c["metadata"] = {"filter_metadata": {"istio": istio_md}}
    c["common_lb_config"] = {"locality_weighted_lb_config": {}}
    od = tp.get("outlierDetection")
    if od:
        out = {"enforcing_success_rate": 0}
        if "consecutive5xxErrors" in od:
            v = int(od["consecutive5xxErrors"])
            out["consecutive_5xx"] = v
            out["enforcing_consecutive_5xx"] = 100 if v > 0 else 0
        if "consecutiveGatewayErrors" in od:
            v = int(od["consecutiveGatewayErrors"])
            out["consecutive_gateway_failure"] = v
            out["enforcing_consecutive_gateway_failure"] = 100 if v > 0 else 0
        if "interval" in od:
            out["interval"] = od["interval"]
        if "baseEjectionTime" in od:
            out["base_ejection_time"] = od["baseEjectionTime"]
        if int(od.get("maxEjectionPercent", 0)) > 0:
            out["max_ejection_percent"] = int(od["maxEjectionPercent"])
        c["outlier_detection"] = out
        mhp = int(od.get("minHealthPercent", 0))
        c["common_lb_config"]["healthy_panic_threshold"] = {"value": mhp} if mhp else {}
    opts = xds.http_protocol_options(port["_protocol"])
    if opts:
        c["typed_extension_protocol_options"] = opts
    c["filters"] = [xds.mx_network()]
    # TLS: explicit ISTIO_MUTUAL -> transport_socket; none -> auto mTLS (socket matches);
    # DISABLE -> plaintext.
    tls = tp.get("tls")
    # istiod's service accounts of a service: those of all its endpoints (sidecar or not).
    sans = sorted({p.spiffe for p, _ in world.endpoints(svc, port)})
    sni = "outbound_.%d_.%s_.%s" % (port["port"], sname, host)
    if tls and tls.get("mode") == "ISTIO_MUTUAL":
        c["transport_socket"] = xds.upstream_tls(
            tls.get("subjectAltNames") or sans, tls.get("sni") or sni
        )
    elif not tls and world.mesh["enableAutoMtls"] and not peer_mtls_disabled(world, svc):
        c["transport_socket_matches"] = [
            {
                "name": "tlsMode-istio",
                "match": {"tlsMode": "istio"},
                "transport_socket": xds.upstream_tls(sans, sni),
            },
            xds.RAW_BUFFER_MATCH,
        ]
    return c


def load_assignment(world, svc, port, cluster_name, subset=None):
    sel = (subset or {}).get("labels") or {}
    by_loc = {}
    for pod, tport in world.endpoints(svc, port):
        if not labels_match(sel, pod.labels):
            continue
        md = {}
        if pod.tls_mode == "istio":
            md["envoy.transport_socket_match"] = {"tlsMode": "istio"}
        md["istio"] = {
            "workload": "%s;%s;%s;%s;%s"
            % (
                pod.workload_name,
                pod.namespace,
                pod.canonical_name,
                pod.canonical_revision,
                world.mesh["clusterId"],
            )
        }
        ep = {
            "endpoint": {"address": xds.socket_address(pod.ip, tport)},
            "health_status": "HEALTHY",
            "metadata": {"filter_metadata": md},
            "load_balancing_weight": 1,
        }
        loc = pod.locality()
        by_loc.setdefault(tuple(sorted(loc.items())), (loc, []))[1].append(ep)
    endpoints = [
        {"locality": loc, "lb_endpoints": eps, "load_balancing_weight": len(eps)}
        for _, (loc, eps) in sorted(by_loc.items())
    ]
    cla = {
        "@type": xds.T + "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": cluster_name,
    }
    if endpoints:
        cla["endpoints"] = endpoints
    return cla


def outbound(world, proxy):
    """[(cluster, load assignment)] for every visible service port and DestinationRule subset."""
    out = []
    for svc in world.visible_services(proxy):
        dr = destination_rule(world, proxy, svc)
        subsets = ((dr or {}).get("spec") or {}).get("subsets") or []
        for s in subsets:
            if set(s) - {"name", "labels", "trafficPolicy"}:
                raise IstiogenError(
                    "DestinationRule %s/%s subset %s: fields %s not supported"
                    % (
                        dr["metadata"]["namespace"],
                        dr["metadata"]["name"],
                        s.get("name"),
                        sorted(set(s) - {"name", "labels", "trafficPolicy"}),
                    )
                )
        for port in svc.ports:
            if port["_protocol"] == "udp":
                continue  # istiod builds nothing for UDP ports
            for subset in [None] + subsets:
                c = outbound_cluster(world, proxy, svc, port, dr, subset)
                out.append((c, load_assignment(world, svc, port, c["name"], subset)))
    return out


def inbound(world, proxy):
    """inbound|PORT|| per target port of the services selecting the proxy's pod."""
    by_port = {}
    for svc in world.services_of(proxy.pod):
        for port in svc.ports:
            if port["_protocol"] == "udp":
                continue
            tp = port["targetPort"]
            if isinstance(tp, str):
                tp = proxy.pod.container_port(tp)
                if tp is None:
                    continue
            e = by_port.setdefault(tp, {"services": [], "protocol": port["_protocol"]})
            if svc.meta() not in e["services"]:
                e["services"].append(svc.meta())
    out = []
    for tp, e in sorted(by_port.items()):
        c = {
            "@type": xds.T + "envoy.config.cluster.v3.Cluster",
            "name": "inbound|%d||" % tp,
            "type": "ORIGINAL_DST",
            "connect_timeout": world.mesh["connectTimeout"],
            "lb_policy": "CLUSTER_PROVIDED",
            "circuit_breakers": xds.circuit_breakers(),
            "upstream_bind_config": {
                "source_address": {
                    "address": world.mesh["inboundPassthroughBindAddress"],
                    "port_value": 0,
                }
            },
            "metadata": {"filter_metadata": {"istio": {"services": e["services"]}}},
            "common_lb_config": {},
        }
        opts = xds.http_protocol_options(e["protocol"])
        if opts:
            c["typed_extension_protocol_options"] = opts
        out.append((tp, e, c))
    return out


def fixed(world):
    t = xds.T + "envoy.config.cluster.v3.Cluster"
    ct = world.mesh["connectTimeout"]
    opts = xds.http_protocol_options("auto", idle=True)
    return [
        {"@type": t, "name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": ct},
        {
            "@type": t,
            "name": "InboundPassthroughClusterIpv4",
            "type": "ORIGINAL_DST",
            "connect_timeout": ct,
            "lb_policy": "CLUSTER_PROVIDED",
            "circuit_breakers": xds.circuit_breakers(),
            "upstream_bind_config": {
                "source_address": {
                    "address": world.mesh["inboundPassthroughBindAddress"],
                    "port_value": 0,
                }
            },
            "typed_extension_protocol_options": opts,
        },
        {
            "@type": t,
            "name": "PassthroughCluster",
            "type": "ORIGINAL_DST",
            "connect_timeout": ct,
            "lb_policy": "CLUSTER_PROVIDED",
            "circuit_breakers": xds.circuit_breakers(),
            "typed_extension_protocol_options": opts,
            "filters": [xds.mx_network()],
        },
    ]

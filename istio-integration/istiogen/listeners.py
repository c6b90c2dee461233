"""LDS: outbound per-service listeners (VIP_PORT for TCP and sniffed ports, 0.0.0.0_PORT for HTTP),
virtualOutbound (15001) and virtualInbound (15006) with mTLS chains from PeerAuthentication and
RBAC from AuthorizationPolicy."""
from . import authz, clusters, routes, xds
from .world import IstiogenError, labels_match

LISTENER_T = xds.T + "envoy.config.listener.v3.Listener"


# ---- PeerAuthentication ---------------------------------------------------------------------


def _pa_check(pa):
    spec = pa.get("spec") or {}
    name = "PeerAuthentication %s/%s" % (pa["metadata"]["namespace"], pa["metadata"]["name"])
    if set(spec) - {"selector", "mtls", "portLevelMtls"}:
        raise IstiogenError(
            "%s: fields %s not supported"
            % (name, sorted(set(spec) - {"selector", "mtls", "portLevelMtls"}))
        )
    modes = [(spec.get("mtls") or {}).get("mode", "UNSET")]
    modes += [(v or {}).get("mode", "UNSET") for v in (spec.get("portLevelMtls") or {}).values()]
    for m in modes:
        if m not in ("UNSET", "DISABLE", "PERMISSIVE", "STRICT"):
            raise IstiogenError("%s: mTLS mode %r unknown" % (name, m))
    if spec.get("portLevelMtls") and not spec.get("selector"):
        raise IstiogenError(
            "%s: portLevelMtls needs a workload selector (istiod ignores it " "otherwise)" % name
        )
    return spec


def mtls_mode(world, pod, port=None):
    """STRICT / PERMISSIVE / DISABLE for <pod> on target <port> (None: the passthrough chains)."""
    root = world.mesh["rootNamespace"]
    workload = ns_level = mesh = None
    pas = sorted(
        world.kind("PeerAuthentication"),
        key=lambda o: (str(o["metadata"].get("creationTimestamp", "")), o["metadata"]["name"]),
    )
    for pa in pas:
        spec = _pa_check(pa)
        ns = pa["metadata"]["namespace"]
        sel = (spec.get("selector") or {}).get("matchLabels")
        if ns == pod.namespace and sel:
            if labels_match(sel, pod.labels) and workload is None:
                workload = spec
        elif ns == pod.namespace and ns_level is None:
            ns_level = spec
        elif ns == root and not sel and mesh is None:
            mesh = spec
    mode = "PERMISSIVE"
    for spec in (mesh, ns_level, workload):
        if spec:
            m = (spec.get("mtls") or {}).get("mode", "UNSET")
            if m != "UNSET":
                mode = m
    if workload and port is not None:
        pl = (workload.get("portLevelMtls") or {}).get(port) or (
            workload.get("portLevelMtls") or {}
        ).get(str(port))
        if pl and pl.get("mode", "UNSET") != "UNSET":
            mode = pl["mode"]
    return mode


# Filter chain options (istiod's FilterChainMatchOptions): (protocol, transport, ALPNs, TLS).
OPTIONS = {
    ("http", "STRICT"): [("http", "tls", None, True)],
    ("http", "PERMISSIVE"): [
        ("http", "tls", xds.ALPN_ALL_ISTIO, True),
        ("http", "raw_buffer", None, False),
    ],
    ("http", "DISABLE"): [("http", "raw_buffer", None, False)],
    ("tcp", "STRICT"): [("tcp", "tls", None, True)],
    ("tcp", "PERMISSIVE"): [
        ("tcp", "tls", xds.ALPN_ALL_ISTIO, True),
        ("tcp", "tls", None, False),
        ("tcp", "raw_buffer", None, False),
    ],
    ("tcp", "DISABLE"): [("tcp", "raw_buffer", None, False)],
    ("auto", "STRICT"): [("http", "tls", xds.ALPN_MTLS_HTTP, True), ("tcp", "tls", None, True)],
    ("auto", "PERMISSIVE"): [
        ("http", "tls", xds.ALPN_MTLS_HTTP, True),
        ("http", "raw_buffer", xds.ALPN_PLAIN_HTTP, False),
        ("tcp", "tls", xds.ALPN_MTLS_TCP_MX, True),
        ("tcp", "raw_buffer", None, False),
        ("tcp", "tls", None, False),
    ],
    ("auto", "DISABLE"): [
        ("http", "raw_buffer", xds.ALPN_PLAIN_HTTP, False),
        ("tcp", "raw_buffer", None, False),
    ],
}


def _class(protocol):
    return "http" if protocol in ("http1", "http2") else protocol


def _inbound_route(name, vhost, cluster, operation):
    return {
        "name": name,
        "virtual_hosts": [
            {
                "name": vhost,
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "route": {
                            "cluster": cluster,
                            "timeout": "0s",
                            "max_stream_duration": {
                                "max_stream_duration": "0s",
                                "grpc_timeout_header_max": "0s",
                            },
                        },
                        "decorator": {"operation": operation},
                        "name": "default",
                    }
                ],
            }
        ],
        "validate_clusters": False,
    }


def _inbound_chains(world, proxy, protocol, mode, match_base, name, cluster, stat_http, route_cfg):
    td = world.mesh["trustDomain"]
    tcp_rbac = authz.filters(world, proxy.pod, True)
    http_rbac = authz.filters(world, proxy.pod, False)
    out = []
    for proto, transport, alpn, tls in OPTIONS[(protocol, mode)]:
        fcm = dict(match_base)
        fcm["transport_protocol"] = transport
        if alpn:
            fcm["application_protocols"] = list(alpn)
        if proto == "http":
            filters = [
                xds.mx_network(),
                xds.hcm(proxy, stat_http, True, route_config=route_cfg, rbac_filters=http_rbac),
            ]
        else:
            filters = (
                [xds.mx_network()]
                + tcp_rbac
                + [xds.stats_network(True), xds.tcp_proxy(cluster, cluster)]
            )
        fc = {"filter_chain_match": fcm, "filters": filters}
        if tls:
            fc["transport_socket"] = xds.downstream_tls(
                ["h2", "http/1.1"]
                if proto == "http"
                else ["istio-peer-exchange", "h2", "http/1.1"],
                td,
            )
        fc["name"] = name(proto)
        out.append(fc)
    return out


def _inspectors(chains):
    """The listener filters istiod derives from the chains: TLS inspector where a chain matches
    transport 'tls', HTTP inspector where one matches plaintext HTTP ALPNs; the other ports are
    excluded with filter_disabled ranges."""
    ins = {}
    for fc in chains:
        m = fc.get("filter_chain_match") or {}
        port = m.get("destination_port", 0)
        tls, http = ins.get(port, (False, False))
        ins[port] = (
            tls or m.get("transport_protocol") == "tls",
            http or bool({"http/1.1", "h2c"} & set(m.get("application_protocols") or [])),
        )

    def ranges(ports):
        rs = [{"destination_port_range": {"start": p, "end": p + 1}} for p in sorted(ports)]
        return rs[0] if len(rs) == 1 else {"or_match": {"rules": rs}}

    out = []
    if any(t for t, _ in ins.values()):
        f = xds.listener_filter("tls_inspector")
        if ins.get(0, (False, False))[0]:
            off = [p for p, (t, _) in ins.items() if p and not t]
            if off:
                f["filter_disabled"] = ranges(off)
        else:
            on = [p for p, (t, _) in ins.items() if p and t]
            if on:
                f["filter_disabled"] = {"not_match": ranges(on)}
        out.append(f)
    if any(h for _, h in ins.values()):
        f = xds.listener_filter("http_inspector")
        off = [p for p, (_, h) in ins.items() if not h]
        if off:
            f["filter_disabled"] = ranges(off)
        out.append(f)
    return out


def virtual_inbound(world, proxy, inbound_clusters):
    chains = [
        {
            "filter_chain_match": {"destination_port": 15006},
            "filters": [
                xds.mx_network(),
                xds.stats_network(True),
                xds.tcp_proxy("BlackHoleCluster", "BlackHoleCluster"),
            ],
            "name": "virtualInbound-blackhole",
        }
    ]
    pt = "InboundPassthroughClusterIpv4"
    chains += _inbound_chains(
        world,
        proxy,
        "auto",
        mtls_mode(world, proxy.pod),
        {"prefix_ranges": [{"address_prefix": "0.0.0.0", "prefix_len": 0}]},
        lambda p: "virtualInbound-catchall-http" if p == "http" else "virtualInbound",
        pt,
        pt,
        _inbound_route(pt, "inbound|http|0", pt, ":0/*"),
    )
    for tp, e, c in inbound_clusters:
        svc = e["services"][0]
        sport = _service_port_for(world, proxy, svc, tp)
        chains += _inbound_chains(
            world,
            proxy,
            _class(e["protocol"]),
            mtls_mode(world, proxy.pod, tp),
            {"destination_port": tp},
            lambda p, tp=tp: "0.0.0.0_%d" % tp,
            c["name"],
            "inbound_0.0.0.0_%d" % tp,
            _inbound_route(
                c["name"], "inbound|http|%d" % sport, c["name"], "%s:%d/*" % (svc["host"], sport)
            ),
        )
    lst = {
        "@type": LISTENER_T,
        "name": "virtualInbound",
        "address": xds.socket_address("0.0.0.0", 15006),
        "filter_chains": chains,
        "listener_filters": [xds.listener_filter("original_dst")] + _inspectors(chains),
        "listener_filters_timeout": "0s",
        "traffic_direction": "INBOUND",
        "continue_on_listener_filters_timeout": True,
    }
    return lst


def _service_port_for(world, proxy, meta, target):
    svc = world.service_by_host(meta["host"])
    for p in svc.ports:
        tp = p["targetPort"]
        if isinstance(tp, str):
            tp = proxy.pod.container_port(tp)
        if tp == target:
            return p["port"]
    return target


def virtual_outbound(world):
    catchall = "PassthroughCluster"
    if world.mesh["outboundTrafficPolicy"].get("mode", "ALLOW_ANY") == "REGISTRY_ONLY":
        catchall = "BlackHoleCluster"
    return {
        "@type": LISTENER_T,
        "name": "virtualOutbound",
        "address": xds.socket_address("0.0.0.0", 15001),
        "filter_chains": [
            {
                "filter_chain_match": {"destination_port": 15001},
                "filters": [
                    xds.stats_network(False),
                    xds.tcp_proxy("BlackHoleCluster", "BlackHoleCluster"),
                ],
                "name": "virtualOutbound-blackhole",
            },
            {
                "filters": [xds.stats_network(False), xds.tcp_proxy(catchall, catchall)],
                "name": "virtualOutbound-catchall-tcp",
            },
        ],
        "use_original_dst": True,
        "traffic_direction": "OUTBOUND",
    }


def _tcp_filters(world, proxy, svc, port):
    stat, cluster, weighted = routes.tcp_destinations(world, proxy, svc, port)
    return [xds.stats_network(False), xds.tcp_proxy(stat, cluster, weighted)]


def outbound(world, proxy):
    """(listeners, route configurations) for every visible service port."""
    listeners, rcs = [], []
    http_ports = {}
    for svc in world.visible_services(proxy):
        for port in svc.ports:
            proto = port["_protocol"]
            if proto == "udp":
                continue
            if proto in ("http1", "http2"):
                http_ports.setdefault(port["port"], []).append((svc, port))
                continue
            name = "%s_%d" % (svc.vip, port["port"])
            lst = {
                "@type": LISTENER_T,
                "name": name,
                "address": xds.socket_address(svc.vip, port["port"]),
            }
            if proto == "tcp":
                lst["filter_chains"] = [{"filters": _tcp_filters(world, proxy, svc, port)}]
            else:  # protocol sniffing: HTTP chain by ALPN from the HTTP inspector, else TCP
                rname = "%s:%d" % (svc.hostname, port["port"])
                lst["filter_chains"] = [
                    {
                        "filter_chain_match": {
                            "transport_protocol": "raw_buffer",
                            "application_protocols": list(xds.ALPN_PLAIN_HTTP),
                        },
                        "filters": [xds.hcm(proxy, "outbound_" + name, False, rds=rname)],
                    }
                ]
                lst["listener_filters"] = [
                    xds.listener_filter("tls_inspector"),
                    xds.listener_filter("http_inspector"),
                ]
                rcs.append(routes.service_route(world, proxy, svc, port))
            lst.update(
                {
                    "listener_filters_timeout": "0s",
                    "traffic_direction": "OUTBOUND",
                    "continue_on_listener_filters_timeout": True,
                }
            )
            if proto == "auto":
                lst["default_filter_chain"] = {"filters": _tcp_filters(world, proxy, svc, port)}
            lst["bind_to_port"] = False
            listeners.append(lst)
    registry_only = world.mesh["outboundTrafficPolicy"].get("mode", "ALLOW_ANY") == "REGISTRY_ONLY"
    fallback = "BlackHoleCluster" if registry_only else "PassthroughCluster"
    for pnum, svcs in sorted(http_ports.items()):
        name = "0.0.0.0_%d" % pnum
        listeners.append(
            {
                "@type": LISTENER_T,
                "name": name,
                "address": xds.socket_address("0.0.0.0", pnum),
                "filter_chains": [
                    {
                        "filter_chain_match": {
                            "transport_protocol": "raw_buffer",
                            "application_protocols": list(xds.ALPN_PLAIN_HTTP),
                        },
                        "filters": [xds.hcm(proxy, "outbound_" + name, False, rds=str(pnum))],
                    }
                ],
                "listener_filters": [
                    xds.listener_filter("tls_inspector"),
                    xds.listener_filter("http_inspector"),
                ],
                "listener_filters_timeout": "0s",
                "traffic_direction": "OUTBOUND",
                "continue_on_listener_filters_timeout": True,
                "default_filter_chain": {
                    "filter_chain_match": {},
                    "filters": [xds.stats_network(False), xds.tcp_proxy(fallback, fallback)],
                    "name": "BlackHoleFilterChain" if registry_only else "PassthroughFilterChain",
                },
                "bind_to_port": False,
            }
        )
        rcs.append(routes.port_route(world, proxy, pnum, svcs))
    return listeners, rcs


def all_listeners(world, proxy):
    inbound_clusters = clusters.inbound(world, proxy)
    out, rcs = outbound(world, proxy)
    out.append(virtual_outbound(world))
    out.append(virtual_inbound(world, proxy, inbound_clusters))
    return out, rcs

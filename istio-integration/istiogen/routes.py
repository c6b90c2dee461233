"""VirtualService -> RDS RouteConfigurations (HTTP) and tcp_proxy destinations (TCP)."""
from . import xds
from .world import IstiogenError, labels_match

HTTP_ROUTE_KEYS = {
    "name",
    "match",
    "route",
    "headers",
    "timeout",
    "retries",
    "rewrite",
    "mirror",
    "mirrorPercentage",
    "mirrors",
}
MATCH_KEYS = {
    "name",
    "uri",
    "headers",
    "port",
    "sourceLabels",
    "method",
    "ignoreUriCase",
    "gateways",
}
TCP_MATCH_KEYS = {"port", "sourceLabels", "gateways"}


def vs_path(vs):
    m = vs["metadata"]
    return "/apis/networking.istio.io/v1alpha3/namespaces/%s/virtual-service/%s" % (
        m["namespace"],
        m["name"],
    )


def _name(vs):
    return "VirtualService %s/%s" % (vs["metadata"]["namespace"], vs["metadata"]["name"])


def virtual_service(world, proxy, host):
    """The VirtualService bound to the mesh for <host> (FQDN), oldest wins as in istiod (by
    creationTimestamp, then namespace/name), or None."""
    cands = []
    for vs in world.kind("VirtualService"):
        spec = vs.get("spec") or {}
        ns = vs["metadata"]["namespace"]
        gw = spec.get("gateways")
        if gw and "mesh" not in gw:
            continue
        exp = spec.get("exportTo")
        if (
            exp
            and "*" not in exp
            and not ("." in exp and ns == proxy.namespace)
            and proxy.namespace not in exp
        ):
            continue
        if host in [world.resolve_host(h, ns) for h in spec.get("hosts") or []]:
            cands.append(vs)
    if not cands:
        return None
    cands.sort(
        key=lambda v: (
            str(v["metadata"].get("creationTimestamp", "")),
            v["metadata"]["namespace"],
            v["metadata"]["name"],
        )
    )
    vs = cands[0]
    bad = set(vs.get("spec") or {}) - {"hosts", "gateways", "http", "tcp", "exportTo"}
    if bad:
        raise IstiogenError(
            "%s: fields %s are not supported (tls routes, delegate...)" % (_name(vs), sorted(bad))
        )
    _validate(vs)
    return vs


def _validate(vs):
    """Refuse what is not rendered in every route, even routes no port of this proxy uses."""
    for r in vs["spec"].get("http") or []:
        if set(r) - HTTP_ROUTE_KEYS:
            raise IstiogenError(
                "%s: http route fields %s not supported (fault, redirect, "
                "corsPolicy, directResponse...)" % (_name(vs), sorted(set(r) - HTTP_ROUTE_KEYS))
            )
        for m in r.get("match") or []:
            if set(m) - MATCH_KEYS:
                raise IstiogenError(
                    "%s: http match fields %s not supported"
                    % (_name(vs), sorted(set(m) - MATCH_KEYS))
                )
            if "uri" in (r.get("rewrite") or {}) and "regex" in (m.get("uri") or {}):
                # istiod sends prefix_rewrite here, which Envoy (and msm-proxy) reject.
                raise IstiogenError(
                    "%s: rewrite.uri with a regex uri match is rejected by "
                    "Envoy; use rewrite.uriRegexRewrite" % _name(vs)
                )
        if set(r.get("rewrite") or {}) - {"uri", "authority", "uriRegexRewrite"}:
            raise IstiogenError("%s: rewrite %s not supported" % (_name(vs), sorted(r["rewrite"])))
        for d in r.get("route") or []:
            if set(d) - {"destination", "weight"}:
                raise IstiogenError(
                    "%s: route fields %s not supported"
                    % (_name(vs), sorted(set(d) - {"destination", "weight"}))
                )
    for r in vs["spec"].get("tcp") or []:
        if set(r) - {"match", "route"}:
            raise IstiogenError(
                "%s: tcp route fields %s not supported"
                % (_name(vs), sorted(set(r) - {"match", "route"}))
            )
        for m in r.get("match") or []:
            if set(m) - TCP_MATCH_KEYS:
                raise IstiogenError(
                    "%s: tcp match fields %s not supported"
                    % (_name(vs), sorted(set(m) - TCP_MATCH_KEYS))
                )


def destination_cluster(world, vs, dest, svc_port):
    ns = vs["metadata"]["namespace"]
    host = world.resolve_host(dest["host"], ns)
    svc = world.service_by_host(host)
    port = (dest.get("port") or {}).get("number")
    if port is None:
        if svc and len(svc.ports) == 1:
            port = svc.ports[0]["port"]
        else:
            port = svc_port
    if set(dest) - {"host", "subset", "port"}:
        raise IstiogenError(
            "%s: destination fields %s not supported"
            % (_name(vs), sorted(set(dest) - {"host", "subset", "port"}))
        )
    return "outbound|%d|%s|%s" % (port, dest.get("subset", ""), host), host, port


def _weighted(world, vs, dests, svc_port):
    out = []
    for d in dests:
        if set(d) - {"destination", "weight"}:
            raise IstiogenError(
                "%s: route fields %s not supported"
                % (_name(vs), sorted(set(d) - {"destination", "weight"}))
            )
        name, host, port = destination_cluster(world, vs, d["destination"], svc_port)
        out.append((name, int(d.get("weight", 100 if len(dests) == 1 else 0)), host, port))
    if len(out) > 1 and sum(w for _, w, _, _ in out) != 100:
        raise IstiogenError("%s: route weights must add up to 100" % _name(vs))
    return [o for o in out if o[1] > 0 or len(out) == 1]


def _mirror_fraction(vs, pct):
    """istiod's mirrorPercent: absent = 100 % (numerator 100 of HUNDRED); a value = that percent
    in millionths; an explicit 0 = no mirror (None)."""
    if pct is None:
        return {"default_value": {"numerator": 100}}
    if set(pct) - {"value"}:
        raise IstiogenError("%s: mirror percentage fields %s" % (_name(vs), sorted(pct)))
    v = float(pct.get("value", 0))
    if v < 0 or v > 100:
        raise IstiogenError("%s: mirror percentage %s out of [0, 100]" % (_name(vs), v))
    if v == 0:
        return None
    return {"default_value": {"numerator": int(v * 10000), "denominator": "MILLION"}}


def _mirrors(world, vs, r, svc_port):
    """RouteAction.request_mirror_policies from mirror/mirrorPercentage and mirrors[] (istiod:
    the legacy pair first, then each HTTPMirrorPolicy; trace_sampled false)."""
    out = []
    pairs = []
    if r.get("mirror"):
        pairs.append((r["mirror"], r.get("mirrorPercentage")))
    elif "mirrorPercentage" in r:
        raise IstiogenError("%s: mirrorPercentage without mirror" % _name(vs))
    for m in r.get("mirrors") or []:
        if set(m) - {"destination", "percentage"} or "destination" not in m:
            raise IstiogenError("%s: mirrors entry %s not supported" % (_name(vs), sorted(m)))
        pairs.append((m["destination"], m.get("percentage")))
    for dest, pct in pairs:
        frac = _mirror_fraction(vs, pct)
        if frac is None:
            continue
        name, _, _ = destination_cluster(world, vs, dest, svc_port)
        out.append({"cluster": name, "runtime_fraction": frac, "trace_sampled": False})
    return out


def _match_applies(vs, m, allowed, kind, port, proxy):
    """Whether VirtualService match <m> (a <kind> route's) applies to this sidecar on <port>:
    its gateways include "mesh", its port and sourceLabels fit. Fields outside <allowed> are
    refused, never ignored."""
    if set(m) - allowed:
        raise IstiogenError(
            "%s: %s match fields %s not supported" % (_name(vs), kind, sorted(set(m) - allowed))
        )
    if m.get("gateways") and "mesh" not in m["gateways"]:
        return False
    if "port" in m and m["port"] != port["port"]:
        return False
    return labels_match(m.get("sourceLabels"), proxy.pod.labels)


def tcp_destinations(world, proxy, svc, port):
    """(stat_prefix, cluster, weighted) for a TCP port: the first matching tcp route of the
    service's VirtualService, else the service cluster."""
    default = "outbound|%d||%s" % (port["port"], svc.hostname)
    vs = virtual_service(world, proxy, svc.hostname)
    for r in ((vs or {}).get("spec") or {}).get("tcp") or []:
        if set(r) - {"match", "route"}:
            raise IstiogenError(
                "%s: tcp route fields %s not supported"
                % (_name(vs), sorted(set(r) - {"match", "route"}))
            )
        ok = not r.get("match")
        for m in r.get("match") or []:
            if _match_applies(vs, m, TCP_MATCH_KEYS, "tcp", port, proxy):
                ok = True
        if not ok:
            continue
        dests = _weighted(world, vs, r.get("route") or [], port["port"])
        if len(dests) == 1:
            return dests[0][0], dests[0][0], None
        return (
            "%s.%s" % (vs["metadata"]["name"], vs["metadata"]["namespace"]),
            None,
            [(n, w) for n, w, _, _ in dests],
        )
    return default, default, None


def _string_match(vs, m, what):
    if len(m) != 1 or next(iter(m)) not in ("exact", "prefix", "regex"):
        raise IstiogenError("%s: %s match %s not supported" % (_name(vs), what, m))
    k, v = next(iter(m.items()))
    return {"safe_regex": {"regex": v}} if k == "regex" else {k: v}


def _route_match(vs, m):
    out = {}
    uri = m.get("uri")
    if uri:
        sm = _string_match(vs, uri, "uri")
        if "exact" in sm:
            out["path"] = sm["exact"]
        elif "prefix" in sm:
            out["prefix"] = sm["prefix"]
        else:
            out["safe_regex"] = sm["safe_regex"]
        if "safe_regex" not in out:
            out["case_sensitive"] = not m.get("ignoreUriCase", False)
    else:
        out["prefix"] = "/"
    hdrs = []
    if m.get("method"):
        hdrs.append({"name": ":method", "string_match": _string_match(vs, m["method"], "method")})
    for name, hm in sorted((m.get("headers") or {}).items()):
        hdrs.append({"name": name, "string_match": _string_match(vs, hm, "header")})
    if hdrs:
        out["headers"] = hdrs
    return out


def _operation(match, host, port):
    path = "/*"
    uri = (match or {}).get("uri") or {}
    if "exact" in uri:
        path = uri["exact"]
    elif "prefix" in uri:
        path = uri["prefix"] + "*"
    return "%s:%d%s" % (host, port, path)


def _headers(vs, h, out):
    for side in ("request", "response"):
        ops = (h or {}).get(side) or {}
        if set(ops) - {"set", "add", "remove"}:
            raise IstiogenError("%s: headers.%s %s not supported" % (_name(vs), side, sorted(ops)))
        add = []
        for k, v in (ops.get("set") or {}).items():
            add.append(
                {
                    "header": {"key": k, "value": str(v)},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            )
        for k, v in (ops.get("add") or {}).items():
            add.append(
                {"header": {"key": k, "value": str(v)}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
            )
        if add:
            out["%s_headers_to_add" % side] = add
        if ops.get("remove"):
            out["%s_headers_to_remove" % side] = list(ops["remove"])
    if set(h or {}) - {"request", "response"}:
        raise IstiogenError("%s: headers %s not supported" % (_name(vs), sorted(h)))


def _retry(vs, r):
    if r is None:
        return dict(xds.DEFAULT_RETRY)
    if set(r) - {"attempts", "perTryTimeout", "retryOn"}:
        raise IstiogenError("%s: retries %s not supported" % (_name(vs), sorted(r)))
    if int(r.get("attempts", 0)) == 0:
        return None
    p = dict(xds.DEFAULT_RETRY)
    p["num_retries"] = int(r["attempts"])
    if r.get("retryOn"):
        codes = [int(x) for x in r["retryOn"].split(",") if x.strip().isdigit()]
        ons = [x.strip() for x in r["retryOn"].split(",") if not x.strip().isdigit()]
        if codes and "retriable-status-codes" not in ons:
            ons.append("retriable-status-codes")
        p["retry_on"] = ",".join(ons)
        p["retriable_status_codes"] = codes
        if not codes:
            del p["retriable_status_codes"]
    if r.get("perTryTimeout"):
        p["per_try_timeout"] = r["perTryTimeout"]
    return p


def http_routes(world, proxy, svc, port):
    """Envoy routes for <svc> <port> from its VirtualService, or the default route."""
    vs = virtual_service(world, proxy, svc.hostname)
    if not vs or not (vs.get("spec") or {}).get("http"):
        cluster = "outbound|%d||%s" % (port["port"], svc.hostname)
        return [
            {
                "match": {"prefix": "/"},
                "route": {
                    "cluster": cluster,
                    "timeout": "0s",
                    "retry_policy": dict(xds.DEFAULT_RETRY),
                    "max_grpc_timeout": "0s",
                },
                "decorator": {"operation": "%s:%d/*" % (svc.hostname, port["port"])},
                "name": "default",
            }
        ]
    out = []
    for r in vs["spec"]["http"]:
        if set(r) - HTTP_ROUTE_KEYS:
            raise IstiogenError(
                "%s: http route fields %s not supported (fault, redirect, "
                "corsPolicy, directResponse...)" % (_name(vs), sorted(set(r) - HTTP_ROUTE_KEYS))
            )
        dests = _weighted(world, vs, r.get("route") or [], port["port"])
        if not dests:
            raise IstiogenError("%s: http route without destination" % _name(vs))
        for m in r.get("match") or [None]:
            if m is not None and not _match_applies(vs, m, MATCH_KEYS, "http", port, proxy):
                continue
            action = {}
            if len(dests) == 1:
                action["cluster"] = dests[0][0]
            else:
                action["weighted_clusters"] = {
                    "clusters": [{"name": n, "weight": w} for n, w, _, _ in dests]
                }
            action["timeout"] = r.get("timeout", "0s")
            rp = _retry(vs, r.get("retries"))
            if rp:
                action["retry_policy"] = rp
            mirrors = _mirrors(world, vs, r, port["port"])
            if mirrors:
                action["request_mirror_policies"] = mirrors
            action["max_grpc_timeout"] = r.get("timeout", "0s")
            rw = r.get("rewrite")
            if rw:
                if set(rw) - {"uri", "authority", "uriRegexRewrite"}:
                    raise IstiogenError("%s: rewrite %s not supported" % (_name(vs), sorted(rw)))
                rx = rw.get("uriRegexRewrite")
                if rx:
                    action["regex_rewrite"] = {
                        "pattern": {"regex": rx["match"]},
                        "substitution": rx["rewrite"],
                    }
                elif "uri" in rw:
                    if ((m or {}).get("uri") or {}).get("regex") is not None:
                        # istiod sends prefix_rewrite here, which Envoy (and msm-proxy) reject.
                        raise IstiogenError(
                            "%s: rewrite.uri with a regex uri match is rejected by "
                            "Envoy; use rewrite.uriRegexRewrite" % _name(vs)
                        )
                    action["prefix_rewrite"] = rw["uri"]
                if "authority" in rw:
                    action["host_rewrite_literal"] = rw["authority"]
            e = {
                "match": _route_match(vs, m or {}),
                "route": action,
                "metadata": {"filter_metadata": {"istio": {"config": vs_path(vs)}}},
                "decorator": {"operation": _operation(m, dests[0][2], dests[0][3])},
            }
            _headers(vs, r.get("headers"), e)
            if r.get("name"):
                e["name"] = r["name"]
            out.append(e)
    return out


def domains(world, proxy, svc):
    """istiod's order (ports are not appended: ignore_port_in_host_matching)."""
    n, ns = svc.name, svc.namespace
    if ns == proxy.namespace:
        alt = [n, "%s.%s.svc" % (n, ns), "%s.%s" % (n, ns)]
    else:
        alt = ["%s.%s" % (n, ns), "%s.%s.svc" % (n, ns)]
    return [svc.hostname] + alt + [svc.vip]


def _route_config(name, vhosts):
    for vh in vhosts:
        vh["include_request_attempt_count"] = True
    return {
        "@type": xds.T + "envoy.config.route.v3.RouteConfiguration",
        "name": name,
        "virtual_hosts": vhosts,
        "validate_clusters": False,
        "max_direct_response_body_size_bytes": 1048576,
        "ignore_port_in_host_matching": True,
    }


def port_route(world, proxy, port_number, services):
    """RouteConfiguration "PORT" of the 0.0.0.0_PORT listener: one virtual host per HTTP service
    on that port, then allow_any (or block_all with REGISTRY_ONLY)."""
    vhs = []
    for svc, port in services:
        vhs.append(
            {
                "name": "%s:%d" % (svc.hostname, port_number),
                "domains": domains(world, proxy, svc),
                "routes": http_routes(world, proxy, svc, port),
            }
        )
    if world.mesh["outboundTrafficPolicy"].get("mode", "ALLOW_ANY") == "REGISTRY_ONLY":
        vhs.append(
            {
                "name": "block_all",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 502},
                        "name": "block_all",
                    }
                ],
            }
        )
    else:
        vhs.append(
            {
                "name": "allow_any",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "route": {
                            "cluster": "PassthroughCluster",
                            "timeout": "0s",
                            "max_grpc_timeout": "0s",
                        },
                        "name": "allow_any",
                    }
                ],
            }
        )
    return _route_config(str(port_number), vhs)


def service_route(world, proxy, svc, port):
    """RouteConfiguration "HOST:PORT" of an auto-detected (protocol sniffing) VIP listener."""
    name = "%s:%d" % (svc.hostname, port["port"])
    return _route_config(
        name, [{"name": name, "domains": ["*"], "routes": http_routes(world, proxy, svc, port)}]
    )

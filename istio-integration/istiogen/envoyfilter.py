"""EnvoyFilter patches applied to the rendered listeners and clusters, as istiod applies them:
root-namespace filters first, then the workload's namespace, stable-sorted by priority; matches on
context, listener port/name, filter chain, network filter and HTTP sub-filter, cluster
port/service/subset/name."""
import copy
import re

from .world import IstiogenError, labels_match

LISTENER_OPS = {
    "LISTENER": {"ADD", "MERGE", "REMOVE"},
    "FILTER_CHAIN": {"ADD", "MERGE", "REMOVE"},
    "NETWORK_FILTER": {
        "INSERT_BEFORE",
        "INSERT_AFTER",
        "INSERT_FIRST",
        "ADD",
        "MERGE",
        "REMOVE",
        "REPLACE",
    },
    "HTTP_FILTER": {
        "INSERT_BEFORE",
        "INSERT_AFTER",
        "INSERT_FIRST",
        "ADD",
        "MERGE",
        "REMOVE",
        "REPLACE",
    },
}
CLUSTER_OPS = {"ADD", "MERGE", "REMOVE"}
STRUCT_FIELDS = {"filter_metadata", "fields"}
MAP_FIELDS = {
    "typed_extension_protocol_options",
    "typed_per_filter_config",
    "typed_filter_metadata",
}
_CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def _snake(k):
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k)


def normalize(v, typed_struct=False):
    """EnvoyFilter values may be written in proto JSON camelCase; Envoy dumps (and the rest of
    this output) use the proto field names. Struct contents (TypedStruct value, filter_metadata)
    are data, not fields: kept verbatim."""
    if isinstance(v, list):
        return [normalize(x) for x in v]
    if not isinstance(v, dict):
        return v
    ts = str(v.get("@type", "")).endswith("TypedStruct")
    out = {}
    for k, x in v.items():
        nk = _snake(k) if k != "@type" and _CAMEL.match(k) else k
        if ts and nk == "value":
            out[nk] = copy.deepcopy(x)
        elif nk in STRUCT_FIELDS:
            out[nk] = copy.deepcopy(x)
        elif nk in MAP_FIELDS and isinstance(x, dict):
            out[nk] = {mk: normalize(mv) for mk, mv in x.items()}
        else:
            out[nk] = normalize(x)
    return out


def merge(dst, src, where):
    """Proto merge: messages recursively, repeated fields appended, scalars replaced; an Any of
    another type cannot be merged."""
    if "@type" in src and "@type" in dst and src["@type"] != dst["@type"]:
        raise IstiogenError("%s: MERGE of %s into %s" % (where, src["@type"], dst["@type"]))
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v, where)
        elif isinstance(v, list) and isinstance(dst.get(k), list):
            dst[k].extend(copy.deepcopy(v))
        else:
            dst[k] = copy.deepcopy(v)


def applicable(world, proxy):
    root = world.mesh["rootNamespace"]
    out = []
    for group in (root, proxy.namespace):
        for ef in sorted(world.kind("EnvoyFilter"), key=lambda o: o["metadata"]["name"]):
            m = ef["metadata"]
            if m["namespace"] != group:
                continue
            spec = ef.get("spec") or {}
            bad = set(spec) - {"workloadSelector", "configPatches", "priority"}
            if bad:
                raise IstiogenError(
                    "EnvoyFilter %s/%s: fields %s not supported (targetRefs...)"
                    % (m["namespace"], m["name"], sorted(bad))
                )
            sel = (spec.get("workloadSelector") or {}).get("labels")
            if sel and not labels_match(sel, proxy.pod.labels):
                continue
            out.append(ef)
        if root == proxy.namespace:
            break
    out.sort(key=lambda o: int((o.get("spec") or {}).get("priority", 0)))
    return out


def _patches(world, proxy):
    for ef in applicable(world, proxy):
        m = ef["metadata"]
        for i, cp in enumerate((ef.get("spec") or {}).get("configPatches") or []):
            where = "EnvoyFilter %s/%s configPatches[%d]" % (m["namespace"], m["name"], i)
            match = cp.get("match") or {}
            if set(match) - {"context", "listener", "cluster"}:
                raise IstiogenError(
                    "%s: match %s not supported (proxy, routeConfiguration)"
                    % (where, sorted(set(match) - {"context", "listener", "cluster"}))
                )
            patch = cp.get("patch") or {}
            if set(patch) - {"operation", "value"}:
                raise IstiogenError(
                    "%s: patch fields %s not supported (filterClass...)"
                    % (where, sorted(set(patch) - {"operation", "value"}))
                )
            yield where, cp.get("applyTo"), match, patch.get("operation"), normalize(
                patch.get("value")
            )


def _ctx_ok(ctx, direction):
    ctx = ctx or "ANY"
    if ctx == "GATEWAY":
        return False
    if ctx == "ANY":
        return True
    return (ctx == "SIDECAR_INBOUND") == (direction == "INBOUND")


def _listener_ok(lst, lm, apply_to):
    if lm.get("name") and lm["name"] != lst["name"]:
        return False
    virtual = lst["name"] in ("virtualInbound", "virtualOutbound")
    if virtual and apply_to != "LISTENER":
        return True
    pn = lm.get("portNumber")
    return not pn or lst.get("address", {}).get("socket_address", {}).get("port_value") == pn


def _chain_ok(lst, fc, lm):
    fcm = fc.get("filter_chain_match") or {}
    virtual = lst["name"] in ("virtualInbound", "virtualOutbound")
    if virtual and lm.get("portNumber") and fcm.get("destination_port") != lm["portNumber"]:
        return False
    m = lm.get("filterChain")
    if not m:
        return True
    if m.get("name") and m["name"] != fc.get("name"):
        return False
    if m.get("sni") and m["sni"] not in (fcm.get("server_names") or []):
        return False
    if m.get("transportProtocol") and fcm.get("transport_protocol") != m["transportProtocol"]:
        return False
    if m.get("applicationProtocols"):
        have = fcm.get("application_protocols") or []
        if not all(p in have for p in m["applicationProtocols"].split(",")):
            return False
    if m.get("destinationPort") and fcm.get("destination_port") != m["destinationPort"]:
        return False
    return True


def _filter_list_op(filters, op, value, match_name, where):
    idx = [i for i, f in enumerate(filters) if match_name is None or f.get("name") == match_name]
    if op == "ADD":
        filters.append(copy.deepcopy(value))
    elif op == "INSERT_FIRST":
        filters.insert(0, copy.deepcopy(value))
    elif op == "INSERT_BEFORE":
        if match_name is None:
            filters.insert(0, copy.deepcopy(value))
        elif idx:
            filters.insert(idx[0], copy.deepcopy(value))
    elif op == "INSERT_AFTER":
        if match_name is None:
            filters.append(copy.deepcopy(value))
        elif idx:
            filters.insert(idx[0] + 1, copy.deepcopy(value))
    elif op == "REMOVE":
        filters[:] = [f for i, f in enumerate(filters) if i not in idx]
    elif op == "REPLACE":
        if match_name is None:
            raise IstiogenError("%s: REPLACE needs a filter name to match" % where)
        if idx:
            filters[idx[0]] = copy.deepcopy(value)
    elif op == "MERGE":
        for i in idx:
            merge(filters[i], value, where)


def _chains(lst):
    out = list(lst.get("filter_chains") or [])
    if lst.get("default_filter_chain"):
        out.append(lst["default_filter_chain"])
    return out


def apply_listeners(world, proxy, listeners):
    for where, apply_to, match, op, value in _patches(world, proxy):
        if apply_to not in LISTENER_OPS:
            continue
        if op not in LISTENER_OPS[apply_to]:
            raise IstiogenError("%s: %s %s is not supported" % (where, apply_to, op))
        if match.get("cluster"):
            raise IstiogenError("%s: cluster match on %s" % (where, apply_to))
        lm = match.get("listener") or {}
        ctx = match.get("context")
        if apply_to == "LISTENER" and op == "ADD":
            if ctx in (None, "ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND"):
                v = copy.deepcopy(value)
                v.setdefault("@type", "type.googleapis.com/envoy.config.listener.v3.Listener")
                listeners.append(v)
            continue
        for lst in list(listeners):
            direction = lst.get("traffic_direction", "OUTBOUND")
            if not _ctx_ok(ctx, direction) or not _listener_ok(lst, lm, apply_to):
                continue
            if apply_to == "LISTENER":
                if op == "REMOVE":
                    listeners.remove(lst)
                else:
                    merge(lst, value, where)
                continue
            if apply_to == "FILTER_CHAIN" and op == "ADD":
                lst.setdefault("filter_chains", []).append(copy.deepcopy(value))
                continue
            for fc in _chains(lst):
                if not _chain_ok(lst, fc, lm):
                    continue
                if apply_to == "FILTER_CHAIN":
                    if op == "REMOVE":
                        if fc is lst.get("default_filter_chain"):
                            del lst["default_filter_chain"]
                        else:
                            lst["filter_chains"].remove(fc)
                    else:
                        merge(fc, value, where)
                    continue
                fm = (lm.get("filterChain") or {}).get("filter") or {}
                if apply_to == "NETWORK_FILTER":
                    _filter_list_op(fc.setdefault("filters", []), op, value, fm.get("name"), where)
                    continue
                # HTTP_FILTER: inside the HCM of the chain
                if (
                    fm.get("name", "envoy.filters.network.http_connection_manager")
                    != "envoy.filters.network.http_connection_manager"
                ):
                    continue
                for f in fc.get("filters") or []:
                    if f.get("name") != "envoy.filters.network.http_connection_manager":
                        continue
                    hf = f["typed_config"].setdefault("http_filters", [])
                    _filter_list_op(hf, op, value, (fm.get("subFilter") or {}).get("name"), where)
    return listeners


def _cluster_ok(c, cm, ctx):
    name = c["name"]
    inbound = name.startswith("inbound|")
    if ctx in ("SIDECAR_INBOUND", "SIDECAR_OUTBOUND") and (ctx == "SIDECAR_INBOUND") != inbound:
        return False
    if ctx == "GATEWAY":
        return False
    if cm.get("name") and cm["name"] != name:
        return False
    parts = name.split("|")
    if len(parts) != 4:
        return not (cm.get("portNumber") or cm.get("service") or cm.get("subset"))
    _, port, subset, host = parts
    if cm.get("portNumber") and str(cm["portNumber"]) != port:
        return False
    if cm.get("service") and cm["service"] != host:
        return False
    if cm.get("subset") and cm["subset"] != subset:
        return False
    return True


def apply_clusters(world, proxy, clusters):
    for where, apply_to, match, op, value in _patches(world, proxy):
        if apply_to in LISTENER_OPS:
            continue
        if apply_to != "CLUSTER":
            raise IstiogenError("%s: applyTo %s is not supported" % (where, apply_to))
        if op not in CLUSTER_OPS:
            raise IstiogenError("%s: CLUSTER %s is not supported" % (where, op))
        if op == "ADD":
            v = copy.deepcopy(value)
            v.setdefault("@type", "type.googleapis.com/envoy.config.cluster.v3.Cluster")
            clusters.append(v)
            continue
        cm = match.get("cluster") or {}
        for c in list(clusters):
            if not _cluster_ok(c, cm, match.get("context")):
                continue
            if op == "REMOVE":
                clusters.remove(c)
            else:
                merge(c, value, where)
    return clusters

"""AuthorizationPolicy -> Envoy RBAC (network filter for TCP chains, HTTP filter for HTTP chains),
following istiod's model: one policy per rule named ns[NS]-policy[NAME]-rule[i]; each `from` is
an OR'ed principal (AND of its conditions), each `to` an OR'ed permission; sidecars match peer
identities by the authenticated principal (the peer certificate's URI SAN). Anything not
implemented raises: an authorization rule is never silently dropped."""
import re

from . import xds
from .world import IstiogenError

SOURCE_KEYS = {
    "principals",
    "notPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "serviceAccounts",
    "notServiceAccounts",
    "requestPrincipals",
    "notRequestPrincipals",
}
OPERATION_KEYS = {
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
    "hosts",
    "notHosts",
}
HTTP_ONLY = {
    "methods",
    "notMethods",
    "paths",
    "notPaths",
    "hosts",
    "notHosts",
    "requestPrincipals",
    "notRequestPrincipals",
}
WHEN_KEYS = {
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "destination.port",
    "destination.ip",
    "connection.sni",
}


class _HTTPOnly(Exception):
    """A condition that has no meaning on a TCP chain (istiod's forTCP error)."""


def _peer(m):
    # Istio 1.20 sidecars match the peer's certificate URI SAN (authenticated.principal_name);
    # 1.19 matched filter state io.istio.peer_principal set by istio_authn, which 1.20 removed
    # (istio/istio#47395); waypoints still use filter state.
    return {"authenticated": {"principal_name": m}}


def _with_prefix(v, prefix):
    if v == "*":
        return {"safe_regex": {"regex": ".+"}}
    if v.startswith("*"):
        return {"safe_regex": {"regex": prefix + ".*" + v[1:]}} if prefix else {"suffix": v[1:]}
    if v.endswith("*"):
        return {"prefix": prefix + v[:-1]}
    return {"exact": prefix + v}


def _plain(v):
    if v == "*":
        return {"safe_regex": {"regex": ".+"}}
    if v.startswith("*"):
        return {"suffix": v[1:]}
    if v.endswith("*"):
        return {"prefix": v[:-1]}
    return {"exact": v}


def _cidr(v):
    if "/" in v:
        a, n = v.split("/", 1)
        return {"address_prefix": a, "prefix_len": int(n)}
    return {"address_prefix": v, "prefix_len": 128 if ":" in v else 32}


def _principal(key, v, ns, for_tcp=False):
    if key.startswith("request.auth.claims["):
        if for_tcp:
            raise _HTTPOnly(key)
        path = [p.rstrip("]") for p in key[len("request.auth.claims[") :].split("][")]
        return {
            "metadata": {
                "filter": "istio_authn",
                "path": [{"key": "request.auth.claims"}] + [{"key": p} for p in path],
                "value": {"list_match": {"one_of": {"string_match": _plain(v)}}},
            }
        }
    if key in ("principals", "source.principal"):
        return _peer(_with_prefix(v, "spiffe://"))
    if key in ("namespaces", "source.namespace"):
        rx = ".*".join(re.escape(p) for p in v.split("*"))
        return _peer({"safe_regex": {"regex": ".*/ns/%s/.*" % rx}})
    if key in ("serviceAccounts", "source.serviceAccount"):
        sns, _, sa = v.partition("/") if "/" in v else (ns, "", v)
        return _peer(
            {
                "safe_regex": {
                    "regex": "spiffe://.+/ns/%s/(.+/|)sa/%s(/.+)?" % (re.escape(sns), re.escape(sa))
                }
            }
        )
    if key in ("ipBlocks", "source.ip"):
        return {"direct_remote_ip": _cidr(v)}
    if key in ("remoteIpBlocks", "remote.ip"):
        return {"remote_ip": _cidr(v)}
    if key == "requestPrincipals":
        raise IstiogenError("requestPrincipals need RequestAuthentication (JWT): not supported")
    raise IstiogenError("unsupported source attribute %s" % key)


def _permission(key, v, for_tcp):
    if key in ("ports", "destination.port"):
        return {"destination_port": int(v)}
    if key == "destination.ip":
        return {"destination_ip": _cidr(v)}
    if key == "connection.sni":
        return {"requested_server_name": _plain(v)}
    if for_tcp:
        raise _HTTPOnly(key)
    if key == "methods":
        if v == "*":
            return {"header": {"name": ":method", "present_match": True}}
        return {"header": {"name": ":method", "string_match": _plain(v)}}
    if key == "paths":
        return {"url_path": {"path": _plain(v)}}
    raise IstiogenError("operation attribute %s is not supported" % key)


def _conditions(pairs, build, join_key, for_tcp, action):
    """AND of (OR of values) / NOT(OR of notValues) per attribute, as istiod orders them."""
    out = []
    for key, values, negate in pairs:
        items = []
        for v in values:
            try:
                items.append(build(key, str(v)))
            except _HTTPOnly:
                if action == "ALLOW":
                    raise  # the whole rule is skipped on TCP: a smaller allow
                items = None  # DENY: the condition is ignored on TCP: a wider deny
                break
        if not items:
            continue
        o = {join_key[0]: {join_key[1]: items}}
        out.append({join_key[2]: o} if negate else o)
    return out


def _source_pairs(src, when_keys):
    # istiod inserts every source field at the front: the last inserted comes first.
    order = [
        ("principals", "notPrincipals"),
        ("requestPrincipals", "notRequestPrincipals"),
        ("serviceAccounts", "notServiceAccounts"),
        ("namespaces", "notNamespaces"),
        ("remoteIpBlocks", "notRemoteIpBlocks"),
        ("ipBlocks", "notIpBlocks"),
    ]
    pairs = []
    for pos, neg in order:
        if src.get(pos) or src.get(neg):
            if src.get(pos):
                pairs.append((pos, src[pos], False))
            if src.get(neg):
                pairs.append((pos, src[neg], True))
    return pairs + when_keys


def _operation_pairs(op, when_keys):
    order = [
        ("hosts", "notHosts"),
        ("methods", "notMethods"),
        ("paths", "notPaths"),
        ("ports", "notPorts"),
    ]
    pairs = []
    for pos, neg in order:
        if op.get(pos):
            pairs.append((pos, op[pos], False))
        if op.get(neg):
            pairs.append((pos, op[neg], True))
    return pairs + when_keys


def _policy(ap, rule, for_tcp, action):
    ns = ap["metadata"]["namespace"]
    name = "%s/%s" % (ns, ap["metadata"]["name"])
    bad = set(rule) - {"from", "to", "when"}
    if bad:
        raise IstiogenError(
            "AuthorizationPolicy %s: rule fields %s not supported" % (name, sorted(bad))
        )
    when_p, when_o = [], []
    for w in rule.get("when") or []:
        k = w.get("key")
        if k not in WHEN_KEYS and not (k.startswith("request.auth.claims[") and k.endswith("]")):
            raise IstiogenError("AuthorizationPolicy %s: when key %r is not supported" % (name, k))
        target = when_o if k.startswith(("destination.", "connection.")) else when_p
        if w.get("values"):
            target.append((k, w["values"], False))
        if w.get("notValues"):
            target.append((k, w["notValues"], True))
    principals = []
    for f in rule.get("from") or [{}]:
        src = f.get("source") or {}
        if set(f) - {"source"} or set(src) - SOURCE_KEYS:
            raise IstiogenError(
                "AuthorizationPolicy %s: from fields %s not supported"
                % (name, sorted((set(f) - {"source"}) | (set(src) - SOURCE_KEYS)))
            )
        ids = _conditions(
            _source_pairs(src, when_p),
            lambda k, v: _principal(k, v, ns, for_tcp),
            ("or_ids", "ids", "not_id"),
            for_tcp,
            action,
        )
        principals.append({"and_ids": {"ids": ids or [{"any": True}]}})
    permissions = []
    for t in rule.get("to") or [{}]:
        op = t.get("operation") or {}
        if set(t) - {"operation"} or set(op) - OPERATION_KEYS:
            raise IstiogenError(
                "AuthorizationPolicy %s: to fields %s not supported"
                % (name, sorted((set(t) - {"operation"}) | (set(op) - OPERATION_KEYS)))
            )
        if op.get("hosts") or op.get("notHosts"):
            raise IstiogenError("AuthorizationPolicy %s: operation.hosts is not supported" % name)
        rules = _conditions(
            _operation_pairs(op, when_o),
            lambda k, v: _permission(k, v, for_tcp),
            ("or_rules", "rules", "not_rule"),
            for_tcp,
            action,
        )
        permissions.append({"and_rules": {"rules": rules or [{"any": True}]}})
    return {"permissions": permissions, "principals": principals}


NEVER = {"permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}


def policies_for(world, pod):
    """{action: [policy objects]} of the AuthorizationPolicies selecting <pod>."""
    out = {"DENY": [], "ALLOW": [], "AUDIT": []}
    for ap in sorted(
        world.kind("AuthorizationPolicy"),
        key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]),
    ):
        if not world.selects(ap, pod):
            continue
        spec = ap.get("spec") or {}
        bad = set(spec) - {"selector", "rules", "action"}
        if bad:
            raise IstiogenError(
                "AuthorizationPolicy %s/%s: fields %s not supported"
                % (ap["metadata"]["namespace"], ap["metadata"]["name"], sorted(bad))
            )
        action = spec.get("action", "ALLOW")
        if action not in ("ALLOW", "DENY"):
            raise IstiogenError(
                "AuthorizationPolicy %s/%s: action %s is not supported"
                % (ap["metadata"]["namespace"], ap["metadata"]["name"], action)
            )
        out[action].append(ap)
    return out


def _dry_run(ap):
    return (
        str((ap["metadata"].get("annotations") or {}).get("istio.io/dry-run", "false")).lower()
        == "true"
    )


def _rbac(aps, action, for_tcp):
    enforce, shadow = {}, {}
    for ap in aps:
        target = shadow if _dry_run(ap) else enforce
        rules = (ap.get("spec") or {}).get("rules")
        pname = "ns[%s]-policy[%s]-rule[%%d]" % (
            ap["metadata"]["namespace"],
            ap["metadata"]["name"],
        )
        if not rules:
            target[pname % 0] = NEVER
            continue
        for i, r in enumerate(rules):
            try:
                target[pname % i] = _policy(ap, r or {}, for_tcp, action)
            except _HTTPOnly:
                continue  # ALLOW rule with HTTP-only conditions: not on TCP chains
    dry = [_dry_run(a) for a in aps]
    have_enforce, have_shadow = not all(dry), any(dry)
    cfg = {}
    if have_enforce:
        cfg["rules"] = (
            dict({"action": action} if action != "ALLOW" else {}, policies=enforce)
            if enforce
            else ({"action": action} if action != "ALLOW" else {})
        )
    if have_shadow:
        cfg["shadow_rules"] = dict({"action": action} if action != "ALLOW" else {}, policies=shadow)
    prefix = "istio_dry_run_deny_" if (have_shadow and action == "DENY") else "istio_dry_run_allow_"
    return cfg, prefix


def filters(world, pod, for_tcp):
    """RBAC filters (DENY first, then ALLOW) for a TCP chain (network filters) or an HTTP chain
    (HTTP filters); [] when no policy selects the pod."""
    aps = policies_for(world, pod)
    out = []
    for action in ("DENY", "ALLOW"):
        if not aps[action]:
            continue
        cfg, prefix = _rbac(aps[action], action, for_tcp)
        if for_tcp:
            tc = {"@type": xds.T + "envoy.extensions.filters.network.rbac.v3.RBAC"}
            tc.update({k: v for k, v in cfg.items() if k == "rules"})
            tc["stat_prefix"] = "tcp."
            tc.update({k: v for k, v in cfg.items() if k == "shadow_rules"})
            tc["shadow_rules_stat_prefix"] = prefix
            out.append({"name": "envoy.filters.network.rbac", "typed_config": tc})
        else:
            tc = {"@type": xds.T + "envoy.extensions.filters.http.rbac.v3.RBAC"}
            tc.update(cfg)
            tc["shadow_rules_stat_prefix"] = prefix
            out.append({"name": "envoy.filters.http.rbac", "typed_config": tc})
    return out

"""Bootstrap rendering as pilot-agent does it (Istio pkg/bootstrap), for Istio's own template.

Inputs: a ProxyConfig (text proto as in *.proxycfg, or a dict with proto (snake_case) field
names), the agent's environment (ISTIO_META_*, ISTIO_METAJSON_*, POD_NAME, POD_NAMESPACE,
SERVICE_ACCOUNT), the downward-API label/annotation files and the agent's own options (node id,
instance IPs, pilot SAN, ports). Output: the template parameters Istio computes
(`template_params`) and the rendered text (`render`).

Implemented from reading Istio's pkg/bootstrap/config.go, option/*.go and pkg/model/proxy.go
(see the README for the list of what is and is not covered).
"""
import json
import os
import re

from .gotemplate import Template, go_json

ISTIO_META = "ISTIO_META_"
ISTIO_METAJSON = "ISTIO_METAJSON_"
GLOBAL_DOWNSTREAM_MAX_CONNECTIONS = "ISTIO_META_GLOBAL_DOWNSTREAM_MAX_CONNECTIONS"
LOCALITY_LABEL = "istio-locality"
TOPOLOGY_LOCALITY_LABEL = "topology.istio.io/locality"
CANONICAL_NAME_LABEL = "service.istio.io/canonical-name"

REQUIRED_PREFIXES = "cluster_manager,listener_manager,server,cluster.xds-grpc,wasm"
RBAC_SUFFIXES = "rbac.allowed,rbac.denied,shadow_allowed,shadow_denied"
REQUIRED_SUFFIXES = RBAC_SUFFIXES + ",downstream_cx_active"
REQUIRED_REGEXES = r"vhost\..*\.route\..*"

# The default mesh ProxyConfig as a running sidecar sees it (PROXY_CONFIG in the fixture dumps;
# Istio pkg/config/mesh DefaultProxyConfig + the injector's values).
DEFAULT_PROXY_CONFIG = {
    "config_path": "./etc/istio/proxy",
    "binary_path": "/usr/local/bin/envoy",
    "service_cluster": "istio-proxy",
    "drain_duration": {"seconds": 45},
    "termination_drain_duration": {"seconds": 5},
    "discovery_address": "istiod.istio-system.svc:15012",
    "proxy_admin_port": 15000,
    "control_plane_auth_policy": "MUTUAL_TLS",
    "stat_name_length": 189,
    "status_port": 15020,
    "concurrency": 2,
}

# Enum values that are the proto default (omitted by protojson).
_ENUM_ZERO = {"NONE", "DISABLE", "UNSPECIFIED", "APP_LABEL_AND_NAMESPACE", "REDIRECT_UNSPECIFIED"}


# ---- text proto -------------------------------------------------------------------------------

_TP_TOKEN = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<punct>[{}\[\]:,;<>])
  | (?P<word>[A-Za-z0-9_.+\-]+)
""", re.X)


def parse_textproto(text):
    """A text-format protobuf message as a dict (repeated fields, when written more than once or
    as [..], become lists). Scalars: str, int, float, bool, and enum names as str."""
    toks = []
    pos = 0
    while pos < len(text):
        m = _TP_TOKEN.match(text, pos)
        if not m:
            raise ValueError("text proto: bad input at %d: %r" % (pos, text[pos:pos + 20]))
        pos = m.end()
        if m.lastgroup != "ws":
            toks.append((m.lastgroup, m.group(m.lastgroup)))
    k = [0]

    def peek():
        return toks[k[0]] if k[0] < len(toks) else (None, None)

    def take():
        t = peek()
        k[0] += 1
        return t

    def scalar(kind, v):
        if kind == "str":
            s = v[1:-1]
            return bytes(s, "utf-8").decode("unicode_escape") if "\\" in s else s
        if v in ("true", "True"):
            return True
        if v in ("false", "False"):
            return False
        try:
            return int(v, 0)
        except ValueError:
            pass
        try:
            return float(v)
        except ValueError:
            return v  # enum name

    def value():
        kind, v = take()
        if v in ("{", "<"):
            return message("}" if v == "{" else ">")
        if v == "[":
            out = []
            while peek()[1] != "]":
                out.append(value())
                if peek()[1] == ",":
                    take()
            take()
            return out
        if kind == "str":
            s = scalar(kind, v)
            while peek()[0] == "str":  # adjacent string literals concatenate
                s += scalar(*take())
            return s
        return scalar(kind, v)

    def message(end):
        msg = {}
        while True:
            kind, v = peek()
            if v == end or kind is None:
                take()
                return msg
            if v in (",", ";"):
                take()
                continue
            kind, name = take()
            if peek()[1] == ":":
                take()
            val = value()
            if name in msg:
                if not isinstance(msg[name], list) or isinstance(val, list):
                    msg[name] = [msg[name]] if not isinstance(msg[name], list) else msg[name]
                msg[name] = msg[name] + (val if isinstance(val, list) else [val])
            else:
                msg[name] = val
    return message(None)


def _camel(name):
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def _go_name(name):
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


def _is_duration(v):
    return isinstance(v, dict) and v and set(v) <= {"seconds", "nanos"}


def _duration_json(v):
    s = int(v.get("seconds", 0))
    n = int(v.get("nanos", 0))
    if n == 0:
        return "%ds" % s
    frac = ("%09d" % n).rstrip("0")
    return "%d.%ss" % (s, frac)


# Map fields (string -> string) keep their keys as written.
_MAP_FIELDS = {"proxy_metadata", "runtime_values", "proxy_headers_map"}


def proxy_config_json(pc):
    """protojson of an istio.mesh.v1alpha1.ProxyConfig given as a snake_case dict (zero values
    omitted, durations as "Ns", enums by name, lowerCamelCase keys)."""
    def conv(v, key=None):
        if _is_duration(v):
            return _duration_json(v)
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if key in _MAP_FIELDS:
                    out[k] = x
                    continue
                c = conv(x, k)
                if c is None or c == "" or c == 0 or c is False or c == [] or \
                        (isinstance(c, str) and c in _ENUM_ZERO) or \
                        (c == {} and not _is_message_presence(k)):
                    continue
                out[_camel(k)] = c
            return out
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return conv(pc)


def _is_message_presence(key):
    # message fields that protojson prints even when empty (they are set)
    return key in ("tracing", "zipkin", "lightstep", "datadog", "stackdriver", "envoy_metrics_service",
                   "envoy_access_log_service", "proxy_stats_matcher", "connection_settings")


class _GoStruct:
    """The ProxyConfig as the template sees it (.config.ProxyAdminPort): Go field names, zero
    values for unset fields."""

    _ints = {"ProxyAdminPort", "StatusPort", "Concurrency", "StatNameLength"}

    def __init__(self, d):
        self._d = {_go_name(k): v for k, v in d.items()}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._d:
            v = self._d[name]
            return _GoStruct(v) if isinstance(v, dict) and not _is_duration(v) else v
        return 0 if name in self._ints else ""

    def __bool__(self):
        return True


# ---- node metadata (GetNodeMetaData) ----------------------------------------------------------

# Typed BootstrapNodeMetadata fields: JSON name -> kind (istio pkg/model/proxy.go).
_TYPED = {
    "NAME": "str", "OWNER": "str", "PILOT_SAN": "list", "OUTLIER_LOG_PATH": "str",
    "APP_CONTAINERS": "str", "ISTIO_PROXY_SHA": "str", "PROXY_CONFIG": "obj",
    "ISTIO_VERSION": "str", "ISTIO_REVISION": "str", "LABELS": "map", "STATIC_LABELS": "map",
    "ANNOTATIONS": "map", "INSTANCE_IPS": "strlist", "NAMESPACE": "str", "NODE_NAME": "str",
    "WORKLOAD_NAME": "str", "INTERCEPTION_MODE": "str", "SERVICE_ACCOUNT": "str",
    "HTTP_PROXY_PORT": "str", "MESH_ID": "str", "CLUSTER_ID": "str", "NETWORK": "str",
    "REQUESTED_NETWORK_VIEW": "strlist", "POD_PORTS": "str",
    "TLS_SERVER_CERT_CHAIN": "str", "TLS_SERVER_KEY": "str", "TLS_SERVER_ROOT_CERT": "str",
    "TLS_CLIENT_CERT_CHAIN": "str", "TLS_CLIENT_KEY": "str", "TLS_CLIENT_ROOT_CERT": "str",
    "BASE": "str", "IDLE_TIMEOUT": "str", "HTTP10": "str", "GENERATOR": "str",
    "ENABLE_SELF_DISCOVERY": "bool", "DNS_CAPTURE": "bool", "DNS_AUTO_ALLOCATE": "bool",
    "DNS_PROXY_ADDR": "str", "ENABLE_HBONE": "bool", "DISABLE_HBONE_SEND": "bool",
    "AUTO_REGISTER_GROUP": "str", "WORKLOAD_ENTRY": "str", "UNPRIVILEGED_POD": "str",
    "PLATFORM_METADATA": "map", "STS_PORT": "str", "ENVOY_STATUS_PORT": "int",
    "ENVOY_PROMETHEUS_PORT": "int", "ENVOY_SECURE_METRICS_PORT": "int",
    "ENVOY_SECURE_MERGED_METRICS_PORT": "int", "EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "bool",
    "INBOUND_LISTENER_EXACT_BALANCE": "bool", "OUTBOUND_LISTENER_EXACT_BALANCE": "bool",
    "CLOUDRUN_ADDR": "str", "METADATA_DISCOVERY": "optbool", "ENVOY_SKIP_DEPRECATED_LOGS": "bool",
    "WORKLOAD_IDENTITY_SOCKET_FILE": "str",
}


def _strbool(v):
    if isinstance(v, bool):
        return v
    return str(v).lower() in ("1", "t", "true")


def parse_downward_api(text):
    """ParseDownwardAPI: lines key="quoted value" (Go %q)."""
    out = {}
    for line in text.split("\n"):
        if "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k] = json.loads(v)
    return out


def format_downward_api(m):
    """The kubelet's format for labels/annotations files (key=%q lines, sorted)."""
    return "\n".join("%s=%s" % (k, json.dumps(m[k])) for k in sorted(m)) + ("\n" if m else "")


class Node:
    def __init__(self, id, meta, raw, locality):
        self.id = id
        self.meta = meta    # typed fields (dict, JSON names)
        self.raw = raw      # untyped metadata
        self.locality = locality  # (region, zone, subzone)


def get_node_metadata(node_id, envs, proxy_config, instance_ips=(), pilot_san=(),
                      outlier_log_path="", status_port=15021, prometheus_port=15090,
                      secure_metrics_port=0, secure_merged_metrics_port=0,
                      exit_on_zero_active_connections=False, metadata_discovery=None,
                      skip_deprecated_logs=False, workload_identity_socket_file="socket",
                      sts_port=0, istio_version="1.20.8", labels_file=None,
                      annotations_file=None, dns_proxy_addr=None):
    """GetNodeMetaData. <envs>: list of "K=V" (order matters as in os.Environ()).
    <labels_file>/<annotations_file>: paths of downward-API files (missing = skipped)."""
    raw = {}
    for k, v in (proxy_config.get("proxy_metadata") or {}).items():
        if k.startswith(ISTIO_META):
            raw[k[len(ISTIO_META):]] = v
    for e in envs:
        if e.startswith(ISTIO_META) and "=" in e[len(ISTIO_META):]:
            k, v = e[len(ISTIO_META):].split("=", 1)
            raw[k] = v
    for e in envs:
        if e.startswith(ISTIO_METAJSON) and "=" in e[len(ISTIO_METAJSON):]:
            _, v = e[len(ISTIO_METAJSON):].split("=", 1)
            try:
                d = json.loads(v)
                if isinstance(d, dict):
                    raw.update(d)
            except ValueError:
                pass
    if dns_proxy_addr:
        raw["DNS_PROXY_ADDR"] = dns_proxy_addr

    meta = {}
    for k, v in raw.items():
        kind = _TYPED.get(k)
        if kind is None:
            continue
        if kind in ("bool", "optbool"):
            meta[k] = _strbool(v)
        elif kind == "strlist":
            meta[k] = [x for x in v.split(",")] if isinstance(v, str) else list(v)
        elif kind == "int":
            if isinstance(v, int):
                meta[k] = v
        elif kind == "obj":
            continue
        else:
            meta[k] = v
    if not meta.get("ISTIO_VERSION"):
        meta["ISTIO_VERSION"] = istio_version
    seen = []
    for ip in instance_ips:
        if ip not in seen:
            seen.append(ip)
    meta["INSTANCE_IPS"] = seen
    if sts_port:
        meta["STS_PORT"] = str(sts_port)
    meta["ENVOY_STATUS_PORT"] = status_port
    meta["ENVOY_PROMETHEUS_PORT"] = prometheus_port
    meta["ENVOY_SECURE_METRICS_PORT"] = secure_metrics_port
    meta["ENVOY_SECURE_MERGED_METRICS_PORT"] = secure_merged_metrics_port
    meta["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"] = bool(exit_on_zero_active_connections)
    meta["METADATA_DISCOVERY"] = None if metadata_discovery is None else bool(metadata_discovery)
    meta["ENVOY_SKIP_DEPRECATED_LOGS"] = bool(skip_deprecated_logs)
    meta["WORKLOAD_IDENTITY_SOCKET_FILE"] = workload_identity_socket_file
    meta["PROXY_CONFIG"] = proxy_config

    # extractAttributesMetadata
    for e in envs:
        name, _, val = e.partition("=")
        if name == "ISTIO_METAJSON_LABELS":
            try:
                m = json.loads(val)
            except ValueError:
                m = None
            if m:
                meta["LABELS"] = m
                meta["STATIC_LABELS"] = m  # the same map object, as in Go
        elif name == "POD_NAME":
            meta["NAME"] = val
        elif name == "POD_NAMESPACE":
            meta["NAMESPACE"] = val
        elif name == "SERVICE_ACCOUNT":
            meta["SERVICE_ACCOUNT"] = val

    if labels_file and os.path.exists(labels_file):
        with open(labels_file) as f:
            lbls = parse_downward_api(f.read())
        labels = dict(meta.get("STATIC_LABELS") or {})
        for k, v in lbls.items():
            if k != "pod-template-hash":
                labels[k] = v
        meta["LABELS"] = labels
    if annotations_file and os.path.exists(annotations_file):
        with open(annotations_file) as f:
            annos = parse_downward_api(f.read())
        a = meta.setdefault("ANNOTATIONS", {})
        a.update(annos)

    labels = meta.get("LABELS") or {}
    loc = labels.get(TOPOLOGY_LOCALITY_LABEL, labels.get(LOCALITY_LABEL, ""))
    locality = ("", "", "")
    if loc:
        if "/" not in loc:
            loc = loc.replace(".", "/")
        meta["LABELS"][LOCALITY_LABEL] = loc
        items = loc.split("/")
        locality = (items + ["", "", ""])[:3]

    meta["PILOT_SAN"] = list(pilot_san)
    meta["OUTLIER_LOG_PATH"] = outlier_log_path
    if meta["METADATA_DISCOVERY"] is None:
        meta["METADATA_DISCOVERY"] = bool(meta.get("ENABLE_HBONE", False))
    return Node(node_id, meta, raw, tuple(locality))


def metadata_json(node):
    """marshalMetadata: the typed fields (omitempty) plus untyped keys not among them."""
    out = {}
    for k, v in node.meta.items():
        kind = _TYPED.get(k)
        if kind == "obj":
            v = proxy_config_json(v)
            if v is not None:
                out[k] = v
            continue
        if kind == "optbool":
            if v is not None:
                out[k] = "true" if v else "false"
            continue
        if kind == "bool":
            if v:
                out[k] = "true"
            continue
        if kind == "strlist":
            if v:
                out[k] = ",".join(v)
            continue
        if v in (None, "", 0, [], {}) and v is not False:
            continue
        out[k] = v
    for k, v in node.raw.items():
        if k not in out:
            out[k] = v
    return go_json(dict(sorted(out.items())))


# ---- template parameters (toTemplateParams) ---------------------------------------------------

def _address(addr):
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if host == "$(HOST_IP)" and os.environ.get("HOST_IP"):
        host = os.environ["HOST_IP"]
    return '{"address": "%s", "port_value": %s}' % (host, port)


def _sds_config(name):
    cfg = {"name": name, "sds_config": {
        "api_config_source": {
            "api_type": "GRPC", "set_node_on_first_message_only": True,
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]},
        "resource_api_version": "V3"}}
    if name in ("default", "ROOTCA"):
        cfg["sds_config"]["initial_fetch_timeout"] = "0s"
    return cfg


def _transport_socket(tls, sni_name, meta, is_h2):
    """transportSocketConverter: ClientTLSSettings -> UpstreamTlsContext transport socket JSON."""
    if not tls:
        return ""
    mode = tls.get("mode", "DISABLE")
    ctx = {"common_tls_context": {}}
    common = ctx["common_tls_context"]
    sans = [{"exact": s} for s in (tls.get("subject_alt_names") or [])]
    dvc = {"match_subject_alt_names": sans} if sans else {}
    if mode == "SIMPLE":
        ca = meta.get("TLS_CLIENT_ROOT_CERT") or tls.get("ca_certificates", "")
        cvc = {"default_validation_context": dvc}
        if ca:
            cvc["validation_context_sds_secret_config"] = _sds_config("file-root:" + ca)
        common["combined_validation_context"] = cvc
        common["alpn_protocols"] = ["h2"]
        if tls.get("sni"):
            ctx["sni"] = tls["sni"]
    elif mode == "MUTUAL":
        cert = meta.get("TLS_CLIENT_CERT_CHAIN") or tls.get("client_certificate", "")
        key = meta.get("TLS_CLIENT_KEY") or tls.get("private_key", "")
        ca = meta.get("TLS_CLIENT_ROOT_CERT") or tls.get("ca_certificates", "")
        if cert and key:
            common["tls_certificate_sds_secret_configs"] = [
                _sds_config("file-cert:%s~%s" % (cert, key))]
        cvc = {"default_validation_context": dvc}
        if ca:
            cvc["validation_context_sds_secret_config"] = _sds_config("file-root:" + ca)
        common["combined_validation_context"] = cvc
        common["alpn_protocols"] = ["h2"]
        if tls.get("sni"):
            ctx["sni"] = tls["sni"]
    elif mode == "ISTIO_MUTUAL":
        common["tls_certificate_sds_secret_configs"] = [_sds_config("default")]
        common["combined_validation_context"] = {
            "default_validation_context": dvc,
            "validation_context_sds_secret_config": _sds_config("ROOTCA")}
        common["alpn_protocols"] = ["istio", "h2"]
        ctx["sni"] = tls.get("sni") or sni_name
    else:
        return ""
    if not is_h2:
        common.pop("alpn_protocols", None)
    ctx = dict({"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                         "UpstreamTlsContext"}, **ctx)
    return go_json({"name": "envoy.transport_sockets.tls", "typed_config": ctx})


def _keepalive(ka):
    if not ka:
        return None
    o = {}
    if ka.get("probes"):
        o["keepalive_probes"] = ka["probes"]
    if ka.get("time", {}).get("seconds"):
        o["keepalive_time"] = ka["time"]["seconds"]
    if ka.get("interval", {}).get("seconds"):
        o["keepalive_interval"] = ka["interval"]["seconds"]
    return go_json({"tcp_keepalive": o})


def _split_opt(anno, required, pc_opt, ips):
    if anno:
        opt = anno.split(",")
    elif pc_opt is not None:
        opt = list(pc_opt)
    else:
        opt = []
    if required:
        opt += required.split(",")
    out = []
    for p in opt:
        if "{pod_ip}" not in p:
            out.append(p)
            continue
        for ip in ips:
            out.append(p.replace("{pod_ip}", ip))
    return out


def _parse_go_duration(s):
    m = re.fullmatch(r"((?:\d+(?:\.\d*)?(?:ns|us|µs|ms|s|m|h))+)", s.strip())
    if not m:
        raise ValueError(s)
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)", s):
        total += float(num) * units[unit]
    return total


def _go_duration_string(sec):
    # time.Duration.String() for whole seconds / minutes / hours (what the annotation gives)
    sec = float(sec)
    if sec == 0:
        return "0s"
    h, rem = divmod(sec, 3600)
    m, s = divmod(rem, 60)
    out = ""
    if h:
        out += "%dh" % h
    if h or m:
        out += "%dm" % m
    out += ("%g" % s) + "s"
    return out


def stats_options(meta):
    params = {}
    ips = meta.get("INSTANCE_IPS") or []
    pc = meta.get("PROXY_CONFIG") or {}
    annos = meta.get("ANNOTATIONS") or {}
    psm = pc.get("proxy_stats_matcher") or {}
    tags = [t for t in (pc.get("extra_stat_tags") or []) if t]
    tags += [t for t in annos.get("sidecar.istio.io/extraStatTags", "").split(",") if t]
    dedup = []
    for t in tags:
        if t not in dedup:
            dedup.append(t)
    suffixes = REQUIRED_SUFFIXES if meta.get("EXIT_ON_ZERO_ACTIVE_CONNECTIONS") else RBAC_SUFFIXES
    for name, anno, req, pco in (
            ("inclusionPrefix", "sidecar.istio.io/statsInclusionPrefixes", REQUIRED_PREFIXES,
             psm.get("inclusion_prefixes")),
            ("inclusionSuffix", "sidecar.istio.io/statsInclusionSuffixes", suffixes,
             psm.get("inclusion_suffixes")),
            ("inclusionRegexps", "sidecar.istio.io/statsInclusionRegexps", REQUIRED_REGEXES,
             psm.get("inclusion_regexps"))):
        v = _split_opt(annos.get(anno, ""), req, pco, ips)
        if v:
            params[name] = v
    if dedup:
        params["extraStatTags"] = dedup
    buckets = None
    if "sidecar.istio.io/statsHistogramBuckets" in annos:
        try:
            js = json.loads(annos["sidecar.istio.io/statsHistogramBuckets"])
            buckets = [{"match": {"prefix": k}, "buckets": js[k]} for k in sorted(js)]
        except ValueError:
            buckets = None
    params["histogram_buckets"] = buckets
    flush = 5.0
    if "sidecar.istio.io/statsFlushInterval" in annos:
        try:
            flush = _parse_go_duration(annos["sidecar.istio.io/statsFlushInterval"])
            params["stats_flush_interval"] = _go_duration_string(flush)
        except ValueError:
            pass
    if "sidecar.istio.io/statsEvictionInterval" in annos:
        try:
            ev = _parse_go_duration(annos["sidecar.istio.io/statsEvictionInterval"])
            if ev % flush == 0:
                params["stats_eviction_interval"] = "%ds" % int(ev)
        except ValueError:
            pass
    return params


def runtime_flags(pc, compliance_policy="", strip_fragment=True):
    flags = {
        "re2.max_program_size.error_level": "32768",
        "envoy.deprecated_features:envoy.config.listener.v3.Listener."
        "hidden_envoy_deprecated_use_original_dst": True,
        "envoy.reloadable_features.http_reject_path_with_fragment": False,
        "envoy.reloadable_features.fixed_heap_use_allocated": True,
        "envoy.reloadable_features.coalesce_lb_rebuilds_on_batch_update": False,
    }
    if compliance_policy == "fips-140-2":
        flags["envoy.reloadable_features.google_grpc_disable_tls_13"] = True
    if not strip_fragment:
        flags["envoy.reloadable_features.http_strip_fragment_from_path_unsafe_if_disabled"] = \
            "false"
    for k, v in (pc.get("runtime_values") or {}).items():
        if v == "":
            flags.pop(k, None)
        elif v in ("true", "false"):
            flags[k] = v == "true"
        else:
            flags[k] = v
    return flags


def service_cluster(meta):
    pc = meta.get("PROXY_CONFIG") or {}
    labels = meta.get("LABELS") or {}
    ns = meta.get("NAMESPACE", "")

    def or_default(name):
        if name and name != "istio-proxy":
            return name
        for k in ("app", "app.kubernetes.io/name", CANONICAL_NAME_LABEL):
            if k in labels:
                return labels[k] + "." + ns
        if meta.get("WORKLOAD_NAME"):
            return meta["WORKLOAD_NAME"] + "." + ns
        if ns:
            return "istio-proxy." + ns
        return "istio-proxy"
    if "service_cluster" in pc:
        return or_default(pc["service_cluster"])
    tsn = pc.get("tracing_service_name")
    if tsn in ("CANONICAL_NAME_ONLY", "CANONICAL_NAME_AND_NAMESPACE"):
        wl = meta.get("WORKLOAD_NAME") or "istio-proxy"
        cs = labels.get(CANONICAL_NAME_LABEL) or labels.get("app.kubernetes.io/name") or \
            labels.get("app") or wl
        if tsn == "CANONICAL_NAME_AND_NAMESPACE" and ns:
            return cs + "." + ns
        return or_default(cs)
    return or_default("istio-proxy")


def _all_family(ips, v6):
    import ipaddress
    for ip in ips:
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if (a.version == 6) != v6:
            return False
    return True


def template_params(node, log_json=False, compliance_policy="", delta_xds=True,
                    enable_dual_stack=False, envoy_status_port_proxy_protocol=False):
    meta = node.meta
    pc = meta.get("PROXY_CONFIG") or {}
    p = {}
    xds_type = "DELTA_GRPC" if delta_xds else "GRPC"
    md = bool(meta.get("METADATA_DISCOVERY"))
    if node.id.startswith("waypoint~"):
        xds_type = "DELTA_GRPC"
        md = True
    if md and xds_type == "GRPC":
        md = False
    p["nodeID"] = node.id
    p["nodeType"] = node.id.split("~")[0]
    p["pilot_SAN"] = "[" + ",".join('{"exact":"%s"}' % s for s in meta.get("PILOT_SAN") or []) + "]"
    if meta.get("OUTLIER_LOG_PATH"):
        p["outlier_log_path"] = meta["OUTLIER_LOG_PATH"]
    if "CREDENTIAL_FILE" in node.raw or "FILE_MOUNTED_CERTS" in node.raw:
        p["custom_file_path"] = "./var/run/secrets/credential-uds/files-socket"
    p["log_json"] = bool(log_json)
    p["discovery_host"] = pc.get("discovery_address", "").split(":")[0]
    p["metadata"] = meta
    p["xds_type"] = xds_type
    p["metadata_discovery"] = md
    p["metrics_localhost_access_only"] = \
        (pc.get("proxy_metadata") or {}).get("METRICS_LOCALHOST_ACCESS_ONLY") == "true"
    if meta.get("ENVOY_SECURE_METRICS_PORT"):
        p["secure_metrics_port"] = meta["ENVOY_SECURE_METRICS_PORT"]
    if meta.get("ENVOY_SECURE_MERGED_METRICS_PORT"):
        p["secure_merged_metrics_port"] = meta["ENVOY_SECURE_MERGED_METRICS_PORT"]
    p["workload_identity_socket_file"] = meta.get("WORKLOAD_IDENTITY_SOCKET_FILE", "")
    # getNodeMetadataOptions
    region, zone, subzone = node.locality
    if region:
        p["region"] = region
    if zone:
        p["zone"] = zone
    if subzone:
        p["sub_zone"] = subzone
    p.update(stats_options(meta))
    p["meta_json_str"] = metadata_json(node)
    p["runtime_flags"] = go_json(dict(sorted(runtime_flags(pc, compliance_policy).items())))
    p["envoy_status_port"] = meta.get("ENVOY_STATUS_PORT", 0)
    p["envoy_prometheus_port"] = meta.get("ENVOY_PROMETHEUS_PORT", 0)
    gdmc = 2147483647
    cs = (pc.get("connection_settings") or {}).get("global_downstream_connection_limit")
    if isinstance(cs, dict):
        cs = cs.get("value")
    pmeta = pc.get("proxy_metadata") or {}
    if cs and int(cs) > 0:
        gdmc = int(cs)
    elif GLOBAL_DOWNSTREAM_MAX_CONNECTIONS in pmeta and \
            re.fullmatch(r"[+-]?\d+", pmeta[GLOBAL_DOWNSTREAM_MAX_CONNECTIONS]):
        gdmc = int(pmeta[GLOBAL_DOWNSTREAM_MAX_CONNECTIONS])
    else:
        rv = (pc.get("runtime_values") or {}).get("overload.global_downstream_max_connections")
        if rv and re.fullmatch(r"[+-]?\d+", rv):
            gdmc = int(rv)
    p["global_downstream_max_connections"] = gdmc
    # IP family
    ips = meta.get("INSTANCE_IPS") or []
    if _all_family(ips, False):
        p.update(localhost="127.0.0.1", wildcard="0.0.0.0", dns_lookup_family="V4_ONLY")
    elif _all_family(ips, True):
        p.update(localhost="::1", wildcard="::", dns_lookup_family="V6_ONLY")
    elif enable_dual_stack:
        import ipaddress
        first6 = ipaddress.ip_address(ips[0]).version == 6
        p.update(localhost="::1" if first6 else "127.0.0.1",
                 additional_localhost="127.0.0.1" if first6 else "::1",
                 wildcard="::" if first6 else "0.0.0.0",
                 additional_wildcard="0.0.0.0" if first6 else "::",
                 dns_lookup_family="ALL", dual_stack=True)
    else:
        p.update(localhost="127.0.0.1", wildcard="0.0.0.0", dns_lookup_family="V4_ONLY")
    if envoy_status_port_proxy_protocol:
        p["envoy_status_port_enable_proxy_protocol"] = True
    if meta.get("ENABLE_SELF_DISCOVERY"):
        p["enable_self_discovery"] = True
    # getProxyConfigOptions
    p["config"] = _GoStruct(pc)
    p["cluster"] = service_cluster(meta)
    if pc.get("discovery_address"):
        p["pilot_grpc_address"] = _address(pc["discovery_address"])
    p["discovery_address"] = pc.get("discovery_address", "")
    if pc.get("statsd_udp_address"):
        p["statsd"] = _address(pc["statsd_udp_address"])
    p["xds_root_cert"] = ""
    tracing = pc.get("tracing")
    if tracing is not None:
        is_h2 = False
        if (tracing.get("zipkin") or {}).get("address"):
            p["zipkin"] = _address(tracing["zipkin"]["address"])
        elif "lightstep" in tracing:
            is_h2 = True
            ls = tracing["lightstep"]
            if ls.get("address"):
                p["lightstep"] = _address(ls["address"])
            p["lightstepToken"] = os.path.join(pc.get("config_path", ""),
                                               "lightstep_access_token.txt")
        elif (tracing.get("datadog") or {}).get("address"):
            p["datadog"] = _address(tracing["datadog"]["address"])
        elif "stackdriver" in tracing:
            raise ValueError("stackdriver tracing needs GCP platform metadata (not supported)")
        ts = _transport_socket(tracing.get("tls_settings"), "tracer", meta, is_h2)
        if ts:
            p["tracing_tls"] = ts
    if (not _remote_service(p, pc.get("envoy_metrics_service"), "envoy_metrics_service", meta)
            and pc.get("envoy_metrics_service_address")):
        p["envoy_metrics_service_address"] = _address(pc["envoy_metrics_service_address"])
    sc = pc.get("stats_compression")
    if isinstance(sc, dict):
        sc = sc.get("value", False)
    p["envoy_metrics_stats_compression"] = True if sc is None else bool(sc)
    _remote_service(p, pc.get("envoy_access_log_service"), "envoy_accesslog_service", meta)
    if isinstance(node.raw.get("LOAD_STATS_CONFIG_JSON"), str):
        p["load_stats_config_json_str"] = node.raw["LOAD_STATS_CONFIG_JSON"]
    return p


def _remote_service(p, svc, key, meta):
    """ProxyConfig's RemoteService <svc> (metrics or access-log service) into the template
    values <key>_address, <key>_tls (cluster <key>), <key>_tcp_keepalive; False when it has no
    address."""
    svc = svc or {}
    if not svc.get("address"):
        return False
    p[key + "_address"] = _address(svc["address"])
    ts = _transport_socket(svc.get("tls_settings"), key, meta, True)
    if ts:
        p[key + "_tls"] = ts
    ka = _keepalive(svc.get("tcp_keepalive"))
    if ka:
        p[key + "_tcp_keepalive"] = ka
    return True


def render(template_text, node, **kw):
    """The bootstrap text for <node> (a Node from get_node_metadata)."""
    return Template(template_text).execute(template_params(node, **kw))


def load_proxy_config(src):
    """ProxyConfig from a text proto string / file path / dict (snake_case keys)."""
    if src is None:
        return {}
    if isinstance(src, dict):
        return json.loads(json.dumps(src))
    if "\n" not in src and os.path.exists(src):
        with open(src) as f:
            src = f.read()
    return parse_textproto(src)


def merge_proxy_config(base, over):
    """Mesh default ProxyConfig overlaid with a pod's (proxy.istio.io/config): message fields
    merge, scalars and lists replace."""
    out = json.loads(json.dumps(base))
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not _is_duration(v):
            out[k] = merge_proxy_config(out[k], v)
        else:
            out[k] = v
    return out

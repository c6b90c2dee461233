"""A test xDS control plane: ADS (State of the World and Delta) and SDS on gRPC.

Debian packages only: /usr/bin/python3 with python3-grpcio and python3-protobuf (scripts/deps.sh
installs them), protoc (protobuf-compiler). Envoy messages come from a descriptor pool built at
run time from the build tree's preprocessed protos (<build>/envoy-api/proto), so nothing here is
generated or checked in.

Use it as a library inside a test process (the server runs in threads of that process):

    types = Types(build_dir)                       # protoc once, cached in the build dir
    cp = ControlPlane(types)
    cp.resources.load_config_dump(path)            # or cp.resources.set(type_url, msg)
    addr = cp.listen("unix:/tmp/x/xds")            # or "127.0.0.1:0" (returns "127.0.0.1:PORT")
    ...
    cp.wait_for(lambda: cp.acks(TYPE_CDS))          # every request is recorded
    cp.resources.set(...); cp.push()               # push an update to every stream
    cp.kill_streams(); cp.stop(); cp.restart()

Behaviour follows istiod where it matters to a client: SotW responds to a type's first request
and to changed resource names, treats a request with the last nonce and no error as an ACK,
ignores stale nonces, never answers a NACK; Delta tracks what each stream has
(initial_resource_versions, subscribe/unsubscribe) and sends only changes, with
removed_resources. Faults for robustness tests: garbage bytes instead of a response, a server
that never answers (hang), raw (undecodable) resources, killed streams.
"""
import itertools
import os
import subprocess
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import json_format
from google.protobuf import message_factory

TYPE_PREFIX = "type.googleapis.com/"
TYPE_LDS = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
TYPE_CDS = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
TYPE_EDS = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPE_RDS = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
TYPE_SDS = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"
TYPE_ECDS = TYPE_PREFIX + "envoy.config.core.v3.TypedExtensionConfig"
WILDCARD_TYPES = (TYPE_LDS, TYPE_CDS)

ADS_SOTW = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
ADS_DELTA = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
SDS_SOTW = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
SDS_DELTA = "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"
EDS_SOTW = "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints"
EDS_DELTA = "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints"


class Types:
    """Envoy message classes from a descriptor set compiled with protoc from <build>/envoy-api/proto."""

    def __init__(self, build_dir):
        proto_dir = os.path.join(build_dir, "envoy-api", "proto")
        if not os.path.isdir(proto_dir):
            raise RuntimeError("no %s: configure the build first" % proto_dir)
        out = os.path.join(build_dir, "controlplane-descriptors.pb")
        files = []
        newest = 0.0
        for root, _, names in os.walk(proto_dir):
            for n in names:
                if n.endswith(".proto"):
                    p = os.path.join(root, n)
                    files.append(os.path.relpath(p, proto_dir))
                    newest = max(newest, os.path.getmtime(p))
        if not os.path.exists(out) or os.path.getmtime(out) < newest:
            tmp = out + ".%d.tmp" % os.getpid()
            subprocess.run(["protoc", "-I", proto_dir, "--include_imports",
                            "--descriptor_set_out=" + tmp] + sorted(files), check=True)
            os.replace(tmp, out)
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            fds.ParseFromString(f.read())
        self.pool = descriptor_pool.DescriptorPool()
        for fd in fds.file:
            self.pool.Add(fd)
        self._factory = message_factory.MessageFactory(self.pool)
        self._classes = {}

    def cls(self, full_name):
        c = self._classes.get(full_name)
        if c is None:
            c = self._factory.GetPrototype(self.pool.FindMessageTypeByName(full_name))
            self._classes[full_name] = c
        return c

    def new(self, full_name, **kw):
        return self.cls(full_name)(**kw)

    def parse_json(self, full_name, obj):
        """A message of type <full_name> from a JSON text or an already-parsed dict."""
        m = self.new(full_name)
        if isinstance(obj, (str, bytes)):
            json_format.Parse(obj, m, descriptor_pool=self.pool)
        else:
            json_format.ParseDict(obj, m, descriptor_pool=self.pool)
        return m

    def to_dict(self, msg):
        return json_format.MessageToDict(msg, descriptor_pool=self.pool,
                                         preserving_proto_field_name=True)

    def unpack(self, any_msg):
        m = self.new(any_msg.type_url.split("/")[-1])
        m.ParseFromString(any_msg.value)
        return m

    @staticmethod
    def type_url(msg):
        return TYPE_PREFIX + msg.DESCRIPTOR.full_name


def resource_name(msg):
    for f in ("name", "cluster_name"):
        if f in msg.DESCRIPTOR.fields_by_name:
            return getattr(msg, f)
    return ""


class Resources:
    """The resources served: type URL -> name -> (version, Any type URL, serialized bytes).
    Thread-safe. Every change bumps the global version (istiod's push version)."""

    def __init__(self, types):
        self.types = types
        self.lock = threading.RLock()
        self.by_type = {}
        self.counter = itertools.count(1)
        self.version = "0"

    def _bump(self):
        self.version = str(next(self.counter))
        return self.version

    def set(self, msg, name=None, type_url=None, version=None):
        """Add or replace <msg> (a message). Returns its version."""
        type_url = type_url or Types.type_url(msg)
        name = resource_name(msg) if name is None else name
        return self.set_raw(type_url, name, Types.type_url(msg), msg.SerializeToString(), version)

    def set_raw(self, type_url, name, any_type_url, value, version=None):
        """Serve <value> bytes as the Any of resource <name> (any type URL and bytes: for bad
        input)."""
        with self.lock:
            v = self._bump()
            self.by_type.setdefault(type_url, {})[name] = (version or v, any_type_url, value)
            return version or v

    def remove(self, type_url, name):
        with self.lock:
            self._bump()
            return self.by_type.get(type_url, {}).pop(name, None) is not None

    def snapshot(self, type_url):
        with self.lock:
            return dict(self.by_type.get(type_url, {}))

    def names(self, type_url):
        with self.lock:
            return sorted(self.by_type.get(type_url, {}))

    def load_config_dump(self, path_or_dict):
        """Serve every dynamic resource of an Envoy /config_dump (JSON): active and warming
        listeners and clusters, route configs, endpoints, secrets, ECDS filters. Returns
        {type_url: count}."""
        import json
        d = path_or_dict
        if isinstance(d, str):
            with open(d) as f:
                d = json.load(f)
        counts = {}

        def add(type_url, any_dict):
            if not any_dict:
                return
            a = self.types.parse_json("google.protobuf.Any", any_dict)
            m = self.types.unpack(a)
            self.set_raw(type_url, resource_name(m), a.type_url, a.value)
            counts[type_url] = counts.get(type_url, 0) + 1

        for c in d.get("configs", []):
            t = c.get("@type", "").split("/")[-1]
            if t == "envoy.admin.v3.ClustersConfigDump":
                for e in c.get("dynamic_active_clusters", []) + c.get("dynamic_warming_clusters", []):
                    add(TYPE_CDS, e.get("cluster"))
            elif t == "envoy.admin.v3.ListenersConfigDump":
                for e in c.get("dynamic_listeners", []):
                    st = e.get("active_state") or e.get("warming_state")
                    if st:
                        add(TYPE_LDS, st.get("listener"))
            elif t == "envoy.admin.v3.RoutesConfigDump":
                for e in c.get("dynamic_route_configs", []):
                    add(TYPE_RDS, e.get("route_config"))
            elif t == "envoy.admin.v3.EndpointsConfigDump":
                for e in c.get("dynamic_endpoint_configs", []):
                    add(TYPE_EDS, e.get("endpoint_config"))
            elif t == "envoy.admin.v3.SecretsConfigDump":
                for e in c.get("dynamic_active_secrets", []) + c.get("dynamic_warming_secrets", []):
                    add(TYPE_SDS, e.get("secret"))
            elif t == "envoy.admin.v3.EcdsConfigDump":
                for e in c.get("ecds_filters", []):
                    add(TYPE_ECDS, e.get("ecds_filter"))
        return counts


class _Stream:
    """One server stream: its request reader runs in its own thread and feeds <q>."""

    def __init__(self, cp, method, context):
        self.cp = cp
        self.method = method
        self.delta = method in (ADS_DELTA, SDS_DELTA, EDS_DELTA)
        self.context = context
        self.id = next(cp._stream_ids)
        self.cond = threading.Condition()
        self.events = []  # ("req", bytes) | ("push",) | ("kill", code, msg) | ("end",)
        self.node = None
        # SotW: type -> {"names": [...], "nonce": str}
        # Delta: type -> {"subscribed": set, "wildcard": bool, "has": {name: version}, "nonce": str}
        self.state = {}

    def post(self, ev):
        with self.cond:
            self.events.append(ev)
            self.cond.notify()

    def next_event(self):
        with self.cond:
            while not self.events:
                self.cond.wait(0.2)
                if not self.context.is_active():
                    return ("end",)
            return self.events.pop(0)


class ControlPlane:
    def __init__(self, types):
        self.types = types
        self.resources = Resources(types)
        self.lock = threading.Condition()
        self.requests = []   # every request, decoded into a dict (see _record)
        self.responses = []  # every response sent: dicts
        self.streams = []    # live _Stream objects
        self.stream_count = 0
        self._stream_ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self.servers = []    # (grpc.server, address, creds)
        self.garbage = False  # send garbage bytes instead of the next responses
        self.hang = False     # never respond (requests are still read and recorded)
        self.msg_cls = {
            "DiscoveryRequest": types.cls("envoy.service.discovery.v3.DiscoveryRequest"),
            "DiscoveryResponse": types.cls("envoy.service.discovery.v3.DiscoveryResponse"),
            "DeltaDiscoveryRequest": types.cls("envoy.service.discovery.v3.DeltaDiscoveryRequest"),
            "DeltaDiscoveryResponse": types.cls("envoy.service.discovery.v3.DeltaDiscoveryResponse"),
            "Resource": types.cls("envoy.service.discovery.v3.Resource"),
        }
        self.Any = types.cls("google.protobuf.Any")

    # ---- serving ----------------------------------------------------------------------------

    def listen(self, address, tls=None):
        """Serve on <address> ("unix:/path", "127.0.0.1:0"); <tls> = (key_pem, cert_pem) bytes.
        Returns the address with the real port."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                             handlers=[_Handler(self)],
                             options=[("grpc.max_receive_message_length", 256 << 20),
                                      ("grpc.max_send_message_length", 256 << 20)])
        if address.startswith("unix:"):
            path = address[5:]
            if os.path.exists(path):
                os.unlink(path)
        if tls:
            creds = grpc.ssl_server_credentials([tls])
            port = server.add_secure_port(address, creds)
        else:
            creds = None
            port = server.add_insecure_port(address)
        if not address.startswith("unix:"):
            host = address.rsplit(":", 1)[0]
            address = "%s:%d" % (host, port)
        server.start()
        self.servers.append([server, address, tls])
        return address

    def stop(self):
        """Stop every server (streams end with UNAVAILABLE/CANCELLED on the client)."""
        self.kill_streams()
        for s in self.servers:
            if s[0] is not None:
                s[0].stop(grace=None).wait(5)
                s[0] = None

    def restart(self):
        """Listen again on the addresses stop() closed (same ports)."""
        old = self.servers
        self.servers = []
        for _, address, tls in old:
            self.listen(address, tls)

    def kill_streams(self, code=grpc.StatusCode.UNAVAILABLE, msg="killed by test"):
        with self.lock:
            streams = list(self.streams)
        for s in streams:
            s.post(("kill", code, msg))

    def push(self):
        """Send what changed to every live stream."""
        with self.lock:
            streams = list(self.streams)
        for s in streams:
            s.post(("push",))

    # ---- queries ----------------------------------------------------------------------------

    def wait_for(self, pred, timeout=15.0):
        """Wait until pred() is truthy (checked on every request/response); returns its value
        or raises AssertionError."""
        end = time.time() + timeout
        with self.lock:
            while True:
                v = pred()
                if v:
                    return v
                left = end - time.time()
                if left <= 0:
                    raise AssertionError("control plane: condition not met in %.1fs; last "
                                         "requests: %r" % (timeout, self.requests[-5:]))
                self.lock.wait(min(left, 0.2))

    def reqs(self, type_url=None, **match):
        with self.lock:
            out = []
            for r in self.requests:
                if type_url and r["type_url"] != type_url:
                    continue
                if all(r.get(k) == v for k, v in match.items()):
                    out.append(r)
            return out

    def acks(self, type_url=None):
        return [r for r in self.reqs(type_url) if r["kind"] == "ack"]

    def nacks(self, type_url=None):
        return [r for r in self.reqs(type_url) if r["kind"] == "nack"]

    def sent(self, type_url=None):
        with self.lock:
            return [r for r in self.responses if not type_url or r["type_url"] == type_url]

    # ---- protocol ---------------------------------------------------------------------------

    def _record(self, stream, req):
        if stream.delta:
            r = {
                "stream": stream.id, "delta": True, "type_url": req.type_url,
                "nonce": req.response_nonce,
                "subscribe": list(req.resource_names_subscribe),
                "unsubscribe": list(req.resource_names_unsubscribe),
                "initial_versions": dict(req.initial_resource_versions),
            }
        else:
            r = {
                "stream": stream.id, "delta": False, "type_url": req.type_url,
                "nonce": req.response_nonce, "version_info": req.version_info,
                "names": list(req.resource_names),
            }
        r["has_node"] = req.HasField("node")
        if r["has_node"]:
            r["node_id"] = req.node.id
            r["node_cluster"] = req.node.cluster
            r["user_agent_name"] = req.node.user_agent_name
            stream.node = req.node
        r["error_code"] = req.error_detail.code if req.HasField("error_detail") else None
        r["error_message"] = req.error_detail.message if req.HasField("error_detail") else None
        if r["error_code"] is not None:
            r["kind"] = "nack"
        elif r["nonce"]:
            r["kind"] = "ack"
        else:
            r["kind"] = "request"
        with self.lock:
            self.requests.append(r)
            self.lock.notify_all()
        return r

    def _sotw_response(self, stream, type_url, names):
        snap = self.resources.snapshot(type_url)
        resources = []
        for name in sorted(snap):
            if names and name not in names:
                continue
            _, at, value = snap[name]
            resources.append(self.Any(type_url=at, value=value))
        nonce = str(next(self._nonces))
        resp = self.msg_cls["DiscoveryResponse"](
            version_info=self.resources.version, type_url=type_url, nonce=nonce,
            resources=resources)
        st = stream.state.setdefault(type_url, {})
        st["nonce"] = nonce
        rec = {"stream": stream.id, "type_url": type_url, "nonce": nonce,
               "version_info": resp.version_info,
               "names": [n for n in sorted(snap) if not names or n in names], "removed": []}
        return resp.SerializeToString(), rec

    def _sotw_handle(self, stream, req):
        r = self._record(stream, req)
        t = req.type_url
        st = stream.state.get(t)
        names = list(req.resource_names)
        if r["kind"] == "nack":
            return None
        if st is not None and req.response_nonce and req.response_nonce != st.get("nonce"):
            r["stale"] = True
            return None
        first = st is None or "names" not in st
        changed = not first and sorted(st["names"]) != sorted(names)
        stream.state.setdefault(t, {})["names"] = names
        if not first and not changed:
            return None
        if not names and t not in WILDCARD_TYPES:
            return None
        return self._sotw_response(stream, t, set(names))

    def _delta_response(self, stream, type_url, force=()):
        """Resources the client lacks (or <force>), and removals, for one type; None if
        nothing to send."""
        st = stream.state[type_url]
        snap = self.resources.snapshot(type_url)
        out = []
        removed = []
        for name, (ver, at, value) in sorted(snap.items()):
            if not (st["wildcard"] or name in st["subscribed"]):
                continue
            if st["has"].get(name) == ver and name not in force:
                continue
            out.append(self.msg_cls["Resource"](
                name=name, version=ver, resource=self.Any(type_url=at, value=value)))
            st["has"][name] = ver
        for name in sorted(st["has"]):
            if name not in snap and (st["wildcard"] or name in st["subscribed"]):
                removed.append(name)
        for name in removed:
            del st["has"][name]
        if not out and not removed:
            return None
        nonce = str(next(self._nonces))
        st["nonce"] = nonce
        resp = self.msg_cls["DeltaDiscoveryResponse"](
            system_version_info=self.resources.version, type_url=type_url, nonce=nonce,
            resources=out, removed_resources=removed)
        rec = {"stream": stream.id, "type_url": type_url, "nonce": nonce,
               "version_info": resp.system_version_info, "names": [r.name for r in out],
               "removed": removed}
        return resp.SerializeToString(), rec

    def _delta_handle(self, stream, req):
        r = self._record(stream, req)
        t = req.type_url
        if r["kind"] == "nack":
            return None
        st = stream.state.get(t)
        sub = list(req.resource_names_subscribe)
        unsub = list(req.resource_names_unsubscribe)
        # A type's first request on a stream: what the client has is in initial_resource_versions
        # and only differences are sent; later subscriptions are always answered in full.
        force = set(sub) if st is not None else set()
        if st is None:
            st = stream.state[t] = {
                "subscribed": set(), "has": dict(req.initial_resource_versions),
                "wildcard": (t in WILDCARD_TYPES and not sub) or "*" in sub, "nonce": None}
        elif req.response_nonce and req.response_nonce != st["nonce"]:
            r["stale"] = True
        st["subscribed"].update(n for n in sub if n != "*")
        if "*" in sub:
            st["wildcard"] = True
        for n in unsub:
            if n == "*":
                st["wildcard"] = False
            st["subscribed"].discard(n)
            st["has"].pop(n, None)
        if r["kind"] == "ack" and not sub:
            return None
        return self._delta_response(stream, t, force=force)

    def _push(self, stream):
        out = []
        for t in list(stream.state):
            if stream.delta:
                x = self._delta_response(stream, t)
            else:
                st = stream.state[t]
                names = st.get("names")
                if names is None or (not names and t not in WILDCARD_TYPES):
                    continue
                x = self._sotw_response(stream, t, set(names))
            if x:
                out.append(x)
        return out

    def _serve(self, method, request_iterator, context):
        stream = _Stream(self, method, context)
        with self.lock:
            self.streams.append(stream)
            self.stream_count += 1
            self.lock.notify_all()

        def reader():
            try:
                for b in request_iterator:
                    stream.post(("req", b))
            except Exception:  # the stream ended under us
                pass
            stream.post(("end",))

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        cls = self.msg_cls["DeltaDiscoveryRequest" if stream.delta else "DiscoveryRequest"]
        try:
            while True:
                ev = stream.next_event()
                if ev[0] == "end":
                    return
                if ev[0] == "kill":
                    context.abort(ev[1], ev[2])
                out = []
                if ev[0] == "req":
                    req = cls()
                    req.ParseFromString(ev[1])
                    x = (self._delta_handle if stream.delta else self._sotw_handle)(stream, req)
                    if x:
                        out.append(x)
                elif ev[0] == "push":
                    out = self._push(stream)
                for data, rec in out:
                    if self.hang:
                        continue
                    if self.garbage:
                        data = b"\x0a\xff\xff\xff\xff\x0f garbage"
                        rec = dict(rec, garbage=True)
                    with self.lock:
                        self.responses.append(rec)
                        self.lock.notify_all()
                    yield data
        finally:
            with self.lock:
                if stream in self.streams:
                    self.streams.remove(stream)
                self.lock.notify_all()


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, cp):
        self.cp = cp

    def service(self, details):
        if details.method in (ADS_SOTW, ADS_DELTA, SDS_SOTW, SDS_DELTA, EDS_SOTW, EDS_DELTA):
            method = details.method
            cp = self.cp

            def handler(request_iterator, context):
                return cp._serve(method, request_iterator, context)
            return grpc.stream_stream_rpc_method_handler(handler)
        return None


def make_cert(dirname, name="localhost"):
    """A self-signed certificate for <name> and 127.0.0.1 (openssl); returns (key, cert) paths."""
    key = os.path.join(dirname, "key.pem")
    cert = os.path.join(dirname, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", key, "-out", cert, "-subj", "/CN=" + name,
                    "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % name],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return key, cert


def istio_secrets(types, cert_pem, key_pem, ca_pem):
    """SDS `default` (the workload's certificate and key) and `ROOTCA` (the mesh CA), as
    istio-agent serves them (inline_bytes). PEMs as str or bytes."""
    import base64

    def b64(pem):
        return base64.b64encode(pem.encode() if isinstance(pem, str) else pem).decode()
    secret = "envoy.extensions.transport_sockets.tls.v3.Secret"
    return [types.parse_json(secret, {"name": "default", "tls_certificate": {
                "certificate_chain": {"inline_bytes": b64(cert_pem)},
                "private_key": {"inline_bytes": b64(key_pem)}}}),
            types.parse_json(secret, {"name": "ROOTCA", "validation_context": {
                "trusted_ca": {"inline_bytes": b64(ca_pem)}}})]


def make_istio_secrets(types, tmp, sa):
    """A fresh mesh CA and a SPIFFE leaf for spiffe://cluster.local/ns/default/sa/<sa> made with
    openssl in <tmp> (ca.pem, leaf.pem, leaf.key, ...); istio_secrets() of them."""
    def run(*a):
        subprocess.run(("openssl",) + a, check=True, capture_output=True, timeout=30)

    def p(n):
        return os.path.join(tmp, n)

    def read(n):
        with open(p(n), "rb") as f:
            return f.read()
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2", "-subj", "/O=cluster.local",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    with open(p("ext"), "w") as f:
        f.write("subjectAltName=URI:spiffe://cluster.local/ns/default/sa/%s\n" % sa)
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", p("leaf.key"), "-out", p("leaf.csr"), "-subj", "/O=" + sa)
    run("x509", "-req", "-in", p("leaf.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
        "-CAcreateserial", "-out", p("leaf.pem"), "-days", "2", "-extfile", p("ext"))
    return istio_secrets(types, read("leaf.pem"), read("leaf.key"), read("ca.pem"))


def pipe_cluster(name, path):
    """A bootstrap's STATIC HTTP/2 cluster <name> to this control plane's unix socket <path>
    (xds-grpc, sds-grpc)."""
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"pipe": {"path": path}}}}]}]},
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}}}


def ads_dynamic_resources(api_type="DELTA_GRPC"):
    """A bootstrap's dynamic_resources: LDS and CDS over ADS (<api_type>: DELTA_GRPC or GRPC)
    through cluster xds-grpc."""
    src = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
    return {"lds_config": src, "cds_config": src,
            "ads_config": {"api_type": api_type, "set_node_on_first_message_only": True,
                           "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}}

"""Istio's TCP metadata exchange (istio.metadata_exchange, ALPN istio-peer-exchange), end to end:

- two msm-proxies, as two sidecars: the client's cluster has Istio's UpstreamTlsContext (ALPN
  istio-peer-exchange,istio) and the cluster-level MX filter; the server's listener terminates
  mTLS and runs MX then tcp_proxy. Each records the other's workload (debug log, istio.stats
  labels), and the application bytes arrive intact both ways: the preambles never leak.
- interop with scripted Envoy sidecars written from the wire spec (Python ssl with ALPN
  istio-peer-exchange, and a protobuf encoder/decoder built here from the encoding rules): our
  preamble is byte-identical to the independent deterministic encoding (and to C++ protobuf's,
  via protoc, when installed), and theirs is read and stripped.
- no exchange unless the negotiated ALPN is istio-peer-exchange; peers without the filter; bad
  preambles (wrong magic, not an Any, oversized, truncated) counted as Envoy counts them.

    /usr/bin/python3 test/integration/test_metadata_exchange.py --binary build/msm-proxy
"""
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import unittest

import harness as H

UP = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TD = "spiffe://cluster.local"
SERVER_ID = TD + "/ns/prod/sa/server"
CLIENT_ID = TD + "/ns/default/sa/client"
MX_ALPN = ["istio-peer-exchange", "istio"]
MAGIC = 0x3D230467
STRUCT_URL = "type.googleapis.com/google.protobuf.Struct"

CLIENT_NODE = {
    "id": "sidecar~10.0.0.1~client-5d7c9-abcde.default~default.svc.cluster.local",
    "cluster": "client.default",
    "metadata": {"NAME": "client-5d7c9-abcde", "NAMESPACE": "default",
                 "WORKLOAD_NAME": "client", "CLUSTER_ID": "Kubernetes",
                 "OWNER": "kubernetes://apis/apps/v1/namespaces/default/deployments/client",
                 "ISTIO_VERSION": "1.20.8", "MESH_ID": "cluster.local",
                 "LABELS": {"app": "client", "version": "v1", "pod-template-hash": "5d7c9",
                            "service.istio.io/canonical-name": "client",
                            "service.istio.io/canonical-revision": "v1"}}}
SERVER_NODE = {
    "id": "sidecar~10.0.0.2~server-6f8d-xyz.prod~prod.svc.cluster.local",
    "cluster": "server.prod",
    "locality": {"region": "eu-west1", "zone": "eu-west1-b"},
    "metadata": {"NAME": "server-6f8d-xyz", "NAMESPACE": "prod", "WORKLOAD_NAME": "server",
                 "CLUSTER_ID": "Kubernetes", "ISTIO_VERSION": "1.20.8",
                 "OWNER": "kubernetes://apis/apps/v1/namespaces/prod/deployments/server",
                 "LABELS": {"app.kubernetes.io/name": "server", "app": "srv", "version": "v2",
                            "service.istio.io/canonical-name": "server",
                            "service.istio.io/canonical-revision": "v2"}}}


# ---- the wire format, from the spec (protobuf encoding + struct.proto + Istio's framing) -----

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ld(field, data):
    """A LEN field: tag (field << 3 | 2), length, bytes."""
    return varint(field << 3 | 2) + varint(len(data)) + data


def enc_value(v):
    """google.protobuf.Value: null_value=1, number_value=2, string_value=3, bool_value=4,
    struct_value=5, list_value=6."""
    if isinstance(v, dict):
        return ld(5, enc_struct(v))
    if isinstance(v, list):
        return ld(6, b"".join(ld(1, enc_value(x)) for x in v))
    if isinstance(v, str):
        return ld(3, v.encode())
    if isinstance(v, bool):
        return varint(4 << 3) + varint(int(v))
    if v is None:
        return varint(1 << 3) + varint(0)
    return varint(2 << 3 | 1) + struct.pack("<d", float(v))


def enc_struct(d):
    """google.protobuf.Struct, deterministic: map entries sorted by key (bytewise), each entry
    with both key (1) and value (2)."""
    out = b""
    for k in sorted(d, key=lambda s: s.encode()):
        out += ld(1, ld(1, k.encode()) + ld(2, enc_value(d[k])))
    return out


def preamble(exchange):
    anyb = ld(1, STRUCT_URL.encode()) + ld(2, enc_struct(exchange))
    return struct.pack(">II", MAGIC, len(anyb)) + anyb


class Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def varint(self):
        n, shift = 0, 0
        while True:
            b = self.d[self.i]
            self.i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    def fields(self):
        while self.i < len(self.d):
            tag = self.varint()
            f, wt = tag >> 3, tag & 7
            if wt == 0:
                yield f, wt, self.varint()
            elif wt == 1:
                yield f, wt, self.d[self.i:self.i + 8]
                self.i += 8
            elif wt == 2:
                n = self.varint()
                yield f, wt, self.d[self.i:self.i + n]
                self.i += n
            else:
                raise ValueError("wire type %d" % wt)


def dec_value(b):
    v = None
    for f, _, x in Reader(b).fields():
        v = {1: lambda: None, 2: lambda: struct.unpack("<d", x)[0], 3: lambda: x.decode(),
             4: lambda: bool(x), 5: lambda: dec_struct(x),
             6: lambda: [dec_value(y) for _, _, y in Reader(x).fields()]}[f]()
    return v


def dec_struct(b):
    out = {}
    for _, _, entry in Reader(b).fields():
        k, v = "", None
        for f, _, x in Reader(entry).fields():
            if f == 1:
                k = x.decode()
            else:
                v = dec_value(x)
        out[k] = v
    return out


def dec_any(b):
    url, val = "", b""
    for f, _, x in Reader(b).fields():
        if f == 1:
            url = x.decode()
        elif f == 2:
            val = x
    return url, val


def expected_exchange(node):
    """What Envoy sends for <node> (convertStructToWorkloadMetadata, then
    convertWorkloadMetadataToStruct): the fixed keys only, app/version from the qualified
    labels first, OWNER rebuilt from the workload type, locality as REGION/AVAILABILITY_ZONE."""
    md, labels = node["metadata"], node["metadata"].get("LABELS", {})
    out = {}
    for k in ("NAME", "NAMESPACE", "WORKLOAD_NAME", "CLUSTER_ID", "IDENTITY"):
        if md.get(k):
            out[k] = md[k]
    lab = {}
    for k in ("service.istio.io/canonical-name", "service.istio.io/canonical-revision"):
        if labels.get(k):
            lab[k] = labels[k]
    app = labels.get("app.kubernetes.io/name") or labels.get("app")
    ver = labels.get("app.kubernetes.io/version") or labels.get("version")
    if app:
        lab["app"] = app
    if ver:
        lab["version"] = ver
    out["LABELS"] = lab
    owner = md.get("OWNER", "")
    m = re.search(r"/([a-z]+)s/%s$" % re.escape(md.get("WORKLOAD_NAME", "")), owner)
    if m and m.group(1) in ("pod", "deployment", "job", "cronjob"):
        out["OWNER"] = "kubernetes://apis/apps/v1/namespaces/%s/%ss/%s" % (
            md["NAMESPACE"], m.group(1), md["WORKLOAD_NAME"])
    loc = node.get("locality", {})
    if md.get("REGION") or loc.get("region"):
        out["REGION"] = md.get("REGION") or loc["region"]
    if md.get("AVAILABILITY_ZONE") or loc.get("zone"):
        out["AVAILABILITY_ZONE"] = md.get("AVAILABILITY_ZONE") or loc["zone"]
    return {"x-envoy-peer-metadata": out, "x-envoy-peer-metadata-id": node["id"]}


def protoc_roundtrip(struct_bytes):
    """C++ protobuf's view: decode with protoc, re-encode deterministically; None if no protoc."""
    protoc = shutil.which("protoc")
    inc = "/usr/include"
    if not protoc or not os.path.exists(os.path.join(inc, "google/protobuf/struct.proto")):
        return None
    args = [protoc, "-I" + inc, "google/protobuf/struct.proto"]
    text = subprocess.run(args + ["--decode=google.protobuf.Struct"], input=struct_bytes,
                          capture_output=True, check=True, timeout=30).stdout
    return subprocess.run(args + ["--encode=google.protobuf.Struct", "--deterministic_output"],
                          input=text, capture_output=True, check=True, timeout=30).stdout


def read_preamble(s):
    """Read one preamble from socket <s>: (raw bytes, type_url, Struct bytes)."""
    head = H.recv_exactly(s, 8)
    magic, n = struct.unpack(">II", head)
    if magic != MAGIC:
        raise AssertionError("bad magic %#x (%r)" % (magic, head))
    body = H.recv_exactly(s, n)
    url, val = dec_any(body)
    return head + body, url, val


# ---- certificates (openssl CLI), as test_tls.py ------------------------------------------------

class Pki:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="msmmx-")
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-nodes", "-keyout", self.path("ca.key"), "-out", self.path("ca.pem"),
                  "-days", "2", "-subj", "/O=cluster.local",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _run(self, *args):
        subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)

    def leaf(self, name, san):
        key, csr, pem, ext = (self.path(name + e) for e in (".key", ".csr", ".pem", ".ext"))
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n" % san)
        self._run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", key, "-out", csr, "-subj", "/O=" + name)
        self._run("x509", "-req", "-in", csr, "-CA", self.path("ca.pem"), "-CAkey",
                  self.path("ca.key"), "-CAcreateserial", "-out", pem, "-days", "2",
                  "-extfile", ext)
        return pem, key


PKI = None


def setUpModule():
    global PKI
    if not shutil.which("openssl"):
        raise unittest.SkipTest("openssl CLI not found")
    PKI = Pki()
    PKI.server = PKI.leaf("server", "URI:" + SERVER_ID)
    PKI.client = PKI.leaf("client", "URI:" + CLIENT_ID)


def tearDownModule():
    if PKI:
        shutil.rmtree(PKI.dir, True)


# ---- config -----------------------------------------------------------------------------------

def mx_filter(protocol="istio-peer-exchange"):
    """As istiod 1.20 renders it (TypedStruct), for listeners and for cluster `filters`."""
    return {"name": "istio.metadata_exchange", "typed_config": {
        "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type_url": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
        "value": {"protocol": protocol, "enable_discovery": True}}}


def istio_stats():
    return {"name": "istio.stats",
            "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}}


def certs(pair):
    return [{"certificate_chain": {"filename": pair[0]}, "private_key": {"filename": pair[1]}}]


def server_tls(alpn=("istio-peer-exchange", "h2", "http/1.1")):
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": DOWN, "require_client_certificate": True,
        "common_tls_context": {
            "alpn_protocols": list(alpn), "tls_certificates": certs(PKI.server),
            "validation_context": {"trusted_ca": {"filename": PKI.path("ca.pem")},
                                   "match_subject_alt_names": [{"prefix": TD + "/"}]}}}}


def client_tls(alpn=MX_ALPN):
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": UP, "sni": "outbound_.9000_._.server.prod.svc.cluster.local",
        "common_tls_context": {
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                           "tls_maximum_protocol_version": "TLSv1_3"},
            "alpn_protocols": list(alpn), "tls_certificates": certs(PKI.client),
            "validation_context": {"trusted_ca": {"filename": PKI.path("ca.pem")},
                                   "match_subject_alt_names": [{"exact": SERVER_ID}]}}}}


CLUSTER = "outbound|9000||server.prod.svc.cluster.local"
SVC_MD = {"filter_metadata": {"istio": {"services": [
    {"host": "server.prod.svc.cluster.local", "name": "server", "namespace": "prod"}]}}}


def client_config(upstream_port, alpn=MX_ALPN, with_mx=True, stats=True):
    cl = H.cluster(CLUSTER, [H.sock_addr(upstream_port)], transport_socket=client_tls(alpn),
                   metadata=SVC_MD)
    if with_mx:
        cl["filters"] = [mx_filter()]
    filters = ([istio_stats()] if stats else []) + [H.tcp_proxy_filter(CLUSTER, CLUSTER)]
    return H.bootstrap(
        listeners=[H.listener("main", H.sock_addr(H.free_port()), filters,
                              traffic_direction="OUTBOUND")],
        clusters=[cl], node=CLIENT_NODE)


def server_config(app_port, alpn=("istio-peer-exchange", "h2", "http/1.1"), tls=True,
                  stats=True):
    chain = {"filters": [mx_filter()] + ([istio_stats()] if stats else []) +
             [H.tcp_proxy_filter("inbound|9000||", "inbound|9000||")]}
    if tls:
        chain["transport_socket"] = server_tls(alpn)
    return H.bootstrap(
        listeners=[H.listener("main", H.sock_addr(H.free_port()), chains=[chain],
                              traffic_direction="INBOUND")],
        clusters=[H.cluster("inbound|9000||", [H.sock_addr(app_port)])], node=SERVER_NODE)


DEBUG = ["--component-log-level", "filter:debug"]


# ---- scripted peers -----------------------------------------------------------------------------

class Recorder:
    """A plain TCP application: records every byte it receives; replies with what <reply(data)>
    returns for each chunk (None: echo)."""

    def __init__(self, test, reply=None):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.got = bytearray()
        self.reply = reply
        self.lock = threading.Lock()
        self.conns = []
        threading.Thread(target=self._loop, daemon=True).start()
        test.addCleanup(self.stop)

    def _loop(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    c.shutdown(socket.SHUT_WR)
                    return
                with self.lock:
                    self.got += d
                c.sendall(d if self.reply is None else self.reply(d))
        except OSError:
            pass

    def stop(self):
        self.srv.close()
        for c in self.conns:
            c.close()


class EnvoyServerPeer:
    """A TLS server acting as an Envoy inbound sidecar: ALPN istio-peer-exchange, mTLS. <script>
    runs per connection with the TLS socket and the negotiated ALPN."""

    def __init__(self, test, script, alpn=MX_ALPN):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*PKI.server)
        ctx.load_verify_locations(PKI.path("ca.pem"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(list(alpn))
        self.ctx = ctx
        self.script = script
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.errors = []
        self.done = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()
        test.addCleanup(self.srv.close)

    def _loop(self):
        try:
            raw, _ = self.srv.accept()
        except OSError:
            return
        raw.settimeout(H.IO_TIMEOUT)
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
            self.script(s, s.selected_alpn_protocol())
            s.close()
        except Exception as e:  # reported by the test thread
            self.errors.append(e)
            raw.close()
        finally:
            self.done.set()

    def wait(self):
        self.done.wait(H.IO_TIMEOUT)
        if self.errors:
            raise self.errors[0]


def envoy_client(port, alpn=MX_ALPN):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(PKI.path("ca.pem"))
    ctx.load_cert_chain(*PKI.client)
    ctx.set_alpn_protocols(list(alpn))
    raw = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname="server.prod")


# ---- tests --------------------------------------------------------------------------------------

class MetadataExchangeTest(H.ProxyTestCase):

    def prom(self, p):
        st, body = p.get("/stats/prometheus")
        self.assertEqual(st, 200)
        return body

    def test_two_sidecars(self):
        """Client sidecar -> server sidecar over mTLS with istio-peer-exchange: both learn the
        other's workload; the application sees exactly the application's bytes."""
        app = Recorder(self, reply=lambda d: d.upper())
        srv = self.start_proxy(lambda: server_config(app.port), args=DEBUG)
        cli = self.start_proxy(lambda: client_config(srv.listener_port()), args=DEBUG)
        s = self.connect(cli)
        sent = b""
        for chunk in (b"hello", b"x" * 70000, b"\x3d\x23\x04\x67 magic-looking app bytes"):
            s.sendall(chunk)
            self.assertEqual(H.recv_exactly(s, len(chunk)), chunk.upper())
            sent += chunk
        self.assertEqual(bytes(app.got), sent)  # the server app never saw a preamble
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(H.recv_until_eof(s), b"")
        for p in (cli, srv):
            p.wait_stat("metadata_exchange.alpn_protocol_found", lambda v: v == 1)
            st = p.stats()
            self.assertEqual(st["metadata_exchange.metadata_added"], 1)
            self.assertEqual(st["metadata_exchange.alpn_protocol_not_found"], 0)
            self.assertEqual(st["metadata_exchange.header_not_found"], 0)
        # Each side recorded the other's workload.
        H.wait_for(lambda: "(downstream): peer WORKLOAD_NAME=client" in srv.read_stderr(),
                   what="server learnt the client")
        self.assertRegex(srv.read_stderr(), r"\(downstream\): peer WORKLOAD_NAME=client "
                         r"NAMESPACE=default CLUSTER_ID=Kubernetes app=client version=v1 "
                         r"id=sidecar~10\.0\.0\.1~client")
        self.assertRegex(cli.read_stderr(), r"\(upstream\): peer WORKLOAD_NAME=server "
                         r"NAMESPACE=prod CLUSTER_ID=Kubernetes app=server version=v2 "
                         r"id=sidecar~10\.0\.0\.2~server")
        # istio.stats labels the connection with the peer (reported at close at the latest): the
        # source_* labels on the server, the destination_* labels on the client.
        s.close()
        H.wait_for(lambda: "istio_tcp_connections_closed_total{" in self.prom(srv) and
                   "istio_tcp_connections_closed_total{" in self.prom(cli), what="istio series")
        body = "\n".join(l for l in self.prom(srv).splitlines() if l.startswith("istio_tcp"))
        self.assertRegex(body, r'istio_tcp_connections_opened_total\{reporter="destination",'
                         r'source_workload="client",source_canonical_service="client",'
                         r'source_canonical_revision="v1",source_workload_namespace="default",'
                         r'source_principal="%s",source_app="client",source_version="v1",'
                         r'source_cluster="Kubernetes",destination_workload="server",'
                         % re.escape(CLIENT_ID))
        self.assertIn('destination_principal="%s"' % SERVER_ID, body)
        body = "\n".join(l for l in self.prom(cli).splitlines() if l.startswith("istio_tcp"))
        self.assertRegex(body, r'istio_tcp_connections_opened_total\{reporter="source",'
                         r'source_workload="client",.*destination_workload="server",'
                         r'destination_workload_namespace="prod",destination_principal="%s",'
                         r'destination_app="server",destination_version="v2",'
                         % re.escape(SERVER_ID))
        # Client side: the principals come from the upstream handshake (peer's and our SAN).
        self.assertIn('source_principal="%s"' % CLIENT_ID, body)

    def test_interop_envoy_server(self):
        """Our client sidecar against a scripted Envoy server sidecar: our preamble is exactly
        the spec's deterministic encoding, theirs is stripped, the app bytes are intact."""
        want = expected_exchange(CLIENT_NODE)
        seen = {}

        def script(s, alpn):
            seen["alpn"] = alpn
            raw, url, val = read_preamble(s)
            seen.update(raw=raw, url=url, val=val)
            data = H.recv_exactly(s, 4)
            s.sendall(preamble(expected_exchange(SERVER_NODE)) + b"pong:" + data)
            s.recv(1)  # until the proxy closes

        peer = EnvoyServerPeer(self, script)
        cli = self.start_proxy(lambda: client_config(peer.port), args=DEBUG)
        s = self.connect(cli)
        s.sendall(b"ping")
        self.assertEqual(H.recv_exactly(s, 9), b"pong:ping")
        s.close()
        peer.wait()
        self.assertEqual(seen["alpn"], "istio-peer-exchange")
        self.assertEqual(seen["url"], STRUCT_URL)
        self.assertEqual(dec_struct(seen["val"]), want)
        self.assertEqual(seen["raw"], preamble(want))  # byte for byte
        cxx = protoc_roundtrip(seen["val"])
        if cxx is not None:
            self.assertEqual(cxx, seen["val"])  # C++ protobuf's deterministic bytes
        H.wait_for(lambda: "(upstream): peer WORKLOAD_NAME=server NAMESPACE=prod"
                   in cli.read_stderr(), what="client learnt the server")
        st = cli.stats()
        self.assertEqual(st["metadata_exchange.alpn_protocol_found"], 1)
        self.assertEqual(st["metadata_exchange.header_not_found"], 0)

    def test_interop_envoy_client(self):
        """A scripted Envoy client sidecar against our server sidecar."""
        app = Recorder(self)
        srv = self.start_proxy(lambda: server_config(app.port), args=DEBUG)
        s = envoy_client(srv.listener_port())
        self.addCleanup(s.close)
        self.assertEqual(s.selected_alpn_protocol(), "istio-peer-exchange")
        # Sent in pieces, the preamble split in the middle of its header and of its payload.
        pre = preamble(expected_exchange(CLIENT_NODE))
        for part in (pre[:5], pre[5:40], pre[40:] + b"hello"):
            s.sendall(part)
        raw, url, val = read_preamble(s)
        self.assertEqual(raw, preamble(expected_exchange(SERVER_NODE)))
        self.assertEqual(dec_struct(val)["x-envoy-peer-metadata"]["REGION"], "eu-west1")
        self.assertEqual(H.recv_exactly(s, 5), b"hello")
        self.assertEqual(bytes(app.got), b"hello")
        H.wait_for(lambda: "(downstream): peer WORKLOAD_NAME=client NAMESPACE=default"
                   in srv.read_stderr(), what="server learnt the client")

    def test_no_exchange_without_the_alpn(self):
        """ALPN istio (or none) : the filter does nothing, both directions."""
        got = {}

        def script(s, alpn):
            got["alpn"] = alpn
            got["data"] = H.recv_exactly(s, 5)
            s.sendall(b"world")
            s.recv(1)

        peer = EnvoyServerPeer(self, script, alpn=["istio"])
        cli = self.start_proxy(lambda: client_config(peer.port))
        s = self.connect(cli)
        s.sendall(b"hello")
        self.assertEqual(H.recv_exactly(s, 5), b"world")
        s.close()
        peer.wait()
        self.assertEqual(got, {"alpn": "istio", "data": b"hello"})
        st = cli.stats()
        self.assertEqual(st["metadata_exchange.alpn_protocol_not_found"], 1)
        self.assertEqual(st["metadata_exchange.metadata_added"], 0)
        # Server side: a client offering only "istio", then a plaintext listener.
        app = Recorder(self)
        srv = self.start_proxy(lambda: server_config(app.port))
        c = envoy_client(srv.listener_port(), alpn=["istio"])
        self.addCleanup(c.close)
        self.assertEqual(c.selected_alpn_protocol(), None)  # not in the server's list
        c.sendall(b"\x3d\x23\x04\x67\x00\x00\x00\x00abc")
        self.assertEqual(H.recv_exactly(c, 11), b"\x3d\x23\x04\x67\x00\x00\x00\x00abc")
        plain = self.start_proxy(lambda: server_config(app.port, tls=False))
        p = self.connect(plain)
        p.sendall(b"plain")
        self.assertEqual(H.recv_exactly(p, 5), b"plain")
        for x in (srv, plain):
            x.wait_stat("metadata_exchange.alpn_protocol_not_found", lambda v: v == 1)
            self.assertEqual(x.stat("metadata_exchange.alpn_protocol_found"), 0)

    def test_peer_without_the_filter(self):
        """istio-peer-exchange negotiated, but the peer sends application bytes: counted, bytes
        intact, and our preamble was still sent (as Envoy)."""
        got = {}

        def script(s, alpn):
            got["pre"] = read_preamble(s)[0]
            got["data"] = H.recv_exactly(s, 5)
            s.sendall(b"not a preamble")
            s.recv(1)

        peer = EnvoyServerPeer(self, script)
        cli = self.start_proxy(lambda: client_config(peer.port))
        s = self.connect(cli)
        s.sendall(b"hello")
        self.assertEqual(H.recv_exactly(s, 14), b"not a preamble")
        s.close()
        peer.wait()
        self.assertEqual(got["data"], b"hello")
        self.assertEqual(got["pre"], preamble(expected_exchange(CLIENT_NODE)))
        cli.wait_stat("metadata_exchange.initial_header_not_found", lambda v: v >= 1)
        self.assertEqual(cli.stat("metadata_exchange.header_not_found"), 0)

    def test_bad_preambles(self):
        """Wrong payloads from a peer that negotiated istio-peer-exchange."""
        app = Recorder(self)
        srv = self.start_proxy(lambda: server_config(app.port, stats=False))
        port = srv.listener_port()

        def exchange(data, fin=False):
            s = envoy_client(port)
            try:
                s.sendall(data)
                if fin:
                    # A TCP FIN under the TLS session (SSLSocket.shutdown would drop the TLS
                    # state): the proxy reads it as the end of the stream.
                    socket.socket.shutdown(s, socket.SHUT_WR)
                return read_preamble(s)[0], H.recv_until_eof(s)
            finally:
                s.close()

        # Not an Any: counted, and (as Envoy) the N bytes go on to the application.
        bad_any = struct.pack(">II", MAGIC, 2) + b"\xff\xff"
        before = len(app.got)
        _, rest = exchange(bad_any + b"app", fin=True)
        self.assertEqual(rest, b"\xff\xffapp")
        self.assertEqual(bytes(app.got[before:]), b"\xff\xffapp")
        srv.wait_stat("metadata_exchange.header_not_found", lambda v: v == 1)
        # An Any of another type: counted, stripped.
        other = ld(1, b"type.googleapis.com/google.protobuf.Value") + ld(2, b"\x1a\x01x")
        _, rest = exchange(struct.pack(">II", MAGIC, len(other)) + other + b"ok", fin=True)
        self.assertEqual(rest, b"ok")
        srv.wait_stat("metadata_exchange.header_not_found", lambda v: v == 2)
        # Over 64 KiB announced: closed.
        _, rest = exchange(struct.pack(">II", MAGIC, 65537) + b"\0" * 100)
        self.assertEqual(rest, b"")
        srv.wait_stat("metadata_exchange.header_not_found", lambda v: v == 3)
        # The peer ends inside its payload: closed.
        pre = preamble(expected_exchange(CLIENT_NODE))
        _, rest = exchange(pre[:-3], fin=True)
        self.assertEqual(rest, b"")
        srv.wait_stat("metadata_exchange.header_not_found", lambda v: v == 4)
        # The peer ends inside the header: no exchange, the bytes go on (as Envoy).
        _, rest = exchange(pre[:3], fin=True)
        self.assertEqual(rest, pre[:3])
        # The proxy is fine afterwards.
        self.assertEqual(exchange(pre + b"fine", fin=True)[1], b"fine")
        self.assertEqual(srv.stat("metadata_exchange.header_not_found"), 4)
        self.assertEqual(srv.stat("metadata_exchange.alpn_protocol_found"), 6)


if __name__ == "__main__":
    H.main()

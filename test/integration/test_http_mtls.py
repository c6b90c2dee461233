"""HTTP through two sidecars with mutual TLS between them (certificates from test_tls's Pki):
client --HTTP/1.1--> proxy A (HCM, cluster with an UpstreamTlsContext and HTTP/2) --mTLS, ALPN
h2--> proxy B (DownstreamTlsContext requiring a client certificate, HCM codec AUTO picks HTTP/2
from ALPN) --HTTP/1.1--> origin. Checks bodies both ways, connection reuse, the protocol on each
hop, and that a client without a certificate cannot reach B. Also: istio.alpn's override is
what the upstream TLS connection offers (recorded from the ClientHello by a Python TLS origin),
per downstream protocol, with one pool per ALPN list."""
import http.client
import json
import ssl
import socket
import struct
import threading

import harness as H
import http_peers as P
import test_tls as T

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def setUpModule():
    T.setUpModule()


def tearDownModule():
    T.tearDownModule()


def hcm(prefix, cluster):
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM, "stat_prefix": prefix, "http_filters": [ROUTER],
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]}}}


ALPN_FILTER = {"name": "istio.alpn", "typed_config": {
    "@type": "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
    # As istiod writes it (1.18 / 1.20 sidecar dumps); HTTP10 is the enum's zero value.
    "alpn_override": [
        {"alpn_override": ["istio-http/1.0", "istio", "http/1.0"]},
        {"upstream_protocol": "HTTP11", "alpn_override": ["istio-http/1.1", "istio", "http/1.1"]},
        {"upstream_protocol": "HTTP2", "alpn_override": ["istio-h2", "istio", "h2"]}]}}


def client_hello_alpn(data):
    """The ALPN names offered in a TLS record holding a ClientHello (None: no extension)."""
    if len(data) < 9 or data[0] != 0x16 or data[5] != 1:
        raise ValueError("not a ClientHello")
    p = 9 + 2 + 32  # record + handshake headers, client_version, random
    p += 1 + data[p]  # session id
    p += 2 + struct.unpack("!H", data[p:p + 2])[0]  # cipher suites
    p += 1 + data[p]  # compression methods
    end = p + 2 + struct.unpack("!H", data[p:p + 2])[0]
    p += 2
    while p + 4 <= end:
        typ, ln = struct.unpack("!HH", data[p:p + 4])
        body = data[p + 4:p + 4 + ln]
        p += 4 + ln
        if typ == 16:
            names, q = [], 2
            while q < len(body):
                n = body[q]
                names.append(body[q + 1:q + 1 + n].decode())
                q += 1 + n
            return names
    return None


class AlpnOrigin:
    """A TLS HTTP/1.1 origin that records the ALPN list each connection's ClientHello offered
    and answers every request with that list (comma-separated) as the body."""

    def __init__(self):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(T.PKI.server[0], T.PKI.server[1])
        self.offered = []
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.address = H.sock_addr(self.port)
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.ls.close()
        for c in self.conns:
            c.close()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(H.IO_TIMEOUT)
            head = b""
            while True:  # the whole first record, left in the socket for the handshake
                head = c.recv(16384, socket.MSG_PEEK)
                if len(head) >= 5 and len(head) >= 5 + struct.unpack("!H", head[3:5])[0]:
                    break
            alpn = client_hello_alpn(head)
            with self.lock:
                self.offered.append(alpn)
            s = self.ctx.wrap_socket(c, server_side=True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                if buf.startswith(b"PRI * HTTP/2.0"):
                    s.close()  # not an h2 server: hang up on the preface
                    return
                buf = buf[buf.index(b"\r\n\r\n") + 4:]
                body = ",".join(alpn or []).encode()
                s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        except (OSError, ValueError, ssl.SSLError):
            return


class MtlsHttpTest(H.ProxyTestCase):
    def test_istio_alpn_override_offered_upstream(self):
        origin = AlpnOrigin()
        self.addCleanup(origin.stop)
        mesh_alpn = ["istio-peer-exchange", "istio"]

        def cfg():
            cl = H.cluster("outbound|8080||o", [origin.address])
            cl["transport_socket"] = T.tls_socket(T.client_ctx(alpn=mesh_alpn))
            with_alpn = hcm("outbound_8080", "outbound|8080||o")
            with_alpn["typed_config"]["http_filters"] = [ALPN_FILTER, ROUTER]
            plain = hcm("plain_8080", "outbound|8080||o")
            for h in (with_alpn, plain):
                h["typed_config"]["http_protocol_options"] = {"accept_http_10": True}
            cl2 = H.cluster("outbound|8080||o2", [origin.address])
            cl2["transport_socket"] = T.tls_socket(T.client_ctx(alpn=mesh_alpn))
            cl2["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}}
            h2 = hcm("h2_8080", "outbound|8080||o2")
            h2["typed_config"]["http_filters"] = [ALPN_FILTER, ROUTER]
            cl3 = H.cluster("outbound|8080||o3", [origin.address])
            cl3["transport_socket"] = T.tls_socket(T.client_ctx(alpn=mesh_alpn))
            cl3["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions", "auto_config": {}}}
            auto = hcm("auto_8080", "outbound|8080||o3")
            auto["typed_config"]["http_filters"] = [ALPN_FILTER, ROUTER]
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()), [with_alpn]),
                           H.listener("plain", H.sock_addr(H.free_port()), [plain]),
                           H.listener("h2", H.sock_addr(H.free_port()), [h2]),
                           H.listener("auto", H.sock_addr(H.free_port()), [auto])],
                clusters=[cl, cl2, cl3])
        p = self.start_proxy(cfg, args=["--concurrency", "1"])
        c = http.client.HTTPConnection("127.0.0.1", p.listener_port("main"), timeout=H.IO_TIMEOUT)

        def get11():
            c.request("GET", "/a")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            return r.read().decode()

        def get10(listener="main"):
            s = socket.create_connection(("127.0.0.1", p.listener_port(listener)),
                                         timeout=H.IO_TIMEOUT)
            try:
                s.sendall(b"GET /b HTTP/1.0\r\nHost: o\r\n\r\n")
                data = b""
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    data += d
            finally:
                s.close()
            head, _, body = data.partition(b"\r\n\r\n")
            self.assertIn(b" 200 ", head.split(b"\r\n")[0])
            return body.decode()
        self.assertEqual(get11(), "istio-http/1.1,istio,http/1.1")
        # HTTP/1.0 downstream to an HTTP/1.1 cluster: the upstream request is HTTP/1.1, so is
        # the list (Envoy picks it by upstream protocol); same list, same pooled connection.
        self.assertEqual(get10(), "istio-http/1.1,istio,http/1.1")
        self.assertEqual(get11(), "istio-http/1.1,istio,http/1.1")
        self.assertEqual(origin.offered, [["istio-http/1.1", "istio", "http/1.1"]])
        # Without istio.alpn the cluster's own alpn_protocols go out, on a pool of their own
        # (the override's connection is not shared with it).
        self.assertEqual(get10("plain"), "istio-peer-exchange,istio")
        self.assertEqual(origin.offered[-1], mesh_alpn)
        self.assertEqual(get11(), "istio-http/1.1,istio,http/1.1")
        self.assertEqual(len(origin.offered), 2)
        self.assertEqual(p.stat("cluster.outbound|8080||o.upstream_cx_total"), 2)
        c.close()
        # An HTTP/2 cluster gets the HTTP2 list (the origin speaks only HTTP/1.1 and hangs up
        # on the h2 preface: the request ends in a 503).
        s = socket.create_connection(("127.0.0.1", p.listener_port("h2")), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"GET /c HTTP/1.1\r\nHost: o\r\n\r\n")
        H.wait_for(lambda: len(origin.offered) > 2, timeout=10, what="the h2 connection")
        self.assertEqual(origin.offered[2], ["istio-h2", "istio", "h2"])
        self.assertIn(b" 503 ", H.recv_line(s))
        # An auto_config cluster: Istio's filter takes the first of Envoy's {HTTP/2, HTTP/1.1}
        # for ALPN pools, so the HTTP2 list; this origin selects no ALPN, so the mixed pool
        # speaks HTTP/1.1 on that connection and the request succeeds.
        c3 = http.client.HTTPConnection("127.0.0.1", p.listener_port("auto"),
                                        timeout=H.IO_TIMEOUT)
        self.addCleanup(c3.close)
        c3.request("GET", "/d")
        r = c3.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.read().decode(), "istio-h2,istio,h2")


    def test_downstream_protocol_is_exact(self):
        """HTTP/1.0 requests are HTTP/1.0 to the filters (%PROTOCOL% is "HTTP/1.0"), and with
        use_downstream_protocol_config istio.alpn still offers the HTTP11 list, as Envoy: its
        upstreamHttpProtocol sends HTTP/1.0 requests upstream as HTTP/1.1."""
        up = P.HttpUpstream()
        self.addCleanup(up.stop)
        origin = AlpnOrigin()
        self.addCleanup(origin.stop)

        def cfg():
            echo = hcm("echo", "up")
            rc = echo["typed_config"]["route_config"]
            rc["request_headers_to_add"] = [{"header": {"key": "x-proto",
                                                        "value": "%PROTOCOL%"}}]
            echo["typed_config"]["http_protocol_options"] = {"accept_http_10": True}
            cl = H.cluster("o", [origin.address])
            cl["transport_socket"] = T.tls_socket(T.client_ctx(alpn=["istio"]))
            cl["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "use_downstream_protocol_config": {}}}
            alpn = hcm("alpn", "o")
            alpn["typed_config"]["http_filters"] = [ALPN_FILTER, ROUTER]
            alpn["typed_config"]["http_protocol_options"] = {"accept_http_10": True}
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()), [echo]),
                           H.listener("alpn", H.sock_addr(H.free_port()), [alpn])],
                clusters=[H.cluster("up", [up.address]), cl])
        p = self.start_proxy(cfg)

        def request(listener, version):
            s = socket.create_connection(("127.0.0.1", p.listener_port(listener)),
                                         timeout=H.IO_TIMEOUT)
            try:
                s.sendall(b"GET /x %s\r\nHost: o\r\nConnection: close\r\n\r\n" % version)
                data = H.recv_until_eof(s)
            finally:
                s.close()
            head, _, body = data.partition(b"\r\n\r\n")
            self.assertIn(b" 200 ", head.split(b"\r\n")[0], data)
            return body.decode()
        self.assertEqual(json.loads(request("main", b"HTTP/1.0"))["headers"]["x-proto"],
                         ["HTTP/1.0"])
        self.assertEqual(json.loads(request("main", b"HTTP/1.1"))["headers"]["x-proto"],
                         ["HTTP/1.1"])
        self.assertEqual(request("alpn", b"HTTP/1.0"), "istio-http/1.1,istio,http/1.1")
        self.assertEqual(origin.offered, [["istio-http/1.1", "istio", "http/1.1"]])

    def test_two_sidecars_h2_over_mtls(self):
        origin = P.HttpUpstream("origin")
        self.addCleanup(origin.stop)

        def cfg_b():
            return H.bootstrap(listeners=[{
                "name": "inbound", "address": H.sock_addr(H.free_port()),
                "filter_chains": [{"filters": [hcm("inbound_8080", "origin")],
                                   "transport_socket": T.tls_socket(T.server_ctx(
                                       alpn=("h2", "http/1.1")))}]}],
                clusters=[H.cluster("origin", [origin.address])])
        pb = self.start_proxy(cfg_b, args=["--concurrency", "1"])
        b_port = pb.config["static_resources"]["listeners"][0]["address"]["socket_address"][
            "port_value"]

        def cfg_a():
            cl = H.cluster("outbound|8080||b", [H.sock_addr(b_port)])
            cl["transport_socket"] = T.tls_socket(T.client_ctx(alpn=["h2"]))
            cl["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}}
            return H.bootstrap(listeners=[H.listener("main", H.sock_addr(H.free_port()),
                                                     [hcm("outbound_8080", "outbound|8080||b")])],
                               clusters=[cl])
        pa = self.start_proxy(cfg_a)
        c = http.client.HTTPConnection("127.0.0.1", pa.listener_port(), timeout=H.IO_TIMEOUT)
        for i in range(4):
            c.request("POST", "/m/%d" % i, body=b"p" * (50000 * i))
            r = c.getresponse()
            d = json.loads(r.read())
            self.assertEqual(r.status, 200)
            self.assertEqual((d["server"], d["body_len"]), ("origin", 50000 * i))
            self.assertEqual(d["headers"]["x-forwarded-proto"], ["http"])
        c.close()
        sa, sb = pa.stats(), pb.stats()
        self.assertEqual(sa["cluster.outbound|8080||b.upstream_cx_http2_total"], 1)
        self.assertEqual(sb["http.inbound_8080.downstream_cx_http2_total"], 1)
        self.assertEqual(sb["http.inbound_8080.downstream_cx_ssl_total"], 1)
        self.assertEqual(sb["http.inbound_8080.downstream_rq_2xx"], 4)
        # No client certificate: the handshake fails, nothing reaches the origin.
        ctx = T.py_client_ctx(alpn=["h2"])
        raw = socket.create_connection(("127.0.0.1", b_port), timeout=H.IO_TIMEOUT)
        try:
            s = ctx.wrap_socket(raw, server_hostname=T.SNI)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(s.recv(100), b"")
        except (ssl.SSLError, ConnectionResetError, OSError):
            pass
        finally:
            raw.close()
        self.assertEqual(origin.requests, 4)


if __name__ == "__main__":
    H.main()

"""HTTP through two sidecars with mutual TLS between them (certificates from test_tls's Pki):
client --HTTP/1.1--> proxy A (HCM, cluster with an UpstreamTlsContext and HTTP/2) --mTLS, ALPN
h2--> proxy B (DownstreamTlsContext requiring a client certificate, HCM codec AUTO picks HTTP/2
from ALPN) --HTTP/1.1--> origin. Checks bodies both ways, connection reuse, the protocol on each
hop, and that a client without a certificate cannot reach B."""
import http.client
import json
import ssl
import socket

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


class MtlsHttpTest(H.ProxyTestCase):
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

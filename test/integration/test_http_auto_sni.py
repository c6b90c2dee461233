"""TLS origination to the request's host (HttpProtocolOptions.upstream_http_protocol_options,
what Istio sets for a DestinationRule TLS origination without an explicit SNI): auto_sni sends
the request's authority (port stripped) as SNI, auto_san_validation requires the server
certificate to name it (a DNS SAN, wildcards included) instead of the context's SAN matchers,
and each host gets connections of its own, so one verified for a host never carries requests
for another. Without the options the context's SNI and matchers apply.

    /usr/bin/python3 test/integration/test_http_auto_sni.py --binary build/msm-proxy
"""
import http.client
import http.server
import json
import ssl
import threading

import harness as H
import http_peers as P
import test_tls as T

HCM = P.HCM_TYPE
ROUTER = P.ROUTER
OPTS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def setUpModule():
    T.setUpModule()
    T.PKI.web = T.PKI.leaf("web", "DNS:api.example.com,DNS:*.wild.example")


def tearDownModule():
    T.tearDownModule()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"host": self.headers.get("host")}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TlsWeb:
    """An HTTPS/1.1 server with the "web" certificate; records the SNI of each handshake."""

    def __init__(self):
        self.snis = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*T.PKI.web)
        ctx.sni_callback = lambda sock, name, c: self.snis.append(name)
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.srv.daemon_threads = True
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class AutoSniTest(H.ProxyTestCase):
    def start(self, auto, sni="", sans=None):
        self.web = TlsWeb()
        self.addCleanup(self.web.stop)
        val = {"trusted_ca": T.fsrc(T.PKI.path("ca.pem"))}
        if sans:
            val["match_subject_alt_names"] = [{"exact": s} for s in sans]
        up = {"@type": T.UP, "sni": sni, "common_tls_context": {"validation_context": val}}
        opts = {"@type": "type.googleapis.com/" + OPTS,
                "explicit_http_config": {"http_protocol_options": {}}}
        if auto:
            opts["upstream_http_protocol_options"] = {"auto_sni": True,
                                                      "auto_san_validation": True}

        def cfg():
            hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": HCM, "stat_prefix": "in", "http_filters": [ROUTER],
                "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "web"}}]}]}}}
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()), [hcm])],
                clusters=[H.cluster("web", [H.sock_addr(self.web.port)],
                                    transport_socket=T.tls_socket(up),
                                    typed_extension_protocol_options={OPTS: opts})])
        self.p = self.start_proxy(cfg)

    def get(self, host):
        c = http.client.HTTPConnection("127.0.0.1", self.p.listener_port("main"),
                                       timeout=H.IO_TIMEOUT)
        try:
            c.request("GET", "/", headers={"host": host})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def test_sni_and_san_from_the_request(self):
        self.start(auto=True, sni="ignored.example", sans=["nothing-matches.example"])
        for host in ("api.example.com", "API.example.com:8443", "x.wild.example",
                     "api.example.com"):
            st, body = self.get(host)
            self.assertEqual(st, 200, host)
            self.assertEqual(json.loads(body)["host"], host)
        # One connection per host name (case and port do not make another).
        self.assertEqual(self.web.snis, ["api.example.com", "x.wild.example"])
        self.assertEqual(self.p.stat("cluster.web.upstream_cx_total"), 2)
        # A host the certificate does not name: the handshake fails, 503.
        st, _ = self.get("evil.example")
        self.assertEqual(st, 503)
        self.assertGreaterEqual(self.p.stat("cluster.web.ssl.fail_verify_san"), 1)
        self.assertEqual(self.web.snis[-1], "evil.example")

    def test_without_the_options_the_context_decides(self):
        self.start(auto=False, sni="api.example.com", sans=["api.example.com"])
        for host in ("a.example", "b.example"):
            st, _ = self.get(host)
            self.assertEqual(st, 200, host)
        self.assertEqual(self.web.snis, ["api.example.com"])  # one connection, reused
        self.assertEqual(self.p.stat("cluster.web.upstream_cx_total"), 1)


if __name__ == "__main__":
    H.main()

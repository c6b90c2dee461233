"""tls_inspector and http_inspector stats under Envoy's names in /stats: a listener with both
listener filters (as Istio's virtualInbound) in front of an echo upstream, fed ClientHellos with
and without SNI/ALPN, an oversized ClientHello, HTTP/1.0, HTTP/1.1 and h2c prefaces, an RTSP
request line (not HTTP), and connections that close before the inspectors decide."""
import re
import socket
import ssl
import struct

import harness as H

LF = "type.googleapis.com/envoy.extensions.filters.listener."

TLS_NAMES = ["client_hello_too_large", "tls_found", "tls_not_found", "alpn_found",
             "alpn_not_found", "sni_found", "sni_not_found"]
HTTP_NAMES = ["read_error", "http10_found", "http11_found", "http2_found", "http_not_found"]


class InspectorStatsTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        up = self.upstream("echo")

        def cfg():
            return H.bootstrap(
                listeners=[H.listener(
                    "main", H.sock_addr(H.free_port()),
                    [H.tcp_proxy_filter("p", "echo")],
                    listener_filters=[
                        {"name": "envoy.filters.listener.tls_inspector",
                         "typed_config": {"@type": LF + "tls_inspector.v3.TlsInspector"}},
                        {"name": "envoy.filters.listener.http_inspector",
                         "typed_config": {"@type": LF + "http_inspector.v3.HttpInspector"}}])],
                clusters=[H.cluster("echo", [up.address])])
        self.p = self.start_proxy(cfg)

    def counts(self):
        st = self.p.stats()
        out = {"tls_inspector." + n: st.get("tls_inspector." + n, 0) for n in TLS_NAMES}
        out.update({"http_inspector." + n: st.get("http_inspector." + n, 0) for n in HTTP_NAMES})
        return out

    def expect(self, before, **delta):
        """Wait until the counters moved by exactly <delta> (names with '__' for '.')."""
        want = dict(before)
        for k, v in delta.items():
            want[k.replace("__", ".")] += v
        H.wait_for(lambda: self.counts() == want, timeout=10,
                   what="inspector stats %s" % {k: v for k, v in delta.items()})
        return want

    def send(self, data, close_after=True):
        s = self.p.connect()
        s.sendall(data)
        if close_after:
            s.close()
        return s

    def tls_hello(self, sni, alpn):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        raw = self.p.connect()
        try:
            s = ctx.wrap_socket(raw, server_hostname=sni, do_handshake_on_connect=False)
            s.settimeout(2)
            try:
                s.do_handshake()  # the echo sends our own ClientHello back: fails
            except (ssl.SSLError, OSError):
                pass
        finally:
            raw.close()

    def test_stats(self):
        c = self.counts()
        # Names exist (registered with the listener's first inspected connection at the latest).
        self.tls_hello("svc.example", ["istio-peer-exchange", "istio"])
        c = self.expect(c, tls_inspector__tls_found=1, tls_inspector__sni_found=1,
                        tls_inspector__alpn_found=1)
        self.tls_hello(None, None)
        c = self.expect(c, tls_inspector__tls_found=1, tls_inspector__sni_not_found=1,
                        tls_inspector__alpn_not_found=1)
        # A handshake message of 65537 bytes: larger than the inspector looks at.
        self.send(b"\x16\x03\x01\x00\x04" + b"\x01" + struct.pack("!I", 65537)[1:])
        c = self.expect(c, tls_inspector__client_hello_too_large=1,
                        http_inspector__http_not_found=1)
        self.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        c = self.expect(c, tls_inspector__tls_not_found=1, http_inspector__http11_found=1)
        self.send(b"GET /x HTTP/1.0\r\n\r\n")
        c = self.expect(c, tls_inspector__tls_not_found=1, http_inspector__http10_found=1)
        self.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        c = self.expect(c, tls_inspector__tls_not_found=1, http_inspector__http2_found=1)
        # RTSP and SIP request lines are not HTTP.
        self.send(b"OPTIONS rtsp://cam/live RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        c = self.expect(c, tls_inspector__tls_not_found=1, http_inspector__http_not_found=1)
        self.send(b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n")
        c = self.expect(c, tls_inspector__tls_not_found=1, http_inspector__http_not_found=1)
        # Closed while the HTTP inspector still waits for the request line: read_error.
        self.send(b"GE")
        c = self.expect(c, tls_inspector__tls_not_found=1, http_inspector__read_error=1)
        self.send(b"")
        c = self.expect(c, http_inspector__read_error=1)
        # The connections themselves went on to the echo upstream.
        s = self.send(b"GET /y HTTP/1.1\r\n\r\n", close_after=False)
        self.addCleanup(s.close)
        self.assertEqual(H.recv_exactly(s, 19), b"GET /y HTTP/1.1\r\n\r\n")
        self.expect(c, tls_inspector__tls_not_found=1, http_inspector__http11_found=1)
        text = self.p.get("/stats/prometheus")[1]
        text = text.decode() if isinstance(text, bytes) else text
        for name, v in (("tls_inspector_tls_found", 2), ("http_inspector_http11_found", 2),
                        ("http_inspector_read_error", 2)):
            self.assertTrue(re.search(r"^envoy_%s(\{\})? %d$" % (name, v), text, re.M),
                            "%s %d not in /stats/prometheus" % (name, v))


if __name__ == "__main__":
    H.main()

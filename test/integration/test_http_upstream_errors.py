"""Upstream HTTP codec errors end the request at once, as Envoy: an HTTP/2 cluster whose
server answers the connection preface with HTTP/1.1 bytes gets a codec error, the connection is
reset (upstream_cx_protocol_error) and the request gets 503 (upstream_reset_before_response_
started) within a second instead of hanging; nothing leaks (the suite runs this under ASan).

    /usr/bin/python3 test/integration/test_http_upstream_errors.py --binary build/msm-proxy
"""
import os
import socket
import struct
import threading
import time

import harness as H
import http_peers as P

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
H2_OPTS = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}


class Http1Answerer:
    """Answers whatever arrives (the h2 preface) with an HTTP/1.1 response, keeps the
    connection open."""

    def __init__(self, silent=False):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.silent = silent
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return H.sock_addr(self.port)

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            if c.recv(65536) and not self.silent:
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except OSError:
            pass

    def stop(self):
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def status_line(test, port, path=b"/x", timeout=5):
    """GET <path> through the proxy on <port>: (the response's status line, seconds taken)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
    test.addCleanup(s.close)
    t0 = time.monotonic()
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    line = H.recv_line(s, timeout=timeout)
    return line, time.monotonic() - t0


def h2_cluster_config(port, srv, protocol_options=None):
    """A listener on <port>: HCM, every request to cluster h2up (<srv>, HTTP/2)."""
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM, "stat_prefix": "in", "http_filters": [ROUTER],
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "h2up"}}]}]}}}
    return H.bootstrap(listeners=[H.listener("main", H.sock_addr(port), [hcm])],
                       clusters=[H.cluster("h2up", [srv.address],
                                           typed_extension_protocol_options=protocol_options
                                           or H2_OPTS)])


class UpstreamCodecErrorTest(H.ProxyTestCase):
    def test_h2_upstream_answering_http1_gets_503_fast(self):
        srv = Http1Answerer()
        self.addCleanup(srv.stop)
        port = H.free_port()

        p = self.start_proxy(lambda: h2_cluster_config(port, srv, H2_OPTS))
        for i in range(2):
            line, took = status_line(self, port)
            self.assertIn(b" 503 ", line)
            self.assertLess(took, 1.0, "request %d took %.2fs" % (i, took))
        self.assertGreaterEqual(p.stat("cluster.h2up.upstream_cx_protocol_error"), 2)
        p.wait_stat("cluster.h2up.upstream_cx_active", lambda v: v == 0)
        p.wait_stat("cluster.h2up.upstream_rq_active", lambda v: v == 0)

    def test_h2_keepalive_ends_a_silent_upstream(self):
        """connection_keepalive on the cluster: an upstream that never answers anything (not
        even the PING) is disconnected after the timeout and the request gets 503 then, not at
        the route's 15 s timeout."""
        srv = Http1Answerer(silent=True)
        self.addCleanup(srv.stop)
        port = H.free_port()
        opts = {k: dict(v) for k, v in H2_OPTS.items()}
        opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"] = {
            "http2_protocol_options": {"connection_keepalive": {"interval": "0.1s",
                                                                "timeout": "0.3s"}}}

        p = self.start_proxy(lambda: h2_cluster_config(port, srv, opts))
        line, took = status_line(self, port, timeout=10)
        self.assertIn(b" 503 ", line)
        self.assertGreater(took, 0.25)
        self.assertLess(took, 3.0)
        p.wait_stat("cluster.h2up.upstream_cx_active", lambda v: v == 0)
        p.wait_stat("cluster.h2up.upstream_rq_active", lambda v: v == 0)
        self.assertEqual(p.stat("cluster.h2up.http2.keepalive_timeout"), 1)

    def test_exit_with_request_in_flight(self):
        """The proxy exits while a request waits on an h2 upstream that never answers: the
        streams are freed (no leak under ASan; the harness fails on a sanitizer report)."""
        srv = Http1Answerer(silent=True)
        self.addCleanup(srv.stop)
        port = H.free_port()

        p = self.start_proxy(lambda: h2_cluster_config(port, srv, H2_OPTS))
        s = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        H.wait_for(lambda: srv.accepted >= 1, what="upstream connection")
        p.wait_stat("cluster.h2up.upstream_rq_active", lambda v: v == 1)
        # p.stop() (cleanup) checks the exit status and the sanitizer report.


def h2_frame(t, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + struct.pack(">I", sid) + \
        payload


class H2Resetter(Http1Answerer):
    """An HTTP/2 upstream that answers the preface with its SETTINGS (and the ack) and every
    HEADERS frame with RST_STREAM INTERNAL_ERROR."""

    def _serve(self, c):
        buf = b""
        try:
            c.sendall(h2_frame(4, 0, 0))
            while True:
                b = c.recv(65536)
                if not b:
                    return
                buf += b
                if buf.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
                    buf = buf[24:]
                while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                    n = int.from_bytes(buf[:3], "big")
                    t, flags = buf[3], buf[4]
                    sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    buf = buf[9 + n:]
                    if t == 4 and not flags & 1:
                        c.sendall(h2_frame(4, 1, 0))
                    elif t == 1:
                        c.sendall(h2_frame(3, 0, sid, struct.pack(">I", 2)))
        except OSError:
            pass


class UpstreamCodecStatsTest(H.ProxyTestCase):
    """Envoy's cluster.<name>.http1.* / http2.*: the upstream codecs count on their cluster,
    apart from the listeners' process-wide http1.* / http2.*; a cluster with no connection of
    a protocol has no such stats."""

    def test_per_cluster_codec_stats(self):
        h2 = H2Resetter()
        self.addCleanup(h2.stop)
        h1 = P.HttpUpstream("h1")
        self.addCleanup(h1.stop)
        port = H.free_port()

        def cfg():
            hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": HCM, "stat_prefix": "in", "http_filters": [ROUTER],
                "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/h2"}, "route": {"cluster": "h2up"}},
                    {"match": {"prefix": "/h1"}, "route": {"cluster": "h1up"}},
                    {"match": {"prefix": "/"}, "route": {"cluster": "idle"}}]}]}}}
            return H.bootstrap(listeners=[H.listener("main", H.sock_addr(port), [hcm])],
                               clusters=[H.cluster("h2up", [h2.address],
                                                   typed_extension_protocol_options=H2_OPTS),
                                         H.cluster("h1up", [h1.address]),
                                         H.cluster("idle", [h1.address],
                                                   typed_extension_protocol_options=H2_OPTS)])
        p = self.start_proxy(cfg)
        for path, want in ((b"/h2", b" 503 "), (b"/h2", b" 503 "), (b"/h1", b" 200 ")):
            self.assertIn(want, status_line(self, port, path)[0])
        p.wait_stat("cluster.h2up.http2.rx_reset", lambda v: v == 2)
        p.wait_stat("cluster.h2up.http2.streams_active", lambda v: v == 0)
        st = p.stats()
        self.assertEqual(st.get("cluster.h2up.upstream_rq_rx_reset"), 2)
        self.assertEqual(st.get("cluster.h2up.http2.tx_reset"), 0)
        # The downstream side is HTTP/1.1: the listeners' codec stats did not move.
        self.assertEqual(st.get("http2.rx_reset"), 0)
        # HTTP/1.1 upstream: its cluster has the http1 family, not http2.
        self.assertEqual(st.get("cluster.h1up.http1.dropped_headers_with_underscores"), 0)
        self.assertNotIn("cluster.h1up.http2.rx_reset", st)
        self.assertNotIn("cluster.h2up.http1.dropped_headers_with_underscores", st)
        # Never connected: no codec stats at all.
        self.assertFalse([k for k in st if k.startswith(("cluster.idle.http1.",
                                                          "cluster.idle.http2."))])


class EarlyCloser(Http1Answerer):
    """An HTTP/1.1 upstream that reads the request and closes (FIN): at once, or after the
    response headers and part of the body (<partial>)."""

    def __init__(self, partial=False):
        self.partial = partial
        super().__init__()

    def _serve(self, c):
        try:
            c.recv(65536)
            if self.partial:
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
                time.sleep(0.2)
        except OSError:
            pass
        c.close()


class UpstreamCloseTest(H.ProxyTestCase):
    """An HTTP/1.1 upstream closing mid-exchange. Before the response: 503 with Envoy's reset
    details (the codec used to free the stream twice here: the router releases it from
    on_reset); after the response started: the client's response is cut and the details say
    so. Both with Envoy's "{<reset reason>}" suffix."""

    def proxy_stat(self, name):
        return self.proxy.stat(name)

    def run_case(self, partial):
        srv = EarlyCloser(partial)
        self.addCleanup(srv.stop)
        port = H.free_port()
        log = os.path.join(self.tmp, "access.log")

        def cfg():
            hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": HCM, "stat_prefix": "in", "http_filters": [ROUTER],
                "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3."
                             "FileAccessLog", "path": log,
                    "log_format": {"text_format_source": {"inline_string":
                        "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}}}}],
                "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]}}}
            return H.bootstrap(listeners=[H.listener("main", H.sock_addr(port), [hcm])],
                               clusters=[H.cluster("up", [srv.address])])
        p = self.proxy = self.start_proxy(cfg, args=["--file-flush-interval-msec", "100"])
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
            s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            got = b""
            while True:
                try:
                    b = s.recv(65536)
                except OSError:
                    break
                if not b:
                    break
                got += b
            s.close()
            self.assertTrue(got.startswith(b"HTTP/1.1 503 " if not partial else
                                           b"HTTP/1.1 200 "), got)
        p.wait_stat("cluster.up.upstream_cx_active", lambda v: v == 0)
        p.wait_stat("cluster.up.upstream_rq_active", lambda v: v == 0)
        def lines():
            if not os.path.exists(log):
                return []
            with open(log) as f:
                return f.read().splitlines()
        H.wait_for(lambda: len(lines()) >= 3, what="3 access log lines")
        return lines()

    def test_close_before_response(self):
        for line in self.run_case(False):
            self.assertEqual(line, "503 UC upstream_reset_before_response_started"
                                   "{connection_termination}")

    def test_close_after_response_started(self):
        for line in self.run_case(True):
            # The body ends short of its content-length: the codec's end-of-input check fails,
            # a protocol error as in Envoy's CodecClient (protocol_error_ on the EOF dispatch).
            self.assertEqual(line, "200 UPE upstream_reset_after_response_started"
                                   "{protocol_error}")
        self.assertGreaterEqual(self.proxy_stat("cluster.up.upstream_cx_protocol_error"), 3)


if __name__ == "__main__":
    H.main()

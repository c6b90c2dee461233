"""Request mirroring (RouteAction.request_mirror_policies, Envoy's streaming shadow): a copy of
each request goes to the mirror cluster's own upstream with ":authority" suffixed "-shadow", its
headers at once and its body as it arrives, fire and forget. The main response never waits for
the mirror nor fails with it (mirror upstream down, slow past the route timeout, never reading:
the copy is abandoned past the buffer limit, counted, memory bounded); a body far over the
buffer limit reaches a mirror that keeps up whole; a client reset mid-body resets the copy; a 0%
runtime fraction mirrors nothing; a cluster_header naming no cluster skips the copy and counts;
Istio's VirtualService mirror / mirrorPercentage shapes are accepted; counters land on the
mirror cluster like any upstream request; a copy still in flight when the proxy stops is dropped
cleanly."""
import hashlib
import http.client
import http.server
import json
import socket
import struct
import threading
import time

import harness as H
import http_peers as P

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
PREFIX = "mirror_in"


class _Rec(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self):
        n = int(self.headers.get("content-length", "0") or 0)
        body = self.rfile.read(n) if n else b""
        srv = self.server.rec
        with srv.lock:
            srv.seen.append({"method": self.command, "path": self.path,
                             "host": self.headers.get("host"),
                             "headers": {k.lower(): v for k, v in self.headers.items()},
                             "body_sha": hashlib.sha256(body).hexdigest(), "body_len": len(body)})
        if srv.delay:
            time.sleep(srv.delay)
        out = b"mirror says hi"
        try:
            self.send_response(200)
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except OSError:
            pass  # the proxy gave up on a slow mirror

    do_GET = do_POST = do_PUT = _handle


class _Srv(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass


class Recorder:
    """An HTTP/1.1 upstream that records what reaches it; <delay> seconds before answering."""

    def __init__(self, delay=0.0):
        self.lock = threading.Lock()
        self.seen = []
        self.delay = delay
        self.srv = _Srv(("127.0.0.1", 0), _Rec)
        self.srv.rec = self
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return H.sock_addr(self.port)

    def count(self):
        with self.lock:
            return len(self.seen)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(timeout=5)


class RawMirror:
    """A raw TCP upstream. "record": keeps every connection's bytes as they arrive and answers
    200 once a content-length body is complete; "early": the same, answering on the headers;
    "stall": accepts and never reads."""

    def __init__(self, mode="record"):
        self.mode = mode
        self.lock = threading.Lock()
        self.conns = []  # {"data": bytearray, "closed": bool}
        self.socks = []
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return H.sock_addr(self.port)

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            rec = {"data": bytearray(), "closed": False}
            with self.lock:
                self.conns.append(rec)
                self.socks.append(c)
            if self.mode in ("record", "early"):
                threading.Thread(target=self._read, args=(c, rec), daemon=True).start()

    def _read(self, c, rec):
        answered = False
        while True:
            try:
                b = c.recv(65536)
            except OSError:
                b = b""
            if not b:
                break
            with self.lock:
                rec["data"] += b
            head, _, body = bytes(rec["data"]).partition(b"\r\n\r\n")
            n = self.content_length(head)
            if not answered and self.mode == "early" and b"\r\n\r\n" in rec["data"]:
                n = 0  # answers as soon as the headers are in, without the body
            if not answered and n is not None and len(body) >= n:
                answered = True
                try:
                    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                except OSError:
                    pass
        with self.lock:
            rec["closed"] = True

    @staticmethod
    def content_length(head):
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                return int(v)
        return None

    def conn(self, i=0):
        with self.lock:
            if len(self.conns) <= i:
                return None
            r = self.conns[i]
            head, sep, body = bytes(r["data"]).partition(b"\r\n\r\n")
            return {"head": head.decode("latin-1") if sep else None, "body": body,
                    "closed": r["closed"]}

    def stop(self):
        self.stopped = True
        self.ls.close()
        with self.lock:
            for c in self.socks:
                try:
                    c.close()
                except OSError:
                    pass


def request(port, method, path, body=None, headers=None, host="svc.example:8080"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=H.IO_TIMEOUT)
    try:
        hdrs = {"host": host}
        hdrs.update(headers or {})
        t0 = time.monotonic()
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        return r.status, data, time.monotonic() - t0
    finally:
        c.close()


class MirrorTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.main = P.HttpUpstream("main")
        self.addCleanup(self.main.stop)

    def start(self, routes, mirror_eps, extra_clusters=()):
        def cfg():
            hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": HCM, "stat_prefix": PREFIX,
                "route_config": {"name": "r", "virtual_hosts": [
                    {"name": "v", "domains": ["*"], "routes": routes}]},
                "http_filters": [{"name": "envoy.filters.http.router",
                                  "typed_config": {"@type": ROUTER}}]}}
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()), [hcm])],
                clusters=[H.cluster("main", [self.main.address]),
                          H.cluster("mirror", mirror_eps)] + list(extra_clusters))
        self.p = self.start_proxy(cfg)
        self.port = self.p.listener_port("main")

    def recorder(self, delay=0.0):
        r = Recorder(delay)
        self.addCleanup(r.stop)
        return r

    def raw_mirror(self, mode="record"):
        r = RawMirror(mode)
        self.addCleanup(r.stop)
        return r

    def open_post(self, path, length, first):
        """A client that sends the headers of a <length>-byte POST and its <first> bytes."""
        c = socket.create_connection(("127.0.0.1", self.port), timeout=H.IO_TIMEOUT)
        c.sendall(b"POST %s HTTP/1.1\r\nhost: svc.example:8080\r\ncontent-length: %d\r\n\r\n"
                  % (path.encode(), length) + first)
        return c

    def test_copy_with_shadow_host_and_body(self):
        rec = self.recorder()
        self.start([{"match": {"prefix": "/"}, "route": {
            "cluster": "main", "request_mirror_policies": [{"cluster": "mirror"}]}}],
            [rec.address])
        body = b"payload-" * 1000
        st, data, _ = request(self.port, "POST", "/orders/1?x=y", body=body,
                              headers={"x-custom": "v1", "content-type": "text/plain"})
        self.assertEqual(st, 200, data)
        d = json.loads(data)
        self.assertEqual((d["server"], d["headers"]["host"]), ("main", ["svc.example:8080"]))
        H.wait_for(lambda: rec.count() == 1, what="the mirrored request")
        m = rec.seen[0]
        self.assertEqual((m["method"], m["path"], m["host"]),
                         ("POST", "/orders/1?x=y", "svc.example-shadow:8080"))
        self.assertEqual(m["headers"]["x-custom"], "v1")
        self.assertEqual(m["headers"]["x-request-id"], d["headers"]["x-request-id"][0])
        self.assertEqual((m["body_len"], m["body_sha"]),
                         (len(body), hashlib.sha256(body).hexdigest()))
        # A GET without a port in the host, and a second request on a kept-alive connection.
        self.assertEqual(request(self.port, "GET", "/a", host="plain")[0], 200)
        H.wait_for(lambda: rec.count() == 2, what="the second mirrored request")
        self.assertEqual(rec.seen[1]["host"], "plain-shadow")
        self.p.wait_stat("cluster.mirror.upstream_rq_200", lambda v: v == 2)
        st = self.p.stats()
        self.assertEqual(st["cluster.mirror.upstream_rq_total"], 2)
        self.assertEqual(st["cluster.mirror.upstream_rq_completed"], 2)
        self.assertEqual(st["cluster.main.upstream_rq_total"], 2)
        self.assertEqual(st["http.%s.shadow_no_cluster" % PREFIX], 0)
        self.assertEqual(st["http.%s.downstream_rq_2xx" % PREFIX], 2)
        self.assertEqual(self.main.requests, 2)

    def test_mirror_down_or_slow_never_hurts_the_main_request(self):
        slow = self.recorder(delay=3.0)
        dead = H.free_port()
        self.start([
            {"match": {"prefix": "/down"}, "route": {
                "cluster": "main", "request_mirror_policies": [{"cluster": "mirror"}]}},
            {"match": {"prefix": "/slow"}, "route": {
                "cluster": "main", "timeout": "1s",
                "request_mirror_policies": [{"cluster": "slow"}]}},
            {"match": {"prefix": "/hang"}, "route": {
                "cluster": "main", "timeout": "0s",
                "request_mirror_policies": [{"cluster": "slow"}]}}],
            [H.sock_addr(dead)], [H.cluster("slow", [slow.address])])
        for i in range(5):
            st, data, took = request(self.port, "GET", "/down/%d" % i)
            self.assertEqual(st, 200, data)
            self.assertLess(took, 1.0)
        self.p.wait_stat("cluster.mirror.upstream_cx_connect_fail", lambda v: v >= 1)
        st, data, took = request(self.port, "POST", "/slow", body=b"x" * 100)
        self.assertEqual((st, json.loads(data)["server"]), (200, "main"))
        self.assertLess(took, 1.0)  # the mirror's 3 s never delay it
        H.wait_for(lambda: slow.count() == 1, what="the slow mirror's copy")
        # The route timeout (1 s) bounds the mirror too.
        self.p.wait_stat("cluster.slow.upstream_rq_timeout", lambda v: v == 1, timeout=5)
        st = self.p.stats()
        self.assertEqual(st["cluster.slow.upstream_rq_tx_reset"], 1)
        self.assertEqual(st.get("cluster.slow.upstream_rq_200", 0), 0)
        self.assertEqual(st["cluster.main.upstream_rq_200"], 6)
        self.assertEqual(st["http.%s.downstream_rq_5xx" % PREFIX], 0)
        # No route timeout: the copy is still in flight when the proxy stops (the worker's
        # registry drops it; the sanitizer build checks nothing leaks).
        self.assertEqual(request(self.port, "GET", "/hang")[0], 200)
        H.wait_for(lambda: slow.count() == 2, what="the unbounded copy")
        self.assertEqual(self.p.stat("cluster.slow.upstream_rq_active"), 1)

    def test_fractions_and_istio_shapes(self):
        rec = self.recorder()
        # Istio: mirror -> numerator 100 (HUNDRED); mirrorPercentage p -> p * 10000 / MILLION.
        self.start([
            {"match": {"prefix": "/none"}, "route": {
                "cluster": "main", "request_mirror_policies": [{
                    "cluster": "mirror", "runtime_fraction": {"default_value": {
                        "numerator": 0, "denominator": "MILLION"}}, "trace_sampled": False}]}},
            {"match": {"prefix": "/all"}, "route": {
                "cluster": "main", "request_mirror_policies": [{
                    "cluster": "mirror", "runtime_fraction": {"default_value": {
                        "numerator": 100}}, "trace_sampled": False}]}},
            {"match": {"prefix": "/keep"}, "route": {
                "cluster": "main", "request_mirror_policies": [{
                    "cluster": "mirror", "disable_shadow_host_suffix_append": True}]}}],
            [rec.address])
        for i in range(20):
            self.assertEqual(request(self.port, "GET", "/none/%d" % i)[0], 200)
        for i in range(5):
            self.assertEqual(request(self.port, "GET", "/all/%d" % i)[0], 200)
        H.wait_for(lambda: rec.count() == 5, what="5 mirrored requests")
        self.assertEqual(request(self.port, "GET", "/keep")[0], 200)
        H.wait_for(lambda: rec.count() == 6, what="the /keep copy")
        time.sleep(0.3)
        self.assertEqual(rec.count(), 6)  # /none sent nothing
        self.assertTrue(all(m["path"].startswith("/all/") for m in rec.seen[:5]), rec.seen)
        self.assertEqual(rec.seen[5]["host"], "svc.example:8080")
        self.assertEqual(self.main.requests, 26)

    def test_cluster_header_missing_cluster_and_big_body(self):
        rec = self.recorder()
        self.start([
            {"match": {"prefix": "/large"}, "per_request_buffer_limit_bytes": 1024, "route": {
                "cluster": "main", "request_mirror_policies": [{"cluster": "mirror"}]}},
            {"match": {"prefix": "/"}, "route": {
                "cluster": "main", "request_mirror_policies": [
                    {"cluster_header": "X-Mirror-To"}, {"cluster": "gone"}]}}],
            [rec.address])
        st, _, _ = request(self.port, "GET", "/h", headers={"x-mirror-to": "mirror"})
        self.assertEqual(st, 200)
        H.wait_for(lambda: rec.count() == 1, what="the copy to the header's cluster")
        self.assertEqual(self.p.wait_stat("http.%s.shadow_no_cluster" % PREFIX,
                                          lambda v: v == 1), 1)  # "gone"
        # A header naming no cluster, and no header at all: the main request is unaffected.
        self.assertEqual(request(self.port, "GET", "/h", headers={"x-mirror-to": "nope"})[0], 200)
        self.assertEqual(request(self.port, "GET", "/h")[0], 200)
        self.assertEqual(self.p.stat("http.%s.shadow_no_cluster" % PREFIX), 4)
        # Streaming: a body 4x the route's buffer limit reaches a mirror that keeps up (its
        # kept-alive connection takes the bytes as they come), nothing abandoned.
        st, data, _ = request(self.port, "POST", "/large", body=b"s" * 100)
        self.p.wait_stat("cluster.mirror.upstream_rq_200", lambda v: v == 2)
        time.sleep(0.1)  # the connection goes back to the pool
        body = b"b" * 4096
        st, data, _ = request(self.port, "POST", "/large", body=body)
        self.assertEqual((st, json.loads(data)["body_len"]), (200, 4096))
        H.wait_for(lambda: rec.count() == 3, what="the large body's copy")
        self.assertEqual([m["body_len"] for m in rec.seen[1:]], [100, 4096])
        self.assertEqual(self.p.stat("cluster.main.retry_or_shadow_abandoned"), 0)

    def test_body_streams_to_the_mirror_as_it_arrives(self):
        mir = self.raw_mirror()
        self.start([{"match": {"prefix": "/"}, "route": {
            "cluster": "main", "request_mirror_policies": [{"cluster": "mirror"}]}}],
            [mir.address])
        c = self.open_post("/up", 20000, b"A" * 10000)
        self.addCleanup(c.close)
        # The client has not finished: the mirror already has the headers and the first part.
        H.wait_for(lambda: (mir.conn() or {}).get("head") and len(mir.conn()["body"]) >= 10000,
                   what="headers and first chunk at the mirror before the body ended")
        m = mir.conn()
        self.assertIn("host: svc.example-shadow:8080", m["head"].lower())
        self.assertEqual(m["body"], b"A" * 10000)
        self.assertEqual(self.main.requests, 0)  # the main upstream still waits for the body
        c.sendall(b"B" * 10000)
        resp = c.recv(4096)
        self.assertTrue(resp.startswith(b"HTTP/1.1 200"), resp)
        H.wait_for(lambda: len(mir.conn()["body"]) == 20000, what="the whole body at the mirror")
        self.assertEqual(mir.conn()["body"], b"A" * 10000 + b"B" * 10000)
        self.p.wait_stat("cluster.mirror.upstream_rq_200", lambda v: v == 1)
        self.assertEqual(self.p.stat("cluster.main.retry_or_shadow_abandoned"), 0)

    def test_large_body_reaches_the_mirror_whole(self):
        rec = self.recorder()
        self.start([{"match": {"prefix": "/"}, "route": {
            "cluster": "main", "request_mirror_policies": [{"cluster": "mirror"}]}}],
            [rec.address])
        body = bytes(range(256)) * (8 * 4096)  # 8 MiB, 8x the default buffer limit
        # "Keeps up" is relative to the main upstream, which lives in this same Python process:
        # sent at once, a GIL stall of the recorder alone could rightly get the copy abandoned.
        # Paced at ~6 MB/s, the mirror would have to stall for over 300 ms to fall 2 MiB behind.
        step = 128 << 10

        def paced():
            for off in range(0, len(body), step):
                yield body[off:off + step]
                time.sleep(0.02)

        st, data, _ = request(self.port, "POST", "/copy", body=paced(),
                              headers={"content-length": str(len(body))})
        d = json.loads(data)
        self.assertEqual((st, d["server"], d["body_len"]), (200, "main", len(body)))
        H.wait_for(lambda: rec.count() == 1, what="the 8 MiB copy")
        self.assertEqual((rec.seen[0]["body_len"], rec.seen[0]["body_sha"]),
                         (len(body), hashlib.sha256(body).hexdigest()))
        self.p.wait_stat("cluster.mirror.upstream_rq_200", lambda v: v == 1)
        self.assertEqual(self.p.stat("cluster.main.retry_or_shadow_abandoned"), 0)

    def test_mirror_that_never_reads_is_abandoned(self):
        stall = self.raw_mirror("stall")
        self.start([{"match": {"prefix": "/"}, "route": {
            "cluster": "main", "request_mirror_policies": [{"cluster": "mirror"}]}}],
            [stall.address])
        pid = self.p.proc.pid
        hwm0 = H.rss_kb(pid, "VmHWM")
        body = b"z" * (32 << 20)
        st, data, took = request(self.port, "POST", "/stall", body=body)
        self.assertEqual((st, json.loads(data)["body_len"]), (200, len(body)))
        self.assertLess(took, 8.0)
        # Held per copy: the buffer limit (1 MiB) plus the codec's watermark, not 32 MiB.
        grew = H.rss_kb(pid, "VmHWM") - hwm0
        H.note("peak RSS grew by %d KiB for a 32 MiB body", grew)
        self.assertLess(grew, 16 << 10)
        self.p.wait_stat("cluster.main.retry_or_shadow_abandoned", lambda v: v == 1)
        self.p.wait_stat("cluster.mirror.upstream_rq_tx_reset", lambda v: v == 1)
        self.assertEqual(self.p.stat("cluster.mirror.upstream_rq_active"), 0)
        H.wait_for(lambda: stall.conn() is not None, what="the stalled mirror's connection")

    def test_client_reset_mid_body_resets_the_copy(self):
        mir = self.raw_mirror()
        self.start([{"match": {"prefix": "/"}, "route": {
            "cluster": "main", "request_mirror_policies": [{"cluster": "mirror"}]}}],
            [mir.address])
        c = self.open_post("/gone", 100000, b"C" * 5000)
        H.wait_for(lambda: (mir.conn() or {}).get("head") and len(mir.conn()["body"]) >= 5000,
                   what="the first part at the mirror")
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # RST
        # Envoy's router cancels its shadow streams on destroy: the copy is reset, not finished.
        self.p.wait_stat("cluster.mirror.upstream_rq_tx_reset", lambda v: v == 1)
        self.p.wait_stat("http.%s.downstream_cx_destroy_remote_active_rq" % PREFIX,
                         lambda v: v == 1)
        time.sleep(0.2)
        self.assertEqual(len(mir.conn()["body"]), 5000)
        self.assertEqual(self.p.stat("cluster.mirror.upstream_rq_active"), 0)
        self.assertEqual(self.p.stat("cluster.main.retry_or_shadow_abandoned"), 0)

    def test_response_before_body_end_resets_the_copy(self):
        early = self.raw_mirror("early")
        mir = self.raw_mirror()
        self.start([{"match": {"prefix": "/"}, "route": {
            "cluster": "early", "request_mirror_policies": [{"cluster": "mirror"}]}}],
            [mir.address], [H.cluster("early", [early.address])])
        c = self.open_post("/early", 100000, b"E" * 5000)
        self.addCleanup(c.close)
        self.assertTrue(c.recv(4096).startswith(b"HTTP/1.1 200"))
        H.wait_for(lambda: (mir.conn() or {}).get("head") is not None, what="the copy's headers")
        try:
            c.sendall(b"F" * 20000)
        except OSError:
            pass  # the proxy may close the connection as the response ended the exchange
        # The main stream ended before its request: Envoy cancels the shadow streams.
        self.p.wait_stat("cluster.mirror.upstream_rq_tx_reset", lambda v: v == 1)
        time.sleep(0.2)
        self.assertLess(len(mir.conn()["body"]), 100000)
        self.assertEqual(self.p.stat("cluster.mirror.upstream_rq_active"), 0)


if __name__ == "__main__":
    H.main()

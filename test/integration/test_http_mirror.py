"""Request mirroring (RouteAction.request_mirror_policies, Envoy's shadow writer): a copy of each
request goes to the mirror cluster's own upstream with ":authority" suffixed "-shadow" and the
request body, fire and forget. The main response never waits for the mirror nor fails with it
(mirror upstream down, slow past the route timeout); a 0% runtime fraction mirrors nothing; a
cluster_header naming no cluster and a body over the buffer limit skip the copy and count;
Istio's VirtualService mirror / mirrorPercentage shapes are accepted; counters land on the
mirror cluster like any upstream request; a copy still in flight when the proxy stops is dropped
cleanly."""
import hashlib
import http.client
import http.server
import json
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
        # A body over the buffer limit cancels the copy; the main request still gets all of it.
        body = b"b" * 4096
        st, data, _ = request(self.port, "POST", "/large", body=body)
        self.assertEqual((st, json.loads(data)["body_len"]), (200, 4096))
        self.assertEqual(self.p.wait_stat("cluster.main.retry_or_shadow_abandoned",
                                          lambda v: v == 1), 1)
        st, data, _ = request(self.port, "POST", "/large", body=b"s" * 100)
        H.wait_for(lambda: rec.count() == 2, what="the small body's copy")
        time.sleep(0.2)
        self.assertEqual(rec.count(), 2)
        self.assertEqual(rec.seen[1]["body_len"], 100)


if __name__ == "__main__":
    H.main()

"""HTTP connection manager and router end to end: real clients (http.client, curl, nghttp,
h2load) against Python HTTP/1.1 upstreams through msm-proxy — keep-alive reuse, chunked
bodies, 100-continue, pipelining, HTTP/2 downstream and upstream, routing (prefix, headers,
weighted clusters, direct responses, redirects, no route), retries (503, connect failure),
timeouts, header mutations, Envoy's x-* headers and stats, and malformed input."""
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import unittest

import harness as H
import http_peers as P

HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                                    "Router"}}
H2_OPTS = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}


def hcm(routes=None, vhosts=None, prefix="ingress", filters=None, **extra):
    if vhosts is None:
        vhosts = [{"name": "vh", "domains": ["*"], "routes": routes}]
    cfg = {"@type": HCM_TYPE, "stat_prefix": prefix,
           "route_config": {"name": "rc", "virtual_hosts": vhosts},
           "http_filters": (filters or []) + [ROUTER]}
    cfg.update(extra)
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": cfg}


def http_config(routes, clusters, port=None, **hcm_extra):
    port = port or H.free_port()
    return H.bootstrap(listeners=[H.listener("main", H.sock_addr(port),
                                             [hcm(routes, **hcm_extra)])],
                       clusters=clusters)


def to(cluster, **extra):
    r = {"cluster": cluster}
    r.update(extra)
    return r


def conn(proxy, timeout=H.IO_TIMEOUT):
    return http.client.HTTPConnection("127.0.0.1", proxy.listener_port(), timeout=timeout)


def get(proxy, path, method="GET", body=None, headers=None):
    c = conn(proxy)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def have(tool):
    return shutil.which(tool) is not None


class HttpTestCase(H.ProxyTestCase):
    def http_upstream(self, name="up"):
        u = P.HttpUpstream(name)
        self.addCleanup(u.stop)
        return u

    def proxy(self, routes, clusters, **hcm_extra):
        return self.start_proxy(lambda: http_config(routes, clusters, **hcm_extra))


class Http1Test(HttpTestCase):
    def test_keepalive_reuse_headers_and_stats(self):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])])
        c = conn(p)
        for i in range(3):
            c.request("GET", "/item/%d?q=1" % i, headers={"x-custom": "v%d" % i})
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.getheader("server"), "envoy")
            self.assertIsNotNone(r.getheader("date"))
            self.assertIsNotNone(r.getheader("x-envoy-upstream-service-time"))
            d = json.loads(r.read())
            self.assertEqual(d["path"], "/item/%d?q=1" % i)
            hd = d["headers"]
            self.assertEqual(hd["x-custom"], ["v%d" % i])
            self.assertEqual(hd["host"], ["127.0.0.1:%d" % p.listener_port()])
            self.assertEqual(hd["x-forwarded-proto"], ["http"])
            self.assertEqual(len(hd["x-request-id"][0]), 36)
            self.assertNotIn("x-forwarded-for", hd)  # use_remote_address is false by default
            self.assertEqual(d["conn"], 1)  # one upstream connection, reused
        c.close()
        st = p.stats()
        self.assertEqual(st["http.ingress.downstream_rq_2xx"], 3)
        self.assertEqual(st["http.ingress.downstream_rq_http1_total"], 3)
        self.assertEqual(st["http.ingress.downstream_cx_http1_total"], 1)
        self.assertEqual(st["cluster.up.upstream_rq_200"], 3)
        self.assertEqual(st["cluster.up.upstream_rq_2xx"], 3)
        self.assertEqual(st["cluster.up.upstream_cx_total"], 1)
        self.assertEqual(st["cluster.up.upstream_cx_http1_total"], 1)
        self.assertEqual(up.connections, 1)

    def test_bodies_chunked_and_content_length(self):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])])
        payload = os.urandom(300000)
        st, _, body = get(p, "/post", "POST", payload)
        d = json.loads(body)
        self.assertEqual(d["body_len"], len(payload))
        self.assertEqual(d["headers"]["content-length"], [str(len(payload))])
        # chunked request body (http.client sends chunked for an iterable)
        c = conn(p)
        c.request("POST", "/c", body=iter([b"a" * 1000, b"b" * 70000, b"c"]),
                  encode_chunked=True)
        r = c.getresponse()
        d = json.loads(r.read())
        self.assertEqual(d["body_len"], 71001)
        self.assertEqual(d["headers"]["transfer-encoding"], ["chunked"])
        # chunked response
        c.request("GET", "/chunked/5")
        r = c.getresponse()
        self.assertEqual(r.getheader("transfer-encoding"), "chunked")
        self.assertEqual(r.read(), b"".join(b"chunk-%d;" % i for i in range(5)))
        # a big response streams through
        c.request("GET", "/big/3000000")
        r = c.getresponse()
        self.assertEqual(len(r.read()), 3000000)
        c.close()

    def test_100_continue_and_pipelining(self):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])])
        s = socket.create_connection(("127.0.0.1", p.listener_port()), timeout=5)
        self.addCleanup(s.close)
        s.sendall(b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        self.assertEqual(s.recv(100), b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        resp = s.recv(65536)
        self.assertIn(b"HTTP/1.1 200 OK", resp)
        self.assertNotIn(b'"expect"', resp)  # the expectation is not forwarded
        # Three pipelined requests in one write: three responses, in order.
        s2 = socket.create_connection(("127.0.0.1", p.listener_port()), timeout=5)
        self.addCleanup(s2.close)
        s2.sendall(b"".join(b"GET /pipe/%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(3)))
        got = b""
        deadline = time.time() + 5
        while b'"/pipe/2"' not in got and time.time() < deadline:
            got += s2.recv(65536)
        idx = [got.find(b"/pipe/%d" % i) for i in range(3)]
        self.assertTrue(0 < idx[0] < idx[1] < idx[2], got)

    def test_http10_rejected_and_connection_close(self):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])])
        out = P.raw_exchange(p.listener_port(), b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"), out)
        out = P.raw_exchange(p.listener_port(),
                             b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        self.assertIn(b"connection: close\r\n", out)
        self.assertIn(b"200 OK", out)


class RoutingTest(HttpTestCase):
    def test_routes_direct_redirect_no_route_and_headers(self):
        a, b = self.http_upstream("a"), self.http_upstream("b")
        routes = [
            {"match": {"path": "/exact"}, "route": to("a")},
            {"match": {"prefix": "/hdr", "headers": [
                {"name": "x-canary", "string_match": {"exact": "yes"}}]}, "route": to("b")},
            {"match": {"safe_regex": {"regex": "/re/[0-9]+"}}, "route": to("b")},
            {"match": {"prefix": "/Case", "case_sensitive": False}, "route": to("b")},
            {"match": {"prefix": "/q", "query_parameters": [
                {"name": "v", "string_match": {"exact": "2"}}]}, "route": to("b")},
            {"match": {"prefix": "/direct"},
             "direct_response": {"status": 418, "body": {"inline_string": "teapot"}}},
            {"match": {"prefix": "/old"},
             "redirect": {"path_redirect": "/new", "response_code": "FOUND"}},
            {"match": {"prefix": "/rw/"}, "route": to("a", prefix_rewrite="/rewritten/",
                                                      host_rewrite_literal="rewritten.example")},
            {"match": {"prefix": "/mut"}, "route": to("a"),
             "request_headers_to_add": [{"header": {"key": "x-added", "value": "r"}},
                                        {"header": {"key": "x-from",
                                                    "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}],
             "request_headers_to_remove": ["x-drop"],
             "response_headers_to_add": [{"header": {"key": "x-resp", "value": "1"}}],
             "response_headers_to_remove": ["x-upstream"]},
            {"match": {"prefix": "/nocluster"}, "route": to("missing")},
            {"match": {"prefix": "/a"}, "route": to("a")},
        ]
        p = self.proxy(routes, [H.cluster("a", [a.address]), H.cluster("b", [b.address])])

        def server(path, headers=None):
            st, h, body = get(p, path, headers=headers)
            self.assertEqual(st, 200, body)
            return json.loads(body)["server"]
        self.assertEqual(server("/exact"), "a")
        self.assertEqual(server("/hdr", {"x-canary": "yes"}), "b")
        st, _, _ = get(p, "/hdr", headers={"x-canary": "no"})
        self.assertEqual(st, 404)
        self.assertEqual(server("/re/123"), "b")
        self.assertEqual(get(p, "/re/abc")[0], 404)
        self.assertEqual(server("/case/x"), "b")
        self.assertEqual(server("/q?v=2"), "b")
        self.assertEqual(get(p, "/q?v=3")[0], 404)
        st, h, body = get(p, "/direct")
        self.assertEqual((st, body, h["content-type"]), (418, b"teapot", "text/plain"))
        st, h, body = get(p, "/old?x=1")
        self.assertEqual(st, 302)
        self.assertEqual(h["location"], "http://127.0.0.1:%d/new?x=1" % p.listener_port())
        st, h, body = get(p, "/rw/x?k=v")
        d = json.loads(body)
        self.assertEqual(d["path"], "/rewritten/x?k=v")
        self.assertEqual(d["headers"]["host"], ["rewritten.example"])
        self.assertEqual(d["headers"]["x-envoy-original-path"], ["/rw/x?k=v"])
        st, h, body = get(p, "/mut", headers={"x-drop": "1"})
        d = json.loads(body)
        self.assertEqual(d["headers"]["x-added"], ["r"])
        self.assertEqual(d["headers"]["x-from"], ["127.0.0.1"])
        self.assertNotIn("x-drop", d["headers"])
        self.assertEqual(h["x-resp"], "1")
        self.assertNotIn("x-upstream", h)
        st, h, body = get(p, "/nocluster")
        self.assertEqual(st, 503)
        st, h, body = get(p, "/zzz")
        self.assertEqual((st, body), (404, b""))
        stats = p.stats()
        self.assertEqual(stats["http.ingress.no_route"], 4)
        self.assertEqual(stats["http.ingress.no_cluster"], 1)
        self.assertEqual(stats["http.ingress.rq_direct_response"], 1)
        self.assertEqual(stats["http.ingress.rq_redirect"], 1)
        self.assertEqual(stats["http.ingress.downstream_rq_4xx"], 5)

    def test_virtual_hosts_by_domain(self):
        a, b, c = self.http_upstream("a"), self.http_upstream("b"), self.http_upstream("c")
        vhosts = [
            {"name": "exact", "domains": ["svc.example.com", "svc.example.com:8080"],
             "routes": [{"match": {"prefix": "/"}, "route": to("a")}]},
            {"name": "suffix", "domains": ["*.example.com"],
             "routes": [{"match": {"prefix": "/"}, "route": to("b")}]},
            {"name": "prefix", "domains": ["api.*"],
             "routes": [{"match": {"prefix": "/"}, "route": to("c")}]},
        ]
        p = self.start_proxy(lambda: H.bootstrap(
            listeners=[H.listener("main", H.sock_addr(H.free_port()), [hcm(vhosts=vhosts)])],
            clusters=[H.cluster(n, [u.address]) for n, u in (("a", a), ("b", b), ("c", c))]))

        def who(host):
            st, _, body = get(p, "/", headers={"host": host})
            return json.loads(body)["server"] if st == 200 else st
        self.assertEqual(who("svc.example.com"), "a")
        self.assertEqual(who("SVC.Example.com:8080"), "a")
        self.assertEqual(who("x.example.com"), "b")
        self.assertEqual(who("api.other"), "c")
        self.assertEqual(who("nothing.org"), 404)

    def test_weighted_clusters_split(self):
        a, b = self.http_upstream("a"), self.http_upstream("b")
        p = self.proxy([{"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
            {"name": "a", "weight": 80}, {"name": "b", "weight": 20}]}}}],
            [H.cluster("a", [a.address]), H.cluster("b", [b.address])])
        c = conn(p)
        n = 400
        for _ in range(n):
            c.request("GET", "/w")
            c.getresponse().read()
        c.close()
        self.assertEqual(a.requests + b.requests, n)
        # 80/20 with binomial noise: 320 +- 4 sigma (sigma = 8)
        self.assertTrue(288 <= a.requests <= 352, (a.requests, b.requests))


class RetryTimeoutTest(HttpTestCase):
    def test_retry_on_503_and_limits(self):
        up = self.http_upstream()
        retry = {"retry_on": "connect-failure,refused-stream,unavailable,cancelled,"
                             "retriable-status-codes",
                 "num_retries": 2, "retriable_status_codes": [503],
                 "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}],
                 "host_selection_retry_max_attempts": "5",
                 "retry_back_off": {"base_interval": "0.005s"}}
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up", retry_policy=retry)}],
                       [H.cluster("up", [up.address])])
        st, _, body = get(p, "/flaky/k1/1", "POST", b"payload")
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body)["body_len"], 7)  # the body was replayed
        st, _, body = get(p, "/flaky/k2/5")
        self.assertEqual(st, 503)  # 3 attempts, all 503
        stats = p.stats()
        self.assertEqual(stats["cluster.up.upstream_rq_retry"], 3)
        self.assertEqual(stats["cluster.up.upstream_rq_retry_success"], 1)
        self.assertEqual(stats["cluster.up.upstream_rq_retry_limit_exceeded"], 1)
        self.assertEqual(stats["cluster.up.upstream_rq_503"], 4)
        self.assertEqual(stats["cluster.up.upstream_rq_200"], 1)
        self.assertEqual(up.flaky["k2"], 3)

    def test_retry_connect_failure_to_next_host(self):
        up = self.http_upstream("good")
        dead = H.free_port()
        retry = {"retry_on": "connect-failure", "num_retries": 3,
                 "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}],
                 "host_selection_retry_max_attempts": "10",
                 "retry_back_off": {"base_interval": "0.001s"}}
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up", retry_policy=retry)}],
                       [H.cluster("up", [H.sock_addr(dead), up.address], lb_policy="ROUND_ROBIN")])
        for _ in range(6):
            st, _, body = get(p, "/x")
            self.assertEqual(st, 200)
        stats = p.stats()
        self.assertGreaterEqual(stats["cluster.up.upstream_cx_connect_fail"], 1)
        self.assertEqual(stats["cluster.up.upstream_rq_retry"],
                         stats["cluster.up.upstream_cx_connect_fail"])
        # Without a retry policy, a dead host is a 503 with Envoy's body.
        p2 = self.proxy([{"match": {"prefix": "/"}, "route": to("dead")}],
                        [H.cluster("dead", [H.sock_addr(dead)])])
        st, h, body = get(p2, "/")
        self.assertEqual(st, 503)
        self.assertTrue(body.startswith(b"upstream connect error or disconnect/reset before "
                                        b"headers. reset reason: connection failure"), body)

    def test_timeouts(self):
        up = self.http_upstream()
        def q(v):
            return {"prefix": "/", "query_parameters": [{"name": "t",
                                                         "string_match": {"exact": v}}]}
        p = self.proxy([
            {"match": q("slow"), "route": to("up", timeout="0.2s")},
            {"match": q("pt"), "route": to("up", timeout="3s", retry_policy={
                "retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.2s"})},
            {"match": {"prefix": "/"}, "route": to("up")}],
            [H.cluster("up", [up.address])])
        t0 = time.time()
        st, h, body = get(p, "/sleep/2000?t=slow")
        self.assertEqual((st, body), (504, b"upstream request timeout"))
        self.assertLess(time.time() - t0, 1.5)
        st, _, _ = get(p, "/sleep/1000?t=pt")
        self.assertEqual(st, 504)
        st, _, _ = get(p, "/sleep/10")
        self.assertEqual(st, 200)
        stats = p.stats()
        self.assertEqual(stats["cluster.up.upstream_rq_timeout"], 1)
        self.assertEqual(stats["cluster.up.upstream_rq_per_try_timeout"], 2)
        self.assertEqual(stats["http.ingress.downstream_rq_5xx"], 2)

    def test_is_timeout_retry_header(self):
        """VirtualHost.include_is_timeout_retry_header: a retried request says whether a
        per-try timeout caused it; a first attempt carries nothing."""
        up = self.http_upstream()
        retry = {"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.2s",
                 "retry_back_off": {"base_interval": "0.001s"}}
        p = self.proxy(None, [H.cluster("up", [up.address])], vhosts=[{
            "name": "vh", "domains": ["*"], "include_is_timeout_retry_header": True,
            "routes": [{"match": {"prefix": "/"}, "route": to("up", timeout="5s",
                                                              retry_policy=retry)}]}])
        for path, want in (("/slowonce/a/1500", ["true"]), ("/flaky/b/1", ["false"]),
                           ("/describe", None)):
            st, _, body = get(p, path)
            self.assertEqual(st, 200, path)
            self.assertEqual(json.loads(body)["headers"].get("x-envoy-is-timeout-retry"), want,
                             path)

    def test_request_timeout_408(self):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])], request_timeout="0.3s")
        s = socket.create_connection(("127.0.0.1", p.listener_port()), timeout=5)
        self.addCleanup(s.close)
        s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        out = H.recv_until_eof(s, timeout=5)
        self.assertTrue(out.startswith(b"HTTP/1.1 408 Request Timeout"), out)
        self.assertEqual(p.stat("http.ingress.downstream_rq_timeout"), 1)

    def test_upstream_idle_timeout_and_request_limit(self):
        """An upstream connection's idle time counts from its last response (the pool settles a
        stream's end right after the read that ended it), it closes after idle_timeout, and
        after max_requests_per_connection requests."""
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address], common_http_protocol_options={
                           "idle_timeout": "0.6s", "max_requests_per_connection": 3})])
        # Five requests 0.2 s apart (1 s in all, longer than the idle timeout): two connections,
        # the first closed by the request limit, neither by the idle timeout.
        for _ in range(5):
            st, _, _ = get(p, "/")
            self.assertEqual(st, 200)
            time.sleep(0.2)
        last = time.monotonic() - 0.2
        stats = p.stats()
        self.assertEqual(stats["cluster.up.upstream_cx_total"], 2)
        self.assertEqual(stats["cluster.up.upstream_cx_max_requests"], 1)
        self.assertEqual(stats["cluster.up.upstream_cx_idle_timeout"], 0)
        p.wait_stat("cluster.up.upstream_cx_idle_timeout", lambda v: v == 1)
        waited = time.monotonic() - last
        self.assertGreater(waited, 0.6 * 0.9)
        self.assertLess(waited, 3.0)
        self.assertEqual(p.stat("cluster.up.upstream_cx_active"), 0)


class LimitsTest(HttpTestCase):
    def test_circuit_breakers(self):
        up = self.http_upstream()
        cl = H.cluster("up", [up.address], circuit_breakers={"thresholds": [
            {"max_connections": 1, "max_pending_requests": 1, "max_requests": 1}]})
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}], [cl])
        results = []

        def slow():
            results.append(get(p, "/sleep/600")[0])
        import threading
        ts = [threading.Thread(target=slow) for _ in range(3)]
        for t in ts:
            t.start()
            time.sleep(0.1)
        for t in ts:
            t.join()
        self.assertEqual(sorted(results), [200, 503, 503], results)
        st = p.stats()
        self.assertEqual(st["cluster.up.upstream_rq_pending_overflow"], 2)
        self.assertEqual(st["cluster.up.circuit_breakers.default.rq_open"], 0)
        self.assertEqual(get(p, "/after")[0], 200)

    def test_unimplemented_security_filters_are_rejected(self):
        authz = {"name": "envoy.filters.http.ext_authz", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"}}
        cfg = http_config([{"match": {"prefix": "/"}, "route": to("c")}],
                          [H.cluster("c", [H.sock_addr(1)])], filters=[authz])
        path = os.path.join(self.tmp, "authz.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        r = self.run_binary(["-c", path, "--mode", "validate"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("http filter 'envoy.filters.http.ext_authz' "
                      "(envoy.extensions.filters.http.ext_authz.v3.ExtAuthz) is not supported "
                      "yet", r.stdout + r.stderr)
        # ...unless marked optional, which Envoy skips too.
        authz["is_optional"] = True
        with open(path, "w") as f:
            json.dump(cfg, f)
        r = self.run_binary(["-c", path, "--mode", "validate"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_drain_closes_keepalive(self):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])])
        p.extra_args = []
        c = conn(p)
        c.request("GET", "/before")
        r = c.getresponse()
        r.read()
        self.assertIsNone(r.getheader("connection"))
        p.proc.send_signal(15)  # SIGTERM: drain
        H.wait_for(lambda: p.stat("server.state") == 1, what="draining")
        c.request("GET", "/during")
        r = c.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("connection"), "close")
        c.close()
        p.expect_exit = 0


RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


class RbacHttpTest(HttpTestCase):
    """envoy.filters.http.rbac with the rule shapes istiod renders for an AuthorizationPolicy
    (methods and paths as and/or rules, principals as or_ids)."""

    def policy_filter(self):
        get_info = {"and_rules": {"rules": [
            {"or_rules": {"rules": [{"header": {"name": ":method",
                                                "string_match": {"exact": "GET"}}}]}},
            {"or_rules": {"rules": [{"url_path": {"path": {"prefix": "/info"}}}]}}]}}
        post_data = {"and_rules": {"rules": [
            {"or_rules": {"rules": [{"header": {"name": ":method", "exact_match": "POST"}}]}},
            {"or_rules": {"rules": [{"url_path": {"path": {"exact": "/data"}}}]}}]}}
        return {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": RBAC_TYPE, "shadow_rules_stat_prefix": "istio_dry_run_allow_",
            "rules": {"policies": {"ns[default]-policy[httpbin]-rule[0]": {
                "permissions": [get_info, post_data],
                "principals": [{"or_ids": {"ids": [{"remote_ip": {
                    "address_prefix": "127.0.0.0", "prefix_len": 8}}]}}]}}}}}

    def test_allow_by_method_and_path(self):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])], filters=[self.policy_filter()])
        self.assertEqual(get(p, "/info/x")[0], 200)
        self.assertEqual(get(p, "/info?q=1")[0], 200)  # the query is not part of url_path
        self.assertEqual(get(p, "/data", method="POST", body=b"x")[0], 200)
        st, _, body = get(p, "/data")  # GET /data: no permission matches
        self.assertEqual((st, body), (403, b"RBAC: access denied"))
        self.assertEqual(get(p, "/admin")[0], 403)
        stats = p.stats()
        self.assertEqual(stats["http.ingress.rbac.allowed"], 3)
        self.assertEqual(stats["http.ingress.rbac.denied"], 2)

    def test_per_route_override_disables(self):
        up = self.http_upstream()
        open_route = {"match": {"prefix": "/public"}, "route": to("up"),
                      "typed_per_filter_config": {"envoy.filters.http.rbac": {
                          "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3."
                                   "RBACPerRoute"}}}
        p = self.proxy([open_route, {"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])], filters=[self.policy_filter()])
        self.assertEqual(get(p, "/public/x")[0], 200)  # empty per-route RBAC: no rules
        self.assertEqual(get(p, "/private")[0], 403)


class InternalAddressTest(HttpTestCase):
    """use_remote_address: x-envoy-internal for internal clients, x-envoy-external-address for
    others (a client's own x-envoy-internal is dropped); internal_address_config replaces
    Envoy's legacy default (RFC 1918 and loopback)."""

    def seen(self, **hcm_extra):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])], use_remote_address=True, **hcm_extra)
        st, _, body = get(p, "/describe", headers={"x-envoy-internal": "true"})
        self.assertEqual(st, 200)
        h = json.loads(body)["headers"]
        return h.get("x-envoy-internal"), h.get("x-envoy-external-address")

    def test_default_and_configured(self):
        self.assertEqual(self.seen(), (["true"], None))
        self.assertEqual(self.seen(internal_address_config={"cidr_ranges": [
            {"address_prefix": "10.0.0.0", "prefix_len": 8}]}), (None, ["127.0.0.1"]))
        self.assertEqual(self.seen(internal_address_config={"cidr_ranges": [
            {"address_prefix": "127.0.0.0", "prefix_len": 8}]}), (["true"], None))


class GrpcLocalReplyTest(HttpTestCase):
    """A local reply to a gRPC request is a gRPC answer, as Envoy's: HTTP 200, trailers-only,
    grpc-status mapped from the HTTP status (404 -> UNIMPLEMENTED, 403 -> PERMISSION_DENIED,
    503 -> UNAVAILABLE), the text as a percent-encoded grpc-message; the access log and the
    stats see the 200. Other requests keep the HTTP reply."""

    def test_grpc_local_replies(self):
        dead = H.free_port()
        deny = {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": RBAC_TYPE, "rules": {"action": "DENY", "policies": {"no-admin": {
                "permissions": [{"url_path": {"path": {"prefix": "/admin."}}}],
                "principals": [{"any": True}]}}}}}
        p = self.proxy([{"match": {"prefix": "/pkg."}, "route": to("dead")},
                        {"match": {"prefix": "/admin."}, "route": to("dead")}],
                       [H.cluster("dead", [H.sock_addr(dead)])], filters=[deny])
        grpc = {"content-type": "application/grpc", "te": "trailers"}
        for path, code, msg in (("/other.Svc/M", "12", None),
                                ("/admin.Svc/M", "7", "RBAC: access denied"),
                                ("/pkg.Svc/M", "14", "upstream connect error")):
            st, h, body = get(p, path, method="POST", body=b"\0\0\0\0\0", headers=grpc)
            self.assertEqual((st, h.get("content-type"), h.get("grpc-status"), body),
                             (200, "application/grpc", code, b""), path)
            if msg:
                self.assertTrue(h["grpc-message"].startswith(msg), h)
        # Not gRPC: the HTTP local reply. gRPC-Web is not gRPC either (Envoy's
        # hasGrpcContentType): its clients read trailers from the body, not from headers.
        st, h, body = get(p, "/other.Svc/M")
        self.assertEqual((st, h.get("grpc-status")), (404, None))
        for ct in ("application/grpc-web", "application/grpc-web-text+proto", "application/grpcx"):
            st, h, _ = get(p, "/other.Svc/M", method="POST", body=b"x",
                           headers={"content-type": ct})
            self.assertEqual((st, h.get("grpc-status")), (404, None), ct)
        st, h, _ = get(p, "/other.Svc/M", method="POST", body=b"\0\0\0\0\0",
                       headers={"content-type": "application/grpc+proto"})
        self.assertEqual((st, h.get("grpc-status")), (200, "12"))
        stats = p.stats()
        self.assertEqual(stats["http.ingress.downstream_rq_2xx"], 4)
        self.assertEqual(stats["http.ingress.downstream_rq_4xx"], 4)


class Http2Test(HttpTestCase):
    def test_h2c_downstream_curl_and_nghttp(self):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])])
        url = "http://127.0.0.1:%d/h2/one" % p.listener_port()
        r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "-", "-w",
                            "\n%{http_version} %{http_code}", url], capture_output=True,
                           timeout=10)
        body, _, tail = r.stdout.rpartition(b"\n")
        self.assertEqual(tail, b"2 200")
        d = json.loads(body)
        self.assertEqual(d["headers"]["host"], ["127.0.0.1:%d" % p.listener_port()])
        # POST through HTTP/2 to an HTTP/1.1 upstream, body intact
        r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "--data-binary",
                            "@-", url], input=b"z" * 100000, capture_output=True, timeout=10)
        self.assertEqual(json.loads(r.stdout)["body_len"], 100000)
        if have("nghttp"):
            urls = ["http://127.0.0.1:%d/n/%d" % (p.listener_port(), i) for i in range(8)]
            r = subprocess.run(["nghttp", "-n", "-s"] + urls, capture_output=True, timeout=20)
            self.assertEqual(r.returncode, 0, r.stderr)
        st = p.stats()
        self.assertEqual(st["http.ingress.downstream_cx_http2_total"], 2 + have("nghttp"))

    def test_h2_last_response_flushed_before_drain_close(self):
        # One request per connection: the response's frames, held by the codec until the end
        # of the loop round, must leave before the drain closes the connection.
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])],
                       common_http_protocol_options={"max_requests_per_connection": 1})
        url = "http://127.0.0.1:%d/h2/last" % p.listener_port()
        for _ in range(3):
            r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "-", "-w",
                                "\n%{http_version} %{http_code}", url], capture_output=True,
                               timeout=10)
            body, _, tail = r.stdout.rpartition(b"\n")
            self.assertEqual(tail, b"2 200", r)
            self.assertEqual(json.loads(body)["path"], "/h2/last")
        st = p.stats()
        self.assertEqual(st["http.ingress.downstream_cx_max_requests_reached"], 3)

    @unittest.skipUnless(have("h2load"), "h2load (nghttp2-client) not installed")
    def test_h2_many_concurrent_streams(self):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])])
        r = subprocess.run(["h2load", "-n", "400", "-c", "2", "-m", "50",
                            "http://127.0.0.1:%d/load" % p.listener_port()],
                           capture_output=True, text=True, timeout=60)
        self.assertIn("400 succeeded", r.stdout, r.stdout + r.stderr)
        st = p.stats()
        self.assertEqual(st["http.ingress.downstream_rq_2xx"], 400)
        # h2load has its last response before the proxy has retired that stream (the gauge
        # drops when the stream is destroyed, after the response is flushed): wait, bounded.
        H.wait_for(lambda: p.stats()["http.ingress.downstream_rq_active"] == 0,
                   what="downstream_rq_active back to 0")

    def test_h2_upstream_through_two_proxies(self):
        """HTTP/1.1 client -> proxy A -> (HTTP/2 cluster) -> proxy B (AUTO codec) -> HTTP/1.1."""
        up = self.http_upstream("origin")
        pb = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                        [H.cluster("up", [up.address])], prefix="b")
        cl = H.cluster("b", [H.sock_addr(pb.listener_port())])
        cl["typed_extension_protocol_options"] = H2_OPTS
        pa = self.proxy([{"match": {"prefix": "/"}, "route": to("b")}], [cl], prefix="a")
        c = conn(pa)
        for i in range(5):
            c.request("POST", "/two/%d" % i, body=b"q" * (i * 1000))
            r = c.getresponse()
            d = json.loads(r.read())
            self.assertEqual(d["server"], "origin")
            self.assertEqual(d["body_len"], i * 1000)
        c.close()
        self.assertEqual(pa.stat("cluster.b.upstream_cx_http2_total"), 1)
        self.assertEqual(pb.stat("http.b.downstream_cx_http2_total"), 1)
        self.assertEqual(pb.stat("http.b.downstream_rq_http2_total"), 5)


def h2_frame(t, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + payload


def h2_lit(name, value):
    """HPACK literal without indexing, new name, no Huffman (7-bit lengths only)."""
    def ln(n):
        if n < 127:
            return bytes([n])
        out, n = bytearray([127]), n - 127
        while n >= 128:
            out.append((n & 0x7f) | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)
    return b"\x00" + ln(len(name)) + name + ln(len(value)) + value


def h2_request(path=b"/", extra=b""):
    return (h2_lit(b":method", b"GET") + h2_lit(b":scheme", b"http") + h2_lit(b":path", path) +
            h2_lit(b":authority", b"a") + extra)


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0)


def h2_frames(data):
    out, i = [], 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i:i + 3], "big")
        out.append((data[i + 3], data[i + 4], int.from_bytes(data[i + 5:i + 9], "big") & 0x7fffffff,
                    data[i + 9:i + 9 + n]))
        i += 9 + n
    return out


class Http2AbuseTest(HttpTestCase):
    def setUp(self):
        super().setUp()
        self.up = self.http_upstream()
        self.p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                            [H.cluster("up", [self.up.address])])

    def restart_proxy(self, **hcm_extra):
        self.p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                            [H.cluster("up", [self.up.address])], **hcm_extra)

    def exchange(self, frames, timeout=3):
        return h2_frames(P.raw_exchange(self.p.listener_port(), H2_PREFACE + frames,
                                        timeout=timeout))

    def test_rapid_reset_goaway(self):
        burst = b"".join(h2_frame(1, 5, sid, h2_request()) + h2_frame(3, 0, sid, b"\0\0\0\x08")
                         for sid in range(1, 601, 2))
        frames = self.exchange(burst)
        goaways = [f for f in frames if f[0] == 7]
        self.assertTrue(goaways, frames[-5:])
        self.assertEqual(int.from_bytes(goaways[-1][3][4:8], "big"), 0xb)  # ENHANCE_YOUR_CALM
        self.assertEqual(self.p.stat("http.ingress.downstream_rq_too_many_premature_resets"), 1)
        self.assertEqual(get(self.p, "/alive")[0], 200)

    def test_invalid_headers_end_the_connection(self):
        """Envoy's default (stream_error_on_invalid_http_message false): an invalid request
        ends the connection with GOAWAY PROTOCOL_ERROR; later streams are not served."""
        bad = h2_lit(b":method", b"GET") + h2_lit(b":path", b"/")  # no :scheme
        frames = self.exchange(h2_frame(1, 5, 1, bad) + h2_frame(1, 5, 3, h2_request(b"/late")))
        goaways = [f for f in frames if f[0] == 7]
        self.assertTrue(goaways, frames)
        self.assertEqual(int.from_bytes(goaways[0][3][4:8], "big"), 1)  # PROTOCOL_ERROR
        self.assertFalse([f for f in frames if f[0] == 1], frames)  # nothing answered
        self.assertEqual(self.up.paths, [])
        self.assertEqual(self.p.stat("http2.rx_messaging_error"), 1)
        self.assertEqual(self.p.stat("http.ingress.downstream_cx_protocol_error"), 1)
        self.assertEqual(get(self.p, "/alive")[0], 200)

    def test_invalid_headers_reset_the_stream_only(self):
        """HCM stream_error_on_invalid_http_message, or the HTTP/2 override: only the invalid
        streams are reset; the HTTP/2 override wins over the HCM's field."""
        for extra in ({"stream_error_on_invalid_http_message": True},
                      {"stream_error_on_invalid_http_message": False, "http2_protocol_options": {
                          "override_stream_error_on_invalid_http_message": True}}):
            with self.subTest(extra=extra):
                self.p.stop()
                self.up.paths.clear()
                self.restart_proxy(**extra)
                self.reset_stream_only()

    def reset_stream_only(self):
        bad = h2_lit(b":method", b"GET") + h2_lit(b":path", b"/")  # no :scheme
        big = h2_request(extra=b"".join(h2_lit(b"x-big-%d" % i, b"v" * 16000) for i in range(5)))
        blocks = [big[i:i + 16000] for i in range(0, len(big), 16000)]
        cont = h2_frame(1, 1, 5, blocks[0])
        for i, blk in enumerate(blocks[1:]):
            cont += h2_frame(9, 4 if i == len(blocks) - 2 else 0, 5, blk)
        s = socket.create_connection(("127.0.0.1", self.p.listener_port()), timeout=5)
        self.addCleanup(s.close)
        s.sendall(H2_PREFACE)
        for chunk in (h2_frame(1, 5, 1, bad), h2_frame(1, 5, 3, h2_request(extra=h2_lit(b"Bad",
                                                                                          b"x"))),
                      cont, h2_frame(1, 5, 7, h2_request(b"/ok"))):
            s.sendall(chunk)
            time.sleep(0.05)
        got, data = [], b""
        deadline = time.time() + 5
        while time.time() < deadline and not any(f[0] == 0 and f[2] == 7 and f[1] & 1
                                                   for f in got):
            s.settimeout(max(0.1, deadline - time.time()))
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            data += b
            got = h2_frames(data)
        rst = {f[2] for f in got if f[0] == 3}
        self.assertTrue({1, 3, 5} <= rst, got)
        self.assertFalse([f for f in got if f[0] == 7], got)  # no GOAWAY: the connection lives
        self.assertTrue([f for f in got if f[0] == 1 and f[2] == 7], got)
        self.assertEqual(self.up.paths, ["/ok"])
        self.assertEqual(self.p.stat("http2.header_overflow"), 1)
        self.assertEqual(self.p.stat("http2.rx_messaging_error"), 2)


class Http2OptionsTest(HttpTestCase):
    """Http2ProtocolOptions fields checked as Envoy does; the SETTINGS they put on the wire."""

    def run_validate(self, cfg):
        path = os.path.join(self.tmp, "opts.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        r = self.run_binary(["-c", path, "--mode", "validate"])
        return r.returncode, r.stdout + r.stderr

    def validate(self, opts, on_cluster=False, field="http2_protocol_options"):
        """<opts> as the HCM's <field>, or as the cluster's explicit_http_config one."""
        cluster = H.cluster("c", [H.sock_addr(1)])
        routes = [{"match": {"prefix": "/"}, "route": to("c")}]
        if on_cluster:
            cluster["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/"
                             "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {field: opts}}}
            return self.run_validate(http_config(routes, [cluster]))
        return self.run_validate(http_config(routes, [cluster], **{field: opts}))

    def test_refused_options(self):
        def cs(*pairs):
            return {"custom_settings_parameters": [{"identifier": i, "value": v}
                                                   for i, v in pairs]}
        cases = [
            ({"allow_metadata": True}, "METADATA frames are not supported"),
            (cs((2, 1)), "server push is not supported by Envoy"),
            (cs((8, 1)), "SETTINGS parameter must only be configured through the named field"),
            (dict(cs((1, 0)), hpack_table_size=100),
             "the {hpack_table_size} HTTP/2 SETTINGS parameter(s) can not be configured"),
            (cs((10, 0), (10, 1), (12, 10), (12, 10)),
             "inconsistent HTTP/2 custom SETTINGS parameter(s) detected; identifiers = {0x0a}"),
            (cs((5, 100)), "max frame size must be in [16384, 16777215]"),
            ({"max_inbound_window_update_frames_per_data_frame_sent": 0}, "must be >= 1"),
            ({"connection_keepalive": {"interval": "1s"}}, "connection_keepalive.timeout: required"),
        ]
        for opts, msg in cases:
            for on_cluster in (False, True):
                with self.subTest(opts=opts, on_cluster=on_cluster):
                    rc, out = self.validate(opts, on_cluster)
                    self.assertNotEqual(rc, 0, out)
                    self.assertIn(msg, out)
        rc, out = self.validate(cs((10, 0), (10, 0), (0x99, 7)))  # identical repeats are fine
        self.assertEqual(rc, 0, out)

    def test_refused_http1_options(self):
        """Http1ProtocolOptions this proxy does not implement are named, on the HCM and on
        clusters; enable_trailers is accepted on both."""
        def validate(h1, on_cluster):
            return self.validate(h1, on_cluster, "http_protocol_options")
        for on_cluster in (False, True):
            for h1, msg in (({"allow_custom_methods": True}, "allow_custom_methods: not supported"),
                            ({"allow_chunked_length": True}, "allow_chunked_length: not supported")):
                rc, out = validate(h1, on_cluster)
                self.assertNotEqual(rc, 0, out)
                self.assertIn(msg, out)
            rc, out = validate({"enable_trailers": True, "use_balsa_parser": True}, on_cluster)
            self.assertEqual(rc, 0, out)
        rc, out = validate({"send_fully_qualified_url": True}, True)
        self.assertIn("send_fully_qualified_url: not supported", out)

    def test_refused_hcm_fields(self):
        """HCM fields that would change trust, routing or logging and are not implemented."""
        for extra, msg in (
                ({"original_ip_detection_extensions": [{"name": "x", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.original_ip_detection."
                             "xff.v3.XffConfig"}}]}, "original_ip_detection_extensions"),
                ({"scheme_header_transformation": {"scheme_to_overwrite": "https"}},
                 "scheme_header_transformation: not supported"),
                ({"add_user_agent": True}, "add_user_agent: not supported"),
                ({"access_log_options": {"flush_access_log_on_new_request": True}},
                 "access_log_options")):
            rc, out = self.run_validate(http_config(
                [{"match": {"prefix": "/"}, "route": to("c")}],
                [H.cluster("c", [H.sock_addr(1)])], **extra))
            with self.subTest(extra=extra):
                self.assertNotEqual(rc, 0)
                self.assertIn(msg, out)

    def test_keepalive(self):
        """connection_keepalive: PINGs at the interval; a client that never answers them is
        disconnected after the timeout (http2.keepalive_timeout); one that does stays."""
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])],
                       http2_protocol_options={"connection_keepalive": {
                           "interval": "0.1s", "timeout": "0.3s",
                           "interval_jitter": {"value": 0}}})
        for answer in (True, False):
            s = socket.create_connection(("127.0.0.1", p.listener_port()), timeout=5)
            self.addCleanup(s.close)
            s.sendall(H2_PREFACE + h2_frame(4, 1, 0))
            data, pings, closed = b"", 0, False
            deadline = time.time() + 1.5
            while time.time() < deadline:
                s.settimeout(max(0.05, deadline - time.time()))
                try:
                    b = s.recv(65536)
                except socket.timeout:
                    break
                if not b:
                    closed = True
                    break
                data += b
                frames = h2_frames(data)
                used = sum(9 + len(f[3]) for f in frames)
                data = data[used:]
                for f in frames:
                    if f[0] == 6 and not f[1] & 1:
                        pings += 1
                        if answer:
                            s.sendall(h2_frame(6, 1, 0, f[3]))
            s.close()  # the answered one too, before it could time out meanwhile
            with self.subTest(answer=answer):
                self.assertGreaterEqual(pings, 2 if answer else 1)
                self.assertEqual(closed, not answer)
        self.assertEqual(p.stat("http2.keepalive_timeout"), 1)

    def test_settings_on_the_wire(self):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])],
                       http2_protocol_options={
                           "hpack_table_size": 0, "use_oghttp2_codec": True,
                           "custom_settings_parameters": [
                               {"identifier": 5, "value": 32768},
                               {"identifier": 0x99, "value": 7}]})
        frames = h2_frames(P.raw_exchange(p.listener_port(),
                                          H2_PREFACE + h2_frame(1, 5, 1, h2_request(b"/s")),
                                          timeout=3))
        settings = [f for f in frames if f[0] == 4 and not f[1] & 1]
        self.assertTrue(settings, frames)
        pl = settings[0][3]
        got = {int.from_bytes(pl[i:i + 2], "big"): int.from_bytes(pl[i + 2:i + 6], "big")
               for i in range(0, len(pl), 6)}
        self.assertEqual(got.get(1), 0)      # SETTINGS_HEADER_TABLE_SIZE
        self.assertEqual(got.get(5), 32768)  # SETTINGS_MAX_FRAME_SIZE
        self.assertEqual(got.get(0x99), 7)   # unknown to HTTP/2: passed on as configured
        self.assertTrue([f for f in frames if f[0] == 1 and f[2] == 1], frames)
        self.assertEqual(up.paths, ["/s"])


class UnderscoreHeadersTest(HttpTestCase):
    """common_http_protocol_options.headers_with_underscores_action, as Envoy's codecs: on
    requests only (HTTP/1 and HTTP/2), counted in http1.* / http2.*."""

    def start(self, action):
        self.up = self.http_upstream()
        self.p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                            [H.cluster("up", [self.up.address])],
                            common_http_protocol_options={
                                "headers_with_underscores_action": action})

    def h2_get(self, extra):
        frames = h2_frames(P.raw_exchange(self.p.listener_port(),
                                          H2_PREFACE + h2_frame(1, 5, 1, h2_request(b"/h2", extra)),
                                          timeout=3))
        return frames

    def test_reject_request(self):
        self.start("REJECT_REQUEST")
        status, _, body = get(self.p, "/h1", headers={"x_bad": "1"})
        self.assertEqual(status, 400)
        self.assertEqual(self.p.stat("http1.requests_rejected_with_underscores_in_headers"), 1)
        frames = self.h2_get(h2_lit(b"x_bad", b"1"))
        rst = [f for f in frames if f[0] == 3 and f[2] == 1]
        self.assertTrue(rst, frames)
        self.assertFalse([f for f in frames if f[0] == 1], frames)
        self.assertEqual(self.p.stat("http2.requests_rejected_with_underscores_in_headers"), 1)
        self.assertEqual(self.up.paths, [])
        # names without an underscore pass; the upstream's response is not checked
        status, _, body = get(self.p, "/fine", headers={"x-good": "1"})
        self.assertEqual(status, 200)
        self.assertEqual(self.up.paths, ["/fine"])

    def test_drop_header(self):
        self.start("DROP_HEADER")
        status, _, body = get(self.p, "/h1", headers={"x_bad": "1", "x-good": "2"})
        self.assertEqual(status, 200)
        hd = json.loads(body)["headers"]
        self.assertNotIn("x_bad", hd)
        self.assertEqual(hd["x-good"], ["2"])
        self.assertEqual(self.p.stat("http1.dropped_headers_with_underscores"), 1)
        frames = self.h2_get(h2_lit(b"x_bad", b"1") + h2_lit(b"x-good", b"3"))
        data = b"".join(f[3] for f in frames if f[0] == 0 and f[2] == 1)
        hd = json.loads(data)["headers"]
        self.assertNotIn("x_bad", hd)
        self.assertEqual(hd["x-good"], ["3"])
        self.assertEqual(self.p.stat("http2.dropped_headers_with_underscores"), 1)
        self.assertEqual(self.up.paths, ["/h1", "/h2"])


class BadInputTest(HttpTestCase):
    CASES = [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"0\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", b"501"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", b"400"),  # obs-fold
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", b"400"),  # bare CR
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n\r\n", b"400"),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(150)) +
         b"\r\n", b"431"),
        (b"GET / HTTP/9.1\r\nHost: a\r\n\r\n", b"505"),
    ]

    def test_malformed_requests(self):
        up = self.http_upstream()
        p = self.proxy([{"match": {"prefix": "/"}, "route": to("up")}],
                       [H.cluster("up", [up.address])])
        for raw, code in self.CASES:
            out = P.raw_exchange(p.listener_port(), raw)
            self.assertTrue(out.startswith(b"HTTP/1.1 " + code), (raw[:60], out[:200]))
            self.assertIn(b"connection: close", out)
        self.assertEqual(up.requests, 0)
        st = p.stats()
        self.assertEqual(st["http.ingress.downstream_cx_protocol_error"], len(self.CASES))
        # still serving
        self.assertEqual(get(p, "/ok")[0], 200)
        # a client that sends garbage HTTP/2 after the preface gets a GOAWAY, no crash
        out = P.raw_exchange(p.listener_port(), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" +
                             b"\x00\x00\x04\xff\x00\x00\x00\x00\x00" + b"\x00" * 4, timeout=3)
        self.assertGreater(len(out), 0)


if __name__ == "__main__":
    H.main()

"""Stream durations and gRPC deadlines, as Envoy: a route's max_stream_duration ends a stream
that lives too long (408, or DEADLINE_EXCEEDED to a gRPC client; downstream_rq_max_duration_
reached); with grpc_timeout_header_max set (Istio sets it on every route) a gRPC request's
grpc-timeout is the limit, capped unless the cap is 0; without a route setting the connection
manager's common_http_protocol_options.max_stream_duration applies; the deprecated
max_grpc_timeout (Istio <= 1.18) makes grpc-timeout the router's timeout and forwards the
deadline in Envoy's format; a cluster's common_http_protocol_options.max_stream_duration bounds
each upstream request (504, upstream_rq_max_duration_reached).

    /usr/bin/python3 test/integration/test_http_timeouts.py --binary build/msm-proxy
"""
import http.client
import json
import time

import harness as H
import http_peers as P

HCM = P.HCM_TYPE
ROUTER = P.ROUTER
GRPC = {"content-type": "application/grpc", "te": "trailers"}


def route(prefix, **action):
    a = {"cluster": "up", "prefix_rewrite": "/", "timeout": "0s"}
    a.update(action)
    return {"match": {"prefix": prefix}, "route": a}


ROUTES = [
    route("/istio/", max_stream_duration={"max_stream_duration": "0s",
                                          "grpc_timeout_header_max": "0s"}),
    route("/cap/", max_stream_duration={"grpc_timeout_header_max": "0.1s"}),
    route("/msd/", max_stream_duration={"max_stream_duration": "0.3s"}),
    route("/old/", max_grpc_timeout="0s"),
    route("/"),
]


class TimeoutsTest(H.ProxyTestCase):
    def start(self, hcm_extra=None, cluster_extra=None):
        self.up = P.HttpUpstream("up")
        self.addCleanup(self.up.stop)

        def cfg():
            tc = {"@type": HCM, "stat_prefix": "in", "http_filters": [ROUTER],
                  "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"],
                                                      "routes": ROUTES}]}}
            tc.update(hcm_extra or {})
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()), [
                    {"name": "envoy.filters.network.http_connection_manager",
                     "typed_config": tc}])],
                clusters=[H.cluster("up", [self.up.address], **(cluster_extra or {}))])
        self.p = self.start_proxy(cfg)

    def call(self, path, headers=None, grpc=False):
        """(status, headers dict, body, seconds)."""
        c = http.client.HTTPConnection("127.0.0.1", self.p.listener_port("main"),
                                       timeout=H.IO_TIMEOUT)
        try:
            hdrs = dict(GRPC) if grpc else {}
            hdrs.update(headers or {})
            t0 = time.monotonic()
            c.request("POST" if grpc else "GET", path, body=b"\0\0\0\0\0" if grpc else None,
                      headers=hdrs)
            r = c.getresponse()
            body = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body, \
                time.monotonic() - t0
        finally:
            c.close()

    def assert_deadline(self, path, grpc_timeout, at_least, at_most):
        st, h, body, took = self.call(path, {"grpc-timeout": grpc_timeout}, grpc=True)
        self.assertEqual((st, h.get("grpc-status"), h.get("grpc-message"), body),
                         (200, "4", "downstream duration timeout", b""), path)
        self.assertGreater(took, at_least)
        self.assertLess(took, at_most)

    def test_route_durations_and_grpc_deadlines(self):
        self.start()
        # Istio's shape: grpc-timeout is the limit (no cap), measured from the stream's start.
        self.assert_deadline("/istio/sleep/1500", "200m", 0.15, 1.2)
        # No grpc-timeout, max_stream_duration 0: no limit at all.
        st, h, _, took = self.call("/istio/sleep/400", grpc=True)
        self.assertEqual((st, h.get("grpc-status")), (200, None))
        self.assertGreater(took, 0.35)
        # The cap wins over a longer deadline.
        self.assert_deadline("/cap/sleep/1500", "10S", 0.05, 1.2)
        # max_stream_duration on a plain request: 408.
        st, _, body, took = self.call("/msd/sleep/1500")
        self.assertEqual((st, body), (408, b"downstream duration timeout"))
        self.assertGreater(took, 0.25)
        self.assertLess(took, 1.3)
        # Routes without a duration: untouched by grpc-timeout.
        st, h, _, _ = self.call("/sleep/300", {"grpc-timeout": "100m"}, grpc=True)
        self.assertEqual((st, h.get("grpc-status")), (200, None))
        self.assertEqual(self.p.stat("http.in.downstream_rq_max_duration_reached"), 3)

    def test_old_max_grpc_timeout(self):
        self.start()
        # The deadline reaches the upstream in Envoy's format (milliseconds)...
        st, _, body, _ = self.call("/old/describe", {"grpc-timeout": "5S"}, grpc=True)
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body)["headers"]["grpc-timeout"], ["5000m"])
        # ... and is the router's timeout: 504 upstream timeout, UNAVAILABLE to gRPC.
        st, h, _, took = self.call("/old/sleep/1500", {"grpc-timeout": "200m"}, grpc=True)
        self.assertEqual((st, h.get("grpc-status"), h.get("grpc-message")),
                         (200, "14", "upstream request timeout"))
        self.assertLess(took, 1.2)
        self.assertEqual(self.p.stat("cluster.up.upstream_rq_timeout"), 1)
        # Not gRPC: the route's own timeout (0s: none), grpc-timeout left alone.
        st, _, body, _ = self.call("/old/describe", {"grpc-timeout": "5S"})
        self.assertEqual(json.loads(body)["headers"]["grpc-timeout"], ["5S"])

    def test_cluster_max_stream_duration(self):
        self.start(cluster_extra={"typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/"
                         "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"max_stream_duration": "0.3s"},
                "explicit_http_config": {"http_protocol_options": {}}}}})
        st, _, body, took = self.call("/sleep/1500")
        self.assertEqual((st, body), (504, b"upstream max stream duration reached"))
        self.assertGreater(took, 0.25)
        self.assertLess(took, 1.3)
        self.assertEqual(self.p.stat("cluster.up.upstream_rq_max_duration_reached"), 1)
        self.assertEqual(self.call("/sleep/10")[0], 200)

    def test_connection_manager_duration(self):
        self.start({"common_http_protocol_options": {"max_stream_duration": "0.3s"}})
        st, _, _, took = self.call("/sleep/1500")
        self.assertEqual(st, 408)
        self.assertLess(took, 1.3)
        # A route's own max_stream_duration replaces it (0: none).
        st, _, _, took = self.call("/istio/sleep/500")
        self.assertEqual(st, 200)
        self.assertGreater(took, 0.45)


if __name__ == "__main__":
    H.main()

"""HTTP in Istio's shapes: the bootstrap's static HTTP listeners (15021 /healthz/ready -> cluster
`agent`, 15090 /stats/prometheus -> the admin) from the rendered goldens, and an outbound HCM
on RDS from a control plane (Delta ADS): the listener warms until its route configuration
arrives, route updates reach live connections, a bad route configuration is NACKed while the
previous one keeps serving, Istio's HTTP filter chain (peer metadata, grpc_stats, alpn, fault,
cors, stats) is accepted, and fault injection and CORS act per route."""
import http.client
import json
import os
import sys
import time
import unittest

import harness as H
import http_peers as P

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "controlplane"))
import controlplane as C  # noqa: E402
from test_dynamic import start_control_plane, xds_bootstrap  # noqa: E402

TYPES = None
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")


def types():
    global TYPES
    if TYPES is None:
        TYPES = C.Types(os.path.dirname(H.BINARY))
    return TYPES


def golden(name, agent_port, admin_port, health_port, prom_port):
    """A rendered Istio bootstrap golden made runnable on a dev box: no xDS, no SDS pipes,
    loopback ports picked by the test."""
    with open(os.path.join(H.SHARED, "fixtures", "istio", "bootstrap", name)) as f:
        d = json.load(f)
    d.pop("dynamic_resources", None)
    # Istio's stats_matcher keeps only its own families; the test reads the HTTP counters.
    d.pop("stats_config", None)
    d["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    sr = d["static_resources"]
    sr["clusters"] = [c for c in sr["clusters"] if c["name"] in ("prometheus_stats", "agent")]
    ports = {"agent": agent_port, "prometheus_stats": admin_port}
    for c in sr["clusters"]:
        ep = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ep["address"]["socket_address"]["port_value"] = ports[c["name"]]
    for l in sr["listeners"]:
        sa = l["address"]["socket_address"]
        sa["address"] = "127.0.0.1"
        sa["port_value"] = {15021: health_port, 15090: prom_port}[sa["port_value"]]
    return d


def get(port, path, headers=None, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=H.IO_TIMEOUT)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


class BootstrapTest(H.ProxyTestCase):
    def run_golden(self, name):
        agent = P.HttpUpstream("agent")
        self.addCleanup(agent.stop)
        ports = {}

        def cfg():
            ports.update(admin=H.free_port(), health=H.free_port(), prom=H.free_port())
            return golden(name, agent.port, ports["admin"], ports["health"], ports["prom"])
        p = self.start_proxy(cfg)
        st, h, body = get(ports["health"], "/healthz/ready")
        self.assertEqual(st, 200, body)
        d = json.loads(body)
        self.assertEqual((d["server"], d["path"]), ("agent", "/healthz/ready"))
        self.assertEqual(get(ports["health"], "/other")[0], 404)
        # 15090 proxies to whatever the admin answers for /stats/prometheus.
        st, h, body = get(ports["prom"], "/stats/prometheus")
        admin_st, admin_body = p.get("/stats/prometheus")
        self.assertEqual(st, admin_st)
        self.assertIn(h["server"], ("envoy",))
        self.assertEqual(get(ports["prom"], "/metrics")[0], 404)
        stats = p.stats()
        self.assertEqual(stats["http.agent.downstream_rq_2xx"], 1)
        self.assertEqual(stats["http.agent.downstream_rq_4xx"], 1)
        self.assertEqual(stats["http.stats.downstream_rq_total"], 2)
        self.assertEqual(stats["cluster.agent;.upstream_rq_200"], 1)
        self.assertEqual(agent.requests, 1)

    def test_default_golden(self):
        self.run_golden("default_golden.json")

    def test_all_golden(self):
        self.run_golden("all_golden.json")


def ads_bootstrap(sock_path):
    return xds_bootstrap(sock_path, "DELTA_GRPC")


def istio_http_filters():
    """Istio 1.20's outbound HCM filter chain (from the OSSM fixture dump)."""
    return [
        {"name": "istio.metadata_exchange", "typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/io.istio.http.peer_metadata.Config",
            "value": {"upstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
                      "upstream_propagation": [{"istio_headers": {}}]}}},
        {"name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": True, "stats_for_all_methods": False}},
        {"name": "istio.alpn", "typed_config": {
            "@type": "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
            "alpn_override": [
                {"alpn_override": ["istio-http/1.0", "istio", "http/1.0"]},
                {"upstream_protocol": "HTTP11",
                 "alpn_override": ["istio-http/1.1", "istio", "http/1.1"]},
                {"upstream_protocol": "HTTP2", "alpn_override": ["istio-h2", "istio", "h2"]}]}},
        {"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
        {"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
        {"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]


def outbound_listener(port, route_name):
    return types().parse_json("envoy.config.listener.v3.Listener", {
        "name": "0.0.0.0_%d" % port,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": {
            "@type": HCM, "stat_prefix": "outbound_0.0.0.0_%d" % port,
            "rds": {"config_source": {"ads": {}, "initial_fetch_timeout": "0s",
                                      "resource_api_version": "V3"},
                    "route_config_name": route_name},
            "http_filters": istio_http_filters(),
            "use_remote_address": False, "upgrade_configs": [{"upgrade_type": "websocket"}],
            "stream_idle_timeout": "0s", "normalize_path": True,
            "request_id_extension": {"typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3."
                         "UuidRequestIdConfig", "use_request_id_for_trace_sampling": True}},
            "path_with_escaped_slashes_action": "KEEP_UNCHANGED"}}]}]})


def static_cluster(name, port):
    return types().parse_json("envoy.config.cluster.v3.Cluster", {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": port}}}}]}]}})


def route_config(name, cluster, extra_routes=()):
    routes = list(extra_routes) + [{
        "match": {"prefix": "/"}, "name": "default",
        "route": {"cluster": cluster, "timeout": "0s",
                  "retry_policy": {"retry_on": "connect-failure,refused-stream,unavailable,"
                                               "cancelled,retriable-status-codes",
                                   "num_retries": 2,
                                   "retry_host_predicate": [{
                                       "name": "envoy.retry_host_predicates.previous_hosts",
                                       "typed_config": {
                                           "@type": "type.googleapis.com/envoy.extensions.retry."
                                                    "host.previous_hosts.v3.PreviousHostsPredicate"}}],
                                   "host_selection_retry_max_attempts": "5",
                                   "retriable_status_codes": [503]},
                  "max_grpc_timeout": "0s"},
        "decorator": {"operation": "svc:80/*"}}]
    return types().parse_json("envoy.config.route.v3.RouteConfiguration", {
        "name": name, "virtual_hosts": [{"name": "svc:80", "domains": ["*"], "routes": routes,
                                         "include_request_attempt_count": True}],
        "validate_clusters": False, "max_direct_response_body_size_bytes": 1048576,
        "ignore_port_in_host_matching": True})


class RdsTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        start_control_plane(self)
        self.a = P.HttpUpstream("a")
        self.b = P.HttpUpstream("b")
        self.addCleanup(self.a.stop)
        self.addCleanup(self.b.stop)
        self.port = H.free_port()
        R = self.cp.resources
        R.set(static_cluster("outbound|80||a", self.a.port))
        R.set(static_cluster("outbound|80||b", self.b.port))
        R.set(outbound_listener(self.port, "80"))

    def serve(self):
        st, h, body = get(self.port, "/x")
        return st, (json.loads(body) if st == 200 else body)

    def test_warming_update_and_nack(self):
        # No RouteConfiguration yet: the listener warms and start-up waits (Envoy's init).
        p = self.start_proxy(ads_bootstrap(self.sock), wait_ready=False)
        self.cp.wait_for(lambda: self.cp.reqs(C.TYPE_RDS))
        time.sleep(0.3)
        self.assertNotEqual(p.get("/ready")[0] if p.admin else 503, 200)
        self.cp.resources.set(route_config("80", "outbound|80||a"))
        self.cp.push()
        p._wait_ready()
        st, d = self.serve()
        self.assertEqual((st, d["server"]), (200, "a"))
        self.assertEqual(d["headers"]["x-envoy-attempt-count"], ["1"])
        stats = p.stats()
        self.assertEqual(stats["http.outbound_0.0.0.0_%d.rds.80.update_success" % self.port], 1)
        # An update reaches the next request on the same connection.
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=H.IO_TIMEOUT)
        c.request("GET", "/1")
        self.assertEqual(json.loads(c.getresponse().read())["server"], "a")
        self.cp.resources.set(route_config("80", "outbound|80||b"))
        before = len(self.cp.acks(C.TYPE_RDS))
        self.cp.push()
        self.cp.wait_for(lambda: len(self.cp.acks(C.TYPE_RDS)) > before)
        H.wait_for(lambda: self.serve()[1]["server"] == "b", what="route update")
        c.request("GET", "/2")
        self.assertEqual(json.loads(c.getresponse().read())["server"], "b")
        c.close()
        # A route configuration we cannot serve is NACKed with its field; b keeps serving.
        bad = route_config("80", "outbound|80||a", extra_routes=[{
            "match": {"prefix": "/m"},
            "route": {"cluster": "outbound|80||a",
                      "hedge_policy": {"hedge_on_per_try_timeout": True}}}])
        self.cp.resources.set(bad)
        self.cp.push()
        self.cp.wait_for(lambda: self.cp.nacks(C.TYPE_RDS))
        nack = self.cp.nacks(C.TYPE_RDS)[-1]
        self.assertIn("hedge_policy", str(nack))
        self.assertEqual(self.serve()[1]["server"], "b")
        dump = json.loads(p.get("/config_dump")[1])["configs"]
        routes = [c for c in dump if c["@type"].endswith("RoutesConfigDump")][0]
        self.assertEqual(routes["dynamic_route_configs"][0]["route_config"]["virtual_hosts"][0]
                         ["routes"][0]["route"]["cluster"], "outbound|80||b")

    def test_fault_and_cors_per_route(self):
        fault_route = {
            "match": {"prefix": "/fault"}, "route": {"cluster": "outbound|80||a"},
            "typed_per_filter_config": {"envoy.filters.http.fault": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "abort": {"http_status": 418,
                          "percentage": {"numerator": 100, "denominator": "HUNDRED"}}}}}
        delay_route = {
            "match": {"prefix": "/delay"}, "route": {"cluster": "outbound|80||a"},
            "typed_per_filter_config": {"envoy.filters.http.fault": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "delay": {"fixed_delay": "0.3s",
                          "percentage": {"numerator": 1000000, "denominator": "MILLION"}}}}}
        cors_route = {
            "match": {"prefix": "/cors"}, "route": {"cluster": "outbound|80||a"},
            "typed_per_filter_config": {"envoy.filters.http.cors": {
                "@type": "type.googleapis.com/envoy.config.route.v3.CorsPolicy",
                "allow_origin_string_match": [{"exact": "https://ok.example"}],
                "allow_methods": "GET,POST", "allow_headers": "x-a", "max_age": "60",
                "expose_headers": "x-upstream", "allow_credentials": True}}}
        self.cp.resources.set(route_config("80", "outbound|80||a",
                                           [fault_route, delay_route, cors_route]))
        p = self.start_proxy(ads_bootstrap(self.sock))
        st, h, body = get(self.port, "/fault")
        self.assertEqual((st, body), (418, b"fault filter abort"))
        t0 = time.time()
        st, h, body = get(self.port, "/delay")
        self.assertEqual(st, 200)
        self.assertGreaterEqual(time.time() - t0, 0.28)
        st, h, body = get(self.port, "/cors", {"origin": "https://ok.example",
                                                "access-control-request-method": "POST"},
                          method="OPTIONS")
        self.assertEqual(st, 200)
        self.assertEqual(h["access-control-allow-origin"], "https://ok.example")
        self.assertEqual(h["access-control-allow-methods"], "GET,POST")
        self.assertEqual(h["access-control-max-age"], "60")
        st, h, body = get(self.port, "/cors", {"origin": "https://ok.example"})
        self.assertEqual(h["access-control-allow-origin"], "https://ok.example")
        self.assertEqual(h["access-control-allow-credentials"], "true")
        self.assertEqual(h["access-control-expose-headers"], "x-upstream")
        st, h, body = get(self.port, "/cors", {"origin": "https://evil.example"})
        self.assertNotIn("access-control-allow-origin", h)
        self.assertEqual(self.a.paths.count("/cors"), 2)  # the preflight was answered here
        stats = p.stats()
        prefix = "http.outbound_0.0.0.0_%d." % self.port
        self.assertEqual(stats[prefix + "fault.aborts_injected"], 1)
        self.assertEqual(stats[prefix + "fault.delays_injected"], 1)
        self.assertEqual(stats[prefix + "cors.origin_valid"], 2)
        self.assertEqual(stats[prefix + "cors.origin_invalid"], 1)


if __name__ == "__main__":
    H.main()

"""Admin API and observability (issue 6): /stats formats, /stats/prometheus with Istio's
stats_config, /clusters, /listeners, /logging, /memory, /runtime, /certs, /reset_counters,
/drain_listeners, /config_dump mask and resource, tcp_proxy and http_connection_manager access
logs, istio.stats metrics, and bad input on the admin port (limits, slow clients, the main loop never stalls)."""
import json
import os
import re
import signal
import socket
import subprocess
import time

import harness as H
import http_peers as P

GOLDEN = None  # Istio's default bootstrap golden (stats_config), loaded on first use


def istio_stats_config():
    global GOLDEN
    if GOLDEN is None:
        with open(os.path.join(H.SHARED, "fixtures/istio/bootstrap/default_golden.json")) as f:
            GOLDEN = json.load(f)
    return GOLDEN["stats_config"]


ISTIO_FORMAT = None


def istio_access_log_format():
    """The access log format of a real istiod-generated sidecar config (fixture)."""
    global ISTIO_FORMAT
    if ISTIO_FORMAT is None:
        path = os.path.join(H.SHARED, "fixtures/istio/configdump/"
                            "deathstarbench_geo_sidecar_1.18.2_config_dump.json")
        with open(path) as f:
            m = re.search(r'"inline_string": (".*?%ROUTE_NAME%\\n")', f.read())
        ISTIO_FORMAT = json.loads(m.group(1))
    return ISTIO_FORMAT


NODE = {"id": "sidecar~10.0.0.1~productpage-v1-1.default~default.svc.cluster.local",
        "cluster": "productpage.default",
        "metadata": {"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default",
                     "CLUSTER_ID": "Kubernetes", "ISTIO_VERSION": "1.24.0",
                     "LABELS": {"app": "productpage", "version": "v1",
                                "service.istio.io/canonical-name": "productpage",
                                "service.istio.io/canonical-revision": "v1"}}}


def read_file(path):
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def raw(sock, data, timeout=H.IO_TIMEOUT):
    sock.sendall(data)
    return H.recv_until_eof(sock, timeout)


class ObservabilityTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.up = self.upstream("echo")
        self.log_path = os.path.join(self.tmp, "access.log")

        def cfg():
            tp = H.tcp_proxy_filter("outbound|9080||ratings.default.svc.cluster.local",
                                    "outbound|9080||ratings.default.svc.cluster.local")
            tp["typed_config"]["access_log"] = [{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3."
                             "FileAccessLog",
                    "path": self.log_path,
                    "log_format": {"text_format_source": {
                        "inline_string": istio_access_log_format()}}}}]
            stats = {"name": "istio.stats",
                     "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}}
            svc = {"filter_metadata": {"istio": {"services": [
                {"host": "ratings.default.svc.cluster.local", "name": "ratings",
                 "namespace": "default"}]}}}
            b = H.bootstrap(
                listeners=[
                    H.listener("main", H.sock_addr(H.free_port()), [stats, tp],
                               traffic_direction="OUTBOUND"),
                    H.listener("inbound", H.sock_addr(H.free_port()),
                               [H.tcp_proxy_filter("inbound", "xds-grpc")],
                               traffic_direction="INBOUND")],
                clusters=[
                    H.cluster("outbound|9080||ratings.default.svc.cluster.local",
                              [self.up.address], metadata=svc,
                              alt_stat_name="outbound|9080||ratings.default.svc.cluster.local;"),
                    H.cluster("xds-grpc", [self.up.address], alt_stat_name="xds-grpc;")],
                stats_config=istio_stats_config(), node=NODE, stats_flush_interval="0.2s",
                layered_runtime={"layers": [
                    {"name": "global config", "static_layer": {
                        "re2.max_program_size.error_level": "32768",
                        "envoy.reloadable_features.fixed_heap_use_allocated": True}},
                    {"name": "admin", "admin_layer": {}}]})
            return b
        self.p = self.start_proxy(cfg, args=["--file-flush-interval-msec", "100"])

    def traffic(self, name="main", payload=b"hello istio"):
        s = self.connect(self.p, name)
        s.sendall(payload)
        self.assertEqual(H.recv_exactly(s, len(payload)), payload)
        s.close()

    # -- /stats/prometheus ------------------------------------------------------------------

    def prom(self, query=""):
        st, body = self.p.get("/stats/prometheus" + query)
        self.assertEqual(st, 200, body)
        return body

    def test_prometheus_istio_names_and_tags(self):
        self.traffic()
        self.traffic("inbound")
        H.wait_for(lambda: "istio_tcp_sent_bytes_total{" in self.prom(), what="istio series")
        # The pilot dashboard's series: alt_stat_name "xds-grpc;" + Istio's cluster_name regex.
        # The upstream leg closes after the client's (the proxy sees the FIN first): wait for it.
        idle = r'(?m)^envoy_cluster_upstream_cx_active\{cluster_name="xds-grpc"\} 0$'
        H.wait_for(lambda: re.search(idle, self.prom()), what="xds-grpc upstream closed")
        body = self.prom()
        self.assertRegex(body, idle)
        self.assertIn("# TYPE envoy_cluster_upstream_cx_active gauge\n", body)
        self.assertRegex(body, r'(?m)^envoy_server_state\{\} 0$')
        self.assertRegex(body, r'(?m)^envoy_listener_manager_workers_started\{\} 1$')
        self.assertRegex(body, r'(?m)^istio_build\{component="proxy",tag="1.24.0"\} 1$')
        # stats_matcher: Istio's inclusion list hides the outbound cluster's and tcp stats.
        self.assertNotIn("ratings", re.sub(r"(?m)^istio_.*$", "", body))
        # Histograms: Envoy's buckets, +Inf, _sum and _count, one TYPE line per family.
        self.assertIn('envoy_cluster_upstream_cx_connect_ms_bucket{cluster_name="xds-grpc",'
                      'le="0.5"}', body)
        self.assertIn('le="3600000"}', body)
        m = re.search(r'envoy_cluster_upstream_cx_connect_ms_bucket\{cluster_name="xds-grpc",'
                      r'le="\+Inf"\} (\d+)\nenvoy_cluster_upstream_cx_connect_ms_sum'
                      r'\{cluster_name="xds-grpc"\} \d+\nenvoy_cluster_upstream_cx_connect_ms_count'
                      r'\{cluster_name="xds-grpc"\} (\d+)\n', body)
        self.assertTrue(m, body)
        self.assertEqual(m.group(1), m.group(2))
        types = re.findall(r"(?m)^# TYPE (\S+) (\S+)$", body)
        self.assertEqual(len(types), len(set(n for n, _ in types)), "duplicate TYPE lines")
        # Every sample line belongs to the family declared above it.
        fam = None
        for line in body.splitlines():
            if line.startswith("# TYPE "):
                fam = line.split()[2]
                continue
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            self.assertTrue(name == fam or name.startswith(fam + "_"), line)
            self.assertRegex(line, r'^\S+\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\} \d+$')
        # Istio's metrics: no envoy_ prefix, the full label set in Envoy's order.
        m = re.search(r"(?m)^istio_tcp_sent_bytes_total\{(.*)\} (\d+)$", body)
        self.assertTrue(m, body)
        labels = re.findall(r'(\w+)="([^"]*)"', m.group(1))
        self.assertEqual([k for k, _ in labels], [
            "reporter", "source_workload", "source_canonical_service",
            "source_canonical_revision", "source_workload_namespace", "source_principal",
            "source_app", "source_version", "source_cluster", "destination_workload",
            "destination_workload_namespace", "destination_principal", "destination_app",
            "destination_version", "destination_service", "destination_canonical_service",
            "destination_canonical_revision", "destination_service_name",
            "destination_service_namespace", "destination_cluster", "request_protocol",
            "response_flags", "connection_security_policy"])
        d = dict(labels)
        self.assertEqual(d["reporter"], "source")
        self.assertEqual(d["source_workload"], "productpage-v1")
        self.assertEqual(d["destination_service"], "ratings.default.svc.cluster.local")
        self.assertEqual(d["destination_service_name"], "ratings")
        self.assertEqual(d["request_protocol"], "tcp")
        self.assertEqual(m.group(2), "11")
        self.assertRegex(body, r"(?m)^istio_tcp_connections_opened_total\{.*\} 1$")
        self.assertRegex(body, r"(?m)^istio_tcp_received_bytes_total\{.*\} 11$")

    def test_prometheus_usedonly_filter_text_readouts(self):
        all_ = self.prom()
        used = self.prom("?usedonly")
        self.assertLess(len(used), len(all_))
        self.assertIn("envoy_server_state", used)
        only = self.prom("?filter=%5Eserver%5C.state%24")
        self.assertEqual(only, "# TYPE envoy_server_state gauge\nenvoy_server_state{} 0\n")
        self.assertEqual(self.p.get("/stats/prometheus?filter=%28bad")[0], 400)
        self.assertEqual(self.p.get("/stats?format=prometheus&filter=%5Eserver%5C.state%24")[1],
                         only)

    # -- /stats text and JSON -------------------------------------------------------------------

    def test_stats_json_and_type(self):
        self.traffic("inbound")
        st, body = self.p.get("/stats?format=json")
        self.assertEqual(st, 200)
        d = json.loads(body)
        names = [s["name"] for s in d["stats"] if "name" in s]
        self.assertIn("server.state", names)
        self.assertEqual(names, sorted(names))
        hist = [s for s in d["stats"] if "histograms" in s]
        self.assertEqual(len(hist), 1)
        h = hist[0]["histograms"]
        self.assertEqual(h["supported_quantiles"], [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100])
        for q in h["computed_quantiles"]:
            self.assertEqual(len(q["values"]), 10)
            self.assertEqual(set(q["values"][0]), {"interval", "cumulative"})
        st, body = self.p.get("/stats?type=Gauges&filter=%5Eserver%5C.")
        self.assertEqual(st, 200)
        self.assertIn("server.state: 0", body)
        self.assertNotIn("server.debug_assertion_failures", body)
        self.assertEqual(self.p.get("/stats?type=Nope")[0], 400)
        self.assertEqual(self.p.get("/stats?format=xml")[0], 400)

    def test_memory_gauges_and_reset_counters(self):
        self.p.wait_stat("server.memory_allocated", lambda v: v > 0)
        self.p.wait_stat("server.memory_heap_size", lambda v: v > 0)
        self.traffic("inbound")
        self.p.wait_stat("cluster_manager.cluster_added", lambda v: v == 2)
        self.assertEqual(self.p.get("/reset_counters")[0], 405)
        self.assertEqual(self.p.post("/reset_counters"), (200, "OK\n"))
        self.assertEqual(self.p.stat("cluster_manager.cluster_added"), 0)
        self.assertEqual(self.p.stat("server.state"), 0)  # gauges keep their value
        st, body = self.p.get("/memory")
        m = json.loads(body)
        self.assertEqual(set(m), {"allocated", "heap_size", "pageheap_unmapped", "pageheap_free",
                                  "total_thread_cache", "total_physical_bytes"})
        self.assertGreater(int(m["allocated"]), 0)

    # -- /clusters, /listeners ---------------------------------------------------------------

    def test_clusters_text_and_json(self):
        self.traffic("inbound")
        st, body = self.p.get("/clusters")
        self.assertEqual(st, 200)
        port = self.up.port
        self.assertIn("xds-grpc::observability_name::xds-grpc;\n", body)
        self.assertIn("xds-grpc::default_priority::max_connections::1024\n", body)
        self.assertIn("xds-grpc::added_via_api::false\n", body)
        self.assertIn("xds-grpc::127.0.0.1:%d::cx_total::1\n" % port, body)
        self.assertIn("xds-grpc::127.0.0.1:%d::health_flags::healthy\n" % port, body)
        for line in body.splitlines():
            self.assertIn("::", line)
        st, body = self.p.get("/clusters?format=json")
        d = json.loads(body)
        by_name = {c["name"]: c for c in d["cluster_statuses"]}
        x = by_name["xds-grpc"]
        self.assertEqual(x["observability_name"], "xds-grpc;")
        hs = x["host_statuses"][0]
        self.assertEqual(hs["address"]["socket_address"],
                         {"address": "127.0.0.1", "port_value": port})
        stats = {s["name"]: s for s in hs["stats"]}
        self.assertEqual(stats["cx_total"]["value"], "1")
        self.assertEqual(stats["cx_active"]["type"], "GAUGE")
        self.assertEqual(hs["health_status"]["eds_health_status"], "HEALTHY")
        self.assertEqual(x["circuit_breakers"]["thresholds"][1]["priority"], "HIGH")

    def test_listeners(self):
        st, body = self.p.get("/listeners")
        self.assertEqual(st, 200)
        self.assertIn("main::127.0.0.1:%d\n" % self.p.listener_port("main"), body)
        d = json.loads(self.p.get("/listeners?format=json")[1])
        names = {l["name"]: l for l in d["listener_statuses"]}
        self.assertEqual(names["inbound"]["local_address"]["socket_address"]["port_value"],
                         self.p.listener_port("inbound"))

    # -- /logging, /runtime, /certs, index ------------------------------------------------------

    def test_logging(self):
        st, body = self.p.get("/logging")
        self.assertEqual(st, 200)
        self.assertTrue(body.startswith("active loggers:\n"))
        self.assertIn("  upstream: info\n", body)
        self.assertEqual(self.p.get("/logging?level=debug")[0], 405)
        st, body = self.p.post("/logging?upstream=debug")
        self.assertEqual(st, 200)
        self.assertIn("  upstream: debug\n", body)
        self.assertIn("  admin: info\n", body)
        st, body = self.p.post("/logging?level=warn")
        self.assertIn("  upstream: warning\n", body)
        st, body = self.p.post("/logging?paths=admin:error,rtsp:trace")
        self.assertIn("  admin: error\n", body)
        self.assertIn("  rtsp: trace\n", body)
        for bad, msg in (("nosuch=debug", "unknown logger name"),
                         ("upstream=loud", "unknown logger level"),
                         ("a=debug&b=info", "invalid number of parameters")):
            st, body = self.p.post("/logging?" + bad)
            self.assertEqual(st, 404, bad)
            self.assertIn("error: %s" % msg, body)
            self.assertIn("usage: /logging?<name>=<level>", body)

    def test_runtime_certs_index(self):
        d = json.loads(self.p.get("/runtime")[1])
        self.assertEqual(d["layers"], ["global config", "admin"])
        self.assertEqual(d["entries"]["re2.max_program_size.error_level"],
                         {"final_value": "32768", "layer_values": ["32768", ""]})
        self.assertEqual(
            d["entries"]["envoy.reloadable_features.fixed_heap_use_allocated"]["final_value"],
            "true")
        self.assertEqual(json.loads(self.p.get("/certs")[1]), {"certificates": []})
        st, body = self.p.get("/")
        self.assertEqual(st, 200)
        self.assertIn('<a href="stats/prometheus">', body)
        self.assertIn('action="drain_listeners" method="post"', body)
        st, body = self.p.get("/help")
        self.assertIn("  /drain_listeners: drain listeners\n", body)

    # -- /config_dump ----------------------------------------------------------------------

    def test_config_dump_mask_and_resource(self):
        d = json.loads(self.p.get("/config_dump?mask=static_clusters")[1])
        types = [c["@type"].rsplit(".", 1)[1] for c in d["configs"]]
        self.assertIn("ClustersConfigDump", types)
        for c in d["configs"]:
            self.assertLessEqual(set(c), {"@type", "static_clusters"})
        clusters = [c for c in d["configs"] if "static_clusters" in c][0]["static_clusters"]
        self.assertEqual(len(clusters), 2)
        d = json.loads(self.p.get("/config_dump?resource=static_clusters&mask=cluster.name")[1])
        self.assertEqual(sorted(c["cluster"]["name"] for c in d["configs"]),
                         ["outbound|9080||ratings.default.svc.cluster.local", "xds-grpc"])
        for c in d["configs"]:
            self.assertEqual(c["@type"], "type.googleapis.com/envoy.admin.v3.ClustersConfigDump."
                                         "StaticCluster")
            self.assertEqual(set(c["cluster"]), {"@type", "name"})

    # -- /drain_listeners ---------------------------------------------------------------------

    def test_drain_inbound_only_then_graceful(self):
        self.assertEqual(self.p.get("/drain_listeners")[0], 405)
        st, body = self.p.post("/drain_listeners?skip_exit")
        self.assertEqual((st, body), (400, "skip_exit requires graceful\n"))
        self.traffic("inbound")
        st, body = self.p.post("/drain_listeners?inboundonly")
        self.assertEqual((st, body), (200, "OK\n"))

        def refused():
            try:
                s = self.p.connect("inbound", timeout=1)
            except OSError:
                return True
            s.close()
            return False
        H.wait_for(refused, what="the inbound listener to refuse connections")
        self.traffic("main")  # outbound still served
        self.assertEqual(self.p.stat("listener_manager.listener_stopped"), 1)
        self.assertEqual(self.p.get("/ready")[0], 200)
        st, _ = self.p.post("/drain_listeners?graceful&skip_exit")
        self.assertEqual(st, 200)
        st, body = self.p.get("/ready")
        self.assertEqual((st, body), (503, "DRAINING\n"))
        self.assertEqual(self.p.stat("server.state"), 1)
        self.traffic("main")  # skip_exit: listeners kept, process keeps running
        self.assertIsNone(self.p.proc.poll())

    # -- access log --------------------------------------------------------------------------

    def test_access_log_istio_format_and_reopen(self):
        self.traffic(payload=b"0123456789")
        line = H.wait_for(lambda: read_file(self.log_path), what="an access log line")
        m = re.fullmatch(
            r'\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] "- - -" 0 - - - "-" 10 10 (\d+) - '
            r'"-" "-" "-" "-" "127\.0\.0\.1:(\d+)" '
            r'outbound\|9080\|\|ratings\.default\.svc\.cluster\.local; '
            r'127\.0\.0\.1:\d+ 127\.0\.0\.1:(\d+) 127\.0\.0\.1:\d+ - -\n', line)
        self.assertTrue(m, line)
        self.assertEqual(int(m.group(3)), self.up.port)
        self.assertEqual(int(m.group(4)), self.p.listener_port("main"))
        os.rename(self.log_path, self.log_path + ".1")
        self.p.proc.send_signal(signal.SIGUSR1)
        H.wait_for(lambda: os.path.exists(self.log_path), what="the log to be reopened")
        self.traffic()
        H.wait_for(lambda: read_file(self.log_path).count("\n") == 1,
                   what="a line in the new file")

    # -- bad input -----------------------------------------------------------------------------

    def admin_sock(self):
        host, port = self.p.admin.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        return s

    def test_limits(self):
        s = self.admin_sock()
        data = raw(s, b"GET /stats?filter=" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 414"), data[:80])
        s = self.admin_sock()
        data = raw(s, b"GET /ready HTTP/1.1\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 431"), data[:80])
        s = self.admin_sock()
        data = raw(s, b"POST /logging HTTP/1.1\r\nContent-Length: 5000000\r\n\r\nxx")
        self.assertTrue(data.startswith(b"HTTP/1.1 413"), data[:80])
        # Long and malformed query strings are 4xx or harmless, never a crash.
        for q in ("filter=" + "x" * 5000, "filter=%zz%", "usedonly&usedonly&" * 200,
                  "filter=" + "(" * 1000, "type=" + "%00" * 50, "format=%ff%fe"):
            st, _ = self.p.get("/stats?" + q)
            self.assertIn(st, (200, 400), q)
        self.assertEqual(self.p.get("/ready")[0], 200)

    def test_slow_and_idle_clients_do_not_stall(self):
        slow = [self.admin_sock() for _ in range(20)]
        for s in slow:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x")  # never finished
        t0 = time.monotonic()
        for _ in range(20):
            self.assertEqual(self.p.get("/ready", timeout=2)[0], 200)
        self.assertLess(time.monotonic() - t0, 5.0)


class HcmAccessLogTest(H.ProxyTestCase):
    """http_connection_manager access_log: one line per request, Istio's text format and a
    json_format, for a routed 200, a 404 without a route and a 503 after connect failures."""

    OUT = "outbound|9080||ratings.default.svc.cluster.local"
    JSON_FORMAT = {"method": "%REQ(:METHOD)%", "path": "%REQ(:PATH)%", "protocol": "%PROTOCOL%",
                   "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%",
                   "details": "%RESPONSE_CODE_DETAILS%", "rx": "%BYTES_RECEIVED%",
                   "tx": "%BYTES_SENT%", "cluster": "%UPSTREAM_CLUSTER%",
                   "host": "%UPSTREAM_HOST%", "route": "%ROUTE_NAME%",
                   "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                   "clen": "%RESP(CONTENT-LENGTH)%", "listener_port": "%DOWNSTREAM_LOCAL_PORT%",
                   "duration": "%DURATION%", "req_ms": "%REQUEST_DURATION%"}

    def setUp(self):
        super().setUp()
        self.up = P.HttpUpstream("ratings")
        self.addCleanup(self.up.stop)
        self.dead = H.free_port()
        self.text_path = os.path.join(self.tmp, "access.log")
        self.json_path = os.path.join(self.tmp, "access.json")

        def file_log(path, log_format):
            return {"name": "envoy.access_loggers.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3."
                         "FileAccessLog", "path": path, "log_format": log_format}}

        def cfg():
            routes = [
                {"name": "ratings-route", "match": {"prefix": "/ok"},
                 "route": {"cluster": self.OUT}},
                {"name": "sleep-route", "match": {"prefix": "/sleep"},
                 "route": {"cluster": self.OUT}},
                {"name": "dead-route", "match": {"prefix": "/dead"},
                 "route": {"cluster": "dead", "retry_policy": {
                     "retry_on": "connect-failure", "num_retries": 1,
                     "retry_back_off": {"base_interval": "0.001s"}}}}]
            hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                         "http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "outbound_0.0.0.0_9080",
                "http_protocol_options": {"accept_http_10": True},
                "route_config": {"name": "9080", "virtual_hosts": [
                    {"name": "ratings", "domains": ["*"], "routes": routes}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                             "Router"}}],
                "access_log": [
                    file_log(self.text_path, {"text_format_source": {
                        "inline_string": istio_access_log_format()}}),
                    file_log(self.json_path, {"json_format": self.JSON_FORMAT})]}}
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()), [hcm])],
                clusters=[H.cluster(self.OUT, [self.up.address], alt_stat_name=self.OUT + ";"),
                          H.cluster("dead", [H.sock_addr(self.dead)])])
        self.p = self.start_proxy(cfg, args=["--file-flush-interval-msec", "100"])
        self.port = self.p.listener_port("main")

    def curl(self, path, *extra):
        r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code} %{size_download}",
                            "-H", "x-request-id: rid-" + path.strip("/")] + list(extra) +
                           ["http://127.0.0.1:%d%s" % (self.port, path)],
                           capture_output=True, timeout=10)
        body, _, tail = r.stdout.rpartition(b"\n")
        code, size = tail.decode().split()
        return int(code), int(size)

    def lines(self, path, n):
        H.wait_for(lambda: read_file(path).count("\n") >= n, what="%d access log lines" % n)
        time.sleep(0.3)  # nothing more comes
        out = read_file(path).splitlines()
        self.assertEqual(len(out), n, out)
        return out

    def test_istio_text_and_json_lines(self):
        ver = subprocess.run(["curl", "--version"], capture_output=True).stdout.split()[1]
        ua = "curl/" + ver.decode()
        code, ok_size = self.curl("/ok/1", "--data-binary", "hello")
        self.assertEqual(code, 200)
        self.assertGreater(ok_size, 0)
        self.assertEqual(self.curl("/missing"), (404, 0))
        code, dead_size = self.curl("/dead")
        self.assertEqual(code, 503)
        self.assertEqual(self.curl("/ok/h2", "--http2-prior-knowledge")[0], 200)
        self.assertEqual(self.curl("/ok/h10", "-0")[0], 200)
        text = self.lines(self.text_path, 5)
        ts = r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "
        addr = re.escape("127.0.0.1:%d" % self.port)
        up = re.escape("127.0.0.1:%d" % self.up.port)
        tail = r' - %s 127\.0\.0\.1:\d+ - ' % addr
        # Lines that reached the upstream name its connection's local address.
        tail_up = r' 127\.0\.0\.1:\d+ %s 127\.0\.0\.1:\d+ - ' % addr
        dead = re.escape("127.0.0.1:%d" % self.dead)
        cl = re.escape(self.OUT + ";")
        expect = [
            ts + r'"POST /ok/1 HTTP/1\.1" 200 - via_upstream - "-" 5 %d \d+ \d+ "-" "%s" '
                 r'"rid-ok/1" "%s" "%s" %s%s' % (ok_size, re.escape(ua), addr, up, cl, tail_up)
            + "ratings-route",
            ts + r'"GET /missing HTTP/1\.1" 404 NR route_not_found - "-" 0 0 \d+ - "-" "%s" '
                 r'"rid-missing" "%s" "-" - -%s-' % (re.escape(ua), addr, tail[2:]),
            ts + r'"GET /dead HTTP/1\.1" 503 UF,URX upstream_reset_before_response_started'
                 r'\{connection_failure,delayed_connect_error:_Connection_refused\} - '
                 r'"delayed_connect_error:_Connection_refused" 0 %d \d+ - "-" "%s" "rid-dead" '
                 r'"%s" "%s" dead -%s' % (dead_size, re.escape(ua), addr, dead, tail[2:])
            + "dead-route",
            ts + r'"GET /ok/h2 HTTP/2" 200 - via_upstream - "-" 0 \d+ \d+ \d+ "-" "%s" '
                 r'"rid-ok/h2" "%s" "%s" %s%s' % (re.escape(ua), addr, up, cl, tail_up)
            + "ratings-route",
            ts + r'"GET /ok/h10 HTTP/1\.0" 200 - via_upstream - "-" 0 \d+ \d+ \d+ "-" "%s" '
                 r'"rid-ok/h10" "[^"]*" "%s" %s%s' % (re.escape(ua), up, cl, tail_up)
            + "ratings-route"]
        for line, rx in zip(text, expect):
            self.assertRegex(line, "^" + rx + "$")
        js = [json.loads(x) for x in self.lines(self.json_path, 5)]
        for j in js:
            self.assertIsInstance(j.pop("duration"), int)
            self.assertIsInstance(j.pop("req_ms"), int)
            self.assertEqual(j.pop("listener_port"), self.port)
        self.assertEqual(js[0], {
            "method": "POST", "path": "/ok/1", "protocol": "HTTP/1.1", "code": 200,
            "flags": None, "details": "via_upstream", "rx": 5, "tx": ok_size,
            "cluster": self.OUT + ";", "host": "127.0.0.1:%d" % self.up.port,
            "route": "ratings-route", "attempts": 1, "clen": str(ok_size)})
        self.assertEqual(js[1], {
            "method": "GET", "path": "/missing", "protocol": "HTTP/1.1", "code": 404,
            "flags": "NR", "details": "route_not_found", "rx": 0, "tx": 0, "cluster": None,
            "host": None, "route": None, "attempts": 0, "clen": "0"})
        self.assertEqual(js[2], {
            "method": "GET", "path": "/dead", "protocol": "HTTP/1.1", "code": 503,
            "flags": "UF,URX",
            "details": "upstream_reset_before_response_started{connection_failure,"
                       "delayed_connect_error:_Connection_refused}",
            "rx": 0, "tx": dead_size, "cluster": "dead", "host": "127.0.0.1:%d" % self.dead,
            "route": "dead-route",
            "attempts": 2, "clen": str(dead_size)})
        self.assertEqual(js[3]["protocol"], "HTTP/2")
        self.assertEqual(js[4]["protocol"], "HTTP/1.0")

    def test_downstream_disconnect_is_logged_once(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=H.IO_TIMEOUT)
        s.sendall(b"GET /sleep/3000 HTTP/1.1\r\nhost: ratings\r\nx-request-id: gone\r\n\r\n")
        H.wait_for(lambda: self.up.requests >= 1, what="the request upstream")
        s.close()
        line = self.lines(self.text_path, 1)[0]
        self.assertRegex(line, r'^\[[^]]+\] "GET /sleep/3000 HTTP/1\.1" 0 DC '
                               r'downstream_remote_disconnect - "-" 0 0 \d+ - "-" "-" "gone" '
                               r'"ratings" "127\.0\.0\.1:%d" %s; 127\.0\.0\.1:\d+ '
                               r'127\.0\.0\.1:%d '
                               r'127\.0\.0\.1:\d+ - sleep-route$' % (
                                   self.up.port, re.escape(self.OUT), self.port))
        j = json.loads(self.lines(self.json_path, 1)[0])
        self.assertEqual((j["code"], j["flags"], j["attempts"], j["clen"]), (0, "DC", 1, None))


class SlowClientTimeoutTest(H.ProxyTestCase):
    """The request, idle and write timeouts (shortened through MSM_ADMIN_TIMEOUTS_MS)."""

    def setUp(self):
        super().setUp()
        up = self.upstream("echo")
        self.p = self.start_proxy(lambda: H.simple_proxy_config(H.cluster("c", [up.address])),
                                  env={"MSM_ADMIN_TIMEOUTS_MS": "1000,2000,2000"})

    def sock(self):
        host, port = self.p.admin.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        return s

    def test_partial_request_gets_408(self):
        s = self.sock()
        s.sendall(b"GET /ready HTTP/1.1\r\nHo")
        data = H.recv_until_eof(s, timeout=8)
        self.assertTrue(data.startswith(b"HTTP/1.1 408"), data)

    def test_idle_keep_alive_closed(self):
        s = self.sock()
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
        data = H.recv_until_eof(s, timeout=8)
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data)

    def test_client_that_never_reads_is_dropped(self):
        s = self.sock()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(1)
        for _ in range(200):
            try:
                s.sendall(b"GET /stats HTTP/1.1\r\nHost: a\r\n\r\n")
            except OSError:
                break
        # The proxy stops reading this client once 1 MiB waits, then drops it.
        H.wait_for(lambda: self.p.get("/ready")[0] == 200, what="admin still answering")
        time.sleep(3.5)
        self.assertEqual(self.p.get("/ready")[0], 200)


class BadConfigTest(H.ProxyTestCase):
    """stats_config and access log errors stop the server with a message, as in Envoy."""

    def validate(self, b):
        path = os.path.join(self.tmp, "b.json")
        with open(path, "w") as f:
            json.dump(b, f)
        return self.run_binary(["-c", path, "--mode", "validate"])

    def test_bad_tag_regex(self):
        b = H.bootstrap(stats_config={"stats_tags": [{"tag_name": "x", "regex": "(unclosed"}]})
        r = self.validate(b)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("invalid regex", r.stdout + r.stderr)

    def test_unknown_access_log_operator(self):
        up = self.upstream("echo")
        b = H.simple_proxy_config(H.cluster("c", [up.address]), access_log=[{
            "name": "envoy.access_loggers.file",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers."
                                      "file.v3.FileAccessLog", "path": "/dev/null",
                             "log_format": {"text_format": "%NOT_AN_OPERATOR%"}}}])
        r = self.validate(b)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Not supported field in StreamInfo: NOT_AN_OPERATOR", r.stdout + r.stderr)

    def test_bad_hcm_access_log_is_rejected(self):
        hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                     "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "in", "route_config": {"name": "rc", "virtual_hosts": []},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            "access_log": [{"name": "envoy.access_loggers.stdout", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3."
                         "StdoutAccessLog"}}, {
                "name": "envoy.access_loggers.file", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3."
                             "FileAccessLog", "path": "/dev/null",
                    "log_format": {"text_format": "%REQ(:METHOD)% %NOT_AN_OPERATOR%"}}}]}}
        b = H.bootstrap(listeners=[H.listener("main", H.sock_addr(H.free_port()), [hcm])])
        r = self.validate(b)
        self.assertNotEqual(r.returncode, 0)
        out = r.stdout + r.stderr
        self.assertIn("access_log[1]", out)
        self.assertIn("Not supported field in StreamInfo: NOT_AN_OPERATOR", out)


if __name__ == "__main__":
    H.main()

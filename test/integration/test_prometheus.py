"""A real Prometheus (Debian's package, installed by scripts/deps.sh) scrapes msm-proxy's
/stats/prometheus while TCP and HTTP traffic crosses it, then the PromQL of the Istio Grafana
dashboards (fixtures/istio/dashboards) is evaluated through Prometheus's HTTP API:

- the envoy_* expressions we emit series for (the pilot dashboard's
  sum(envoy_cluster_upstream_cx_active{cluster_name="xds-grpc"})) must return data;
- the istio_tcp_* and the HTTP istio_requests_total / istio_request_duration_milliseconds /
  istio_request_bytes / istio_response_bytes expressions of the mesh, service, workload and
  performance dashboards must return data, except those no sidecar pair can satisfy (listed in
  the output): reporter="source" with connection_security_policy="mutual_tls" (a client sidecar
  reports "unknown", as Envoy), ztunnel's own series, the ingress gateway's and cAdvisor's.

The proxy plays both sidecars of each hop: OUTBOUND listeners (reporter=source) send to INBOUND
listeners (reporter=destination) in front of the applications, TCP and HTTP (with Istio's HTTP
peer metadata filters), each both over mTLS (certificates from test_tls's Pki) and in plaintext.
Prometheus runs on a free port with a generated config and a 1 s scrape interval; everything is
bounded in time."""
import http.client
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import harness as H
import http_peers as P
import test_tls as T

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SERVICE = "ratings.default.svc.cluster.local"

NODE = {"id": "sidecar~10.0.0.1~ratings-v1-1.default~default.svc.cluster.local",
        "metadata": {"WORKLOAD_NAME": "ratings-v1", "NAMESPACE": "default",
                     "CLUSTER_ID": "Kubernetes", "ISTIO_VERSION": "1.24.0",
                     "LABELS": {"app": "ratings", "version": "v1",
                                "service.istio.io/canonical-name": "ratings",
                                "service.istio.io/canonical-revision": "v1"}}}


def dashboard_exprs():
    """(dashboard, expr) for every PromQL expression of the fixtures' dashboards."""
    out = []
    d = os.path.join(H.SHARED, "fixtures/istio/dashboards")
    for name in sorted(os.listdir(d)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(d, name)) as f:
            dash = json.load(f)

        def walk(o):
            if isinstance(o, dict):
                for k, v in o.items():
                    if k == "expr" and isinstance(v, str):
                        out.append((name, v))
                    else:
                        walk(v)
            elif isinstance(o, list):
                for v in o:
                    walk(v)
        walk(dash)
    return out


def substitute(expr):
    """Grafana variables: a 30 s rate window; reporters both ways; our service; any other
    workload/namespace selection ("=~" everywhere they are used)."""
    e = expr.replace("$__rate_interval", "30s").replace("$qrep", "source|destination")
    e = e.replace("$service", SERVICE)
    return re.sub(r"\$\w+", ".*", e)


HTTP_METRICS = ("istio_requests_total", "istio_request_duration_milliseconds",
                "istio_request_bytes", "istio_response_bytes")


def wanted(expr):
    """Which expressions must return data here, and why not the others."""
    if "envoy_" not in expr and "istio_tcp_" not in expr and not any(
            m in expr for m in HTTP_METRICS):
        return False, "not about our traffic / envoy_* series"
    if "envoy_wasm" in expr:
        return False, "Wasm runtime stats (no Wasm in msm-proxy)"
    if "ztunnel" in expr or "istio_tcp_sockets_open" in expr:
        return False, "ztunnel only"
    if "istio-ingressgateway" in expr or "container_cpu_usage_seconds_total" in expr:
        return False, "ingress gateway / cAdvisor series"
    if re.search(r'reporter="source"', expr) and 'connection_security_policy="mutual_tls"' in expr:
        return False, "client reporter with mutual_tls (clients report unknown, as Envoy)"
    return True, ""


def typed_struct(type_url, value):
    return {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/" + type_url, "value": value}


HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
PM_OUT = {"name": "istio.metadata_exchange", "typed_config": typed_struct(
    "io.istio.http.peer_metadata.Config",
    {"upstream_discovery": [{"istio_headers": {}}],
     "upstream_propagation": [{"istio_headers": {}}]})}
PM_IN = {"name": "istio.metadata_exchange", "typed_config": typed_struct(
    "io.istio.http.peer_metadata.Config",
    {"downstream_discovery": [{"istio_headers": {}}],
     "downstream_propagation": [{"istio_headers": {}}]})}
STATS = {"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}}
STATS_IN = {"name": "istio.stats", "typed_config": {
    "@type": "type.googleapis.com/stats.PluginConfig", "disable_host_header_fallback": True}}
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def hcm(prefix, filters, cluster):
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM, "stat_prefix": prefix, "http_filters": filters + [ROUTER],
        "route_config": {"name": prefix, "virtual_hosts": [{"name": "v", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]}}}


def setUpModule():
    T.setUpModule()


def tearDownModule():
    T.tearDownModule()


class PrometheusTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        if not os.access(PROMETHEUS, os.X_OK):
            self.fail("prometheus not installed: run scripts/deps.sh test")
        self.app = self.upstream("echo")
        self.xds = self.upstream("hold")
        self.web = P.HttpUpstream("web")
        self.addCleanup(self.web.stop)
        svc = {"filter_metadata": {"istio": {"services": [
            {"host": SERVICE, "name": "ratings", "namespace": "default"}]}}}
        stats = {"name": "istio.stats",
                 "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}}
        with open(os.path.join(H.SHARED, "fixtures/istio/bootstrap/default_golden.json")) as f:
            stats_config = json.load(f)["stats_config"]

        def cfg():
            inbound_port, tcp_tls_port = H.free_port(), H.free_port()
            http_tls_port, http_plain_port = H.free_port(), H.free_port()
            tls_in = T.tls_socket(T.server_ctx())

            def out(name, port, tls=False):
                c = H.cluster(name, [H.sock_addr(port)], metadata=svc,
                              alt_stat_name="%s;" % name)
                if tls:
                    c["transport_socket"] = T.tls_socket(T.client_ctx())
                return c
            return H.bootstrap(
                listeners=[
                    H.listener("outbound", H.sock_addr(H.free_port()),
                               [stats, H.tcp_proxy_filter("outbound", "outbound|9080||" + SERVICE)],
                               traffic_direction="OUTBOUND"),
                    H.listener("inbound", H.sock_addr(inbound_port),
                               [stats, H.tcp_proxy_filter("inbound", "inbound|9080||")],
                               traffic_direction="INBOUND"),
                    H.listener("outbound_tls", H.sock_addr(H.free_port()),
                               [stats, H.tcp_proxy_filter("outbound_tls",
                                                          "outbound|9081||" + SERVICE)],
                               traffic_direction="OUTBOUND"),
                    H.listener("inbound_tls", H.sock_addr(tcp_tls_port),
                               traffic_direction="INBOUND",
                               chains=[{"filters": [stats, H.tcp_proxy_filter(
                                   "inbound_tls", "inbound|9080||")], "transport_socket": tls_in}]),
                    H.listener("http_out", H.sock_addr(H.free_port()), traffic_direction="OUTBOUND",
                               filters=[hcm("http_out", [PM_OUT, STATS],
                                            "outbound|9082||" + SERVICE)]),
                    H.listener("http_out_plain", H.sock_addr(H.free_port()),
                               traffic_direction="OUTBOUND",
                               filters=[hcm("http_out_plain", [PM_OUT, STATS],
                                            "outbound|9083||" + SERVICE)]),
                    H.listener("http_in_tls", H.sock_addr(http_tls_port),
                               traffic_direction="INBOUND",
                               chains=[{"filters": [hcm("http_in", [PM_IN, STATS_IN],
                                                        "inbound|9082||")],
                                        "transport_socket": tls_in}]),
                    H.listener("http_in_plain", H.sock_addr(http_plain_port),
                               traffic_direction="INBOUND",
                               filters=[hcm("http_in_plain", [PM_IN, STATS_IN],
                                            "inbound|9082||")]),
                    H.listener("xds", H.sock_addr(H.free_port()),
                               [H.tcp_proxy_filter("xds", "xds-grpc")])],
                clusters=[
                    out("outbound|9080||" + SERVICE, inbound_port),
                    out("outbound|9081||" + SERVICE, tcp_tls_port, tls=True),
                    out("outbound|9082||" + SERVICE, http_tls_port, tls=True),
                    out("outbound|9083||" + SERVICE, http_plain_port),
                    H.cluster("inbound|9080||", [self.app.address], metadata=svc,
                              alt_stat_name="inbound|9080||;"),
                    H.cluster("inbound|9082||", [self.web.address], metadata=svc,
                              alt_stat_name="inbound|9082||;"),
                    H.cluster("xds-grpc", [self.xds.address], alt_stat_name="xds-grpc;")],
                stats_config=stats_config, node=NODE, stats_flush_interval="1s")
        self.p = self.start_proxy(cfg)
        self.prom_port = H.free_port()
        pdir = os.path.join(self.tmp, "prom")
        os.makedirs(pdir)
        conf = os.path.join(pdir, "prometheus.yml")
        with open(conf, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n- job_name: msm\n  metrics_path: /stats/prometheus\n"
                    "  static_configs:\n  - targets: ['%s']\n" % self.p.admin)
        self.prom_log = open(os.path.join(pdir, "log"), "wb")
        self.addCleanup(self.prom_log.close)
        self.prom = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + conf, "--storage.tsdb.path=" + pdir + "/data",
             "--web.listen-address=127.0.0.1:%d" % self.prom_port, "--log.level=warn"],
            stdout=self.prom_log, stderr=self.prom_log, stdin=subprocess.DEVNULL,
            preexec_fn=H._die_with_parent)
        self.addCleanup(self.stop_prom)
        H.wait_for(self.prom_ready, timeout=30, interval=0.2, what="prometheus ready")

    def stop_prom(self):
        if self.prom.poll() is None:
            self.prom.terminate()
            try:
                self.prom.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.prom.kill()
                self.prom.wait(timeout=10)

    def prom_get(self, path):
        with H._opener.open("http://127.0.0.1:%d%s" % (self.prom_port, path), timeout=5) as r:
            return r.read().decode()

    def prom_ready(self):
        if self.prom.poll() is not None:
            raise AssertionError("prometheus exited: %s" % open(self.prom_log.name).read())
        try:
            return self.prom_get("/-/ready") is not None
        except OSError:
            return False

    def query(self, expr):
        d = json.loads(self.prom_get("/api/v1/query?query=" + urllib.parse.quote(expr)))
        if d.get("status") != "success":
            raise AssertionError("query failed: %s: %s" % (expr, d))
        return d["data"]["result"]

    def http(self, listener, path):
        c = http.client.HTTPConnection("127.0.0.1", self.p.listener_port(listener),
                                       timeout=H.IO_TIMEOUT)
        try:
            c.request("GET", path, headers={"Host": SERVICE})
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def test_dashboard_queries_return_data(self):
        held = self.connect(self.p, "xds")  # one active connection to xds-grpc
        held.sendall(b"x")
        # TCP and HTTP traffic for several scrapes, so that rate() and irate() have two samples.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            for name in ("outbound", "outbound_tls"):
                s = self.connect(self.p, name)
                s.sendall(b"ping" * 100)
                self.assertEqual(H.recv_exactly(s, 400), b"ping" * 100)
                s.close()
            for name in ("http_out", "http_out_plain"):
                self.assertEqual(self.http(name, "/x"), 200)
                self.assertEqual(self.http(name, "/status/404"), 404)
            time.sleep(0.3)
        # The target is up and scraped without errors.
        targets = json.loads(self.prom_get("/api/v1/targets"))["data"]["activeTargets"]
        self.assertEqual([t["health"] for t in targets], ["up"], targets)
        results, skipped = {}, []
        exprs = dashboard_exprs()
        self.assertGreater(len(exprs), 50)
        for dash, expr in exprs:
            ok, why = wanted(expr)
            if not ok:
                if not why.startswith("not about"):
                    skipped.append("%s: %s (%s)" % (dash, expr[:80], why))
                continue
            results[(dash, expr)] = substitute(expr)
        self.assertGreaterEqual(len(results), 140)

        def all_have_data():
            return all(self.query(q) for q in results.values())
        try:
            H.wait_for(all_have_data, timeout=40, interval=1, what="dashboard queries")
        except AssertionError:
            missing = ["%s: %s" % (d, results[(d, e)]) for (d, e) in results
                       if not self.query(results[(d, e)])]
            self.fail("no data for %d expression(s):\n%s\n/stats/prometheus:\n%s" % (
                len(missing), "\n".join(missing), self.p.get("/stats/prometheus")[1][:4000]))
        H.note("%d dashboard expressions with data; skipped:\n  %s", len(results),
               "\n  ".join(skipped))
        # The pilot dashboard's xds-grpc connections: exactly our one held connection.
        r = self.query('sum(envoy_cluster_upstream_cx_active{cluster_name="xds-grpc"})')
        self.assertEqual(r[0]["value"][1], "1")
        # Both reporters, labelled as Istio's dashboards expect.
        r = self.query('sum by (reporter, destination_service) (istio_tcp_sent_bytes_total)')
        got = {(x["metric"]["reporter"], x["metric"]["destination_service"]) for x in r}
        self.assertEqual(got, {("source", SERVICE), ("destination", SERVICE)})
        r = self.query('sum by (reporter, connection_security_policy, response_code) '
                       '(istio_requests_total)')
        got = {(x["metric"]["reporter"], x["metric"]["connection_security_policy"],
                x["metric"]["response_code"]) for x in r}
        self.assertEqual(got, {(rep, pol, code) for code in ("200", "404") for rep, pol in (
            ("source", "unknown"), ("destination", "mutual_tls"), ("destination", "none"))})
        held.close()


if __name__ == "__main__":
    H.main()

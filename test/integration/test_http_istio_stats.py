"""Istio's HTTP telemetry across two sidecars with mutual TLS, as istiod configures them:

client --HTTP/1.1--> proxy A (client sidecar: OUTBOUND listener, HCM with
istio.metadata_exchange (io.istio.http.peer_metadata.Config, upstream discovery/propagation),
istio.stats, router; cluster with ISTIO_MUTUAL-style TLS) --mTLS--> proxy B (server sidecar:
INBOUND listener requiring a client certificate, HCM with the downstream peer metadata filter,
istio.stats with disable_host_header_fallback) --HTTP/1.1--> origin.

Checks, scraped from /stats/prometheus of both proxies:
- istio_requests_total with every label, in Envoy's order, for both reporters (source on A,
  destination on B) and exact counts per response_code: 200s, 404s, a 503 with response_flags
  "UF" on B (its upstream refuses) seen as a 503 from B on A, and a 503 "UF" on A whose
  destination labels come from the dead endpoint's istio.workload metadata (no peer headers);
- istio_request_bytes / istio_response_bytes: exact _count, and _sum exact up to the (constant)
  header part: two batches with bodies that differ by a known size differ by exactly that;
- istio_request_duration_milliseconds _count;
- gRPC: request_protocol and grpc_response_status, istio_request/response_messages_total;
- the x-envoy-peer-metadata headers never reach the origin nor the client;
- Istio 1.18's null-VM Wasm plugins (envoy.wasm.metadata_exchange, envoy.wasm.stats with its
  StringValue JSON configuration) give the same series.

    /usr/bin/python3 test/integration/test_http_istio_stats.py --binary build/msm-proxy
"""
import http.client
import json
import re
import socket

import harness as H
import http_peers as P
import test_tls as T

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    # No x-envoy-upstream-service-time: its value's length would vary the header bytes.
    "suppress_envoy_headers": True}}
TD = "spiffe://cluster.local"
SERVER_ID = TD + "/ns/prod/sa/server"
CLIENT_ID = T.CLIENT_ID  # spiffe://cluster.local/ns/default/sa/client
SERVICE = "server.prod.svc.cluster.local"
CLUSTER = "outbound|8080||" + SERVICE
DEAD = "outbound|8080||dead.prod.svc.cluster.local"

CLIENT_NODE = {
    "id": "sidecar~10.0.0.1~client-5d7c9-abcde.default~default.svc.cluster.local",
    "cluster": "client.default",
    "metadata": {"NAME": "client-5d7c9-abcde", "NAMESPACE": "default", "WORKLOAD_NAME": "client",
                 "CLUSTER_ID": "Kubernetes", "ISTIO_VERSION": "1.20.8",
                 "OWNER": "kubernetes://apis/apps/v1/namespaces/default/deployments/client",
                 "LABELS": {"app": "client", "version": "v1",
                            "service.istio.io/canonical-name": "client",
                            "service.istio.io/canonical-revision": "v1"}}}
SERVER_NODE = {
    "id": "sidecar~10.0.0.2~server-6f8d-xyz.prod~prod.svc.cluster.local",
    "cluster": "server.prod",
    "metadata": {"NAME": "server-6f8d-xyz", "NAMESPACE": "prod", "WORKLOAD_NAME": "server",
                 "CLUSTER_ID": "Kubernetes", "ISTIO_VERSION": "1.20.8",
                 "OWNER": "kubernetes://apis/apps/v1/namespaces/prod/deployments/server",
                 "LABELS": {"app": "server", "version": "v2",
                            "service.istio.io/canonical-name": "server",
                            "service.istio.io/canonical-revision": "v2"}}}


def svc_md(host, name):
    return {"filter_metadata": {"istio": {"services": [
        {"host": host, "name": name, "namespace": "prod"}]}}}


def typed_struct(type_url, value):
    return {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/" + type_url, "value": value}


# As istiod 1.20 renders them (ossm_hello-openshift_sidecar_1.20.8 fixture).
PM_OUTBOUND = {"name": "istio.metadata_exchange", "typed_config": typed_struct(
    "io.istio.http.peer_metadata.Config",
    {"upstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
     "upstream_propagation": [{"istio_headers": {}}]})}
PM_INBOUND = {"name": "istio.metadata_exchange", "typed_config": typed_struct(
    "io.istio.http.peer_metadata.Config",
    {"downstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
     "downstream_propagation": [{"istio_headers": {}}]})}
STATS_OUTBOUND = {"name": "istio.stats",
                  "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}}
STATS_INBOUND = {"name": "istio.stats", "typed_config": {
    "@type": "type.googleapis.com/stats.PluginConfig", "disable_host_header_fallback": True}}


def wasm(module, configuration=None):
    """Istio <= 1.18's null-VM plugin filters (deathstarbench_geo_sidecar_1.18.2 fixture)."""
    cfg = {"vm_config": {"runtime": "envoy.wasm.runtime.null",
                         "code": {"local": {"inline_string": module}}}}
    if configuration is not None:
        cfg["configuration"] = configuration
    return {"name": "istio.metadata_exchange" if "metadata" in module else "istio.stats",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": cfg}}


WASM_MX = wasm("envoy.wasm.metadata_exchange", {
    "@type": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"})
WASM_STATS = wasm("envoy.wasm.stats", {
    "@type": "type.googleapis.com/google.protobuf.StringValue",
    "value": '{\n  "debug": "false",\n  "stat_prefix": "istio"\n}\n'})


def setUpModule():
    T.setUpModule()
    T.PKI.server_prod = T.PKI.leaf("server-prod", "URI:" + SERVER_ID)


def tearDownModule():
    T.tearDownModule()


def hcm(prefix, filters, routes):
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": HCM, "stat_prefix": prefix, "http_filters": filters + [ROUTER],
        "route_config": {"name": prefix, "virtual_hosts": [{"name": "v", "domains": ["*"],
                                                            "routes": routes}]}}}


def route(prefix, cluster):
    return {"match": {"prefix": prefix}, "route": {"cluster": cluster}}


def server_tls():
    ctx = T.server_ctx(alpn=("h2", "http/1.1"))
    ctx["common_tls_context"]["tls_certificates"] = T.certs(T.PKI.server_prod)
    return T.tls_socket(ctx)


def dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def labels(reporter, code, flags="-", dest=None, policy=None, principals=True):
    """The label string istio_stats.cc emits for the A -> B hop (or <dest> overrides)."""
    d = [("reporter", reporter),
         ("source_workload", "client"), ("source_canonical_service", "client"),
         ("source_canonical_revision", "v1"), ("source_workload_namespace", "default"),
         ("source_principal", CLIENT_ID if principals else "unknown"), ("source_app", "client"),
         ("source_version", "v1"), ("source_cluster", "Kubernetes"),
         ("destination_workload", "server"), ("destination_workload_namespace", "prod"),
         ("destination_principal", SERVER_ID if principals else "unknown"),
         ("destination_app", "server"), ("destination_version", "v2"),
         ("destination_service", SERVICE), ("destination_canonical_service", "server"),
         ("destination_canonical_revision", "v2"), ("destination_service_name", "server"),
         ("destination_service_namespace", "prod"), ("destination_cluster", "Kubernetes"),
         ("request_protocol", "http"), ("response_code", str(code)),
         ("grpc_response_status", ""), ("response_flags", flags),
         ("connection_security_policy",
          policy or ("mutual_tls" if reporter == "destination" else "unknown"))]
    if dest:
        d = [(k, dest.get(k, v)) for k, v in d]
    return ",".join('%s="%s"' % kv for kv in d)


def prom(p):
    """{(metric name, label string): value} of the istio_* lines of /stats/prometheus."""
    st, body = p.get("/stats/prometheus")
    assert st == 200, body
    out = {}
    for line in body.splitlines():
        m = re.fullmatch(r'(istio_\w+)\{(.*)\} (\S+)', line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def grpc_frames(*sizes):
    return b"".join(b"\x00" + len(b"m" * n).to_bytes(4, "big") + b"m" * n for n in sizes)


def grpc_origin(conn, up):
    """HTTP/1.1 answers in gRPC's shape: two length-prefixed messages, grpc-status 7 (a gRPC
    server over HTTP/1.1 has no trailers: the status is in the headers)."""
    try:
        conn.settimeout(H.IO_TIMEOUT)
        f = conn.makefile("rb")
        while True:
            line = f.readline()
            if not line:
                return
            n = 0
            while True:
                h = f.readline()
                if h in (b"\r\n", b""):
                    break
                k, _, v = h.decode().partition(":")
                if k.strip().lower() == "content-length":
                    n = int(v)
            f.read(n)
            body = grpc_frames(10, 2000)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n"
                         b"grpc-status: 7\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    except OSError:
        return


class HttpIstioStatsTest(H.ProxyTestCase):
    maxDiff = None

    def start_mesh(self, a_filters, b_filters):
        origin = P.HttpUpstream("origin")
        self.addCleanup(origin.stop)
        self.origin = origin
        dead_b, dead_a = dead_port(), dead_port()
        grpc = self.upstream(grpc_origin)

        def cfg_b():
            return H.bootstrap(listeners=[H.listener(
                "inbound", H.sock_addr(H.free_port()), traffic_direction="INBOUND",
                chains=[{"filters": [hcm("inbound_0.0.0.0_8080", b_filters,
                                         [route("/dead", "inbound|8081||"),
                                          route("/pkg.Svc/", "inbound|8082||"),
                                          route("/", "inbound|8080||")])],
                         "transport_socket": server_tls()}])],
                clusters=[H.cluster("inbound|8080||", [origin.address],
                                    metadata=svc_md(SERVICE, "server")),
                          H.cluster("inbound|8081||", [H.sock_addr(dead_b)],
                                    metadata=svc_md(SERVICE, "server")),
                          H.cluster("inbound|8082||", [H.sock_addr(grpc.port)],
                                    metadata=svc_md(SERVICE, "server"))],
                node=SERVER_NODE)
        pb = self.start_proxy(cfg_b, args=["--concurrency", "1"])
        b_port = pb.listener_port("inbound")

        def cfg_a():
            cl = H.cluster(CLUSTER, [], metadata=svc_md(SERVICE, "server"),
                           transport_socket=T.tls_socket(T.client_ctx(
                               san=SERVER_ID, alpn=["http/1.1"])))
            cl["load_assignment"]["endpoints"][0]["lb_endpoints"] = [{
                "endpoint": {"address": H.sock_addr(b_port)},
                "metadata": {"filter_metadata": {
                    "istio": {"workload": "server;prod;server;v2;Kubernetes"}}}}]
            dead = H.cluster(DEAD, [], metadata=svc_md("dead.prod.svc.cluster.local", "dead"))
            dead["load_assignment"]["endpoints"][0]["lb_endpoints"] = [{
                "endpoint": {"address": H.sock_addr(dead_a)},
                "metadata": {"filter_metadata": {
                    "istio": {"workload": "dead-v1;prod;dead;v1;Kubernetes"}}}}]
            return H.bootstrap(listeners=[H.listener(
                "outbound", H.sock_addr(H.free_port()), traffic_direction="OUTBOUND",
                filters=[hcm("outbound_0.0.0.0_8080", a_filters,
                             [route("/unreachable", DEAD), route("/", CLUSTER)])])],
                clusters=[cl, dead], node=CLIENT_NODE)
        pa = self.start_proxy(cfg_a, args=["--concurrency", "1"])
        return pa, pb

    def request(self, conn, method, path, body=None):
        conn.request(method, path, body=body, headers={"Host": "server.prod:8080"})
        r = conn.getresponse()
        data = r.read()
        return r, data

    def wait_requests(self, p, reporter, n):
        def total():
            return sum(v for (name, lab), v in prom(p).items()
                       if name == "istio_requests_total" and 'reporter="%s"' % reporter in lab)
        H.wait_for(lambda: total() >= n, what="%d requests reported by %s" % (n, reporter))
        self.assertEqual(total(), n)

    def test_two_sidecars_http_metrics(self):
        pa, pb = self.start_mesh([PM_OUTBOUND, STATS_OUTBOUND], [PM_INBOUND, STATS_INBOUND])
        c = http.client.HTTPConnection("127.0.0.1", pa.listener_port("outbound"),
                                       timeout=H.IO_TIMEOUT)
        self.addCleanup(c.close)
        # Batch 1: 3 x (100-byte request body, 300-byte response body).
        for _ in range(3):
            r, data = self.request(c, "POST", "/big/300", b"q" * 100)
            self.assertEqual((r.status, len(data)), (200, 300))
            self.assertIsNone(r.getheader("x-envoy-peer-metadata"))
            self.assertIsNone(r.getheader("x-envoy-peer-metadata-id"))
        self.wait_requests(pa, "source", 3)
        self.wait_requests(pb, "destination", 3)
        ok_src, ok_dst = labels("source", 200), labels("destination", 200)
        first = {}
        for p, lab in ((pa, ok_src), (pb, ok_dst)):
            m = prom(p)
            self.assertEqual(m.get(("istio_requests_total", lab)), 3,
                             "%s not in %s" % (lab, sorted(k for k in m if "total" in k[0])))
            first[lab] = {k: m[(k, lab)] for k in ("istio_request_bytes_sum",
                                                   "istio_response_bytes_sum")}
            for k in ("istio_request_bytes_count", "istio_response_bytes_count",
                      "istio_request_duration_milliseconds_count"):
                self.assertEqual(m[(k, lab)], 3, k)
            # Each request: its headers (identical in a batch) + the bodies.
            self.assertEqual(first[lab]["istio_request_bytes_sum"] % 3, 0)
            self.assertGreater(first[lab]["istio_request_bytes_sum"], 3 * (100 + 50))
            self.assertGreater(first[lab]["istio_response_bytes_sum"], 3 * (300 + 20))
            H.note("%s: %d request / %d response header bytes per request", lab[:20],
                   first[lab]["istio_request_bytes_sum"] / 3 - 100,
                   first[lab]["istio_response_bytes_sum"] / 3 - 300)
        # Batch 2: 3 x (700, 900): the sums grow by the first batch plus exactly 3 x 600 bytes.
        for _ in range(3):
            r, data = self.request(c, "POST", "/big/900", b"q" * 700)
            self.assertEqual((r.status, len(data)), (200, 900))
        self.wait_requests(pa, "source", 6)
        self.wait_requests(pb, "destination", 6)
        for p, lab in ((pa, ok_src), (pb, ok_dst)):
            m = prom(p)
            self.assertEqual(m[("istio_requests_total", lab)], 6)
            for k in ("istio_request_bytes_sum", "istio_response_bytes_sum"):
                self.assertEqual(m[(k, lab)] - 2 * first[lab][k], 3 * 600, (k, lab))
            for k in ("istio_request_bytes_count", "istio_response_bytes_count",
                      "istio_request_duration_milliseconds_count"):
                self.assertEqual(m[(k, lab)], 6, k)
            self.assertEqual(m[("istio_request_duration_milliseconds_bucket",
                                lab + ',le="+Inf"')], 6)
        # The origin never sees the exchange's headers; the client sent none, gets none.
        r, data = self.request(c, "GET", "/describe")
        self.assertEqual(r.status, 200)
        seen = json.loads(data)["headers"]
        self.assertNotIn("x-envoy-peer-metadata", seen)
        self.assertNotIn("x-envoy-peer-metadata-id", seen)
        self.assertIsNone(r.getheader("x-envoy-peer-metadata"))
        # 404s from the origin, a 503 from B's refused upstream, a 503 from A's.
        for _ in range(2):
            r, _ = self.request(c, "GET", "/status/404")
            self.assertEqual(r.status, 404)
        r, _ = self.request(c, "GET", "/dead/x")
        self.assertEqual(r.status, 503)
        r, _ = self.request(c, "GET", "/unreachable")
        self.assertEqual(r.status, 503)
        self.wait_requests(pa, "source", 11)
        self.wait_requests(pb, "destination", 10)
        # No connection, no peer headers: the endpoint's istio.workload names the destination,
        # no TLS names the principals.
        dead_dest = {"destination_workload": "dead-v1", "destination_app": "unknown",
                     "destination_version": "unknown",
                     "destination_service": "dead.prod.svc.cluster.local",
                     "destination_canonical_service": "dead",
                     "destination_canonical_revision": "v1", "destination_service_name": "dead"}
        want_a = {labels("source", 200): 7, labels("source", 404): 2, labels("source", 503): 1,
                  labels("source", 503, "UF", dest=dead_dest, principals=False): 1}
        want_b = {labels("destination", 200): 7, labels("destination", 404): 2,
                  labels("destination", 503, "UF"): 1}
        for p, want in ((pa, want_a), (pb, want_b)):
            m = prom(p)
            got = {lab: v for (name, lab), v in m.items() if name == "istio_requests_total"}
            self.assertEqual(got, want)
            for lab, n in want.items():
                for k in ("istio_request_bytes_count", "istio_response_bytes_count",
                          "istio_request_duration_milliseconds_count"):
                    self.assertEqual(m[(k, lab)], n, (k, lab))
            # No gRPC here: no message counters.
            self.assertFalse([k for k in m if "messages" in k[0]])
        self.assertEqual(self.origin.requests, 9)

    def test_grpc_messages(self):
        """gRPC (content-type application/grpc, here over HTTP/1.1): request_protocol "grpc",
        grpc_response_status from the response, and the message counters, labelled with the
        reporter and the peer labels only (as istio_stats.cc reports them)."""
        pa, pb = self.start_mesh([PM_OUTBOUND, STATS_OUTBOUND], [PM_INBOUND, STATS_INBOUND])
        c = http.client.HTTPConnection("127.0.0.1", pa.listener_port("outbound"),
                                       timeout=H.IO_TIMEOUT)
        self.addCleanup(c.close)
        for _ in range(2):
            # Three messages: one empty, one split over several reads.
            c.request("POST", "/pkg.Svc/Call", body=grpc_frames(5, 0, 70000),
                      headers={"Host": "server.prod:8080", "content-type": "application/grpc"})
            r = c.getresponse()
            self.assertEqual((r.status, r.getheader("grpc-status")), (200, "7"))
            self.assertEqual(r.read(), grpc_frames(10, 2000))
        self.wait_requests(pa, "source", 2)
        self.wait_requests(pb, "destination", 2)
        for p, rep in ((pa, "source"), (pb, "destination")):
            m = prom(p)
            lab = labels(rep, 200).replace('request_protocol="http"', 'request_protocol="grpc"')
            lab = lab.replace('grpc_response_status=""', 'grpc_response_status="7"')
            self.assertEqual(m.get(("istio_requests_total", lab)), 2, sorted(m))
            peer_only = lab[:lab.index(',request_protocol=')]
            self.assertEqual(m[("istio_request_messages_total", peer_only)], 6)
            self.assertEqual(m[("istio_response_messages_total", peer_only)], 4)

    def test_istio_1_18_null_vm_plugins(self):
        """The 1.18 shape: envoy.wasm.metadata_exchange on both sides, envoy.wasm.stats with
        the StringValue JSON configuration on A, the native istio.stats on B."""
        pa, pb = self.start_mesh([WASM_MX, WASM_STATS], [WASM_MX, STATS_INBOUND])
        c = http.client.HTTPConnection("127.0.0.1", pa.listener_port("outbound"),
                                       timeout=H.IO_TIMEOUT)
        self.addCleanup(c.close)
        for _ in range(2):
            r, data = self.request(c, "GET", "/describe")
            self.assertEqual(r.status, 200)
            self.assertNotIn("x-envoy-peer-metadata", json.loads(data)["headers"])
            # The inbound plugin answers with its headers only to a request that had them; the
            # outbound one strips them and adds none (it is OUTBOUND).
            self.assertIsNone(r.getheader("x-envoy-peer-metadata"))
        r, _ = self.request(c, "GET", "/status/404")
        self.wait_requests(pa, "source", 3)
        self.wait_requests(pb, "destination", 3)
        for p, rep in ((pa, "source"), (pb, "destination")):
            got = {lab: v for (name, lab), v in prom(p).items() if name == "istio_requests_total"}
            self.assertEqual(got, {labels(rep, 200): 2, labels(rep, 404): 1})


if __name__ == "__main__":
    H.main()

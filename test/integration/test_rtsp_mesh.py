"""RTSP between two sidecars as Istio configures them (regressions found by the whole-mesh e2e,
istio-integration/e2e/):

- the client sidecar's rtsp_proxy opens its upstream session on a cluster with Istio's
  UpstreamTlsContext (ALPN istio-peer-exchange,istio) and the cluster-level
  istio.metadata_exchange filter: the filter must run on that connection (write our preamble,
  strip the server sidecar's), or the server sidecar's preamble reaches the RTSP parser (502)
  and the server sees no peer metadata;
- the server sidecar's istio.stats labels the inbound mTLS connection with both principals and
  connection_security_policy="mutual_tls" (from the TLS handshake);
- the client sidecar's istio.stats names the destination service of the cluster the RTSP session
  follows (rtsp_proxy terminates the connection, tcp_proxy never picks the cluster);
- the client sidecar's istio.stats (reporter="source") names the server sidecar's workload
  (destination_workload/app/version/namespace, from the peer metadata the upstream session's
  exchange read) and destination_principal (the server certificate's URI SAN), for every client
  connection sharing that upstream session: the one that opened it, a second one joining it
  (fan-out), and, with --concurrency 2, one bound to the session through a mirror on the other
  worker. The series are reported while the connections are still open (the exchange is over),
  not only at close.

    /usr/bin/python3 test/integration/test_rtsp_mesh.py --binary build/msm-proxy
"""
import re
import unittest

import harness as H
import rtsp_peers as R
import test_metadata_exchange as MX

# What the client sidecar must report about the server sidecar (SERVER_NODE, its certificate;
# app.kubernetes.io/name wins over app, as in Istio).
SERVER_LABELS = {"destination_workload": "server", "destination_workload_namespace": "prod",
                 "destination_app": "server", "destination_version": "v2",
                 "destination_canonical_service": "server",
                 "destination_principal": MX.SERVER_ID,
                 "destination_service": "server.prod.svc.cluster.local",
                 "destination_service_namespace": "prod"}
SOURCE = {"reporter": "source", "source_workload": "client"}


def setUpModule():
    MX.setUpModule()


def tearDownModule():
    MX.tearDownModule()


def istio_stats(reporting=None):
    f = MX.istio_stats()
    if reporting:
        f["typed_config"]["tcp_reporting_duration"] = reporting
    return f


def client_config(upstream_port, reporting=None):
    cl = H.cluster(MX.CLUSTER, [H.sock_addr(upstream_port)], transport_socket=MX.client_tls(),
                   metadata=MX.SVC_MD, connect_timeout="2s")
    cl["filters"] = [MX.mx_filter()]
    filters = [istio_stats(reporting),
               R.rtsp_filter(stat_prefix="outbound", media_protection={"mode": "INTERLEAVED"}),
               H.tcp_proxy_filter(MX.CLUSTER, MX.CLUSTER)]
    return H.bootstrap(
        listeners=[H.listener("main", H.sock_addr(H.free_port()), filters,
                              traffic_direction="OUTBOUND")],
        clusters=[cl], node=MX.CLIENT_NODE)


def server_config(camera_port):
    chain = {"filters": [MX.mx_filter(), MX.istio_stats(), R.rtsp_filter(stat_prefix="inbound"),
                         H.tcp_proxy_filter("inbound|9000||", "inbound|9000||")],
             "transport_socket": MX.server_tls()}
    return H.bootstrap(
        listeners=[H.listener("main", H.sock_addr(H.free_port()), chains=[chain],
                              traffic_direction="INBOUND")],
        clusters=[H.cluster("inbound|9000||", [H.sock_addr(camera_port)], metadata=MX.SVC_MD)],
        node=MX.SERVER_NODE)


def series(p, metric):
    """[(labels dict, value)] of one istio_tcp_* metric in <p>'s /stats/prometheus."""
    st, body = p.get("/stats/prometheus")
    if st != 200:
        raise AssertionError("/stats/prometheus: %d" % st)
    out = []
    for line in body.splitlines():
        m = re.match(r'%s\{(.*)\} (\S+)$' % re.escape(metric), line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
            out.append((labels, float(m.group(2))))
    return out


def total(p, metric, **want):
    return sum(v for lb, v in series(p, metric)
               if all(lb.get(k) == x for k, x in want.items()))


@unittest.skipIf(R.missing_peers(), "missing RTSP peers: " + R.missing_peers())
class RtspMeshTest(H.ProxyTestCase):
    def prom(self, p):
        st, body = p.get("/stats/prometheus")
        self.assertEqual(st, 200)
        return "\n".join(l for l in body.splitlines() if l.startswith("istio_tcp_connections"))

    def mesh(self, client_args=None, reporting=None):
        cam = R.Camera(self.tmp)
        self.addCleanup(cam.stop)
        srv = self.start_proxy(lambda: server_config(cam.port))
        kw = {"args": client_args} if client_args else {}
        cli = self.start_proxy(lambda: client_config(srv.listener_port(), reporting), **kw)
        return cam, srv, cli

    def assert_source_side(self, cli, opened, closed=None, what=""):
        """<opened> client connections reported (reporter="source") with the server's identity,
        <closed> of them closed; none with an unknown destination workload."""
        want = dict(SOURCE, **SERVER_LABELS)

        def ok():
            return (total(cli, "istio_tcp_connections_opened_total", **want) == opened and
                    (closed is None or
                     total(cli, "istio_tcp_connections_closed_total", **want) == closed))
        try:
            H.wait_for(ok, timeout=8, what=what)
        except AssertionError:
            self.fail("%s: want %d opened%s with %r; client sidecar has:\n%s" % (
                what, opened, "" if closed is None else " and %d closed" % closed, want,
                "\n".join(str(s) for s in series(cli, "istio_tcp_connections_opened_total"))))
        unknown = [lb for lb, v in series(cli, "istio_tcp_connections_opened_total")
                   if lb.get("reporter") == "source" and v > 0 and
                   lb.get("destination_workload") != "server"]
        self.assertEqual(unknown, [], "%s: source-side series without the server's workload"
                         % what)
        self.assertGreater(total(cli, "istio_tcp_received_bytes_total", **want), 0, what)

    def play(self, cli, u):
        """A scripted client playing <u> interleaved; left open."""
        c = R.RawRtsp(cli.listener_port())
        self.addCleanup(c.close)
        self.assertEqual(c.request("DESCRIBE", u, {"Accept": "application/sdp"})[0], 200)
        st, hd, _ = c.request("SETUP", u + "/stream=0",
                              {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
        self.assertEqual(st, 200, hd)
        self.assertEqual(c.request("PLAY", u)[0], 200)
        return c

    def test_rtsp_over_istio_mtls_with_metadata_exchange(self):
        cam, srv, cli = self.mesh()
        frames, err = R.ffprobe_frames(R.url(cli), "tcp", 1.0)
        self.assertGreater(frames, 5, "no video through the two sidecars: %s\n%s" % (
            err, cli.read_stderr()[-2000:]))
        for p in (cli, srv):
            p.wait_stat("metadata_exchange.metadata_added", lambda v: v >= 1)
            self.assertEqual(p.stat("metadata_exchange.header_not_found"), 0)
        self.assertEqual(srv.stat("metadata_exchange.initial_header_not_found"), 0)
        self.assertGreaterEqual(srv.stat("rtsp.inbound.downstream_rq_play"), 1)
        H.wait_for(lambda: "istio_tcp_connections_closed_total{" in self.prom(srv) and
                   "istio_tcp_connections_closed_total{" in self.prom(cli), what="istio series")
        body = self.prom(srv)
        self.assertIn('source_principal="%s"' % MX.CLIENT_ID, body)
        self.assertIn('destination_principal="%s"' % MX.SERVER_ID, body)
        self.assertIn('connection_security_policy="mutual_tls"', body)
        self.assertRegex(body, r'reporter="destination",source_workload="client"')
        body = self.prom(cli)
        self.assertRegex(body, re.escape('destination_service="server.prod.svc.cluster.local"'))
        self.assertRegex(body, re.escape('destination_service_name="server"'))
        # The upstream session's peer (read by its metadata exchange) is the client's too.
        self.assert_source_side(cli, 1, 1, "one ffprobe")
        self.assertIn('source_principal="%s"' % MX.CLIENT_ID, body)

    def test_fanout_clients_report_the_server_workload(self):
        cam, srv, cli = self.mesh(reporting="0.5s")
        u = R.url(cli)
        first = self.play(cli, u)
        # The exchange is over: reported while still connected (not only at close).
        self.assert_source_side(cli, 1, 0, "the client that opened the upstream session")
        second = self.play(cli, u)  # joins the session, bound after the exchange
        self.assertEqual(cli.stat("rtsp.outbound.upstream_sessions_total"), 1)
        self.assertGreaterEqual(cli.stat("rtsp.outbound.fanout_joins"), 1)
        self.assert_source_side(cli, 2, 0, "a second client joining the session")
        self.assertEqual(cam.sessions(), 1)
        for c in (first, second):
            self.assertEqual(c.request("TEARDOWN", u)[0], 200)
            c.close()
        self.assert_source_side(cli, 2, 2, "after both closed")

    def test_client_through_a_mirror_on_another_worker(self):
        cam, srv, cli = self.mesh(client_args=["--concurrency", "2"], reporting="0.5s")
        u = R.url(cli)
        first = self.play(cli, u)
        n = 1
        name = "rtsp.outbound.fanout_cross_worker_joins"
        other = None
        for _ in range(40):
            before = cli.stat(name)
            c = R.RawRtsp(cli.listener_port())
            self.addCleanup(c.close)
            n += 1
            self.assertEqual(c.request("DESCRIBE", u, {"Accept": "application/sdp"})[0], 200)
            if cli.stat(name) > before:
                other = c
                break
            c.close()  # on the hub's worker: reported at close
        self.assertIsNotNone(other, "no connection landed on the second worker in 40 tries")
        st, hd, _ = other.request("SETUP", u + "/stream=0",
                                  {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
        self.assertEqual(st, 200, hd)
        self.assertEqual(other.request("PLAY", u)[0], 200)
        self.assertEqual(cli.stat("rtsp.outbound.upstream_sessions_total"), 1)
        self.assertGreaterEqual(cli.stat("rtsp.outbound.fanout_mirrors_active"), 1)
        # The mirror's client (still open) is reported with the peer the hub's exchange read.
        self.assert_source_side(cli, n, n - 2, "%d connections, one through a mirror" % n)
        first.close()  # the hub keeps going for the mirror
        self.assert_source_side(cli, n, n - 1, "the hub's client closed")
        # The proxy stops with the mirror's client still playing (the harness fails the test on
        # a sanitizer report: no reference to the shared peer may leak or outlive its users).
        self.assertEqual(cli.stop(), [])


if __name__ == "__main__":
    H.main()

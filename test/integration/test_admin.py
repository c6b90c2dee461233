"""Admin API on the bootstrap admin address: /ready, /server_info, /stats, /quitquitquit, 404,
keep-alive. Istio's pilot-agent readiness probe queries are reproduced verbatim."""
import json
import re
import socket

import harness as H

_Q = r"P[0-9.]+\([^,() ]+,[^,() ]+\)"
STAT_LINE = re.compile(r"^[A-Za-z0-9_.;:\-/@]+: (\d+|No recorded values|%s( %s)*)$" % (_Q, _Q))


def raw_request(sock, method, path, headers=""):
    """Send one HTTP/1.1 request on <sock>; return (status, headers dict, body)."""
    sock.sendall(("%s %s HTTP/1.1\r\nHost: admin\r\n%s\r\n" % (method, path, headers)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = sock.recv(65536)
        if not b:
            raise AssertionError("connection closed before the response head: %r" % buf)
        buf += b
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        b = sock.recv(65536)
        if not b:
            break
        rest += b
    return status, hdrs, rest[:n].decode()


class AdminTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.up = self.upstream("echo")
        self.p = self.start_proxy(lambda: H.simple_proxy_config(
            H.cluster("c", [self.up.address]), stat_prefix="p"))

    def traffic(self):
        s = self.connect(self.p)
        s.sendall(b"abc")
        self.assertEqual(H.recv_exactly(s, 3), b"abc")
        s.close()
        self.p.wait_stat("cluster.c.upstream_cx_active", lambda v: v == 0)

    def test_config_dump(self):
        st, body = self.p.get("/config_dump")
        self.assertEqual(st, 200)
        d = json.loads(body)
        types = [c["@type"].rsplit(".", 1)[1] for c in d["configs"]]
        self.assertEqual(types, ["BootstrapConfigDump", "ClustersConfigDump",
                                 "ListenersConfigDump", "RoutesConfigDump", "SecretsConfigDump"])
        clusters = d["configs"][1]["static_clusters"]
        self.assertEqual([c["cluster"]["name"] for c in clusters], ["c"])
        self.assertEqual(clusters[0]["cluster"]["@type"],
                         "type.googleapis.com/envoy.config.cluster.v3.Cluster")
        self.assertRegex(clusters[0]["last_updated"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        listeners = d["configs"][2]["static_listeners"]
        self.assertEqual(len(listeners), 1)
        self.assertEqual(listeners[0]["listener"]["filter_chains"][0]["filters"][0]["name"],
                         "envoy.filters.network.tcp_proxy")
        boot = d["configs"][0]["bootstrap"]
        self.assertIn("static_resources", boot)
        # include_eds adds the endpoints dump; resource= flattens one repeated field
        st, body = self.p.get("/config_dump?include_eds")
        self.assertIn("EndpointsConfigDump", body)
        st, body = self.p.get("/config_dump?resource=static_clusters")
        self.assertEqual([c["cluster"]["name"] for c in json.loads(body)["configs"]], ["c"])

    def test_ready_is_200_live(self):
        st, body = self.p.get("/ready")
        self.assertEqual(st, 200)
        self.assertEqual(body.strip(), "LIVE")

    def test_server_info_json(self):
        st, body = self.p.get("/server_info")
        self.assertEqual(st, 200)
        info = json.loads(body)
        self.assertEqual(info["state"], "LIVE")
        self.assertIn("version", info)
        self.assertEqual(info["command_line_options"]["concurrency"], 1)
        self.assertIn("uptime_current_epoch", info)

    def test_stats_text_format(self):
        self.traffic()
        st, body = self.p.get("/stats")
        self.assertEqual(st, 200)
        lines = body.splitlines()
        self.assertGreater(len(lines), 20)
        for line in lines:
            self.assertRegex(line, STAT_LINE)
        names = [l.split(": ")[0] for l in lines if STAT_LINE.match(l) and l.split(": ")[1]
                 .isdigit()]
        self.assertEqual(names, sorted(names), "counters/gauges are not sorted by name")
        stats = self.p.stats()
        self.assertEqual(stats["cluster.c.upstream_cx_total"], 1)
        self.assertEqual(stats["server.state"], 0)
        self.assertEqual(stats["server.live"], 1)
        self.assertEqual(stats["server.concurrency"], 1)
        self.assertEqual(stats["listener_manager.workers_started"], 1)
        self.assertEqual(stats["cluster_manager.active_clusters"], 1)
        self.assertIn("server.uptime", stats)

    def test_stats_usedonly(self):
        all_stats = self.p.stats()
        self.assertIn("cluster.c.upstream_cx_connect_fail", all_stats)
        used = self.p.stats("?usedonly")
        self.assertNotIn("cluster.c.upstream_cx_total", used)
        self.assertNotIn("cluster.c.upstream_cx_connect_fail", used)
        self.traffic()
        used = self.p.stats("?usedonly")
        self.assertEqual(used["cluster.c.upstream_cx_total"], 1)
        self.assertNotIn("cluster.c.upstream_cx_connect_fail", used)
        self.assertLess(len(used), len(self.p.stats()))

    def test_stats_filter_substring(self):
        self.traffic()
        st, body = self.p.get("/stats?filter=upstream_cx_total")
        self.assertEqual(st, 200)
        lines = body.splitlines()
        self.assertIn("cluster.c.upstream_cx_total: 1", lines)
        for line in lines:
            self.assertIn("upstream_cx_total", line.split(": ")[0])

    def test_stats_filter_is_a_regex(self):
        """Envoy's filter= is a regular expression (RE2, partial match)."""
        self.traffic()
        st, body = self.p.get("/stats?filter=%5Ecluster%5C.c%5C.upstream_cx_(total%7Cactive)%24")
        self.assertEqual(st, 200)
        self.assertEqual(sorted(body.splitlines()),
                         ["cluster.c.upstream_cx_active: 0", "cluster.c.upstream_cx_total: 1"])

    def test_stats_filter_invalid_regex_400(self):
        st, body = self.p.get("/stats?filter=%28unclosed")
        self.assertEqual(st, 400, body)

    def test_istio_readiness_queries(self):
        # pilot-agent status/ready/probe.go, step 2 (istio-contract.md 2.1).
        st, body = self.p.get("/stats?usedonly&filter=%5E(server%5C.state%7C"
                              "listener_manager%5C.workers_started)")
        self.assertEqual(st, 200)
        vals = dict(l.split(": ") for l in body.splitlines())
        self.assertEqual(vals, {"server.state": "0", "listener_manager.workers_started": "1"})
        # EXIT_ON_ZERO_ACTIVE_CONNECTIONS: filter=downstream_cx_active$
        st, body = self.p.get("/stats?usedonly&filter=downstream_cx_active%24")
        self.assertEqual(st, 200)
        for line in body.splitlines():
            self.assertTrue(line.split(": ")[0].endswith("downstream_cx_active"), line)

    def test_unknown_path_404(self):
        st, body = self.p.get("/no/such/endpoint")
        self.assertEqual(st, 404)
        self.assertIn("/stats", body)  # Envoy lists the endpoints

    def test_quitquitquit_needs_post(self):
        st, _ = self.p.get("/quitquitquit")
        self.assertEqual(st, 405)
        self.assertIsNone(self.p.proc.poll(), "GET /quitquitquit stopped the server")
        st, _ = self.p.get("/ready")
        self.assertEqual(st, 200)

    def test_quitquitquit_post_exits_0(self):
        self.p.expect_exit = 0
        st, body = self.p.post("/quitquitquit")
        self.assertEqual(st, 200)
        self.assertEqual(self.p.wait_exit(H.STOP_TIMEOUT), 0)

    def test_healthcheck_fail_ok_need_post(self):
        for path in ("/healthcheck/fail", "/healthcheck/ok"):
            self.assertEqual(self.p.get(path)[0], 405)
            self.assertEqual(self.p.post(path)[0], 200)

    def test_keep_alive_two_requests_one_connection(self):
        host, port = self.p.admin.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        st1, h1, b1 = raw_request(s, "GET", "/ready")
        self.assertEqual((st1, b1.strip()), (200, "LIVE"))
        self.assertNotEqual(h1.get("connection", "").lower(), "close")
        st2, _, b2 = raw_request(s, "GET", "/server_info")
        self.assertEqual(st2, 200)
        self.assertIn("version", json.loads(b2))
        # Connection: close is honoured.
        st3, h3, _ = raw_request(s, "GET", "/ready", "Connection: close\r\n")
        self.assertEqual(st3, 200)
        self.assertTrue(H.is_closed(s, timeout=5))

    def test_pipelined_requests(self):
        host, port = self.p.admin.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n"
                  b"Connection: close\r\n\r\n")
        data = H.recv_until_eof(s)
        self.assertEqual(data.count(b"HTTP/1.1 "), 2, data)
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data)
        self.assertIn(b"HTTP/1.1 404", data)

    def test_request_split_in_tiny_pieces(self):
        host, port = self.p.admin.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for ch in b"GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n":
            s.send(bytes([ch]))
        data = H.recv_until_eof(s)
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data)
        self.assertTrue(data.endswith(b"LIVE\n"), data)

    def test_malformed_request_400(self):
        host, port = self.p.admin.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        data = H.recv_until_eof(s)
        self.assertTrue(data.startswith(b"HTTP/1.1 400"), data)
        self.assertEqual(self.p.get("/ready")[0], 200)


class AdminDisabledTest(H.ProxyTestCase):
    def test_no_admin_section_still_serves(self):
        up = self.upstream("echo")

        def cfg():
            b = H.simple_proxy_config(H.cluster("c", [up.address]))
            del b["admin"]
            return b
        p = self.start_proxy(cfg, wait_ready=False)
        s = H.wait_for(lambda: self._try_connect(p), what="listener to accept")
        s.sendall(b"no admin")
        self.assertEqual(H.recv_exactly(s, 8), b"no admin")

    def _try_connect(self, p):
        if p.proc.poll() is not None:
            raise AssertionError("msm-proxy exited: %s" % p.read_stderr())
        try:
            s = p.connect()
        except OSError:
            return None
        self.addCleanup(s.close)
        return s


if __name__ == "__main__":
    H.main()

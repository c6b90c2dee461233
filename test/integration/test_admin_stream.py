"""Streamed admin responses (issue 6): /stats (text, json) and /stats/prometheus are rendered in
slices across main-loop iterations and sent chunked. The streamed body is byte-identical to the
whole-body one (MSM_ADMIN_STREAM=0 test hook); HTTP/1.0 gets an unchunked body ended by close;
HEAD and pipelined requests work; a client that stops reading holds a bounded amount of memory
while /ready keeps answering, gets the rest when it reads again, and is closed after the write
timeout when it never does; the 15090 Prometheus listener (HCM -> admin cluster) relays a
chunked scrape whole."""
import os
import re
import socket
import time

import harness as H
import test_http_istio as HI

# Lines whose value moves between two runs of the same config.
VOLATILE = re.compile(r"uptime|memory|days_until|_ms[{:_ ]|_ms$|seconds|version|\.time")


def stable(body):
    body = re.sub(r'("interval"|"cumulative"):[-0-9.e+a-z]+', r"\1:N", body)  # JSON quantiles
    return "\n".join(l for l in body.split("\n") if not VOLATILE.search(l))


def clusters_config(n, admin_port, lst_port, up):
    cl = [H.cluster("outbound|%d||svc-%d.ns.svc.cluster.local" % (9000 + i, i), [up])
          for i in range(n)]
    cfg = H.bootstrap(
        listeners=[H.listener("main", H.sock_addr(lst_port), [H.tcp_proxy_filter(
            "tcp", "outbound|9000||svc-0.ns.svc.cluster.local")])],
        clusters=cl)
    cfg["admin"] = {"address": H.sock_addr(admin_port)}
    return cfg


def request(sock, raw):
    sock.sendall(raw)


def read_head(sock, buf=b""):
    while b"\r\n\r\n" not in buf:
        b = sock.recv(65536)
        if not b:
            raise AssertionError("closed before the response head: %r" % buf[:200])
        buf += b
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hdrs, rest


def read_chunked(sock, buf):
    """Decode a chunked body from <buf> + <sock>; returns (body, bytes after it)."""
    out = []
    while True:
        while b"\r\n" not in buf:
            b = sock.recv(65536)
            if not b:
                raise AssertionError("closed inside a chunk header")
            buf += b
        line, _, buf = buf.partition(b"\r\n")
        n = int(line, 16)
        while len(buf) < n + 2:
            b = sock.recv(1 << 20)
            if not b:
                raise AssertionError("closed inside a chunk")
            buf += b
        if buf[n:n + 2] != b"\r\n":
            raise AssertionError("chunk not followed by CRLF")
        if n == 0:
            return b"".join(out), buf[2:]
        out.append(buf[:n])
        buf = buf[n + 2:]


class StreamTest(H.ProxyTestCase):
    N = 300

    def start(self, ports, env=None):
        return self.start_proxy(
            lambda: clusters_config(self.N, ports["admin"], ports["lst"], self.up.address),
            env=env)

    def setUp(self):
        super().setUp()
        self.up = self.upstream("echo")

    def traffic(self, p):
        s = self.connect(p)
        s.sendall(b"abc")
        self.assertEqual(H.recv_exactly(s, 3), b"abc")
        s.close()
        p.wait_stat("cluster.outbound|9000||svc-0.ns.svc.cluster.local.upstream_cx_active",
                    lambda v: v == 0)

    def admin_sock(self, p):
        host, port = p.admin.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        return s

    def get_raw(self, p, path):
        s = self.admin_sock(p)
        request(s, ("GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path).encode())
        st, hdrs, rest = read_head(s)
        if "transfer-encoding" in hdrs:
            body, _ = read_chunked(s, rest)
        else:
            body = rest + H.recv_exactly(s, int(hdrs["content-length"]) - len(rest))
        s.close()
        return st, hdrs, body.decode()

    PATHS = ("/stats", "/stats?format=json", "/stats/prometheus", "/stats?filter=upstream_cx&"
             "usedonly", "/stats?format=json&type=Histograms", "/stats/prometheus?text_readouts",
             "/stats?format=prometheus", "/clusters")

    def test_streamed_is_identical_to_whole(self):
        ports = {"admin": H.free_port(), "lst": H.free_port()}
        whole = {}
        p = self.start(ports, env={"MSM_ADMIN_STREAM": "0"})
        self.traffic(p)
        for path in self.PATHS:
            st, hdrs, body = self.get_raw(p, path)
            self.assertEqual(st, 200)
            self.assertNotIn("transfer-encoding", hdrs)
            whole[path] = body
        self._proxies.remove(p)
        self._stop_proxy(p)
        p = self.start(ports)
        self.traffic(p)
        for path in self.PATHS:
            st, hdrs, body = self.get_raw(p, path)
            self.assertEqual(st, 200)
            self.assertEqual(hdrs.get("transfer-encoding"), "chunked", path)
            self.assertNotIn("content-length", hdrs)
            self.assertGreater(len(body), 0 if "usedonly" in path else 1000, path)
            self.assertTrue(stable(body) == stable(whole[path]), "%s differs" % path)
        self.assertGreater(len(whole["/stats/prometheus"]), 1 << 20)  # several slices
        self.assertTrue("\nenvoy_cluster_manager_cluster_added{} %d\n" % self.N
                        in whole["/stats/prometheus"])

    def test_http10_head_close_and_pipelining(self):
        p = self.start({"admin": H.free_port(), "lst": H.free_port()})
        _, _, ref = self.get_raw(p, "/stats/prometheus")
        # HTTP/1.0: no chunking, no length, the end of the body is the end of the connection
        s = self.admin_sock(p)
        request(s, b"GET /stats/prometheus HTTP/1.0\r\n\r\n")
        st, hdrs, rest = read_head(s)
        self.assertEqual(st, 200)
        self.assertNotIn("transfer-encoding", hdrs)
        self.assertNotIn("content-length", hdrs)
        body = (rest + H.recv_until_eof(s)).decode()
        self.assertTrue(stable(body) == stable(ref), "HTTP/1.0 body differs")
        # HTTP/1.1 with Connection: close: chunked, then closed
        s = self.admin_sock(p)
        request(s, b"GET /stats HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        st, hdrs, rest = read_head(s)
        self.assertEqual(hdrs.get("transfer-encoding"), "chunked")
        body, after = read_chunked(s, rest)
        self.assertIn(b"cluster_manager.active_clusters: %d" % (self.N), body)
        self.assertEqual(after + H.recv_until_eof(s), b"")
        # HEAD: the length of the body, no body
        s = self.admin_sock(p)
        request(s, b"HEAD /stats HTTP/1.1\r\nHost: a\r\n\r\nGET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
        st, hdrs, rest = read_head(s)
        self.assertEqual(st, 200)
        self.assertGreater(int(hdrs["content-length"]), 100000)
        st, hdrs, rest = read_head(s, rest)
        self.assertEqual((st, rest + H.recv_exactly(s, 5 - len(rest))), (200, b"LIVE\n"))
        # pipelined: a streamed response, then the next request waits for its end
        s = self.admin_sock(p)
        request(s, b"GET /stats/prometheus HTTP/1.1\r\nHost: a\r\n\r\n"
                   b"GET /stats?format=json HTTP/1.1\r\nHost: a\r\n\r\n"
                   b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
        st, hdrs, rest = read_head(s)
        body, rest = read_chunked(s, rest)
        self.assertTrue(stable(body.decode()) == stable(ref), "pipelined body differs")
        st, hdrs, rest = read_head(s, rest)
        body, rest = read_chunked(s, rest)
        self.assertTrue(body.startswith(b'{"stats":[') and body.endswith(b"]}\n"))
        st, hdrs, rest = read_head(s, rest)
        self.assertEqual((st, rest + H.recv_exactly(s, 5 - len(rest))), (200, b"LIVE\n"))

    def test_slow_reader(self):
        self.N = 1000  # /stats/prometheus ~18 MB
        p = self.start({"admin": H.free_port(), "lst": H.free_port()},
                       env={"MSM_ADMIN_TIMEOUTS_MS": "10000,300000,2000"})
        _, _, ref = self.get_raw(p, "/stats/prometheus")
        self.assertGreater(len(ref), 15 << 20)
        rss0 = H.rss_kb(p.proc.pid)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.addCleanup(s.close)
        host, port = p.admin.rsplit(":", 1)
        s.connect((host, int(port)))
        request(s, b"GET /stats/prometheus HTTP/1.1\r\nHost: a\r\n\r\n")
        st, hdrs, buf = read_head(s)
        while len(buf) < 100000:
            buf += s.recv(65536)
        # stop reading: the proxy renders up to its watermark, then waits
        time.sleep(1.0)
        t0 = time.monotonic()
        for _ in range(5):
            st, body = p.get("/ready")
            self.assertEqual((st, body), (200, "LIVE\n"))
        self.assertLess(time.monotonic() - t0, 2.0)
        grown = H.rss_kb(p.proc.pid) - rss0
        H.note("RSS growth during the stalled scrape: %d kB", grown)
        self.assertLess(grown, 10 * 1024, "RSS grew %d kB for a stalled 18 MB scrape" % grown)
        # reading again resumes the stream to its end, identical
        s.settimeout(H.IO_TIMEOUT)
        body, _ = read_chunked(s, buf)
        self.assertTrue(stable(body.decode()) == stable(ref), "resumed body differs")
        # a client that never reads again is dropped after the write timeout (2 s here)
        s2 = socket.socket()
        s2.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.addCleanup(s2.close)
        s2.connect((host, int(port)))
        request(s2, b"GET /stats/prometheus HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(4.5)
        total = 0
        s2.settimeout(H.IO_TIMEOUT)
        try:
            while True:
                b = s2.recv(1 << 20)
                if not b:
                    break
                total += len(b)
        except ConnectionResetError:
            pass
        self.assertLess(total, len(ref), "the stalled client got the whole body")
        self.assertEqual(p.get("/ready")[0], 200)

    def test_prometheus_listener_relays_stream(self):
        """15090 (HCM -> prometheus_stats cluster -> admin): the chunked scrape arrives whole."""
        agent = HI.P.HttpUpstream("agent")
        self.addCleanup(agent.stop)
        ports = {}

        def cfg():
            ports.update(admin=H.free_port(), health=H.free_port(), prom=H.free_port())
            return HI.golden("default_golden.json", agent.port, ports["admin"], ports["health"],
                             ports["prom"])
        p = self.start_proxy(cfg)
        st, h, body = HI.get(ports["prom"], "/stats/prometheus")
        self.assertEqual(st, 200)
        admin_st, admin_body = p.get("/stats/prometheus")
        names = lambda b: sorted(set(l.split("{")[0].split(" ")[0] for l in b.split("\n") if l))
        # The relayed scrape created a few stats (its own request counters): a subset, and it
        # ends where the admin's ends (nothing was cut).
        relayed = names(body.decode())
        self.assertLessEqual(set(relayed), set(names(admin_body)))
        self.assertGreater(len(relayed), 50)
        last = lambda b: b.rstrip("\n").rsplit("\n", 1)[1].split("{")[0]
        self.assertEqual(last(body.decode()), last(admin_body))
        self.assertGreater(len(body), 10000)


if __name__ == "__main__":
    H.main()

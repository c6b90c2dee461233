"""RTSP fan-out across workers: with --concurrency 2 (what Istio passes) the camera still sees ONE
session per stream, whichever worker each player's connection lands on (SO_REUSEPORT spreads
them). The first worker to need a stream owns the upstream session (the hub); clients on the
other worker bind to a mirror of it (docs/rtsp.md, "Fan-out across workers").

Covers: 10 players spread over both workers, one camera session, every player decodes; a client
of the other worker gets a consistent RTP-Info, over UDP (sent from the owner's sockets) and
interleaved (through the handoff ring), and can tear down one track; churn across workers, then
the linger, leave no fd, UDP socket, mirror or camera session behind; the camera's
authentication is checked for clients of the other worker too.
"""
import socket
import time
import unittest

import harness as H
import rtsp_peers as R

MISSING = R.missing_peers()
CONCURRENCY = ["--concurrency", "2"]


def rtp_seq_ts(pkt):
    return int.from_bytes(pkt[2:4], "big"), int.from_bytes(pkt[4:8], "big")


def rtp_info(hd):
    info = hd["rtp-info"]
    seq = int(info.split("seq=")[1].split(";")[0].split(",")[0])
    rtptime = int(info.split("rtptime=")[1].split(",")[0].split(";")[0])
    return seq, rtptime


@unittest.skipIf(MISSING, "real RTSP peers missing (scripts/deps.sh test): " + MISSING)
class RtspWorkersTest(H.ProxyTestCase):
    def camera(self, **kw):
        cam = R.Camera(self.tmp, **kw)
        self.addCleanup(cam.stop)
        return cam

    def proxy(self, cam, **kw):
        return self.start_proxy(lambda: R.rtsp_proxy_config(cam.port, **kw), args=CONCURRENCY)

    def other_worker_client(self, p, prefix, u, headers=None, want=200):
        """A RawRtsp client whose connection landed on the worker that does not own the stream's
        session: its DESCRIBE (answered <want>) made the cross-worker join count grow."""
        name = "rtsp.%s.fanout_cross_worker_joins" % prefix
        for _ in range(40):
            before = p.stat(name)
            c = R.RawRtsp(p.listener_port())
            st, hd, _ = c.request("DESCRIBE", u, headers)
            self.assertEqual(st, want, hd)
            if p.stat(name) > before:
                self.addCleanup(c.close)
                return c, hd
            c.close()
        self.fail("no connection landed on the second worker in 40 tries")

    def wait_released(self, p, base, what):
        def ok():
            fds, udp = R.proxy_fds(p)
            return udp == base[1] and fds <= base[0]
        try:
            H.wait_for(ok, timeout=10)
        except AssertionError:
            self.fail("%s: fds/udp sockets not back to %r (now %r)" % (what, base,
                                                                      R.proxy_fds(p)))

    def test_ten_players_two_workers_one_camera_session(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="xw", fanout_linger="1s")
        base = R.proxy_fds(p)
        players = []

        def add(i):
            pl = R.Player(R.url(p), "udp" if i % 2 else "tcp", seconds=5)
            self.addCleanup(pl.kill)
            players.append(pl)
        for i in range(10):
            add(i)
        p.wait_stat("rtsp.xw.subscribers_active", lambda v: v == 10, timeout=20)
        # The kernel's SO_REUSEPORT hash puts all 10 on one worker once in 512 runs: then
        # more players, until one lands on the other worker.
        while p.stat("rtsp.xw.fanout_cross_worker_joins") == 0 and len(players) < 20:
            add(len(players))
            p.wait_stat("rtsp.xw.subscribers_active", lambda v: v == len(players), timeout=10)
        n = len(players)
        st = p.stats()
        cross = st["rtsp.xw.fanout_cross_worker_joins"]
        # both workers serve players: the owner's (at least the first) and the other's
        self.assertGreaterEqual(cross, 1, st)
        self.assertLessEqual(cross, n - 1, st)
        self.assertGreaterEqual(st["rtsp.xw.fanout_mirrors_active"], 1)
        self.assertEqual(st["rtsp.xw.upstream_sessions_active"], 1)
        self.assertEqual(st["rtsp.xw.upstream_sessions_total"], 1)
        self.assertEqual(st["rtsp.xw.stream.cam.subscribers"], n)
        H.wait_for(lambda: cam.sessions() == 1, timeout=3, what="camera sees one session")
        self.assertEqual(cam.state()["connections"], 1, cam.state())
        for pl in players:
            pl.wait()
            self.assertGreaterEqual(pl.frames(), 60, pl.err)
        st = p.stats()
        self.assertEqual(st["rtsp.xw.rtp_dropped_slow_subscriber"], 0)
        self.assertEqual(st["rtsp.xw.rtp_dropped_handoff"], 0)
        self.assertEqual(st["rtsp.xw.upstream_sessions_total"], 1)
        # after the last player: mirrors go at once, the owner's session after the linger
        p.wait_stat("rtsp.xw.upstream_sessions_active", lambda v: v == 0, timeout=10)
        self.assertEqual(p.stat("rtsp.xw.fanout_mirrors_active"), 0)
        H.wait_for(lambda: cam.sessions() == 0, timeout=10, what="camera session torn down")
        self.wait_released(p, base, "after fan-out over two workers")

    def test_other_worker_client_rtp_info_interleaved_and_udp(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="xl")
        u = R.url(p)
        first = R.Player(u, "udp", seconds=8)
        self.addCleanup(first.kill)
        p.wait_stat("rtsp.xl.subscribers_active", lambda v: v == 1, timeout=10)
        time.sleep(0.5)
        # interleaved, through the handoff ring of the other worker
        c, _ = self.other_worker_client(p, "xl", u)
        st, hd, _ = c.request("SETUP", u + "/stream=0",
                              {"Transport": "RTP/AVP/TCP;unicast;interleaved=4-5"})
        self.assertEqual(st, 200, hd)
        self.assertIn("interleaved=4-5", hd["transport"])
        st, hd, _ = c.request("PLAY", u)
        self.assertEqual(st, 200)
        self.assertIn("url=" + u + "/stream=0", hd["rtp-info"])
        seq, rtptime = rtp_info(hd)
        c.sock.settimeout(5)
        while len(c.buf) < 16:
            c._fill()
        self.assertEqual(c.buf[0:2], b"$\x04", c.buf[:8])
        pkt_seq, pkt_ts = rtp_seq_ts(c.buf[4:16])
        self.assertLess((pkt_seq - seq) & 0xffff, 50, (pkt_seq, seq))
        self.assertLess((pkt_ts - rtptime) & 0xffffffff, 90000 * 2, (pkt_ts, rtptime))
        self.assertEqual(c.request("TEARDOWN", u)[0], 200)
        # UDP: the client of the other worker is served from the owner's shared socket
        c2, _ = self.other_worker_client(p, "xl", u)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        self.addCleanup(rx.close)
        port = rx.getsockname()[1]
        st, hd, _ = c2.request("SETUP", u + "/stream=0", {
            "Transport": "RTP/AVP;unicast;client_port=%d-%d" % (port, port + 1)})
        self.assertEqual(st, 200, hd)
        server_port = int(hd["transport"].split("server_port=")[1].split("-")[0])
        st, hd, _ = c2.request("PLAY", u)
        self.assertEqual(st, 200)
        seq, rtptime = rtp_info(hd)
        pkt, src = rx.recvfrom(2048)
        self.assertEqual(src[1], server_port, "media from the announced server_port")
        pkt_seq, pkt_ts = rtp_seq_ts(pkt)
        self.assertLess((pkt_seq - seq) & 0xffff, 50, (pkt_seq, seq))
        self.assertLess((pkt_ts - rtptime) & 0xffffffff, 90000 * 2, (pkt_ts, rtptime))
        # RTCP from that client reaches the owner's socket and keeps its session alive
        rx.sendto(b"\x80\xc9\x00\x01" + bytes(4), ("127.0.0.1", server_port))
        p.wait_stat("rtsp.xl.downstream_rtcp_rx_packets", lambda v: v >= 1)
        self.assertEqual(c2.request("TEARDOWN", u)[0], 200)
        self.assertEqual(p.stat("rtsp.xl.upstream_sessions_total"), 1)
        self.assertEqual(p.stat("rtsp.xl.rtp_dropped_handoff"), 0)
        self.assertGreaterEqual(first.wait().frames(), 100, first.err)

    def test_rtcp_at_the_owner_keeps_other_worker_session_alive(self):
        # The client's RTCP reaches the hub's socket (owner's worker); its session lives on the
        # other worker: the hub forwards the liveness.
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="xk", session_timeout="2s")
        u = R.url(p)
        keep = R.RawRtsp(p.listener_port())
        self.addCleanup(keep.close)
        self.assertEqual(keep.request("DESCRIBE", u)[0], 200)
        c, _ = self.other_worker_client(p, "xk", u)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        self.addCleanup(rx.close)
        port = rx.getsockname()[1]
        st, hd, _ = c.request("SETUP", u + "/stream=0", {
            "Transport": "RTP/AVP;unicast;client_port=%d-%d" % (port, port + 1)})
        self.assertEqual(st, 200, hd)
        rtcp_port = int(hd["transport"].split("server_port=")[1].split("-")[1].split(";")[0])
        self.assertEqual(c.request("PLAY", u)[0], 200)
        rr = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rr.bind(("127.0.0.1", port + 1))
        self.addCleanup(rr.close)
        for _ in range(8):  # 4 s of RTCP only, twice the session timeout
            rr.sendto(b"\x80\xc9\x00\x01" + bytes(4), ("127.0.0.1", rtcp_port))
            time.sleep(0.5)
        self.assertEqual(p.stat("rtsp.xk.session_timeout"), 0)
        self.assertEqual(c.request("GET_PARAMETER", u)[0], 200)
        # silence: the session times out and its records at the owner go
        p.wait_stat("rtsp.xk.session_timeout", lambda v: v == 1, timeout=6)
        p.wait_stat("rtsp.xk.fanout_mirrors_active", lambda v: v == 0, timeout=5)

    def test_other_worker_client_tears_down_one_track(self):
        cam = self.camera(extra=["--audio"])
        p = self.proxy(cam, stat_prefix="xt")
        u = R.url(p)
        keep = R.RawRtsp(p.listener_port())  # the owner's client: keeps the session up
        self.addCleanup(keep.close)
        self.assertEqual(keep.request("DESCRIBE", u)[0], 200)
        c, hd = self.other_worker_client(p, "xt", u)
        base = hd["content-base"].rstrip("/")
        socks = []
        for i in range(2):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.bind(("127.0.0.1", 0))
            rx.settimeout(0.2)
            self.addCleanup(rx.close)
            socks.append(rx)
            port = rx.getsockname()[1]
            st, hd, _ = c.request("SETUP", "%s/stream=%d" % (base, i), {
                "Transport": "RTP/AVP;unicast;client_port=%d-%d" % (port, port + 1)})
            self.assertEqual(st, 200, hd)
        self.assertEqual(c.request("PLAY", u)[0], 200)

        def count(rx, seconds):
            n = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    rx.recvfrom(2048)
                    n += 1
                except socket.timeout:
                    pass
            return n
        self.assertGreater(count(socks[1], 1.0), 5, "audio flows")
        st, hd, _ = c.request("TEARDOWN", base + "/stream=1")
        self.assertEqual(st, 200)
        self.assertIn("session", hd, "the session goes on with the other track")
        time.sleep(0.3)
        count(socks[1], 0.3)  # what was in flight
        self.assertEqual(count(socks[1], 1.0), 0, "audio stopped")
        self.assertGreater(count(socks[0], 0.5), 5, "video goes on")
        self.assertEqual(c.request("TEARDOWN", u)[0], 200)
        self.assertEqual(c.request("GET_PARAMETER", u)[0], 454)

    def test_churn_across_workers_leaves_nothing_behind(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="xc", fanout_linger="1s", session_timeout="3s")
        base = R.proxy_fds(p)
        u = R.url(p)
        # overlapping players, some killed mid-stream
        waves = []
        for i in range(8):
            pl = R.Player(u, ("udp", "tcp")[i % 2], seconds=2.5)
            self.addCleanup(pl.kill)
            waves.append(pl)
            time.sleep(0.3)
        time.sleep(1.0)
        for pl in waves[::3]:
            pl.kill()
        # a client of the other worker that sets up, plays and vanishes without TEARDOWN
        c, _ = self.other_worker_client(p, "xc", u)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        self.addCleanup(rx.close)
        port = rx.getsockname()[1]
        self.assertEqual(c.request("SETUP", u + "/stream=0", {
            "Transport": "RTP/AVP;unicast;client_port=%d-%d" % (port, port + 1)})[0], 200)
        self.assertEqual(c.request("PLAY", u)[0], 200)
        c.close()
        for i, pl in enumerate(waves):
            pl.wait()
            if i % 3:
                self.assertGreaterEqual(pl.frames(), 10, pl.err)
        self.assertGreaterEqual(p.stat("rtsp.xc.fanout_cross_worker_joins"), 1)
        p.wait_stat("rtsp.xc.sessions_active", lambda v: v == 0, timeout=10)
        p.wait_stat("rtsp.xc.upstream_sessions_active", lambda v: v == 0, timeout=10)
        self.assertEqual(p.stat("rtsp.xc.fanout_mirrors_active"), 0)
        H.wait_for(lambda: cam.sessions() == 0, timeout=10, what="camera session torn down")
        self.wait_released(p, base, "after churn over two workers")

    def test_auth_checked_for_clients_of_the_other_worker(self):
        cam = self.camera(extra=["--user", "admin:secret"])
        p = self.proxy(cam, stat_prefix="xa")
        u = R.url(p)
        first = R.Player("rtsp://admin:secret@127.0.0.1:%d/cam" % p.listener_port(), "tcp",
                         seconds=5)
        self.addCleanup(first.kill)
        p.wait_stat("rtsp.xa.subscribers_active", lambda v: v == 1, timeout=10)
        c, hd = self.other_worker_client(p, "xa", u, want=401)
        self.assertIn("www-authenticate", hd)
        auth = {"Authorization": "Basic YWRtaW46c2VjcmV0"}
        self.assertEqual(c.request("DESCRIBE", u, auth)[0], 200)
        st, hd, _ = c.request("SETUP", u + "/stream=0",
                              dict(auth, Transport="RTP/AVP/TCP;unicast;interleaved=0-1"))
        self.assertEqual(st, 200, hd)
        self.assertEqual(c.request("PLAY", u, auth)[0], 200)
        c.sock.settimeout(5)
        while len(c.buf) < 4:
            c._fill()
        self.assertEqual(c.buf[0:1], b"$")
        self.assertGreaterEqual(first.wait().frames(), 60, first.err)

    def test_stop_with_live_sessions_on_both_workers(self):
        # SIGINT while the hub serves the other worker's mirror (UDP records and the ring busy):
        # a clean exit, no sanitizer report (leaks included).
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="xs")
        u = R.url(p)
        players = [R.Player(u, ("udp", "tcp")[i % 2], seconds=20, timeout=30) for i in range(4)]
        for pl in players:
            self.addCleanup(pl.kill)
        p.wait_stat("rtsp.xs.subscribers_active", lambda v: v == 4, timeout=15)
        c, _ = self.other_worker_client(p, "xs", u)
        self.assertEqual(c.request("SETUP", u + "/stream=0", {
            "Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})[0], 200)
        self.assertEqual(c.request("PLAY", u)[0], 200)
        c.sock.settimeout(5)
        while len(c.buf) < 4:
            c._fill()
        self.assertGreaterEqual(p.stat("rtsp.xs.fanout_mirrors_active"), 1)
        self._stop_proxy(p)
        self.assertEqual(p.proc.returncode, 0)
        for pl in players:
            pl.kill()
            if not pl.proc.stdout.closed:
                pl.proc.communicate()


if __name__ == "__main__":
    H.main()

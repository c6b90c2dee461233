"""RTSP fan-out and lifecycle with real peers (see test_rtsp.py for the basics).

Covers: 10 players (UDP and interleaved mixed) through one proxy while the camera serves ONE
session; late joiners get a consistent RTP-Info; the upstream session is torn down after the
linger; session timeout releases ports and sockets (checked in /proc/<pid>/fd); camera restart
and client churn leave nothing behind; a stalled interleaved subscriber never stalls the others;
the camera's authentication is not bypassed by fan-out.
"""
import os
import signal
import socket
import time
import unittest

import harness as H
import rtsp_peers as R

MISSING = R.missing_peers()


@unittest.skipIf(MISSING, "real RTSP peers missing (scripts/deps.sh test): " + MISSING)
class RtspFanoutTest(H.ProxyTestCase):
    def camera(self, **kw):
        cam = R.Camera(self.tmp, **kw)
        self.addCleanup(cam.stop)
        return cam

    def proxy(self, cam, **kw):
        return self.start_proxy(lambda: R.rtsp_proxy_config(cam.port, **kw))

    def baseline(self, p):
        """(fds, udp sockets) of an idle proxy."""
        return R.proxy_fds(p)

    def wait_released(self, p, base, what):
        """UDP sockets back to the baseline, and no more fds than then (the admin API's own
        connections come and go)."""
        def ok():
            fds, udp = R.proxy_fds(p)
            return udp == base[1] and fds <= base[0]
        try:
            H.wait_for(ok, timeout=10)
        except AssertionError:
            self.fail("%s: fds/udp sockets not back to %r (now %r)" % (what, base,
                                                                      R.proxy_fds(p)))

    def test_ten_clients_one_camera_session(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="fan", fanout_linger="1s")
        base = self.baseline(p)
        players = [R.Player(R.url(p), "udp" if i % 2 else "tcp", seconds=5) for i in range(10)]
        for pl in players:
            self.addCleanup(pl.kill)
        p.wait_stat("rtsp.fan.subscribers_active", lambda v: v == 10, timeout=15)
        st = p.stats()
        self.assertEqual(st["rtsp.fan.upstream_sessions_active"], 1)
        self.assertGreaterEqual(st["rtsp.fan.fanout_joins"], 1)
        self.assertEqual(st["rtsp.fan.stream.cam.subscribers"], 10)
        H.wait_for(lambda: cam.sessions() == 1, timeout=3, what="camera sees one session")
        self.assertEqual(cam.state()["connections"], 1, cam.state())
        for pl in players:
            pl.wait()
            self.assertGreaterEqual(pl.frames(), 60, pl.err)
        self.assertEqual(p.stat("rtsp.fan.rtp_dropped_slow_subscriber"), 0)
        self.assertEqual(p.stat("rtsp.fan.upstream_sessions_total"), 1)
        # after the last subscriber, the linger, then TEARDOWN: camera session gone, fds back
        p.wait_stat("rtsp.fan.upstream_sessions_active", lambda v: v == 0, timeout=10)
        H.wait_for(lambda: cam.sessions() == 0, timeout=10, what="camera session torn down")
        self.wait_released(p, base, "after fan-out")

    def test_late_joiner_rtp_info_is_consistent(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="late")
        first = R.Player(R.url(p), "udp", seconds=6)
        self.addCleanup(first.kill)
        p.wait_stat("rtsp.late.subscribers_active", lambda v: v == 1, timeout=10)
        time.sleep(0.5)
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        self.assertEqual(c.request("DESCRIBE", R.url(p))[0], 200)
        st, hd, _ = c.request("SETUP", R.url(p) + "/stream=0",
                              {"Transport": "RTP/AVP/TCP;unicast;interleaved=4-5"})
        self.assertEqual(st, 200)
        self.assertIn("interleaved=4-5", hd["transport"])
        st, hd, _ = c.request("PLAY", R.url(p))
        self.assertEqual(st, 200)
        info = hd["rtp-info"]
        self.assertIn("url=" + R.url(p) + "/stream=0", info)
        seq = int(info.split("seq=")[1].split(";")[0])
        rtptime = int(info.split("rtptime=")[1].split(",")[0].split(";")[0])
        # the first frame we get continues from what RTP-Info announced
        c.sock.settimeout(5)
        while len(c.buf) < 16:
            c._fill()
        self.assertEqual(c.buf[0:2], b"$\x04", c.buf[:8])
        pkt_seq = int.from_bytes(c.buf[6:8], "big")
        pkt_ts = int.from_bytes(c.buf[8:12], "big")
        self.assertLess((pkt_seq - seq) & 0xffff, 50, (pkt_seq, seq))
        self.assertLess((pkt_ts - rtptime) & 0xffffffff, 90000 * 2, (pkt_ts, rtptime))
        self.assertGreaterEqual(p.stat("rtsp.late.fanout_joins"), 1)
        self.assertEqual(c.request("TEARDOWN", R.url(p))[0], 200)
        self.assertGreaterEqual(first.wait().frames(), 60, first.err)

    def test_session_timeout_releases_ports_and_fds(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="to", session_timeout="2s", fanout_linger="0s")
        base = self.baseline(p)
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        self.addCleanup(rx.close)
        c.play_udp(R.url(p), rx.getsockname()[1])
        self.assertEqual(p.stat("rtsp.to.sessions_active"), 1)
        fds, udp = R.proxy_fds(p)
        self.assertEqual(udp - base[1], 4, "one pair upstream, one pair downstream")
        # the client goes silent: no request, no RTCP
        p.wait_stat("rtsp.to.session_timeout", lambda v: v == 1, timeout=6)
        p.wait_stat("rtsp.to.upstream_sessions_active", lambda v: v == 0)
        self.assertEqual(p.stat("rtsp.to.sessions_active"), 0)
        self.assertTrue(c.closed(), "connection of a timed-out session left open")
        self.wait_released(p, base, "after session timeout")
        H.wait_for(lambda: cam.sessions() == 0, timeout=10, what="camera got TEARDOWN")

    def test_keepalive_keeps_session(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="ka", session_timeout="2s")
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        self.addCleanup(rx.close)
        c.play_udp(R.url(p), rx.getsockname()[1])
        for _ in range(4):
            time.sleep(1)
            self.assertEqual(c.request("GET_PARAMETER", R.url(p))[0], 200)
        self.assertEqual(p.stat("rtsp.ka.session_timeout"), 0)
        self.assertEqual(p.stat("rtsp.ka.sessions_active"), 1)

    def test_camera_restart_and_client_churn(self):
        cam = self.camera()
        port = cam.port
        p = self.proxy(cam, stat_prefix="churn", fanout_linger="0s", request_timeout="3s")
        base = self.baseline(p)
        # churn: players come and go, some killed mid-stream
        for i in range(6):
            pl = R.Player(R.url(p), ("udp", "tcp")[i % 2], seconds=3)
            self.addCleanup(pl.kill)
            if i % 3 == 2:
                time.sleep(1.0)
                pl.kill()
            else:
                self.assertGreaterEqual(pl.wait().frames(), 10, pl.err)
        self.wait_released(p, base, "after churn")
        # camera restart while a player watches: the player is disconnected, nothing leaks
        pl = R.Player(R.url(p), "tcp", seconds=30, timeout=40)
        self.addCleanup(pl.kill)
        p.wait_stat("rtsp.churn.subscribers_active", lambda v: v == 1, timeout=10)
        cam.stop()
        pl.wait()
        self.assertEqual(pl.proc.returncode is not None, True)
        p.wait_stat("rtsp.churn.subscribers_active", lambda v: v == 0, timeout=10)
        self.assertGreaterEqual(p.stat("rtsp.churn.upstream_session_failed"), 1)
        self.wait_released(p, base, "after camera stop")
        # nobody to talk to: 503, no hang
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        self.assertEqual(c.request("DESCRIBE", R.url(p))[0], 503)
        c.close()
        cam2 = self.camera(port=port)
        self.assertEqual(cam2.port, port)
        frames, err = R.ffprobe_frames(R.url(p), "udp")
        self.assertGreaterEqual(frames, 20, err)
        self.wait_released(p, base, "after camera restart")

    def test_stalled_interleaved_subscriber_does_not_stall_others(self):
        cam = self.camera(extra=["--bitrate", "3000", "--pattern", "snow"])
        p = self.proxy(cam, stat_prefix="slow", subscriber_buffer_limit_bytes=65536)
        stalled = R.RawRtsp(p.listener_port(), rcvbuf=4096)
        self.addCleanup(stalled.close)
        self.assertEqual(stalled.request("DESCRIBE", R.url(p))[0], 200)
        self.assertEqual(stalled.request("SETUP", R.url(p) + "/stream=0",
                                         {"Transport": "RTP/AVP/TCP;interleaved=0-1"})[0], 200)
        self.assertEqual(stalled.request("PLAY", R.url(p))[0], 200)
        # ...and never reads again
        good = R.Player(R.url(p), "tcp", seconds=4)
        self.addCleanup(good.kill)
        self.assertGreaterEqual(good.wait().frames(), 80, good.err)
        p.wait_stat("rtsp.slow.rtp_dropped_slow_subscriber", lambda v: v > 0, timeout=10)

    def test_auth_is_not_bypassed_by_fanout(self):
        cam = self.camera(extra=["--user", "admin:secret"])
        p = self.proxy(cam, stat_prefix="auth")
        good = "rtsp://admin:secret@127.0.0.1:%d/cam" % p.listener_port()
        first = R.Player(good, "tcp", seconds=5)
        self.addCleanup(first.kill)
        p.wait_stat("rtsp.auth.subscribers_active", lambda v: v == 1, timeout=10)
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        st, hd, _ = c.request("DESCRIBE", R.url(p))
        self.assertEqual(st, 401)
        self.assertIn("www-authenticate", hd)
        st, _, _ = c.request("DESCRIBE", R.url(p), {"Authorization": "Basic YWRtaW46c2VjcmV0"})
        self.assertEqual(st, 200)
        self.assertGreaterEqual(first.wait().frames(), 60, first.err)
        self.assertEqual(p.stat("rtsp.auth.upstream_sessions_total"), 2)  # the 401 one + 1


if __name__ == "__main__":
    H.main()

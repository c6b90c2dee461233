"""RTSP proxy with real peers: a GStreamer RTSP server as the camera, ffprobe and GStreamer's
rtspsrc as players (transport always forced), through msm-proxy on a static bootstrap.

Covers: decoding through the proxy (UDP and interleaved), all four transport combinations of
the client and upstream legs, routing (own routes, tcp_proxy fallback, 404), stats naming the
chosen cluster, per-track TEARDOWN, RTCP multiplexed on the RTP port (RFC 5761), and the error
paths (400, 404, 431, 453, 454, 461, 505, strangers, lying interleaved lengths). Fan-out,
timeouts and churn are in test_rtsp_fanout.py; fan-out across workers in test_rtsp_workers.py.
"""
import collections
import socket
import time
import unittest

import harness as H
import rtsp_peers as R

MISSING = R.missing_peers()


@unittest.skipIf(MISSING, "real RTSP peers missing (scripts/deps.sh test): " + MISSING)
class RtspTest(H.ProxyTestCase):
    def camera(self, **kw):
        cam = R.Camera(self.tmp, **kw)
        self.addCleanup(cam.stop)
        return cam

    def proxy(self, cam, **kw):
        return self.start_proxy(lambda: R.rtsp_proxy_config(cam.port, **kw))

    def test_ffprobe_decodes_through_proxy_udp_and_tcp(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="cam", fanout=False)
        for transport in ("udp", "tcp"):
            with self.subTest(transport=transport):
                frames, err = R.ffprobe_frames(R.url(p), transport)
                self.assertGreaterEqual(frames, 20, err)
        st = p.stats()
        self.assertGreater(st["rtsp.cam.upstream_rtp_rx_packets"], 50)
        self.assertGreater(st["rtsp.cam.downstream_rtp_tx_packets"], 50)
        self.assertEqual(st["rtsp.cam.downstream_rq_describe"], 2)
        self.assertGreaterEqual(st["rtsp.cam.downstream_rq_2xx"], 8)
        # The stats of the upstream connection name the cluster the filter chose.
        self.assertGreaterEqual(st["cluster.camera.upstream_cx_total"], 2)
        self.assertGreater(st["rtsp.cam.upstream_rtcp_rx_packets"] +
                           st["rtsp.cam.downstream_rtcp_rx_packets"], 0)

    def test_empty_config_as_typed_struct(self):
        # What an EnvoyFilter delivers: a TypedStruct; the empty config just works.
        cam = self.camera()

        def cfg():
            c = R.rtsp_proxy_config(cam.port)
            f = c["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            f["typed_config"] = {"@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                                 "type_url": R.RTSP_TYPE, "value": {}}
            return c
        p = self.start_proxy(cfg)
        frames, err = R.ffprobe_frames(R.url(p), "udp", seconds=1)
        self.assertGreaterEqual(frames, 10, err)
        self.assertEqual(p.stat("rtsp.default.downstream_rq_play"), 1)

    def test_four_transport_combinations(self):
        cam = self.camera()
        for up in ("UDP", "TCP"):
            p = self.proxy(cam, stat_prefix="mix", upstream_transport=up, fanout=False)
            for down in ("udp", "tcp"):
                with self.subTest(upstream=up, client=down):
                    frames, err = R.ffprobe_frames(R.url(p), down, seconds=1.5)
                    self.assertGreaterEqual(frames, 15, err)
            self.assertEqual(p.stat("rtsp.mix.rtp_dropped_strangers"), 0)
            self._stop_proxy(p)

    def test_gstreamer_rtspsrc_udp_and_tcp(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="gst")
        for proto in ("udp", "tcp"):
            with self.subTest(protocol=proto):
                ok, out = R.gst_frames_ok(R.url(p), proto)
                self.assertTrue(ok, out[-2000:])

    def test_audio_and_video_tracks(self):
        cam = self.camera(extra=["--audio"])
        p = self.proxy(cam, stat_prefix="av", fanout=False)
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        st, hd, sdp = c.request("DESCRIBE", R.url(p), {"Accept": "application/sdp"})
        self.assertEqual(st, 200)
        self.assertEqual(sum(1 for l in sdp.splitlines() if l.startswith("m=")), 2, sdp)
        base = hd["content-base"]
        self.assertTrue(base.startswith(R.url(p)), base)
        # every absolute URL and address in the SDP points at the proxy
        self.assertNotIn(":%d" % cam.port, sdp)
        frames, err = R.ffprobe_frames(R.url(p), "udp")
        self.assertGreaterEqual(frames, 20, err)

    def test_routes_pick_cluster_else_tcp_proxy_else_404(self):
        cam = self.camera(paths=["/cam", "/other"])
        other = H.cluster("routed", [H.sock_addr(cam.port)], connect_timeout="1s")
        routes = [{"match": {"prefix": "/oth"}, "cluster": "routed"},
                  {"match": {"safe_regex": {"regex": "/c[a-z]+"}, "host": "*.example"},
                   "cluster": "nowhere"}]
        p = self.proxy(cam, stat_prefix="rt", routes=routes, clusters=[other], fanout=False)
        frames, err = R.ffprobe_frames(R.url(p, "/other"), "tcp", seconds=1)
        self.assertGreaterEqual(frames, 10, err)
        self.assertGreaterEqual(p.stat("cluster.routed.upstream_cx_total"), 1)
        frames, err = R.ffprobe_frames(R.url(p, "/cam"), "tcp", seconds=1)
        self.assertGreaterEqual(frames, 10, err)
        self.assertGreaterEqual(p.stat("cluster.camera.upstream_cx_total"), 1)
        # alone as the last filter: no route -> 404
        p2 = self.proxy(cam, stat_prefix="alone", with_tcp_proxy=False,
                        routes=[{"match": {"path": "/cam"}, "cluster": "camera"}])
        c = R.RawRtsp(p2.listener_port())
        self.addCleanup(c.close)
        self.assertEqual(c.request("DESCRIBE", R.url(p2, "/nope"))[0], 404)
        self.assertEqual(p2.stat("rtsp.alone.downstream_rq_no_route"), 1)
        self.assertEqual(c.request("DESCRIBE", R.url(p2, "/cam"))[0], 200)
        frames, err = R.ffprobe_frames(R.url(p2, "/cam"), "udp", seconds=1)
        self.assertGreaterEqual(frames, 10, err)

    def test_bad_requests(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="bad")
        cases = [
            (b"GARBAGE\r\n\r\n", 400),
            (b"OPTIONS rtsp://x/ RTSP/3.0\r\nCSeq: 1\r\n\r\n", 505),
            (b"OPTIONS rtsp://x/ RTSP/1.0\r\nCSeq: 1\r\n" + b"X-Flood: y\r\n" * 100 + b"\r\n",
             431),
            (b"OPTIONS rtsp://x/ RTSP/1.0\r\nCSeq: 1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
             431),
            (b"ANNOUNCE rtsp://x/ RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 999999\r\n\r\n", 413),
            (b"OPTIONS rtsp://x/ RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -1\r\n\r\n", 400),
            (b"OPTIONS rtsp://x/ RTSP/1.0\r\nCSeq: 1\r\nBad\x00Header: 1\r\n\r\n", 400),
        ]
        for data, want in cases:
            with self.subTest(data=data[:40]):
                c = R.RawRtsp(p.listener_port())
                self.addCleanup(c.close)
                c.send_raw(data)
                st, _, _ = c.read_response()
                self.assertEqual(st, want)
                self.assertTrue(c.closed(), "connection left open after a malformed request")
        # well-formed but wrong: answers, and the connection stays usable
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        u = R.url(p)
        self.assertEqual(c.request("OPTIONS", u, {"CSeq": "x"})[0], 400)  # bad CSeq
        self.assertEqual(c.request("PLAY", u, {"Session": "nope"})[0], 454)
        self.assertEqual(c.request("DESCRIBE", "not-a-url")[0], 400)
        self.assertEqual(c.request("DESCRIBE", u)[0], 200)
        self.assertEqual(c.request("SETUP", u + "/stream=0",
                                   {"Transport": "RTP/AVP;multicast"})[0], 461)
        self.assertEqual(c.request("SETUP", u + "/stream=0",
                                   {"Transport": "RTP/AVP;unicast;client_port=99999"})[0], 400)
        self.assertEqual(c.request("SETUP", u + "/stream=0",
                                   {"Transport": "RTP/AVP;unicast;client_port=5000-5001;"
                                                 "destination=10.9.8.7"})[0], 403)
        self.assertEqual(c.request("SETUP", u + "/stream=7",
                                   {"Transport": "RTP/AVP/TCP;interleaved=0-1"})[0], 404)
        self.assertEqual(c.request("RECORD", u)[0], 501)
        self.assertEqual(c.request("OPTIONS", u, {"Proxy-Require": "x-magic"})[0], 551)
        self.assertEqual(c.request("OPTIONS", u)[0], 200)
        self.assertGreaterEqual(p.stat("rtsp.bad.downstream_rq_parse_error"), 7)
        # a lying interleaved length: the proxy waits for the bytes, and a close is clean
        c2 = R.RawRtsp(p.listener_port())
        c2.send_raw(b"$\x01\xff\xff" + b"x" * 100)
        c2.close()
        c3 = R.RawRtsp(p.listener_port())
        self.addCleanup(c3.close)
        self.assertEqual(c3.request("OPTIONS", u)[0], 200)

    def test_rtsp_2_0_request_gets_2_0_answer(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="v2")
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        c.send_raw(b"OPTIONS rtsp://127.0.0.1/cam RTSP/2.0\r\nCSeq: 7\r\n\r\n")
        data = H.recv_exactly(c.sock, 16)
        self.assertTrue(data.startswith(b"RTSP/2.0 200"), data)

    def test_port_exhaustion_answers_453_and_others_keep_playing(self):
        cam = self.camera(paths=["/cam", "/cam2"])
        # UDP upstream: a stream takes one pair towards the camera and one towards clients.
        # outside the default range and the ephemeral range, so parallel tests do not interfere
        port0 = 61000 + (H.free_port() % 1000) * 4
        p = self.proxy(cam, stat_prefix="ex", upstream_transport="UDP",
                       rtp_port_range={"start": port0, "end": port0 + 4})
        first = R.Player(R.url(p), "udp", seconds=4)
        self.addCleanup(first.kill)
        p.wait_stat("rtsp.ex.subscribers_active", lambda v: v == 1, timeout=10)
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        u2 = R.url(p, "/cam2")
        self.assertEqual(c.request("DESCRIBE", u2)[0], 200)
        st, _, _ = c.request("SETUP", u2 + "/stream=0",
                             {"Transport": "RTP/AVP;unicast;client_port=5000-5001"})
        self.assertEqual(st, 453)
        self.assertGreaterEqual(p.stat("rtsp.ex.rtp_port_exhausted"), 1)
        self.assertGreaterEqual(first.wait().frames(), 40, first.err)

    def test_stranger_packets_are_dropped_and_counted(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="str", fanout=False)
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        self.addCleanup(rx.close)
        tr = c.play_udp(R.url(p), rx.getsockname()[1])
        server_port = int(tr.split("server_port=")[1].split("-")[0])
        rx.recvfrom(2048)  # media arrives
        # the client's hole punch (as ffmpeg and GStreamer send) latches its address
        rx.sendto(b"\x80\x60" + bytes(30), ("127.0.0.1", server_port))
        time.sleep(0.3)
        # a flood from strangers (another address) to the proxy's media ports, RTP and RTCP
        fl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(fl.close)
        fl.bind(("127.0.0.2", 0))
        for i in range(300):
            fl.sendto(b"\x80\x60" + bytes(30), ("127.0.0.1", server_port + (i & 1)))
        p.wait_stat("rtsp.str.rtp_dropped_strangers", lambda v: v >= 300)
        got = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                rx.recvfrom(2048)
                got += 1
            except socket.timeout:
                break
        self.assertGreater(got, 20, "media stopped after the stranger flood")

    def test_teardown_of_one_track_keeps_the_session(self):
        cam = self.camera(extra=["--audio"])
        p = self.proxy(cam, stat_prefix="ptt")
        u = R.url(p)
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        st, hd, _ = c.request("DESCRIBE", u)
        self.assertEqual(st, 200)
        base = hd["content-base"].rstrip("/")
        for i in range(2):
            st, hd, _ = c.request("SETUP", "%s/stream=%d" % (base, i), {
                "Transport": "RTP/AVP/TCP;unicast;interleaved=%d-%d" % (2 * i, 2 * i + 1)})
            self.assertEqual(st, 200, hd)
        self.assertEqual(c.request("PLAY", u)[0], 200)

        def channels(seconds):
            seen = collections.Counter()
            end = time.monotonic() + seconds
            c.sock.settimeout(0.1)
            while time.monotonic() < end:
                while len(c.buf) >= 4 and c.buf[:1] == b"$":
                    n = int.from_bytes(c.buf[2:4], "big")
                    if len(c.buf) < 4 + n:
                        break
                    seen[c.buf[1]] += 1
                    c.buf = c.buf[4 + n:]
                try:
                    c._fill()
                except socket.timeout:
                    pass
            c.sock.settimeout(H.IO_TIMEOUT)
            return seen
        seen = channels(1.0)
        self.assertGreater(seen[0], 5, seen)
        self.assertGreater(seen[2], 5, seen)
        st, hd, _ = c.request("TEARDOWN", base + "/stream=1")
        self.assertEqual(st, 200)
        self.assertIn("session", hd, "the session goes on with the video track")
        channels(0.3)  # frames already on their way
        seen = channels(1.0)
        self.assertEqual(seen[2], 0, seen)
        self.assertGreater(seen[0], 5, seen)
        self.assertEqual(c.request("GET_PARAMETER", u)[0], 200)
        self.assertEqual(p.stat("rtsp.ptt.sessions_active"), 1)
        # TEARDOWN of the aggregate URL ends the session
        st, hd, _ = c.request("TEARDOWN", u)
        self.assertEqual(st, 200)
        self.assertNotIn("session", hd)
        self.assertEqual(c.request("GET_PARAMETER", u)[0], 454)
        self.assertEqual(p.stat("rtsp.ptt.sessions_active"), 0)

    def test_rtcp_mux_client(self):
        cam = self.camera()
        p = self.proxy(cam, stat_prefix="mux")
        u = R.url(p)
        c = R.RawRtsp(p.listener_port())
        self.addCleanup(c.close)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.5)
        self.addCleanup(rx.close)
        port = rx.getsockname()[1]
        self.assertEqual(c.request("DESCRIBE", u)[0], 200)
        st, hd, _ = c.request("SETUP", u + "/stream=0", {
            "Transport": "RTP/AVP;unicast;client_port=%d-%d;RTCP-mux" % (port, port + 1)})
        self.assertEqual(st, 200, hd)
        self.assertIn("RTCP-mux", hd["transport"])
        server_port = int(hd["transport"].split("server_port=")[1].split("-")[0])
        self.assertEqual(c.request("PLAY", u)[0], 200)
        # our receiver report goes to the RTP port: counted as RTCP, keeps the session alive
        rx.sendto(b"\x80\xc9\x00\x01" + bytes(4), ("127.0.0.1", server_port))
        p.wait_stat("rtsp.mux.downstream_rtcp_rx_packets", lambda v: v >= 1)
        self.assertEqual(p.stat("rtsp.mux.rtp_dropped_strangers"), 0)
        # the camera's sender reports come on the RTP port too, from the RTP port
        deadline = time.monotonic() + 12
        sr = None
        while time.monotonic() < deadline and sr is None:
            try:
                pkt, src = rx.recvfrom(2048)
            except socket.timeout:
                continue
            self.assertEqual(src[1], server_port)
            if len(pkt) > 1 and pkt[1] == 200:
                sr = pkt
        self.assertIsNotNone(sr, "no RTCP SR on the multiplexed port")


if __name__ == "__main__":
    H.main()

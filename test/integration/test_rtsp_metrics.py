"""RTSP proxy media metrics (issue 6 point 4): per-session series in /stats/prometheus
(msm_rtsp_session_*{msm_rtsp_prefix, msm_rtsp_session, msm_rtsp_role, msm_rtsp_stream}) that
exist while a session plays and are gone after TEARDOWN or a disconnect, the max_session_stats
cap, GET /rtsp/sessions, receiver-report loss, and retransmissions: RTCP generic NACKs (RFC 4585)
crafted here on the client's UDP leg, and an RTX stream (RFC 4588) from a scripted server whose
SDP announces it (the NACKs are then re-issued to that server).

Peers: GStreamer's RTSP server (rtsp_peers.Camera) for the real-camera cases; FakeCamera below, a
minimal scripted RTSP server on a socket, for RTX (GStreamer only does RTX with RTP/AVPF).
"""
import json
import re
import socket
import struct
import threading
import time
import unittest

import harness as H
import rtsp_peers as R

MISSING = R.missing_peers()

SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prometheus(p):
    """/stats/prometheus as [(name, {label: value}, float)]."""
    st, body = p.get("/stats/prometheus")
    if st != 200:
        raise AssertionError("/stats/prometheus: %d" % st)
    out = []
    for line in body.splitlines():
        m = SERIES.match(line)
        if m and not line.startswith("#"):
            out.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def session_series(p, role=None, prefix=None):
    return [(n, l, v) for n, l, v in prometheus(p)
            if n.startswith("msm_rtsp_session_") and "msm_rtsp_session" in l
            and (role is None or l.get("msm_rtsp_role") == role)
            and (prefix is None or l.get("msm_rtsp_prefix") == prefix)]


def value(series, name, **labels):
    for n, l, v in series:
        if n == name and all(l.get(k) == x for k, x in labels.items()):
            return v
    return None


def rtcp_rr(sender, media, fraction, lost, jitter):
    """RFC 3550 RR with one report block."""
    return struct.pack("!BBHI", 0x81, 201, 7, sender) + struct.pack(
        "!IIIIII", media, (fraction << 24) | (lost & 0xffffff), 1000, jitter, 0, 0)


def rtcp_nack(sender, media, fcis):
    """RFC 4585 generic NACK (PT 205, FMT 1) with (pid, blp) FCIs."""
    body = b"".join(struct.pack("!HH", pid, blp) for pid, blp in fcis)
    return struct.pack("!BBHII", 0x81, 205, 2 + len(fcis), sender, media) + body


def rtp(pt, seq, ts, ssrc, payload=b"\x00" * 100):
    return struct.pack("!BBHII", 0x80, pt, seq & 0xffff, ts & 0xffffffff, ssrc) + payload


class FakeCamera:
    """A scripted RTSP/1.0 server: DESCRIBE answers an SDP with H.264 on PT 96, its RTX stream on
    PT 97 (apt=96) and rtcp-fb nack; SETUP takes the proxy's UDP client_port; after PLAY a thread
    sends RTP (PT 96, every <lose>th sequence number skipped) and, every 10th packet, an RTX
    packet (PT 97) to it from the server's RTP socket. NACK packets arriving on its RTCP socket
    are kept in <nacks>."""

    SSRC = 0x11223344
    RTX_SSRC = 0x55667788

    def __init__(self, lose=0):
        self.lose = lose
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.rtp, self.rtcp = bind_pair()
        self.rtcp.settimeout(0.2)
        self.dest = None
        self.playing = threading.Event()
        self.stop_ev = threading.Event()
        self.nacks = []
        self.sent = self.sent_rtx = 0
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._accept, self._media, self._rtcp_in)]
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_ev.set()
        for s in (self.lsock, self.rtp, self.rtcp):
            try:
                s.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=3)

    def _accept(self):
        self.lsock.settimeout(0.2)
        while not self.stop_ev.is_set():
            try:
                c, _ = self.lsock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(0.2)
        buf = b""
        while not self.stop_ev.is_set():
            try:
                d = c.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not d:
                break
            buf += d
            while b"\r\n\r\n" in buf:
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, url = lines[0].split()[:2]
                hd = {}
                for l in lines[1:]:
                    k, _, v = l.partition(":")
                    hd[k.strip().lower()] = v.strip()
                c.sendall(self._answer(method, url, hd))
        c.close()

    def _answer(self, method, url, hd):
        out = "RTSP/1.0 200 OK\r\nCSeq: %s\r\n" % hd.get("cseq", "0")
        body = ""
        if method == "DESCRIBE":
            body = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=fake\r\nt=0 0\r\na=control:*\r\n"
                    "m=video 0 RTP/AVP 96 97\r\nc=IN IP4 0.0.0.0\r\n"
                    "a=rtpmap:96 H264/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
                    "a=rtcp-fb:96 nack\r\na=control:trackID=0\r\n")
            out += "Content-Base: %s/\r\nContent-Type: application/sdp\r\n" % url
        elif method == "SETUP":
            m = re.search(r"client_port=(\d+)-(\d+)", hd.get("transport", ""))
            if m:
                self.dest = ("127.0.0.1", int(m.group(1)))
            out += ("Session: fake1;timeout=60\r\nTransport: RTP/AVP;unicast;client_port=%s-%s;"
                    "server_port=%d-%d\r\n" % (m.group(1), m.group(2), self.rtp.getsockname()[1],
                                               self.rtcp.getsockname()[1]) if m else "")
        elif method == "PLAY":
            out += "Session: fake1\r\nRange: npt=0.000-\r\nRTP-Info: url=%s/trackID=0;seq=1;" \
                   "rtptime=0\r\n" % url.rstrip("/")
            self.playing.set()
        if body:
            out += "Content-Length: %d\r\n" % len(body)
        return (out + "\r\n" + body).encode()

    def _media(self):
        seq = 1
        while not self.stop_ev.is_set():
            if not self.playing.wait(0.1) or not self.dest:
                continue
            if not (self.lose and seq % self.lose == 0):
                try:
                    self.rtp.sendto(rtp(96, seq, seq * 3000, self.SSRC), self.dest)
                    self.sent += 1
                    if seq % 10 == 0:
                        # RTX: the original sequence number first in the payload (RFC 4588)
                        self.rtp.sendto(rtp(97, seq // 10, seq * 3000, self.RTX_SSRC,
                                            struct.pack("!H", seq - 1) + b"\x00" * 100),
                                        self.dest)
                        self.sent_rtx += 1
                except OSError:
                    return
            seq += 1
            time.sleep(0.01)

    def _rtcp_in(self):
        while not self.stop_ev.is_set():
            try:
                d, _ = self.rtcp.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            off = 0
            while off + 4 <= len(d):
                n = 4 * (struct.unpack("!H", d[off + 2:off + 4])[0] + 1)
                if d[off + 1] == 205 and d[off] & 0x1f == 1:
                    self.nacks.append(d[off:off + n])
                off += n


def bind_pair():
    """Two UDP sockets on 127.0.0.1, RTP on an even port and RTCP on the next one."""
    for _ in range(50):
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        port = a.getsockname()[1]
        if port % 2 == 0:
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                b.bind(("127.0.0.1", port + 1))
                return a, b
            except OSError:
                b.close()
        a.close()
    raise AssertionError("no free UDP port pair")


class UdpPlayer:
    """A scripted UDP player (RawRtsp) with RTCP-mux: one socket gets media and sends RTCP."""

    def __init__(self, test, proxy, path="/cam", described=None):
        """<described>: a RawRtsp connection that already sent its DESCRIBE."""
        self.u = R.url(proxy, path)
        self.c = described or R.RawRtsp(proxy.listener_port())
        test.addCleanup(self.c.close)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        test.addCleanup(self.sock.close)
        port = self.sock.getsockname()[1]
        if not described:
            st, _, _ = self.c.request("DESCRIBE", self.u)
            assert st == 200, st
        st, hd, _ = self.c.request("SETUP", self.u + "/trackID=0" if path == "/fake" else
                                   self.u + "/stream=0", {
                                       "Transport": "RTP/AVP;unicast;client_port=%d-%d;RTCP-mux"
                                       % (port, port + 1)})
        assert st == 200, (st, hd)
        self.server_port = int(hd["transport"].split("server_port=")[1].split("-")[0])
        self.session = self.c.session
        st, _, _ = self.c.request("PLAY", self.u)
        assert st == 200, st

    def send_rtcp(self, pkt):
        self.sock.sendto(pkt, ("127.0.0.1", self.server_port))

    def recv(self, seconds):
        """RTP packets received for <seconds>: [(pt, seq, ssrc)]."""
        got = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                d, _ = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            if len(d) >= 12 and not 192 <= d[1] <= 223:
                got.append((d[1] & 0x7f, struct.unpack("!H", d[2:4])[0],
                            struct.unpack("!I", d[8:12])[0]))
        return got

    def teardown(self):
        return self.c.request("TEARDOWN", self.u)[0]


@unittest.skipIf(MISSING, "real RTSP peers missing (scripts/deps.sh test): " + MISSING)
class RtspMetricsTest(H.ProxyTestCase):
    def camera(self, **kw):
        cam = R.Camera(self.tmp, **kw)
        self.addCleanup(cam.stop)
        return cam

    def sessions(self, p, query=""):
        st, body = p.get("/rtsp/sessions" + query)
        self.assertEqual(st, 200, body)
        return json.loads(body)["sessions"]

    def test_session_series_while_playing_gone_after_teardown_and_disconnect(self):
        cam = self.camera()
        p = self.start_proxy(lambda: R.rtsp_proxy_config(cam.port, stat_prefix="met",
                                                         fanout_linger="0s"))
        a = UdpPlayer(self, p)
        self.assertTrue(a.recv(1.0), "no media through the proxy")
        # an interleaved player of the same stream (the same upstream session feeds both)
        b = R.RawRtsp(p.listener_port())
        self.addCleanup(b.close)
        u = R.url(p)
        self.assertEqual(b.request("DESCRIBE", u)[0], 200)
        self.assertEqual(b.request("SETUP", u + "/stream=0",
                                   {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})[0], 200)
        self.assertEqual(b.request("PLAY", u)[0], 200)
        b_session = b.session

        # the client's receiver report (25% lost, 42 cumulative, jitter 900/90000 s) and a
        # generic NACK asking for 3 packets (PID 100, BLP 0b101), as one compound packet
        a.send_rtcp(rtcp_rr(0xabc, 0x1, 64, 42, 900) + rtcp_nack(0xabc, 0x1, [(100, 0b101)]))
        a.recv(0.5)

        def live():
            s = session_series(p, prefix="met")
            tx = [value(s, "msm_rtsp_session_rtp_tx_packets", msm_rtsp_session=x) or 0
                  for x in (a.session, b_session)]
            return min(tx) > 20 and value(s, "msm_rtsp_session_retransmissions_requested",
                                          msm_rtsp_session=a.session) == 3
        H.wait_for(live, 10, 0.2, "per-session series with traffic")
        s = session_series(p, prefix="met")
        labels = {"msm_rtsp_prefix": "met", "msm_rtsp_session": a.session,
                  "msm_rtsp_role": "client", "msm_rtsp_stream": "cam"}
        self.assertIn(("msm_rtsp_session_rtp_tx_packets", labels),
                      [(n, l) for n, l, _ in s])
        self.assertGreater(value(s, "msm_rtsp_session_rtp_tx_bytes", msm_rtsp_session=a.session),
                           2000)
        self.assertEqual(value(s, "msm_rtsp_session_rtcp_rx_packets", msm_rtsp_session=a.session),
                         1)
        self.assertEqual(value(s, "msm_rtsp_session_reported_lost", msm_rtsp_session=a.session),
                         42)
        self.assertEqual(value(s, "msm_rtsp_session_reported_fraction_lost_permille",
                               msm_rtsp_session=a.session), 250)
        self.assertEqual(value(s, "msm_rtsp_session_reported_jitter_us",
                               msm_rtsp_session=a.session), 10000)
        self.assertGreater(value(s, "msm_rtsp_session_setup_latency_ms",
                                 msm_rtsp_session=a.session), -1)
        # the upstream session: what it receives from the camera, and the two it feeds
        up = [l["msm_rtsp_session"] for n, l, _ in s if l["msm_rtsp_role"] == "upstream"
              and n == "msm_rtsp_session_subscribers"]
        self.assertEqual(len(up), 1, s)
        self.assertEqual(value(s, "msm_rtsp_session_subscribers", msm_rtsp_session=up[0]), 2)
        self.assertGreater(value(s, "msm_rtsp_session_rtp_rx_packets", msm_rtsp_session=up[0]),
                           20)
        self.assertGreater(value(s, "msm_rtsp_session_setup_latency_ms",
                                 msm_rtsp_session=up[0]), -1)
        # retransmission requests per prefix and per stream too; GStreamer's SDP has no
        # rtcp-fb nack nor RTX: the NACK is counted, not forwarded
        st = p.stats()
        self.assertEqual(st["rtsp.met.retransmissions_requested"], 3)
        self.assertEqual(st["rtsp.met.stream.cam.retransmissions_requested"], 3)
        self.assertEqual(st["rtsp.met.rtcp_nack_forwarded"], 0)
        self.assertEqual(st["rtsp.met.sessions_tracked"], 3)
        self.assertGreater(st["rtsp.met.stream.cam.rtp_tx_packets"], 40)

        # the admin view
        ss = {x["id"]: x for x in self.sessions(p)}
        self.assertEqual(set(ss), {a.session, b_session, up[0]})
        self.assertEqual(ss[a.session]["role"], "client")
        self.assertEqual(ss[a.session]["transport"], "udp")
        self.assertEqual(ss[b_session]["transport"], "tcp")
        self.assertTrue(ss[a.session]["client_address"].startswith("127.0.0.1:"))
        self.assertEqual(ss[up[0]]["server_address"], "127.0.0.1:%d" % cam.port)
        self.assertEqual(ss[a.session]["stream"], "cam")
        self.assertEqual(ss[a.session]["stat_prefix"], "met")
        self.assertGreater(ss[a.session]["rtp_tx_packets"], 20)
        self.assertEqual(ss[a.session]["reported_lost"], 42)
        self.assertGreaterEqual(ss[a.session]["age_seconds"], 0.5)
        self.assertEqual([x["id"] for x in self.sessions(p, "?role=upstream")], [up[0]])

        # TEARDOWN: the player's series go, the others stay
        self.assertEqual(a.teardown(), 200)
        H.wait_for(lambda: not [1 for _, l, _ in session_series(p)
                                if l["msm_rtsp_session"] == a.session], 5, 0.1,
                   "series of the torn-down session removed")
        s = session_series(p, prefix="met")
        self.assertTrue(value(s, "msm_rtsp_session_rtp_tx_packets", msm_rtsp_session=b_session))
        H.wait_for(lambda: value(session_series(p), "msm_rtsp_session_subscribers",
                                 msm_rtsp_session=up[0]) == 1, 5, 0.1, "one subscriber left")
        # disconnect: the interleaved player's series go, and with the last one the upstream
        # session's (fanout_linger 0s)
        b.close()
        H.wait_for(lambda: not session_series(p), 5, 0.1, "every session series removed")
        self.assertEqual(self.sessions(p), [])
        self.assertEqual(p.stat("rtsp.met.sessions_tracked"), 0)
        self.assertNotIn(a.session, p.get("/stats")[1])

    def test_max_session_stats_caps_the_series(self):
        cam = self.camera()
        p = self.start_proxy(lambda: R.rtsp_proxy_config(cam.port, stat_prefix="cap",
                                                         max_session_stats=2))
        players = [UdpPlayer(self, p) for _ in range(3)]
        for pl in players:
            pl.recv(0.2)
        # the upstream session took one slot, the first player the other
        s = session_series(p, prefix="cap")
        ids = {l["msm_rtsp_session"] for _, l, _ in s}
        self.assertEqual(len(ids), 2, ids)
        self.assertEqual(p.stat("rtsp.cap.sessions_untracked"), 2)
        self.assertEqual(p.stat("rtsp.cap.sessions_tracked"), 2)
        ss = self.sessions(p)
        self.assertEqual(len(ss), 4)
        self.assertEqual(sorted(x["stats"] for x in ss), [False, False, True, True])
        # the aggregates still count everyone
        self.assertEqual(p.stat("rtsp.cap.subscribers_active"), 3)

    def test_clients_of_the_other_worker(self):
        # --concurrency 2: a client whose connection lands on the worker that does not own the
        # upstream session is served UDP media by the hub's worker (which also reads its RTCP)
        # and interleaved media through the handoff ring; its series are the same, and go.
        cam = self.camera()
        p = self.start_proxy(lambda: R.rtsp_proxy_config(cam.port, stat_prefix="xm",
                                                         fanout_linger="0s"),
                             args=["--concurrency", "2"])
        first = UdpPlayer(self, p)
        u = R.url(p)

        def other_worker_client():
            for _ in range(40):
                before = p.stat("rtsp.xm.fanout_cross_worker_joins")
                c = R.RawRtsp(p.listener_port())
                self.assertEqual(c.request("DESCRIBE", u)[0], 200)
                if p.stat("rtsp.xm.fanout_cross_worker_joins") > before:
                    return c
                c.close()
            self.fail("no connection landed on the second worker in 40 tries")
        a = UdpPlayer(self, p, described=other_worker_client())
        b = other_worker_client()
        self.addCleanup(b.close)
        self.assertEqual(b.request("SETUP", u + "/stream=0",
                                   {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})[0], 200)
        self.assertEqual(b.request("PLAY", u)[0], 200)
        self.assertTrue(a.recv(0.5))
        a.send_rtcp(rtcp_nack(0xabc, 0x1, [(7, 0)]))

        def live():
            s = session_series(p, prefix="xm")
            return all((value(s, "msm_rtsp_session_rtp_tx_packets", msm_rtsp_session=x) or 0) > 20
                       for x in (first.session, a.session, b.session)) \
                and value(s, "msm_rtsp_session_retransmissions_requested",
                          msm_rtsp_session=a.session) == 1
        H.wait_for(live, 10, 0.2, "series of the clients of both workers")
        self.assertEqual(len(self.sessions(p)), 4)
        ups = [l for n, l, v in session_series(p, role="upstream")
               if n == "msm_rtsp_session_subscribers" and v == 3]
        self.assertEqual(len(ups), 1)
        self.assertEqual(a.teardown(), 200)
        b.close()
        H.wait_for(lambda: {l["msm_rtsp_session"] for _, l, _ in session_series(p)} ==
                   {first.session, ups[0]["msm_rtsp_session"]}, 5, 0.1,
                   "the other worker's sessions removed")
        self.assertEqual(first.teardown(), 200)
        H.wait_for(lambda: not session_series(p) and not self.sessions(p), 5, 0.1,
                   "every session series removed")

    def test_rtx_counted_and_nacks_reissued_to_a_server_that_takes_them(self):
        cam = FakeCamera(lose=7)
        self.addCleanup(cam.stop)
        p = self.start_proxy(lambda: R.rtsp_proxy_config(cam.port, stat_prefix="rtx",
                                                         upstream_transport="UDP"))
        a = UdpPlayer(self, p, "/fake")
        got = a.recv(1.5)
        rtx = [g for g in got if g[0] == 97]
        self.assertTrue(rtx, "RTX packets not relayed: %r" % got[:5])
        # NACKs for the server's media: re-issued to it under the proxy's SSRC; a malformed
        # one (length past the end) and a truncated one are ignored, not fatal
        a.send_rtcp(rtcp_rr(0xabc, cam.SSRC, 0, 1, 0) +
                    rtcp_nack(0xabc, cam.SSRC, [(500, 0xffff), (600, 0)]))
        a.send_rtcp(b"\x81\xcd\x00\x09" + bytes(12))
        a.send_rtcp(rtcp_nack(0xabc, cam.SSRC, [(1, 1)])[:14])
        H.wait_for(lambda: cam.nacks, 5, 0.05, "a NACK at the server")
        nack = cam.nacks[0]
        sender, media, pid, blp = struct.unpack("!IIHH", nack[4:16])
        self.assertNotEqual(sender, 0xabc)  # the proxy's own SSRC
        self.assertEqual((media, pid, blp), (cam.SSRC, 500, 0xffff))
        self.assertEqual(len(nack), 20)  # both FCIs
        p.wait_stat("rtsp.rtx.rtcp_nack_forwarded", lambda v: v >= 1)
        st = p.stats()
        self.assertEqual(st["rtsp.rtx.retransmissions_requested"], 17 + 1)
        self.assertGreater(st["rtsp.rtx.retransmitted_packets"], 3)
        self.assertGreater(st["rtsp.rtx.stream.fake.retransmitted_packets"], 3)
        # RTX packets stay out of the media stream's loss: only the skipped ones count
        time.sleep(5.5)  # a receiver report interval
        s = session_series(p, prefix="rtx")
        up = [l["msm_rtsp_session"] for n, l, _ in s
              if n == "msm_rtsp_session_rtp_lost" and l["msm_rtsp_role"] == "upstream"]
        self.assertEqual(len(up), 1)
        lost = value(s, "msm_rtsp_session_rtp_lost", msm_rtsp_session=up[0])
        rx = value(s, "msm_rtsp_session_rtp_rx_packets", msm_rtsp_session=up[0])
        self.assertGreater(lost, 0)
        self.assertLess(lost, rx / 5)  # ~1/7 of the media packets, far from "everything"
        self.assertGreater(value(s, "msm_rtsp_session_retransmitted_packets",
                                 msm_rtsp_session=up[0]), 3)
        self.assertGreater(value(s, "msm_rtsp_session_retransmitted_packets",
                                 msm_rtsp_session=a.session), 3)
        self.assertEqual(value(s, "msm_rtsp_session_retransmissions_requested",
                               msm_rtsp_session=a.session), 18)
        self.assertGreaterEqual(value(s, "msm_rtsp_session_rtcp_tx_packets",
                                      msm_rtsp_session=up[0]), 2)
        self.assertEqual(self.sessions(p)[0]["transport"], "udp")


if __name__ == "__main__":
    H.main()

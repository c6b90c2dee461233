"""RTSP across the mesh: two msm-proxies in a chain with mutual TLS between them (issue 4,
point 6). client (ffprobe, UDP or TCP) -> proxy A (rtsp_proxy, cluster with Istio's
UpstreamTlsContext) --mTLS--> proxy B (DownstreamTlsContext requiring a client certificate,
rtsp_proxy, tcp_proxy to the camera) -> camera (UDP).

Shows, with the wire read by tshark on loopback:
- players decode video through both proxies, over UDP and interleaved TCP on the client leg;
- the leg between the proxies carries TLS (a ClientHello towards B) and NO cleartext UDP
  media: not one UDP datagram between A's and B's RTP port ranges, while UDP does flow on the
  outer legs (client <-> A, B <-> camera) so the capture is proven to see UDP;
- fan-out holds across the chain: two players at A, one upstream session at B, one at the camera;
- media_protection towards an upstream without TLS refuses the SETUP (503, counted) rather than
  sending media in clear.

Needs root for the capture (CI runs as root); without tshark/root the wire checks fail loudly.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import harness as H
import rtsp_peers as R
import test_tls as T

MISSING = R.missing_peers()
# Port ranges above Linux's ephemeral range (32768-60999) and the filter's default range, so no
# other test's traffic on loopback can fall in them.
A_RANGE = (61100, 61200)
B_RANGE = (61200, 61300)


def setUpModule():
    T.setUpModule()


def tearDownModule():
    T.tearDownModule()


class Capture:
    """tshark on lo, writing a pcap; fields read back after stop()."""

    def __init__(self, bpf):
        self.dir = tempfile.mkdtemp(prefix="msm-rtsp-pcap-")
        self.pcap = os.path.join(self.dir, "lo.pcap")
        self.proc = subprocess.Popen(["tshark", "-q", "-n", "-i", "lo", "-f", bpf, "-w",
                                      self.pcap], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     preexec_fn=H._die_with_parent)
        # tshark announces "Capturing on 'Loopback: lo'" once the capture is live.
        deadline = time.monotonic() + 15
        buf = b""
        while time.monotonic() < deadline and b"Capturing on" not in buf:
            if self.proc.poll() is not None:
                raise AssertionError("tshark exited: %s" % (buf + self.proc.stderr.read()))
            buf += os.read(self.proc.stderr.fileno(), 4096)
        if b"Capturing on" not in buf:
            raise AssertionError("tshark did not start capturing: %r" % buf)

    def stop(self):
        if self.proc.poll() is None:
            time.sleep(0.5)  # let the last packets reach the file
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()

    def fields(self, display_filter, *fields):
        args = ["tshark", "-n", "-r", self.pcap, "-Y", display_filter, "-T", "fields"]
        for f in fields:
            args += ["-e", f]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if r.returncode:
            raise AssertionError("tshark -r failed: %s" % r.stderr)
        return [line.split("\t") for line in r.stdout.splitlines() if line.strip()]

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, True)


def in_range(port, rng):
    return rng[0] <= port < rng[1]


@unittest.skipIf(MISSING, "real RTSP peers missing (scripts/deps.sh test): " + MISSING)
class RtspMtlsChainTest(H.ProxyTestCase):
    def chain(self, cam, protection="INTERLEAVED"):
        def cfg_b():
            # UDP towards the camera (AUTO would mirror A's interleaved leg): the camera leg is
            # where the capture must see UDP for the "none between the proxies" check to mean
            # something.
            filters = [R.rtsp_filter(stat_prefix="inb", upstream_transport="UDP",
                                     rtp_port_range={"start": B_RANGE[0], "end": B_RANGE[1]}),
                       H.tcp_proxy_filter("inbound", "camera")]
            return H.bootstrap(listeners=[{
                "name": "inbound", "address": H.sock_addr(H.free_port()),
                "filter_chains": [{"filters": filters,
                                   "transport_socket": T.tls_socket(T.server_ctx(
                                       alpn=("istio-peer-exchange", "istio")))}]}],
                clusters=[H.cluster("camera", [H.sock_addr(cam.port)], connect_timeout="1s")])
        pb = self.start_proxy(cfg_b)
        b_port = pb.listener_port("inbound")

        def cfg_a():
            cl = H.cluster("outbound|8554||camera.media.svc.cluster.local",
                           [H.sock_addr(b_port)], connect_timeout="2s")
            cl["transport_socket"] = T.tls_socket(T.client_ctx(
                sni="outbound_.8554_._.camera.media.svc.cluster.local"))
            rtsp = {"stat_prefix": "out",
                    "rtp_port_range": {"start": A_RANGE[0], "end": A_RANGE[1]}}
            if protection:
                rtsp["media_protection"] = {"mode": protection}
            filters = [R.rtsp_filter(**rtsp),
                       H.tcp_proxy_filter("outbound", cl["name"])]
            return H.bootstrap(listeners=[H.listener("main", H.sock_addr(H.free_port()),
                                                     filters)], clusters=[cl])
        pa = self.start_proxy(cfg_a)
        return pa, pb, b_port

    def test_two_proxies_mtls_no_cleartext_media_between_them(self):
        if os.geteuid() != 0 or not shutil.which("tshark"):
            self.fail("the wire check needs root and tshark (scripts/deps.sh test installs it)")
        cam = R.Camera(self.tmp)
        self.addCleanup(cam.stop)
        pa, pb, b_port = self.chain(cam)
        cap = Capture("udp or (tcp port %d)" % b_port)
        self.addCleanup(cap.close)
        players = [R.Player(R.url(pa), t, seconds=4) for t in ("udp", "tcp")]
        for pl in players:
            self.addCleanup(pl.kill)
        for pl in players:
            pl.wait()
        cap.stop()
        for pl, t in zip(players, ("udp", "tcp")):
            self.assertGreater(pl.frames(), 10, "%s player decoded nothing: %s" % (t, pl.err))

        sa, sb = pa.stats(), pb.stats()
        # Fan-out across the chain: one session A -> B, one B -> camera.
        self.assertEqual(sa["rtsp.out.upstream_sessions_total"], 1, sa)
        self.assertEqual(sb["rtsp.inb.upstream_sessions_total"], 1, sb)
        self.assertEqual(sa["rtsp.out.media_protection_refused"], 0)
        self.assertGreaterEqual(
            sa["cluster.outbound|8554||camera.media.svc.cluster.local.ssl.handshake"], 1, sa)

        # The A -> B connection is TLS with Istio's ALPN, from A's side.
        hellos = cap.fields("tcp.dstport == %d && tls.handshake.type == 1" % b_port,
                            "tls.handshake.extensions_alpn_str")
        self.assertTrue(hellos, "no TLS ClientHello towards proxy B on the wire")
        self.assertIn("istio", ",".join(h[0] for h in hellos))
        # Nothing but TLS records on that connection: no RTSP text in clear.
        clear = cap.fields("tcp.port == %d && rtsp" % b_port, "frame.number")
        self.assertEqual(clear, [], "cleartext RTSP between the proxies")

        udp = [(int(s), int(d)) for s, d in cap.fields("udp", "udp.srcport", "udp.dstport")]
        between = [(s, d) for s, d in udp
                   if (in_range(s, A_RANGE) and in_range(d, B_RANGE)) or
                   (in_range(s, B_RANGE) and in_range(d, A_RANGE))]
        self.assertEqual(between, [], "cleartext UDP between the two proxies")
        # The capture does see media on the outer legs (so "none between" means something):
        # B <-> camera uses B's range, A <-> the UDP player uses A's range.
        self.assertTrue(any(in_range(s, B_RANGE) or in_range(d, B_RANGE) for s, d in udp),
                        "no UDP seen on the camera leg: the capture is blind (%r; B stats %r)"
                        % (sorted(set(udp))[:20],
                           {k: v for k, v in sb.items() if k.startswith("rtsp.inb.") and v}))
        self.assertTrue(any(in_range(s, A_RANGE) or in_range(d, A_RANGE) for s, d in udp),
                        "no UDP seen on the client leg: the capture is blind")
        H.wait_for(lambda: cam.sessions() <= 1, timeout=5, what="camera: at most one session")

    def test_default_mode_still_interleaves_over_mtls(self):
        # No media_protection configured: a TLS upstream leg still never carries clear UDP.
        cam = R.Camera(self.tmp)
        self.addCleanup(cam.stop)
        pa, pb, _ = self.chain(cam, protection=None)
        frames, err = R.ffprobe_frames(R.url(pa), "udp", seconds=2)
        self.assertGreater(frames, 5, err)
        sb = pb.stats()
        self.assertEqual(sb["rtsp.inb.upstream_sessions_total"], 1, sb)
        # B served A over interleaved channels: B's downstream UDP counters stay at zero.
        self.assertEqual(sb.get("rtsp.inb.downstream_rtp_tx_udp_packets", 0), 0)

    def test_mtls_listener_refuses_udp_media_to_the_client(self):
        # A client (e.g. behind a plain Envoy sidecar) reaching B over mTLS and asking for UDP
        # would get media in clear past the mTLS: 461, counted; TCP interleaved is served, and
        # a client listing both gets TCP.
        cam = R.Camera(self.tmp)
        self.addCleanup(cam.stop)
        _, pb, b_port = self.chain(cam)
        rc = R.RawRtsp(b_port)
        self.addCleanup(rc.close)
        ctx = T.py_client_ctx(pair=T.PKI.client, alpn=["istio"])
        rc.sock = ctx.wrap_socket(rc.sock, server_hostname="camera")
        u = "rtsp://camera.media.svc.cluster.local:8554/cam"
        st, _, _ = rc.request("DESCRIBE", u, {"Accept": "application/sdp"})
        self.assertEqual(st, 200)
        st, _, _ = rc.request("SETUP", u + "/stream=0",
                              {"Transport": "RTP/AVP;unicast;client_port=40000-40001"})
        self.assertEqual(st, 461)
        self.assertGreaterEqual(pb.stats()["rtsp.inb.media_protection_refused"], 1)
        st, hd, _ = rc.request("SETUP", u + "/stream=0", {
            "Transport": "RTP/AVP;unicast;client_port=40000-40001,"
                         "RTP/AVP/TCP;unicast;interleaved=0-1"})
        self.assertEqual(st, 200)
        self.assertIn("RTP/AVP/TCP", hd["transport"])
        self.assertIn("interleaved=0-1", hd["transport"])

    def test_protection_without_tls_is_refused(self):
        cam = R.Camera(self.tmp)
        self.addCleanup(cam.stop)
        p = self.start_proxy(lambda: R.rtsp_proxy_config(
            cam.port, stat_prefix="plain", media_protection={"mode": "INTERLEAVED"}))
        rc = R.RawRtsp(p.listener_port())
        self.addCleanup(rc.close)
        st, _, body = rc.request("DESCRIBE", R.url(p), {"Accept": "application/sdp"})
        self.assertEqual(st, 200)
        st, _, _ = rc.request("SETUP", R.url(p) + "/stream=0",
                              {"Transport": "RTP/AVP;unicast;client_port=40000-40001"})
        self.assertEqual(st, 503)
        p.wait_stat("rtsp.plain.media_protection_refused", lambda v: v >= 1)
        self.assertEqual(cam.sessions(), 0)


if __name__ == "__main__":
    H.main()

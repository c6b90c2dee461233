"""rtsp_proxy on a captured inbound chain, as on an Istio sidecar's virtualInbound: the player
connects to the camera's own address, iptables redirects it to the proxy (uid 1337 exempt), the
original_dst listener filter restores the destination, and the RTSP filter opens its upstream
session on Istio's inbound cluster (ORIGINAL_DST, CLUSTER_PROVIDED, source 127.0.0.6): the host
is where the player connected to. Regression found by the whole-mesh e2e
(istio-integration/e2e/): the filter only knew load-balanced clusters and answered 503 ("no
healthy upstream") on every inbound RTSP session.

Needs root: the test re-executes itself inside a fresh network namespace (as test_capture.py);
without root it is skipped with a message."""
import os
import unittest

import harness as H
import rtsp_peers as R
import netns_pods as N
from netns_pods import in_test_netns as in_netns
from test_capture import CaptureProxy, sh

CAMERA_PORT = 8554
INBOUND_PORT = 15006


def inbound_config():
    cluster = {"name": "inbound|8554||", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
               "connect_timeout": "2s",
               "upstream_bind_config": {"source_address": {"address": "127.0.0.6",
                                                           "port_value": 0}}}
    listener = {
        "name": "virtualInbound", "address": H.sock_addr(INBOUND_PORT, "0.0.0.0"),
        "listener_filters": [{"name": "envoy.filters.listener.original_dst", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3."
                     "OriginalDst"}}],
        "filter_chains": [{"filter_chain_match": {"destination_port": CAMERA_PORT},
                           "filters": [R.rtsp_filter(stat_prefix="inbound"),
                                       H.tcp_proxy_filter("inbound|8554||", "inbound|8554||")]}]}
    return H.bootstrap(listeners=[listener], clusters=[cluster])


@unittest.skipUnless(in_netns(), "needs root: run as root to re-execute in a network namespace")
@unittest.skipIf(R.missing_peers(), "missing RTSP peers: " + R.missing_peers())
class RtspInboundCaptureTest(H.ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        sh("ip", "link", "set", "lo", "up")
        ipt = ["iptables", "-t", "nat"]
        # Inbound capture, reduced: a connection to the camera port from anyone but the proxy
        # (uid 1337) goes to the proxy's inbound port.
        sh(*ipt, "-A", "OUTPUT", "-p", "tcp", "--dport", str(CAMERA_PORT), "-m", "owner",
           "!", "--uid-owner", "1337", "-j", "REDIRECT", "--to-ports", str(INBOUND_PORT))

    def test_inbound_original_dst_cluster(self):
        os.chmod(self.tmp, 0o777)  # the proxy runs as uid 1337
        cam = R.Camera(self.tmp, port=CAMERA_PORT)
        self.addCleanup(cam.stop)
        p = CaptureProxy(self.tmp, inbound_config(), args=["--concurrency", "2"])
        self._proxies.append(p)
        self.addCleanup(self._stop_proxy, p)
        p.start()
        u = "rtsp://127.0.0.1:%d/cam" % CAMERA_PORT
        for transport in ("tcp", "udp"):
            frames, err = R.ffprobe_frames(u, transport, 1.0)
            self.assertGreater(frames, 5, "%s: %s\n%s" % (transport, err, p.read_stderr()[-2000:]))
        self.assertGreaterEqual(p.stat("rtsp.inbound.downstream_rq_play"), 2)
        self.assertEqual(p.stat("cluster.inbound|8554||.upstream_cx_none_healthy"), 0)
        self.assertGreaterEqual(p.stat("cluster.inbound|8554||.upstream_cx_total"), 1)


if __name__ == "__main__":
    N.main_in_netns("msmit")

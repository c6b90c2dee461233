"""The ADS gRPC connection counted in its cluster's stats, as Envoy does (Istio's pilot dashboard
sums envoy_cluster_upstream_cx_active{cluster_name="xds-grpc"}): active 1 while connected, 0
after the control plane goes away, total growing on reconnection, connect failures counted.

    /usr/bin/python3 test/integration/test_xds_stats.py --binary build/msm-proxy
"""
import os
import re
import sys
import unittest

import harness as H


def control_plane_module():
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "controlplane"))
    try:
        import controlplane
    except ImportError as e:
        raise unittest.SkipTest("test control plane unavailable: %s" % e)
    return controlplane


class XdsClusterStatsTest(H.ProxyTestCase):
    def test_xds_grpc_connection_stats(self):
        C = control_plane_module()
        types = C.Types(os.path.dirname(H.BINARY))
        cp = C.ControlPlane(types)
        self.addCleanup(cp.stop)
        addr = cp.listen("127.0.0.1:0")
        port = int(addr.rsplit(":", 1)[1])
        up = self.upstream("echo")
        cp.resources.set(types.parse_json("envoy.config.cluster.v3.Cluster",
                                          H.cluster("svc", [up.address])))
        xds = H.cluster("xds-grpc", [H.sock_addr(port)], connect_timeout="1s",
                        typed_extension_protocol_options={
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                                "@type": "type.googleapis.com/envoy.extensions.upstreams.http."
                                         "v3.HttpProtocolOptions",
                                "explicit_http_config": {"http2_protocol_options": {}}}})
        boot = H.bootstrap(clusters=[xds], dynamic_resources={
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
            "cds_config": {"ads": {}, "resource_api_version": "V3"}})
        p = self.start_proxy(boot)
        p.wait_stat("cluster_manager.cds.update_success", lambda v: v >= 1)
        p.wait_stat("cluster.xds-grpc.upstream_cx_active", lambda v: v == 1)
        total = p.stat("cluster.xds-grpc.upstream_cx_total")
        self.assertGreaterEqual(total, 1)
        self.assertEqual(p.stat("control_plane.connected_state"), 1)
        # The control plane dies: the connection is gone, and reconnecting fails.
        cp.stop()
        p.wait_stat("cluster.xds-grpc.upstream_cx_active", lambda v: v == 0)
        p.wait_stat("control_plane.connected_state", lambda v: v == 0)
        p.wait_stat("cluster.xds-grpc.upstream_cx_connect_fail", lambda v: v >= 1,
                    timeout=15)
        self.assertEqual(p.stat("cluster.xds-grpc.upstream_cx_total"), total)
        # Back: a new connection.
        cp.restart()
        p.wait_stat("cluster.xds-grpc.upstream_cx_active", lambda v: v == 1, timeout=40)
        self.assertGreater(p.stat("cluster.xds-grpc.upstream_cx_total"), total)
        # The Prometheus form the dashboard sums.
        st, body = p.get("/stats/prometheus")
        self.assertEqual(st, 200)
        line = re.search(r'^envoy_cluster_upstream_cx_active\{envoy_cluster_name="xds-grpc"\} .*$',
                         body, re.M)
        self.assertIsNotNone(line)
        self.assertEqual(line.group(0).split()[-1], "1")


if __name__ == "__main__":
    H.main()

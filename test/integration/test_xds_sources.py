"""Which config source each subscription goes to: an SDS secret named by a STATIC cluster's
transport socket with `sds_config: {ads: {}}` is requested on the ADS stream, and each EDS
cluster subscribes to its assignment through its own eds_config (ADS for one cluster, a
standalone EDS stream of another control plane for the other), as Envoy does.

    /usr/bin/python3 test/integration/test_xds_sources.py --binary build/msm-proxy
"""
import os
import socket
import sys

import harness as H

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "controlplane"))
import controlplane as C  # noqa: E402

TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
ADS_V3 = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}


def node():
    return {"id": "sidecar~10.0.0.1~test.default~default.svc.cluster.local",
            "cluster": "test.default"}


class SourcesBase(H.ProxyTestCase):
    def control_plane(self, sock_name="xds.sock"):
        cp = C.ControlPlane(self.types)
        self.addCleanup(cp.stop)
        path = os.path.join(self.tmp, sock_name)
        cp.listen("unix:" + path)
        return cp, path

    def setUp(self):
        super().setUp()
        self.types = C.Types(os.path.dirname(H.BINARY))

    def subscribed(self, cp, type_url):
        names = set()
        for r in cp.reqs(type_url):
            names.update(r.get("subscribe", []) or r.get("names", []))
        return names


class StaticClusterSdsOverAdsTest(SourcesBase):
    def test_static_cluster_secret_from_ads(self):
        cp, sock = self.control_plane()
        for s in C.make_istio_secrets(self.types, self.tmp, "client"):
            cp.resources.set(s)
        up = self.upstream("echo")
        tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": TLS, "common_tls_context": {
                "tls_certificate_sds_secret_configs": [{"name": "default",
                                                        "sds_config": ADS_V3}],
                "validation_context_sds_secret_config": {"name": "ROOTCA",
                                                         "sds_config": ADS_V3}}}}
        svc = H.cluster("svc", [H.sock_addr(up.port)], transport_socket=tls)
        # Something for CDS and LDS, so that start-up can end (LIVE, /ready 200).
        dyn_port = H.free_port()
        cp.resources.set(self.types.parse_json("envoy.config.cluster.v3.Cluster",
                                                H.cluster("dyn", [H.sock_addr(up.port)])))
        cp.resources.set(self.types.parse_json("envoy.config.listener.v3.Listener", H.listener(
            "l", H.sock_addr(dyn_port), [H.tcp_proxy_filter("dyn", "dyn")])))
        boot = H.bootstrap(clusters=[C.pipe_cluster("xds-grpc", sock), svc], node=node(),
                           dynamic_resources=C.ads_dynamic_resources("DELTA_GRPC"))
        # Ready at all means the static cluster warmed: start-up waits for static clusters
        # before CDS, and with initial_fetch_timeout 0s (Istio's) nothing else ends the wait.
        p = self.start_proxy(boot)
        self.assertTrue({"default", "ROOTCA"} <= self.subscribed(cp, C.TYPE_SDS))
        self.assertTrue(cp.acks(C.TYPE_SDS))
        self.assertEqual(cp.nacks(), [])
        self.assertEqual(p.stat("cluster_manager.warming_clusters"), 0)
        self.assertEqual(p.stat("sds.default.update_success"), 1)
        self.assertEqual(p.stat("sds.ROOTCA.update_success"), 1)
        self.assertEqual(p.stat("cluster_manager.cds.update_success"), 1)


class PerClusterEdsSourceTest(SourcesBase):
    def test_each_cluster_uses_its_eds_config(self):
        ads, ads_sock = self.control_plane("ads.sock")
        eds, eds_sock = self.control_plane("eds.sock")
        one = self.upstream("identify", name="one")
        two = self.upstream("identify", name="two")
        port_a, port_b = H.free_port(), H.free_port()
        standalone = {"api_config_source": {
            "api_type": "DELTA_GRPC", "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "eds-grpc"}}]},
            "resource_api_version": "V3"}

        def eds_cluster(name, src):
            return self.types.parse_json("envoy.config.cluster.v3.Cluster", {
                "name": name, "type": "EDS", "connect_timeout": "1s",
                "eds_cluster_config": {"eds_config": src}})

        def cla(name, port):
            return self.types.parse_json("envoy.config.endpoint.v3.ClusterLoadAssignment", {
                "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": H.sock_addr(port)}}]}]})

        def listener(name, port, cluster):
            return self.types.parse_json("envoy.config.listener.v3.Listener", {
                "name": name, "address": H.sock_addr(port),
                "filter_chains": [{"filters": [H.tcp_proxy_filter(cluster, cluster)]}]})
        ads.resources.set(eds_cluster("a", ADS_V3))
        ads.resources.set(eds_cluster("b", dict(standalone, initial_fetch_timeout="0s")))
        ads.resources.set(cla("a", one.port))
        ads.resources.set(listener("la", port_a, "a"))
        ads.resources.set(listener("lb", port_b, "b"))
        eds.resources.set(cla("b", two.port))
        boot = H.bootstrap(clusters=[C.pipe_cluster("xds-grpc", ads_sock),
                                     C.pipe_cluster("eds-grpc", eds_sock)],
                           node=node(), dynamic_resources=C.ads_dynamic_resources("DELTA_GRPC"))
        p = self.start_proxy(boot)
        ads.wait_for(lambda: ads.acks(C.TYPE_LDS))
        eds.wait_for(lambda: eds.acks(C.TYPE_EDS))
        self.assertEqual(self.subscribed(ads, C.TYPE_EDS), {"a"})
        self.assertEqual(self.subscribed(eds, C.TYPE_EDS), {"b"})
        for port, want in ((port_a, "one"), (port_b, "two")):
            s = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
            self.addCleanup(s.close)
            self.assertEqual(H.recv_line(s).decode().strip(), want)
        # b moves to ADS: its standalone subscription is dropped, ADS carries both.
        ads.resources.set(eds_cluster("b", ADS_V3))
        ads.resources.set(cla("b", two.port))
        ads.push()
        ads.wait_for(lambda: self.subscribed(ads, C.TYPE_EDS) == {"a", "b"})
        eds.wait_for(lambda: any("b" in r.get("unsubscribe", []) for r in eds.reqs(C.TYPE_EDS)))
        self.assertEqual(ads.nacks(), [])
        self.assertEqual(p.stat("cluster_manager.warming_clusters"), 0)


if __name__ == "__main__":
    H.main()

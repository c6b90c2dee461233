"""Live configuration from a control plane (the test control plane in test/controlplane):
CDS/EDS/LDS over Delta and State-of-the-World ADS applied by the real proxy — start-up through
CDS warming to LIVE, traffic on dynamic listeners and clusters, NACK with the reason while the
previous config keeps serving, endpoint updates, listener and cluster removal, drains that keep
unchanged filter chains, and a control plane restart that loses no connection."""
import json
import os
import socket
import sys
import time
import unittest

import harness as H

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "controlplane"))
import controlplane as C  # noqa: E402

TYPES = None
TP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def types():
    global TYPES
    if TYPES is None:
        TYPES = C.Types(os.path.dirname(H.BINARY))
    return TYPES


def listener(name, port, cluster, prefix=None):
    return types().parse_json("envoy.config.listener.v3.Listener", {
        "name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": TP, "stat_prefix": prefix or cluster, "cluster": cluster}}]}]})


def eds_cluster(name):
    return types().parse_json("envoy.config.cluster.v3.Cluster", {
        "name": name, "type": "EDS", "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": {"ads": {}, "initial_fetch_timeout": "0s",
                                              "resource_api_version": "V3"}}})


def cla(name, ports):
    return types().parse_json("envoy.config.endpoint.v3.ClusterLoadAssignment", {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": p}}}} for p in ports]}]})


def start_control_plane(test):
    """The test control plane on <test.tmp>/xds.sock (test.cp, test.sock), stopped at <test>'s
    cleanup."""
    test.cp = C.ControlPlane(types())
    test.addCleanup(test.cp.stop)
    test.sock = os.path.join(test.tmp, "xds.sock")
    test.cp.listen("unix:" + test.sock)


def xds_bootstrap(sock_path, api_type):
    return H.bootstrap(
        clusters=[C.pipe_cluster("xds-grpc", sock_path)],
        node={"id": "sidecar~10.0.0.1~test.default~default.svc.cluster.local",
              "cluster": "test.default"},
        dynamic_resources=C.ads_dynamic_resources(api_type))


class DynamicBase(H.ProxyTestCase):
    API = "DELTA_GRPC"

    def setUp(self):
        super().setUp()
        start_control_plane(self)
        self.up1 = self.upstream("identify", name="one")
        self.up2 = self.upstream("identify", name="two")
        self.port = H.free_port()
        R = self.cp.resources
        R.set(eds_cluster("svc"))
        R.set(cla("svc", [self.up1.port]))
        R.set(listener("l1", self.port, "svc"))
        self.p = self.start_proxy(xds_bootstrap(self.sock, self.API),
                                  args=["--drain-time-s", "1"])

    def who(self, port=None):
        s = socket.create_connection(("127.0.0.1", port or self.port), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        return s, H.recv_line(s).decode().strip()

    def push_and_wait(self, type_url, pred=lambda: True):
        before = len(self.cp.acks(type_url)) + len(self.cp.nacks(type_url))
        self.cp.push()
        self.cp.wait_for(lambda: len(self.cp.acks(type_url)) + len(self.cp.nacks(type_url))
                         > before and pred())


class DeltaTest(DynamicBase):
    def test_start_and_serve(self):
        self.assertEqual(self.p.get("/ready")[0], 200)
        _, name = self.who()
        self.assertEqual(name, "one")
        st = self.p.stats()
        self.assertEqual(st["cluster_manager.cds.update_success"], 1)
        self.assertEqual(st["listener_manager.lds.update_success"], 1)
        self.assertEqual(st["cluster.svc.update_success"], 1)
        self.assertEqual(st["control_plane.connected_state"], 1)
        self.assertEqual(self.cp.nacks(), [])
        dump = json.loads(self.p.get("/config_dump?include_eds")[1])["configs"]
        by = {c["@type"].rsplit(".", 1)[1]: c for c in dump}
        self.assertEqual(by["ClustersConfigDump"]["dynamic_active_clusters"][0]["cluster"]["name"],
                         "svc")
        self.assertEqual(by["ListenersConfigDump"]["dynamic_listeners"][0]["name"], "l1")
        self.assertTrue(by["ListenersConfigDump"]["dynamic_listeners"][0]["active_state"]
                        ["version_info"])
        self.assertEqual(by["EndpointsConfigDump"]["dynamic_endpoint_configs"][0]
                         ["endpoint_config"]["cluster_name"], "svc")

    def test_bad_listener_nacked_old_config_serves(self):
        other = H.free_port()
        bad = listener("bad", other, "svc")
        bad.filter_chains[0].filters[0].name = "envoy.filters.network.no_such_filter"
        bad.filter_chains[0].filters[0].ClearField("typed_config")
        self.cp.resources.set(bad)
        self.push_and_wait(C.TYPE_LDS, lambda: self.cp.nacks(C.TYPE_LDS))
        nack = self.cp.nacks(C.TYPE_LDS)[-1]
        self.assertIn("bad", nack["error_message"])
        self.assertIn("no_such_filter", nack["error_message"])
        self.assertEqual(self.p.stat("listener_manager.lds.update_rejected"), 1)
        _, name = self.who()
        self.assertEqual(name, "one")

    def test_endpoint_update(self):
        self.cp.resources.set(cla("svc", [self.up2.port]))
        self.push_and_wait(C.TYPE_EDS)
        H.wait_for(lambda: self.who()[1] == "two", what="new endpoint in use")

    def test_listener_removed_refuses(self):
        self.cp.resources.remove(C.TYPE_LDS, "l1")
        self.push_and_wait(C.TYPE_LDS)

        def refused():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return False
            except OSError:
                return True
        H.wait_for(refused, what="listener gone")
        self.assertEqual(self.p.stat("listener_manager.listener_removed"), 1)

    def test_modified_chain_drains_unchanged_chain_survives(self):
        keep, _ = self.who()
        # A change outside the filter chain keeps existing connections...
        l = listener("l1", self.port, "svc")
        l.per_connection_buffer_limit_bytes.value = 65536
        self.cp.resources.set(l)
        self.push_and_wait(C.TYPE_LDS)
        time.sleep(1.5)  # drain time is 1 s
        keep.sendall(b"x\n")
        self.assertEqual(H.recv_line(keep), b"x\n")
        # ...a changed filter chain drains them after --drain-time-s.
        self.cp.resources.set(listener("l1", self.port, "svc", prefix="other"))
        self.push_and_wait(C.TYPE_LDS)
        self.assertTrue(H.is_closed(keep, timeout=5))
        _, name = self.who()  # new connections use the new chain
        self.assertEqual(name, "one")
        self.assertEqual(self.p.stat("tcp.other.downstream_cx_total"), 1)

    def test_control_plane_restart_keeps_connections(self):
        s, name = self.who()
        self.cp.kill_streams()
        self.cp.stop()
        time.sleep(0.5)
        self.assertEqual(self.p.stat("control_plane.connected_state"), 0)
        s.sendall(b"still\n")
        self.assertEqual(H.recv_line(s), b"still\n")
        self.cp.restart()
        H.wait_for(lambda: self.p.stat("control_plane.connected_state") == 1, timeout=15,
                   what="reconnected")
        self.cp.resources.set(cla("svc", [self.up2.port]))
        self.cp.push()
        H.wait_for(lambda: self.who()[1] == "two", timeout=15, what="updates after reconnect")
        s.sendall(b"again\n")
        self.assertEqual(H.recv_line(s), b"again\n")


class SotwTest(DynamicBase):
    API = "GRPC"

    def test_start_and_serve(self):
        _, name = self.who()
        self.assertEqual(name, "one")
        self.assertEqual(self.p.stat("listener_manager.lds.update_success"), 1)

    def test_cluster_removed_by_absence(self):
        self.cp.resources.set(eds_cluster("extra"))
        self.cp.resources.set(cla("extra", [self.up2.port]))
        self.push_and_wait(C.TYPE_CDS, lambda: self.p.stat("cluster_manager.cluster_added") == 3)
        self.cp.resources.remove(C.TYPE_CDS, "extra")
        self.push_and_wait(C.TYPE_CDS,
                           lambda: self.p.stat("cluster_manager.cluster_removed") == 1)
        self.assertEqual(self.p.stat("cluster_manager.active_clusters"), 2)  # xds-grpc + svc


if __name__ == "__main__":
    H.main()

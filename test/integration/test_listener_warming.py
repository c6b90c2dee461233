"""Deferred listen() for warming listeners, as Envoy: a listener waiting for its RDS route
configuration has its address bound (no one else can take it, a conflict is caught at once)
but does not listen, so clients are refused instead of piling up in a backlog nobody serves;
it starts listening when it becomes active. A warming update of a serving listener on the same
address keeps the old version serving on the same socket meanwhile."""
import os
import socket
import time

import harness as H
import test_http_istio as HI

C = HI.C


class ListenerWarmingTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.cp = C.ControlPlane(HI.types())
        self.addCleanup(self.cp.stop)
        self.sock = self.tmp + "/xds.sock"
        self.cp.listen("unix:" + self.sock)
        self.a = HI.P.HttpUpstream("a")
        self.addCleanup(self.a.stop)
        self.port = H.free_port()
        R = self.cp.resources
        R.set(HI.static_cluster("outbound|80||a", self.a.port))
        R.set(HI.outbound_listener(self.port, "80"))

    def refused(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=H.IO_TIMEOUT).close()
        except ConnectionRefusedError:
            return True
        return False

    @staticmethod
    def admin_up(p):
        """The admin answers (the proxy is not ready: a listener warms)."""
        if p.admin is None and os.path.exists(p.admin_path):
            with open(p.admin_path) as f:
                p.admin = f.read().strip() or None
        if not p.admin:
            return False
        try:
            return p.get("/stats", timeout=1)[0] == 200
        except OSError:
            return False

    def test_warming_listener_bound_not_listening(self):
        p = self.start_proxy(HI.ads_bootstrap(self.sock), wait_ready=False)
        self.cp.wait_for(lambda: self.cp.reqs(C.TYPE_RDS))
        H.wait_for(lambda: self.admin_up(p), timeout=10, what="admin")
        H.wait_for(lambda: p.stat("listener_manager.total_listeners_warming") == 1, timeout=10,
                   what="listener warming")
        # Bound: the address is taken...
        taken = socket.socket()
        self.addCleanup(taken.close)
        with self.assertRaises(OSError):
            taken.bind(("127.0.0.1", self.port))
        # ...but nobody is queued behind a listener that serves no one.
        self.assertTrue(self.refused())
        time.sleep(0.2)
        self.assertTrue(self.refused())
        # The route configuration arrives: active, listening, serving.
        self.cp.resources.set(HI.route_config("80", "outbound|80||a"))
        self.cp.push()
        p._wait_ready()
        self.assertEqual(p.stat("listener_manager.total_listeners_warming"), 0)
        st, _, body = HI.get(self.port, "/x")
        self.assertEqual(st, 200)
        # An update of the listener that must warm again (new route name): the version in
        # service keeps the same socket listening meanwhile.
        upd = HI.types().parse_json("envoy.config.listener.v3.Listener", {
            "name": "0.0.0.0_%d" % self.port,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": HI.HCM, "stat_prefix": "upd",
                    "rds": {"config_source": {"ads": {}, "initial_fetch_timeout": "0s",
                                              "resource_api_version": "V3"},
                            "route_config_name": "81"},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3."
                                 "Router"}}]}}]}]})
        self.cp.resources.set(upd)
        self.cp.push()
        H.wait_for(lambda: p.stat("listener_manager.total_listeners_warming") == 1, timeout=10,
                   what="update warming")
        st, _, _ = HI.get(self.port, "/y")
        self.assertEqual(st, 200)
        self.cp.resources.set(HI.route_config("81", "outbound|80||a"))
        self.cp.push()
        H.wait_for(lambda: p.stat("listener_manager.total_listeners_warming") == 0, timeout=10,
                   what="update warm")
        H.wait_for(lambda: HI.get(self.port, "/z")[0] == 200 and
                   p.stat("http.upd.downstream_rq_total") >= 1, timeout=10,
                   what="new version serving")


if __name__ == "__main__":
    H.main()

"""EDS priorities, localities and panic mode as Envoy applies them, seen from outside: an EDS
cluster fed by the test control plane, "identify" upstreams, and counts of which endpoint
answered each connection.

Expected splits come from Envoy's documented formula (overprovisioning factor 1.4: a level at
50% health takes 70% of the load; locality weights scaled by availability; panic below 50%
healthy). Statistical bounds are 4.5 standard deviations, so a correct proxy fails them less
than once in 10^5 runs while the old behaviour (all load on the first level with a healthy host,
or locality weights ignored) lands far outside them."""
import collections
import socket

import harness as H
# The dynamic-config helpers of test_dynamic (Types, a tcp_proxy listener, the control plane, the
# ADS bootstrap) and test_lb's statistics.
from test_dynamic import listener, start_control_plane, types, xds_bootstrap
from test_lb import who_many, within


def eds_cluster(name, **extra):
    c = {"name": name, "type": "EDS", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
         "eds_cluster_config": {"eds_config": {"ads": {}, "initial_fetch_timeout": "0s",
                                               "resource_api_version": "V3"}}}
    c.update(extra)
    return types().parse_json("envoy.config.cluster.v3.Cluster", c)


def ep(port, health="HEALTHY"):
    return {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                        "port_value": port}}},
            "health_status": health}


def cla(name, localities):
    """<localities>: list of dicts {priority, weight (or None), zone, eps: [ep(...)]}."""
    eps = []
    for loc in localities:
        e = {"locality": {"region": "r", "zone": loc.get("zone", "z")},
             "priority": loc.get("priority", 0), "lb_endpoints": loc["eps"]}
        if loc.get("weight") is not None:
            e["load_balancing_weight"] = loc["weight"]
        eps.append(e)
    return types().parse_json("envoy.config.endpoint.v3.ClusterLoadAssignment", {
        "cluster_name": name, "endpoints": eps, "policy": {"overprovisioning_factor": 140}})


class PriorityTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        start_control_plane(self)
        self.port = H.free_port()

    def serve(self, cluster, assignment):
        R = self.cp.resources
        R.set(cluster)
        R.set(assignment)
        R.set(listener("l", self.port, "svc"))
        self.p = self.start_proxy(xds_bootstrap(self.sock, "DELTA_GRPC"))
        H.wait_for(lambda: self.p.get("/ready")[0] == 200, timeout=15, what="proxy ready")

    def update(self, assignment):
        self.cp.resources.set(assignment)
        before = self.p.stat("cluster.svc.membership_change")
        self.cp.push()
        H.wait_for(lambda: self.p.stat("cluster.svc.membership_change") > before, timeout=15,
                   what="EDS update applied")

    def who(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=H.IO_TIMEOUT)
        try:
            return H.recv_line(s).decode().strip()
        finally:
            s.close()

    def count(self, n, workers=8):
        out = who_many(None, n, workers, one=self.who, timeout=90)
        self.assertEqual(len(out), n)
        return collections.Counter(out)

    def ups(self, *names):
        return {n: self.upstream("identify", name=n) for n in names}

    def test_spill_to_p1_by_eds_health_then_back(self):
        u = self.ups("a0", "a1", "a2", "a3", "b0", "b1")
        # P0: 2 of 4 healthy (the other two are live but marked UNHEALTHY): 50% * 1.4 = 70%.
        p0 = [ep(u["a0"].port), ep(u["a1"].port), ep(u["a2"].port, "UNHEALTHY"),
              ep(u["a3"].port, "DRAINING")]
        p1 = [ep(u["b0"].port), ep(u["b1"].port)]
        self.serve(eds_cluster("svc"), cla("svc", [{"priority": 0, "eps": p0},
                                                   {"priority": 1, "eps": p1}]))
        n = 1000
        c = self.count(n)
        self.assertEqual(c["a2"] + c["a3"], 0, c)
        self.assertTrue(within(c["a0"] + c["a1"], n, 0.70), "P0/P1 not 70/30: %s" % dict(c))
        self.assertEqual(c["a0"] + c["a1"] + c["b0"] + c["b1"], n, c)
        st = self.p.stats()
        self.assertEqual(st["cluster.svc.membership_total"], 6)
        self.assertEqual(st["cluster.svc.membership_healthy"], 4)
        # 25% healthy in P0: 35/65 -- and P0 is not in panic, total availability is 100.
        p0[1] = ep(u["a1"].port, "TIMEOUT")
        self.update(cla("svc", [{"priority": 0, "eps": p0}, {"priority": 1, "eps": p1}]))
        c = self.count(n)
        self.assertEqual(c["a1"] + c["a2"] + c["a3"], 0, c)
        self.assertTrue(within(c["a0"], n, 0.35), "P0/P1 not 35/65: %s" % dict(c))
        self.assertEqual(self.p.stat("cluster.svc.lb_healthy_panic"), 0)
        # 3 of 4 healthy (105% > 100): everything back on P0.
        p0 = [ep(u["a0"].port), ep(u["a1"].port), ep(u["a2"].port),
              ep(u["a3"].port, "UNHEALTHY")]
        self.update(cla("svc", [{"priority": 0, "eps": p0}, {"priority": 1, "eps": p1}]))
        c = self.count(200)
        self.assertEqual(c["b0"] + c["b1"] + c["a3"], 0, c)

    def test_outlier_ejection_counts_as_unhealthy(self):
        u = self.ups("a0", "b0")
        dead = H.free_port()  # nothing listens: refused, ejected after one failure
        cluster = eds_cluster("svc", outlier_detection={
            "consecutive_5xx": 1, "interval": "1s", "base_ejection_time": "60s",
            "max_ejection_percent": 100, "enforcing_success_rate": 0})
        self.serve(cluster, cla("svc", [{"priority": 0, "eps": [ep(u["a0"].port), ep(dead)]},
                                        {"priority": 1, "eps": [ep(u["b0"].port)]}]))
        # Round robin over P0 reaches the dead host within a few connections.
        first = [self.who() for _ in range(6)]
        self.assertIn("", first)
        self.assertEqual(self.p.stat("cluster.svc.outlier_detection.ejections_active"), 1)
        # P0 is 50% healthy now: 70% to a0, 30% spills to P1, none to the ejected host.
        n = 1000
        c = self.count(n)
        self.assertEqual(c[""], 0, c)
        self.assertTrue(within(c["a0"], n, 0.70), "not 70/30 after ejection: %s" % dict(c))

    def test_locality_weights(self):
        u = self.ups("x0", "y0", "y1", "z0")
        # locality_weighted_lb_config: X weight 1, Y weight 3 -> 25/75 whatever the host counts;
        # Z has no weight -> no load (Envoy's rule).
        cluster = eds_cluster("svc", common_lb_config={"locality_weighted_lb_config": {}},
                              lb_policy="LEAST_REQUEST")
        self.serve(cluster, cla("svc", [
            {"zone": "x", "weight": 1, "eps": [ep(u["x0"].port)]},
            {"zone": "y", "weight": 3, "eps": [ep(u["y0"].port), ep(u["y1"].port)]},
            {"zone": "z", "weight": None, "eps": [ep(u["z0"].port)]}]))
        n = 1000
        c = self.count(n)
        self.assertEqual(c["z0"], 0, c)
        self.assertTrue(within(c["x0"], n, 0.25), "locality weights not 1:3: %s" % dict(c))

    def test_istio_shape_failover_priorities(self):
        # What istiod sends with outlier detection: locality_weighted_lb_config on the cluster,
        # the proxy's own locality at priority 0, other zones at 1, localities weighted by their
        # endpoint count. All of P0 unhealthy -> everything to P1, split by locality weight.
        u = self.ups("local", "r1", "r2", "r3")
        cluster = eds_cluster("svc", common_lb_config={"locality_weighted_lb_config": {}},
                              lb_policy="LEAST_REQUEST", outlier_detection={
                                  "consecutive_5xx": 5, "interval": "1s",
                                  "base_ejection_time": "30s", "enforcing_success_rate": 0})
        p1 = [{"priority": 1, "zone": "b", "weight": 1, "eps": [ep(u["r1"].port)]},
              {"priority": 1, "zone": "c", "weight": 2, "eps": [ep(u["r2"].port),
                                                                ep(u["r3"].port)]}]
        self.serve(cluster, cla("svc", [{"priority": 0, "zone": "a", "weight": 1,
                                         "eps": [ep(u["local"].port)]}] + p1))
        c = self.count(100)
        self.assertEqual(c["local"], 100, c)
        self.update(cla("svc", [{"priority": 0, "zone": "a", "weight": 1,
                                 "eps": [ep(u["local"].port, "UNHEALTHY")]}] + p1))
        n = 900
        c = self.count(n)
        self.assertEqual(c["local"], 0, c)
        self.assertTrue(within(c["r1"], n, 1 / 3), "P1 localities not 1:2: %s" % dict(c))

    def test_panic_uses_all_hosts(self):
        u = self.ups("h0", "h1", "h2")
        # 1 of 3 healthy (33% < 50%, alone in its level): panic, all three get load.
        self.serve(eds_cluster("svc"), cla("svc", [{"eps": [
            ep(u["h0"].port), ep(u["h1"].port, "UNHEALTHY"), ep(u["h2"].port, "UNHEALTHY")]}]))
        n = 300
        c = self.count(n)
        self.assertEqual(set(c), {"h0", "h1", "h2"}, c)
        self.assertEqual(self.p.stat("cluster.svc.lb_healthy_panic"), n)
        # healthy_panic_threshold 0 disables panic: only the healthy host.
        self.cp.resources.set(eds_cluster(
            "svc", common_lb_config={"healthy_panic_threshold": {"value": 0}}))
        before = self.p.stat("cluster_manager.cluster_modified")
        self.cp.push()
        H.wait_for(lambda: self.p.stat("cluster_manager.cluster_modified") > before,
                   timeout=15, what="CDS update applied")
        H.wait_for(lambda: self.who() == "h0" and self.who() == "h0" and self.who() == "h0",
                   timeout=10, what="new cluster version serving")
        c = self.count(100)
        self.assertEqual(c["h0"], 100, c)


class StaticPriorityTest(H.ProxyTestCase):
    def test_static_load_assignment_priorities(self):
        # A STATIC cluster's load_assignment takes priorities and health_status too.
        u = {n: self.upstream("identify", name=n) for n in ("a0", "a1", "b0")}
        cl = H.cluster("s", [], lb_policy="RANDOM")
        cl["load_assignment"] = {"cluster_name": "s", "endpoints": [
            {"priority": 0, "lb_endpoints": [ep(u["a0"].port), ep(u["a1"].port, "UNHEALTHY")]},
            {"priority": 1, "lb_endpoints": [ep(u["b0"].port)]}]}
        p = self.start_proxy(lambda: H.simple_proxy_config(cl, stat_prefix="s"))
        n = 600
        c = collections.Counter()
        for _ in range(n):
            s = p.connect()
            try:
                c[H.recv_line(s).decode().strip()] += 1
            finally:
                s.close()
        self.assertEqual(c["a1"], 0, c)
        self.assertTrue(within(c["a0"], n, 0.70), "static P0/P1 not 70/30: %s" % dict(c))


if __name__ == "__main__":
    H.main()

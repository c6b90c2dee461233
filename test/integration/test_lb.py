"""Load balancing seen from outside: which upstream answered each connection.

Every upstream here is an "identify" server (sends its name, then echoes). Statistical checks use
bounds of at least 4 standard deviations, so a correct proxy fails them less than once in 10^4
runs, while the wrong policy (e.g. uniform instead of 80/20) lands far outside them.
"""
import collections
import threading

import harness as H


def who(proxy, listener="main"):
    """Open one connection through <proxy>, return the name the upstream sent ("" = closed)."""
    s = proxy.connect(listener)
    try:
        return H.recv_line(s).decode().strip()
    finally:
        s.close()


def who_many(proxy, n, workers=8, listener="main", one=None, timeout=60):
    """<n> connections from <workers> threads; returns the list of names (order unspecified).
    <one>: what makes one connection and returns the name (default: who(proxy, listener))."""
    one = one or (lambda: who(proxy, listener))
    out = []
    lock = threading.Lock()
    errors = []

    def run(k):
        try:
            local = [one() for _ in range(k)]
        except OSError as e:
            errors.append(e)
            return
        with lock:
            out.extend(local)
    per = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    ts = [threading.Thread(target=run, args=(k,), daemon=True) for k in per]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    if errors:
        raise errors[0]
    return out


def within(count, n, p, sds=4.5):
    mean = n * p
    sd = (n * p * (1 - p)) ** 0.5
    return abs(count - mean) <= sds * sd


class LoadBalancingTest(H.ProxyTestCase):
    def ups(self, *names):
        return [self.upstream("identify", name=n) for n in names]

    def proxy_for(self, cluster_def, **tp):
        return self.start_proxy(lambda: H.simple_proxy_config(cluster_def, stat_prefix="p", **tp))

    def test_weighted_clusters_80_20(self):
        a, b = self.ups("a", "b")

        def cfg():
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()),
                                      [H.tcp_proxy_filter("p", weighted=[("ca", 80),
                                                                         ("cb", 20)])])],
                clusters=[H.cluster("ca", [a.address]), H.cluster("cb", [b.address])])
        p = self.start_proxy(cfg)
        n = 1000
        names = who_many(p, n)
        c = collections.Counter(names)
        self.assertEqual(c["a"] + c["b"], n, c)
        self.assertTrue(within(c["a"], n, 0.8), "80/20 split looks wrong: %s" % dict(c))
        st = p.stats()
        self.assertEqual(st["cluster.ca.upstream_cx_total"], c["a"])
        self.assertEqual(st["cluster.cb.upstream_cx_total"], c["b"])

    def test_round_robin_exact_alternation(self):
        ups = self.ups("h0", "h1", "h2")
        p = self.proxy_for(H.cluster("c", [u.address for u in ups], lb_policy="ROUND_ROBIN"))
        seq = [who(p) for _ in range(12)]
        self.assertEqual(sorted(seq[:3]), ["h0", "h1", "h2"], seq)
        for i in range(3, len(seq)):
            self.assertEqual(seq[i], seq[i % 3], "not a strict rotation: %s" % seq)

    def test_round_robin_is_default_policy(self):
        ups = self.ups("h0", "h1")
        p = self.proxy_for(H.cluster("c", [u.address for u in ups]))
        seq = [who(p) for _ in range(6)]
        self.assertEqual(len(set(seq[:2])), 2, seq)
        self.assertEqual(seq[2:], seq[:2] * 2, seq)

    def test_weighted_round_robin_1_to_3(self):
        light, heavy = self.ups("light", "heavy")
        p = self.proxy_for(H.cluster("c", [(light.address, 1), (heavy.address, 3)],
                                     lb_policy="ROUND_ROBIN"))
        seq = [who(p) for _ in range(40)]
        c = collections.Counter(seq)
        self.assertEqual(c, {"light": 10, "heavy": 30}, seq)
        # Smooth: every window of 4 consecutive picks holds exactly one "light".
        for i in range(0, 40, 4):
            self.assertEqual(seq[i:i + 4].count("light"), 1, seq)

    def test_least_request_prefers_idle_host(self):
        state = {"hold": True}
        stop = threading.Event()

        def busy_host(c, up):
            c.sendall(b"busy\n")
            if state["hold"]:
                stop.wait(60)  # long-lived connection
            else:
                while c.recv(65536):
                    pass
        busy = self.upstream(busy_host)
        self.addCleanup(stop.set)
        idle = self.upstream("identify", name="idle")
        p = self.proxy_for(H.cluster("c", [busy.address, idle.address],
                                     lb_policy="LEAST_REQUEST"))
        # Phase 1: pile up 10 long-lived connections on "busy" (the others close at once).
        held = []
        for _ in range(400):
            s = p.connect()
            self.addCleanup(s.close)
            name = H.recv_line(s).strip()
            if name == b"busy":
                held.append(s)
                if len(held) == 10:
                    break
            else:
                s.close()
        self.assertEqual(len(held), 10)
        # Phase 2: new short connections. Two random choices, least loaded wins: "busy" is only
        # chosen when both choices are "busy" (p = 1/4); a load-blind policy gives 1/2.
        state["hold"] = False
        n = 120
        c = collections.Counter(who(p) for _ in range(n))
        self.assertEqual(c["busy"] + c["idle"], n, c)
        self.assertLess(c["busy"], n * 0.25 + 4.5 * (n * 0.25 * 0.75) ** 0.5,
                        "LEAST_REQUEST did not prefer the idle host: %s" % dict(c))
        self.assertEqual(busy.accepted - 10, c["busy"])

    def test_random_roughly_uniform(self):
        ups = self.ups("r0", "r1", "r2")
        p = self.proxy_for(H.cluster("c", [u.address for u in ups], lb_policy="RANDOM"))
        n = 600
        seq = [who(p) for _ in range(n)]
        c = collections.Counter(seq)
        self.assertEqual(sum(c.values()), n)
        for name in ("r0", "r1", "r2"):
            self.assertTrue(within(c[name], n, 1 / 3), "not uniform: %s" % dict(c))
        # ...and not round robin in disguise.
        self.assertFalse(all(seq[i] == seq[i % 3] for i in range(n)), "RANDOM behaves like RR")

    def dns_cluster(self, ctype, port):
        return H.cluster("dns", [H.sock_addr(port, host="localhost")], ctype=ctype,
                         dns_lookup_family="V4_ONLY", dns_refresh_rate="1s")

    def test_strict_dns_localhost(self):
        up = self.upstream("identify", name="via-dns")
        p = self.proxy_for(self.dns_cluster("STRICT_DNS", up.port))
        self.assertEqual(who(p), "via-dns")
        st = p.stats()
        self.assertEqual(st["cluster.dns.membership_total"], 1)
        self.assertEqual(st["cluster.dns.upstream_cx_total"], 1)

    def test_logical_dns_localhost(self):
        up = self.upstream("identify", name="via-logical-dns")
        p = self.proxy_for(self.dns_cluster("LOGICAL_DNS", up.port))
        for _ in range(3):
            self.assertEqual(who(p), "via-logical-dns")
        self.assertEqual(p.stat("cluster.dns.upstream_cx_total"), 3)

    def test_cluster_without_hosts_counts_none_healthy(self):
        p = self.proxy_for(H.cluster("empty", []))
        s = p.connect()
        self.addCleanup(s.close)
        self.assertTrue(H.is_closed(s))
        self.assertEqual(p.stat("cluster.empty.membership_total"), 0)
        self.assertEqual(p.stat("cluster.empty.upstream_cx_none_healthy"), 1)



class HashAndOutlierTest(H.ProxyTestCase):
    def test_ring_hash_source_ip_sticks(self):
        ups = [self.upstream("identify", name=n) for n in ("a", "b", "c")]
        p = self.start_proxy(lambda: H.simple_proxy_config(
            H.cluster("c", [u.address for u in ups], lb_policy="RING_HASH"), stat_prefix="p",
            hash_policy=[{"source_ip": {}}]))
        names = set(who(p) for _ in range(30))
        self.assertEqual(len(names), 1)  # one client IP, one host

    def test_maglev_without_hash_policy_spreads(self):
        ups = [self.upstream("identify", name=n) for n in ("a", "b")]
        p = self.start_proxy(lambda: H.simple_proxy_config(
            H.cluster("c", [u.address for u in ups], lb_policy="MAGLEV"), stat_prefix="p"))
        names = collections.Counter(who(p) for _ in range(200))
        self.assertEqual(set(names), {"a", "b"})

    def test_outlier_ejects_refusing_host(self):
        good = self.upstream("identify", name="good")
        dead_port = H.free_port()  # nothing listens: connect refused
        p = self.start_proxy(lambda: H.simple_proxy_config(
            H.cluster("c", [good.address, H.sock_addr(dead_port)], lb_policy="ROUND_ROBIN",
                      outlier_detection={"consecutive_5xx": 3, "interval": "1s",
                                         "base_ejection_time": "30s",
                                         "max_ejection_percent": 50,
                                         "enforcing_success_rate": 0}),
            stat_prefix="p"))
        results = [who(p) for _ in range(20)]
        # Round robin alternates until the dead host failed 3 times in a row, then only "good".
        self.assertEqual(results.count(""), 3)
        self.assertTrue(all(r == "good" for r in results[6:]))
        self.assertEqual(p.stat("cluster.c.outlier_detection.ejections_active"), 1)
        self.assertEqual(p.stat("cluster.c.outlier_detection.ejections_enforced_consecutive_5xx"),
                         1)


if __name__ == "__main__":
    H.main()

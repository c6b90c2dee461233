"""Filter-chain selection on a real listener: source/destination ranges, destination port,
default_filter_chain, and what happens when nothing matches."""
import socket

import harness as H


def connect_from(port, src_ip, dst_ip="127.0.0.1"):
    s = socket.socket()
    s.settimeout(H.IO_TIMEOUT)
    s.bind((src_ip, 0))
    s.connect((dst_ip, port))
    return s


def chain(cluster, stat_prefix=None, **match):
    c = {"filters": [H.tcp_proxy_filter(stat_prefix or cluster, cluster)]}
    if match:
        c["filter_chain_match"] = match
    return c


def cidr(prefix, length):
    return {"address_prefix": prefix, "prefix_len": length}


class FilterChainMatchTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.ups = {n: self.upstream("identify", name=n) for n in ("a", "b", "d")}

    def clusters(self):
        return [H.cluster(n, [u.address]) for n, u in self.ups.items()]

    def proxy(self, chains, host="127.0.0.1", **lextra):
        def cfg():
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port(), host), chains=chains,
                                      **lextra)],
                clusters=self.clusters())
        return self.start_proxy(cfg)

    def who(self, p, src, dst="127.0.0.1"):
        s = connect_from(p.listener_port(), src, dst)
        self.addCleanup(s.close)
        return H.recv_line(s).decode().strip()

    def test_source_prefix_ranges_select_cluster(self):
        p = self.proxy([
            chain("a", source_prefix_ranges=[cidr("127.0.0.2", 32)]),
            chain("b", source_prefix_ranges=[cidr("127.0.0.0", 8)]),
        ])
        self.assertEqual(self.who(p, "127.0.0.2"), "a")  # the longest prefix wins
        self.assertEqual(self.who(p, "127.0.0.3"), "b")
        self.assertEqual(self.who(p, "127.0.0.1"), "b")
        st = p.stats()
        self.assertEqual(st["tcp.a.downstream_cx_total"], 1)
        self.assertEqual(st["tcp.b.downstream_cx_total"], 2)

    def test_destination_port_beats_wildcard(self):
        other_port = H.free_port()

        def cfg():
            lport = H.free_port()
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(lport), chains=[
                    chain("b"),  # no match criteria: wildcard
                    chain("a", destination_port=lport),
                    chain("d", destination_port=other_port),  # a port this listener never sees
                ])],
                clusters=self.clusters())
        p = self.start_proxy(cfg)
        self.assertEqual(self.who(p, "127.0.0.1"), "a")
        self.assertEqual(p.stat("tcp.d.downstream_cx_total"), 0)

    def test_destination_prefix_ranges(self):
        p = self.proxy([
            chain("a", prefix_ranges=[cidr("127.0.0.2", 32)]),
            chain("b", prefix_ranges=[cidr("127.0.0.0", 8)]),
        ], host="0.0.0.0")
        self.assertEqual(self.who(p, "127.0.0.1", dst="127.0.0.2"), "a")
        self.assertEqual(self.who(p, "127.0.0.1", dst="127.0.0.3"), "b")

    def test_default_filter_chain(self):
        p = self.proxy([chain("a", source_prefix_ranges=[cidr("127.0.0.2", 32)])],
                       default_filter_chain=chain("d", "dflt"))
        self.assertEqual(self.who(p, "127.0.0.2"), "a")
        self.assertEqual(self.who(p, "127.0.0.1"), "d")
        self.assertEqual(p.stat("tcp.dflt.downstream_cx_total"), 1)
        self.assertEqual(p.stat("listener.127.0.0.1_%d.no_filter_chain_match"
                                % p.listener_port()), 0)

    def test_no_filter_chain_match_closes_and_counts(self):
        p = self.proxy([chain("a", source_prefix_ranges=[cidr("127.0.0.2", 32)])])
        s = connect_from(p.listener_port(), "127.0.0.1")
        self.addCleanup(s.close)
        self.assertTrue(H.is_closed(s), "unmatched connection stayed open")
        lp = "listener.127.0.0.1_%d." % p.listener_port()
        p.wait_stat(lp + "no_filter_chain_match", lambda v: v == 1)
        self.assertEqual(self.ups["a"].accepted, 0)
        # The matching source still works afterwards.
        self.assertEqual(self.who(p, "127.0.0.2"), "a")
        self.assertEqual(p.stat(lp + "no_filter_chain_match"), 1)

    def test_source_type_local(self):
        p = self.proxy([chain("a", source_type="SAME_IP_OR_LOOPBACK"),
                        chain("b", source_type="EXTERNAL")])
        self.assertEqual(self.who(p, "127.0.0.1"), "a")


if __name__ == "__main__":
    H.main()

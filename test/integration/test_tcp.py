"""tcp_proxy end to end: bytes, half-close, unix sockets, failures, limits and timeouts."""
import hashlib
import os
import select
import socket
import threading
import time

import harness as H

MB = 1 << 20


def blackhole(testcase):
    """An address whose TCP handshakes never complete: a listening socket with backlog 0 that
    never accepts, its accept queue filled first (further SYNs are dropped by the kernel).
    Returns the address dict; the sockets live until the test's cleanup."""
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(0)
    testcase.addCleanup(l.close)
    addr = l.getsockname()
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        testcase.addCleanup(s.close)
        try:
            s.connect(addr)
        except BlockingIOError:
            pass
        _, w, _ = select.select([], [s], [], 0.3)
        if not w:
            return H.sock_addr(addr[1])  # this one hangs: the queue is full
    testcase.fail("could not fill the accept queue of a backlog-0 listener")


def closed_port():
    """A loopback port nothing listens on (connect gets RST)."""
    return H.free_port()


class TcpProxyTest(H.ProxyTestCase):
    def simple(self, up_address, name="c", **tp_extra):
        return self.start_proxy(
            lambda: H.simple_proxy_config(H.cluster(name, [up_address]), stat_prefix="p",
                                          **tp_extra))

    def test_echo(self):
        up = self.upstream("echo")
        p = self.simple(up.address)
        s = self.connect(p)
        for msg in (b"hello", b"x" * 70000, b"\x00\xff" * 3):
            s.sendall(msg)
            self.assertEqual(H.recv_exactly(s, len(msg)), msg)
        s.close()
        p.wait_stat("listener.127.0.0.1_%d.downstream_cx_destroy" % p.listener_port(),
                    lambda v: v == 1)
        st = p.stats()
        port = p.listener_port()
        self.assertEqual(st["listener.127.0.0.1_%d.downstream_cx_total" % port], 1)
        self.assertEqual(st["listener.127.0.0.1_%d.downstream_cx_active" % port], 0)
        self.assertEqual(st["tcp.p.downstream_cx_total"], 1)
        self.assertEqual(st["cluster.c.upstream_cx_total"], 1)
        n = 5 + 70000 + 6
        self.assertEqual(st["cluster.c.upstream_cx_tx_bytes_total"], n)
        self.assertEqual(st["cluster.c.upstream_cx_rx_bytes_total"], n)
        p.wait_stat("cluster.c.upstream_cx_active", lambda v: v == 0)

    def test_50mb_random_payload_both_ways(self):
        up = self.upstream("echo")
        p = self.simple(up.address)
        size = 50 * MB
        data = os.urandom(size)
        want = hashlib.sha256(data).hexdigest()
        s = self.connect(p, timeout=30)
        err = []

        def send():
            try:
                view = memoryview(data)
                for off in range(0, size, MB):
                    s.sendall(view[off:off + MB])
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                err.append(e)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        h = hashlib.sha256()
        got = 0
        s.settimeout(30)
        while True:
            b = s.recv(MB)
            if not b:
                break
            h.update(b)
            got += len(b)
        t.join(30)
        self.assertEqual(err, [])
        self.assertEqual(got, size)
        self.assertEqual(h.hexdigest(), want)
        st = p.stats()
        self.assertEqual(st["cluster.c.upstream_cx_tx_bytes_total"], size)
        self.assertEqual(st["cluster.c.upstream_cx_rx_bytes_total"], size)
        self.assertEqual(st["tcp.p.downstream_cx_rx_bytes_total"], size)
        self.assertEqual(st["tcp.p.downstream_cx_tx_bytes_total"], size)

    def test_download_50mb_from_upstream(self):
        size = 50 * MB
        data = os.urandom(size)

        def serve(c, up):
            c.sendall(data)
            c.close()
        up = self.upstream(serve)
        p = self.simple(up.address)
        s = self.connect(p, timeout=30)
        got = H.recv_until_eof(s, timeout=30)
        self.assertEqual(len(got), size)
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(data).digest())

    def test_100_concurrent_connections(self):
        up = self.upstream("echo")
        p = self.simple(up.address)
        lport = p.listener_port()
        socks = [self.connect(p) for _ in range(100)]
        for i, s in enumerate(socks):
            s.sendall(b"conn-%03d;" % i)
        for i, s in enumerate(socks):
            self.assertEqual(H.recv_exactly(s, 9), b"conn-%03d;" % i)
        st = p.stats()
        self.assertEqual(st["listener.127.0.0.1_%d.downstream_cx_active" % lport], 100)
        self.assertEqual(st["cluster.c.upstream_cx_active"], 100)
        self.assertEqual(up.accepted, 100)
        for s in socks:
            s.close()
        p.wait_stat("listener.127.0.0.1_%d.downstream_cx_active" % lport, lambda v: v == 0)
        p.wait_stat("cluster.c.upstream_cx_active", lambda v: v == 0)
        self.assertEqual(p.stat("listener.127.0.0.1_%d.downstream_cx_destroy" % lport), 100)

    def test_half_close_client_still_gets_response(self):
        def count_then_reply(c, up):
            n = 0
            while True:
                b = c.recv(65536)
                if not b:
                    break
                n += len(b)
            c.sendall(b"received %d bytes\n" % n)
            c.close()
        up = self.upstream(count_then_reply)
        p = self.simple(up.address)
        s = self.connect(p)
        s.sendall(b"a" * 100000)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(H.recv_until_eof(s), b"received 100000 bytes\n")

    def test_half_close_upstream_side_keeps_downstream_writable(self):
        """The upstream half-closes first; the client can still send and get answers."""
        def shut_then_echo(c, up):
            c.sendall(b"greeting\n")
            c.shutdown(socket.SHUT_WR)
            n = 0
            while True:
                b = c.recv(65536)
                if not b:
                    break
                n += len(b)
            up.got_after_shut = n
            c.close()
        up = self.upstream(shut_then_echo)
        up.got_after_shut = None
        p = self.simple(up.address)
        s = self.connect(p)
        self.assertEqual(H.recv_until_eof(s), b"greeting\n")
        s.sendall(b"z" * 5000)
        s.shutdown(socket.SHUT_WR)
        H.wait_for(lambda: up.got_after_shut is not None, what="upstream to see the client FIN")
        self.assertEqual(up.got_after_shut, 5000)

    def test_early_data_and_fin_before_upstream_connects(self):
        """Bytes and FIN sent right after connect (before the upstream is up) are delivered."""
        def count_then_reply(c, up):
            n = 0
            while True:
                b = c.recv(65536)
                if not b:
                    break
                n += len(b)
            c.sendall(b"received %d bytes\n" % n)
            c.close()
        up = self.upstream(count_then_reply)
        p = self.simple(up.address)
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", p.listener_port()), timeout=H.IO_TIMEOUT)
            s.sendall(b"early")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(H.recv_until_eof(s), b"received 5 bytes\n")
            s.close()

    def test_client_reset_releases_upstream(self):
        up = self.upstream("echo")
        p = self.simple(up.address)
        for _ in range(10):
            s = p.connect()
            s.sendall(b"x" * 100000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # RST
        p.wait_stat("cluster.c.upstream_cx_active", lambda v: v == 0)
        p.wait_stat("listener.127.0.0.1_%d.downstream_cx_active" % p.listener_port(),
                    lambda v: v == 0)
        self.assertEqual(p.stat("cluster.c.upstream_cx_total"), 10)
        # Still serving.
        s = self.connect(p)
        s.sendall(b"ok")
        self.assertEqual(H.recv_exactly(s, 2), b"ok")

    def test_upstream_reset_closes_client(self):
        def reset(c, up):
            c.recv(10)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()
        up = self.upstream(reset)
        p = self.simple(up.address)
        s = self.connect(p)
        s.sendall(b"hello")
        self.assertTrue(H.is_closed(s), "client not closed after the upstream reset")
        p.wait_stat("cluster.c.upstream_cx_active", lambda v: v == 0)
        p.wait_stat("listener.127.0.0.1_%d.downstream_cx_active" % p.listener_port(),
                    lambda v: v == 0)

    def test_client_gone_while_upstream_connecting(self):
        """Clients that send and leave (FIN) during the upstream connect: with half-close the
        proxy keeps the attempt going (the bytes would still be delivered); when the connect
        times out everything is released."""
        addr = blackhole(self)
        p = self.start_proxy(lambda: H.simple_proxy_config(
            H.cluster("c", [addr], connect_timeout="1s"), stat_prefix="p"))
        for _ in range(5):
            s = p.connect()
            s.sendall(b"never delivered")
            s.close()
        p.wait_stat("cluster.c.upstream_cx_connect_timeout", lambda v: v == 5, timeout=5)
        p.wait_stat("cluster.c.upstream_cx_active", lambda v: v == 0, timeout=3)
        p.wait_stat("listener.127.0.0.1_%d.downstream_cx_active" % p.listener_port(),
                    lambda v: v == 0, timeout=3)

    def test_max_connect_attempts_all_hosts_dead(self):
        dead = [H.sock_addr(closed_port()), H.sock_addr(closed_port())]
        p = self.start_proxy(lambda: H.simple_proxy_config(
            H.cluster("c", dead), stat_prefix="p", max_connect_attempts=3))
        s = self.connect(p)
        self.assertTrue(H.is_closed(s))
        p.wait_stat("cluster.c.upstream_cx_connect_fail", lambda v: v == 3)
        self.assertEqual(p.stat("cluster.c.upstream_cx_total"), 3)
        p.wait_stat("cluster.c.upstream_cx_active", lambda v: v == 0)

    def test_upstream_closes_first_data_then_eof(self):
        payload = os.urandom(3 * MB)

        def send_and_close(c, up):
            c.sendall(payload)
            c.close()
        up = self.upstream(send_and_close)
        p = self.simple(up.address)
        s = self.connect(p)
        got = H.recv_until_eof(s)
        self.assertEqual(len(got), len(payload))
        self.assertEqual(got, payload)
        # The upstream's FIN arrives as a half-close; the connection ends when we close too.
        s.close()
        p.wait_stat("listener.127.0.0.1_%d.downstream_cx_active" % p.listener_port(),
                    lambda v: v == 0)

    def test_pipe_listener_and_pipe_upstream(self):
        up = self.upstream("identify", name="unix-up", unix=True)
        lpath = os.path.join(self.tmp, "listen.sock")
        cfg = H.bootstrap(
            listeners=[H.listener("pipe_l", H.pipe_addr(lpath), [H.tcp_proxy_filter("pp", "u")])],
            clusters=[H.cluster("u", [up.address])])
        p = self.start_proxy(cfg)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.settimeout(H.IO_TIMEOUT)
        s.connect(lpath)
        self.assertEqual(H.recv_line(s), b"unix-up\n")
        s.sendall(b"over unix")
        self.assertEqual(H.recv_exactly(s, 9), b"over unix")
        self.assertEqual(p.stat("tcp.pp.downstream_cx_total"), 1)
        self.assertEqual(p.stat("cluster.u.upstream_cx_total"), 1)

    def test_pipe_listener_mode_and_stale_socket_file(self):
        up = self.upstream("echo")
        lpath = os.path.join(self.tmp, "stale.sock")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(lpath)  # a socket file left behind by a previous run
        stale.close()
        addr = {"pipe": {"path": lpath, "mode": 0o600}}
        cfg = H.bootstrap(
            listeners=[H.listener("pipe_l", addr, [H.tcp_proxy_filter("pp", "u")])],
            clusters=[H.cluster("u", [up.address])])
        self.start_proxy(cfg)
        self.assertEqual(os.stat(lpath).st_mode & 0o777, 0o600)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.settimeout(H.IO_TIMEOUT)
        s.connect(lpath)
        s.sendall(b"mode ok")
        self.assertEqual(H.recv_exactly(s, 7), b"mode ok")

    def test_abstract_unix_upstream(self):
        name = "msmit-%d-%s" % (os.getpid(), os.path.basename(self.tmp))
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind("\0" + name)
        srv.listen(8)
        self.addCleanup(srv.close)

        def serve():
            c, _ = srv.accept()
            c.sendall(b"abstract\n")
            c.close()
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        p = self.simple(H.pipe_addr("@" + name))
        s = self.connect(p)
        self.assertEqual(H.recv_until_eof(s), b"abstract\n")
        t.join(5)

    def test_tcp_listener_to_pipe_upstream(self):
        up = self.upstream("echo", unix=True)
        p = self.simple(up.address)
        s = self.connect(p)
        s.sendall(b"tcp->unix")
        self.assertEqual(H.recv_exactly(s, 9), b"tcp->unix")

    def test_unknown_cluster_closes_and_counts_no_route(self):
        def cfg():
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()),
                                      [H.tcp_proxy_filter("p", "nope")])],
                clusters=[H.cluster("other", [H.sock_addr(1)])])
        p = self.start_proxy(cfg)
        s = self.connect(p)
        self.assertTrue(H.is_closed(s), "connection to an unknown cluster stayed open")
        self.assertEqual(p.stat("tcp.p.downstream_cx_no_route"), 1)
        self.assertEqual(p.stat("cluster.other.upstream_cx_total"), 0)

    def test_connect_refused_closes_and_counts_connect_fail(self):
        p = self.simple(H.sock_addr(closed_port()))
        s = self.connect(p)
        self.assertTrue(H.is_closed(s), "connection stayed open though the upstream refused")
        p.wait_stat("cluster.c.upstream_cx_connect_fail", lambda v: v == 1)
        self.assertEqual(p.stat("cluster.c.upstream_cx_total"), 1)
        p.wait_stat("cluster.c.upstream_cx_active", lambda v: v == 0)

    def test_connect_refused_unix_upstream(self):
        missing = os.path.join(self.tmp, "nobody-listens.sock")
        p = self.simple(H.pipe_addr(missing))
        s = self.connect(p)
        self.assertTrue(H.is_closed(s), "connection stayed open though the upstream is missing")
        p.wait_stat("cluster.c.upstream_cx_connect_fail", lambda v: v == 1)

    def test_connect_timeout(self):
        addr = blackhole(self)
        p = self.start_proxy(lambda: H.simple_proxy_config(
            H.cluster("c", [addr], connect_timeout="0.5s"), stat_prefix="p"))
        s = self.connect(p)
        t0 = time.monotonic()
        self.assertTrue(H.is_closed(s, timeout=5), "connection not closed after connect_timeout")
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.4)
        self.assertLess(took, 4.0)
        self.assertEqual(p.stat("cluster.c.upstream_cx_connect_timeout"), 1)
        p.wait_stat("cluster.c.upstream_cx_active", lambda v: v == 0)

    def test_max_connect_attempts_retries_next_host(self):
        alive = self.upstream("identify", name="alive")
        dead = H.sock_addr(closed_port())
        p = self.start_proxy(lambda: H.simple_proxy_config(
            H.cluster("c", [dead, alive.address], lb_policy="ROUND_ROBIN"), stat_prefix="p",
            max_connect_attempts=2))
        for i in range(6):
            s = self.connect(p)
            self.assertEqual(H.recv_line(s), b"alive\n", "connection %d" % i)
            s.close()
        # Round robin alternates over every pick (retries included), so the dead host was
        # tried, and each failure cost exactly one extra upstream connection attempt.
        fails = p.stat("cluster.c.upstream_cx_connect_fail")
        self.assertGreaterEqual(fails, 1)
        self.assertEqual(p.stat("cluster.c.upstream_cx_total"), 6 + fails)
        self.assertEqual(alive.accepted, 6)

    def test_without_retries_dead_host_fails_connections(self):
        """Control for the retry test: with the default single attempt, connections fail."""
        alive = self.upstream("identify", name="alive")
        dead = H.sock_addr(closed_port())
        p = self.start_proxy(lambda: H.simple_proxy_config(
            H.cluster("c", [dead, alive.address], lb_policy="ROUND_ROBIN"), stat_prefix="p"))
        results = []
        for _ in range(4):
            s = self.connect(p)
            results.append(H.recv_line(s))
            s.close()
        self.assertEqual(results.count(b"alive\n"), 2, results)
        self.assertEqual(results.count(b""), 2, results)

    def test_circuit_breaker_max_connections(self):
        up = self.upstream("sink")  # holds each connection until the proxy sends FIN
        breakers = {"thresholds": [{"priority": "DEFAULT", "max_connections": 2}]}
        p = self.start_proxy(lambda: H.simple_proxy_config(
            H.cluster("c", [up.address], circuit_breakers=breakers), stat_prefix="p"))
        a, b = self.connect(p), self.connect(p)
        H.wait_for(lambda: up.accepted == 2, what="two upstream connections")
        c = self.connect(p)
        self.assertTrue(H.is_closed(c), "third connection was not refused by the breaker")
        self.assertEqual(p.stat("cluster.c.upstream_cx_overflow"), 1)
        self.assertEqual(p.stat("cluster.c.circuit_breakers.default.cx_open"), 1)
        self.assertEqual(up.accepted, 2)
        # The first two are still proxied (the upstream holds them open).
        for s in (a, b):
            s.settimeout(0.2)
            self.assertRaises(socket.timeout, s.recv, 1)
        # Capacity comes back when one closes.
        a.close()
        p.wait_stat("cluster.c.circuit_breakers.default.cx_open", lambda v: v == 0)
        d = self.connect(p)
        H.wait_for(lambda: up.accepted == 3, what="a new upstream connection after release")
        self.assertEqual(p.stat("cluster.c.upstream_cx_overflow"), 1)
        d.close()

    def test_idle_timeout(self):
        up = self.upstream("echo")
        p = self.simple(up.address, idle_timeout="1s")
        idle = self.connect(p)
        busy = self.connect(p)
        idle.sendall(b"x")
        self.assertEqual(H.recv_exactly(idle, 1), b"x")
        t0 = time.monotonic()
        # Keep one connection busy for longer than the timeout: it must stay open.
        while time.monotonic() - t0 < 1.8:
            busy.sendall(b"y")
            self.assertEqual(H.recv_exactly(busy, 1), b"y")
            time.sleep(0.2)
        self.assertTrue(H.is_closed(idle, timeout=3), "idle connection not closed")
        took = time.monotonic() - t0
        self.assertLess(took, 4.0)
        busy.sendall(b"still here")
        self.assertEqual(H.recv_exactly(busy, 10), b"still here")
        self.assertEqual(p.stat("tcp.p.idle_timeout"), 1)

    def test_idle_timeout_after_half_close(self):
        """A half-closed connection whose upstream never answers is still reaped when idle."""
        done = threading.Event()

        def read_then_hang(c, up):
            while c.recv(65536):
                pass
            done.wait(30)  # FIN seen; keep our side open, silent
        up = self.upstream(read_then_hang)
        self.addCleanup(done.set)  # runs before up.stop (cleanups are LIFO)
        p = self.simple(up.address, idle_timeout="1s")
        s = self.connect(p)
        s.sendall(b"request")
        s.shutdown(socket.SHUT_WR)
        self.assertTrue(H.is_closed(s, timeout=4), "half-closed idle connection never reaped")
        self.assertEqual(p.stat("tcp.p.idle_timeout"), 1)
        p.wait_stat("cluster.c.upstream_cx_active", lambda v: v == 0)

    def test_max_downstream_connection_duration(self):
        up = self.upstream("echo")
        p = self.simple(up.address, max_downstream_connection_duration="1s")
        s = self.connect(p)
        t0 = time.monotonic()
        closed = False
        # Activity does not extend the limit.
        while time.monotonic() - t0 < 4:
            try:
                s.sendall(b"k")
                if H.recv_exactly(s, 1, timeout=1) != b"k":
                    closed = True
                    break
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        took = time.monotonic() - t0
        self.assertTrue(closed, "connection outlived max_downstream_connection_duration")
        self.assertGreaterEqual(took, 0.8)
        self.assertLess(took, 3.0)
        p.wait_stat("tcp.p.max_downstream_connection_duration", lambda v: v == 1)
        self.assertEqual(p.stat("tcp.p.idle_timeout"), 0)


if __name__ == "__main__":
    H.main()

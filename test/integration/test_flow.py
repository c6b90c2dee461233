"""Back-pressure: a slow reader on either side must stop the proxy reading from the other side,
so memory stays bounded whatever the volume."""
import os
import socket
import threading
import time
import zlib

import harness as H

MB = 1 << 20
RSS_LIMIT_KB = 200 * 1024


class RssMonitor:
    """Samples the proxy's VmRSS every 50 ms in a thread; .peak_kb is the largest sample."""

    def __init__(self, pid):
        self.pid = pid
        self.peak_kb = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                self.peak_kb = max(self.peak_kb, H.rss_kb(self.pid))
            except OSError:
                return
            self.stop_ev.wait(0.05)

    def stop(self):
        self.stop_ev.set()
        self.t.join(5)
        return self.peak_kb


class FlowControlTest(H.ProxyTestCase):
    def test_slow_reader_500mb_download_bounded_memory(self):
        total = 500 * MB
        block = os.urandom(MB)
        progress = {"sent": 0, "err": None}

        def blast(c, up):
            try:
                for _ in range(total // MB):
                    c.sendall(block)
                    progress["sent"] += MB
                c.shutdown(socket.SHUT_WR)
                while c.recv(65536):
                    pass
            except OSError as e:
                progress["err"] = e
        up = self.upstream(blast)
        p = self.start_proxy(lambda: H.simple_proxy_config(H.cluster("c", [up.address]),
                                                           stat_prefix="p"))
        mon = RssMonitor(p.proc.pid)
        self.addCleanup(mon.stop)
        s = self.connect(p, timeout=60)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        crc = 0
        got = 0
        first = H.recv_exactly(s, MB)
        crc = zlib.crc32(first, crc)
        got += len(first)
        # Stop reading: the upstream must get stuck after a bounded amount.
        time.sleep(1.5)
        stuck_at = progress["sent"]
        H.note("download: upstream stuck after %d MB", stuck_at // MB)
        self.assertLess(stuck_at, 64 * MB,
                        "upstream kept sending to a client that does not read")
        p.wait_stat("cluster.c.upstream_flow_control_paused_reading_total", lambda v: v >= 1)
        # Now read slowly (at most ~400 MB/s, below what the upstream can push).
        s.settimeout(30)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            b = s.recv(4 * MB)
            if not b:
                break
            crc = zlib.crc32(b, crc)
            got += len(b)
            if got % (4 * MB) < len(b):
                time.sleep(0.01)
        peak = mon.stop()
        H.note("peak RSS %d kB", peak)
        self.assertIsNone(progress["err"])
        self.assertEqual(got, total)
        want = 0
        for _ in range(total // MB):
            want = zlib.crc32(block, want)
        self.assertEqual(crc, want, "payload corrupted")
        self.assertLess(peak, RSS_LIMIT_KB, "proxy RSS peaked at %d kB" % peak)
        self.assertLess(H.rss_kb(p.proc.pid, "VmHWM"), RSS_LIMIT_KB)
        st = p.stats()
        self.assertGreaterEqual(st["cluster.c.upstream_flow_control_paused_reading_total"], 1)
        self.assertGreaterEqual(st["cluster.c.upstream_flow_control_resumed_reading_total"], 1)
        self.assertEqual(st["cluster.c.upstream_cx_rx_bytes_total"], total)

    def test_slow_upstream_upload_bounded_memory(self):
        total = 200 * MB
        release = threading.Event()
        received = {"n": 0}

        def slow_sink(c, up):
            release.wait(30)
            while True:
                b = c.recv(MB)
                if not b:
                    break
                received["n"] += len(b)
            c.close()
        up = self.upstream(slow_sink)
        self.addCleanup(release.set)
        p = self.start_proxy(lambda: H.simple_proxy_config(H.cluster("c", [up.address]),
                                                           stat_prefix="p"))
        mon = RssMonitor(p.proc.pid)
        self.addCleanup(mon.stop)
        s = self.connect(p, timeout=60)
        sent = {"n": 0, "err": None}
        chunk = os.urandom(MB)

        def pump():
            try:
                while sent["n"] < total:
                    s.sendall(chunk)
                    sent["n"] += MB
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                sent["err"] = e
        t = threading.Thread(target=pump, daemon=True)
        t.start()
        time.sleep(1.5)
        stuck_at = sent["n"]
        H.note("upload: client stuck after %d MB", stuck_at // MB)
        self.assertLess(stuck_at, 64 * MB, "client kept sending to an upstream that does not read")
        p.wait_stat("tcp.p.downstream_flow_control_paused_reading_total", lambda v: v >= 1)
        release.set()
        t.join(60)
        self.assertFalse(t.is_alive(), "upload did not finish")
        self.assertIsNone(sent["err"])
        H.wait_for(lambda: received["n"] == total, timeout=30, what="upstream to get everything")
        peak = mon.stop()
        H.note("peak RSS %d kB", peak)
        self.assertLess(peak, RSS_LIMIT_KB, "proxy RSS peaked at %d kB" % peak)
        st = p.stats()
        self.assertGreaterEqual(st["tcp.p.downstream_flow_control_resumed_reading_total"], 1)
        self.assertEqual(st["cluster.c.upstream_cx_tx_bytes_total"], total)

    def test_per_connection_buffer_limit_small(self):
        """A listener with a 16 KiB buffer limit still moves 20 MB intact, pausing often."""
        total = 20 * MB
        data = os.urandom(total)

        def send_all(c, up):
            c.sendall(data)
            c.close()
        up = self.upstream(send_all)

        def cfg():
            b = H.simple_proxy_config(H.cluster("c", [up.address]), stat_prefix="p")
            b["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] = 16384
            return b
        p = self.start_proxy(cfg)
        s = self.connect(p, timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        time.sleep(0.5)
        got = H.recv_until_eof(s, timeout=30)
        self.assertEqual(len(got), total)
        self.assertEqual(zlib.crc32(got), zlib.crc32(data))
        self.assertGreaterEqual(p.stat("cluster.c.upstream_flow_control_paused_reading_total"), 1)


if __name__ == "__main__":
    H.main()

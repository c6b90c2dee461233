"""Process lifecycle: SIGTERM drain, SIGINT, --concurrency, logging format and levels."""
import json
import os
import re
import signal
import socket
import time

import harness as H

ISTIO_TEXT_FORMAT = "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t"
LEVELS = "(trace|debug|info|warning|error|critical)"


def refused_or_closed(port, timeout=3):
    """True if a new connection to <port> is refused, reset or closed without being served."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    except socket.timeout:
        return False
    try:
        s.sendall(b"ping")
        return H.is_closed(s, timeout)
    except OSError:
        return True
    finally:
        s.close()


class LifecycleTest(H.ProxyTestCase):
    def echo_proxy(self, *args, **kw):
        up = self.upstream("echo")
        return self.start_proxy(lambda: H.simple_proxy_config(H.cluster("c", [up.address]),
                                                               stat_prefix="p"),
                                args=list(args), **kw)

    def ping(self, s, msg=b"ping"):
        s.sendall(msg)
        self.assertEqual(H.recv_exactly(s, len(msg)), msg)

    def test_sigterm_drains_active_connection_then_exits_0(self):
        p = self.echo_proxy("--drain-time-s", "2")
        p.expect_exit = 0
        active = self.connect(p)
        self.ping(active)
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        # The active connection keeps working during the drain time...
        time.sleep(0.3)
        self.ping(active, b"during drain")
        st, body = p.get("/ready")
        self.assertEqual(st, 503, "/ready must fail while draining")
        self.assertIn("DRAINING", body)
        # ...and the process exits once the drain time is over, closing it.
        rc = p.wait_exit(10)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0)
        self.assertGreaterEqual(took, 1.8, "exited before the drain time")
        self.assertLess(took, 5.0)
        self.assertTrue(H.is_closed(active, 2))

    def test_sigterm_refuses_new_connections(self):
        p = self.echo_proxy("--drain-time-s", "3")
        p.expect_exit = 0
        active = self.connect(p)
        self.ping(active)
        p.proc.send_signal(signal.SIGTERM)
        H.wait_for(lambda: p.get("/ready")[0] == 503, what="DRAINING")
        self.assertTrue(refused_or_closed(p.listener_port()),
                        "a new connection during drain was accepted and left hanging")
        self.ping(active, b"still served")
        active.close()
        self.assertEqual(p.wait_exit(10), 0)

    def test_sigterm_exits_early_when_connections_finish(self):
        p = self.echo_proxy("--drain-time-s", "30")
        p.expect_exit = 0
        active = self.connect(p)
        self.ping(active)
        p.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        self.ping(active)
        t0 = time.monotonic()
        active.close()
        self.assertEqual(p.wait_exit(10), 0)
        self.assertLess(time.monotonic() - t0, 3.0, "did not exit once the last connection ended")

    def test_sigterm_with_two_workers_waits_for_all(self):
        p = self.echo_proxy("--drain-time-s", "30", "--concurrency", "2")
        p.expect_exit = 0
        socks = [self.connect(p) for _ in range(8)]
        for s in socks:
            self.ping(s)
        p.proc.send_signal(signal.SIGTERM)
        H.wait_for(lambda: p.get("/ready")[0] == 503, what="DRAINING")
        for s in socks[:-1]:
            s.close()
        time.sleep(0.5)
        self.assertIsNone(p.proc.poll(), "exited while a connection was still open")
        self.ping(socks[-1], b"last one")
        socks[-1].close()
        self.assertEqual(p.wait_exit(10), 0)

    def test_sigterm_without_connections_exits_promptly(self):
        p = self.echo_proxy("--drain-time-s", "30")
        p.expect_exit = 0
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(10), 0)
        self.assertLess(time.monotonic() - t0, 3.0)

    def test_second_sigterm_exits_now(self):
        p = self.echo_proxy("--drain-time-s", "30")
        p.expect_exit = 0
        active = self.connect(p)
        self.ping(active)
        p.proc.send_signal(signal.SIGTERM)
        H.wait_for(lambda: p.get("/ready")[0] == 503, what="DRAINING")
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(10), 0)
        self.assertLess(time.monotonic() - t0, 3.0)

    def test_drain_does_not_spin_on_shut_down_listen_socket(self):
        # Regression: after the drain shut the listening socket down, workers kept getting
        # EINVAL from accept() on the still-readable socket and logged it in a busy loop.
        p = self.echo_proxy("--drain-time-s", "2", "--concurrency", "2")
        p.expect_exit = 0
        active = self.connect(p)
        self.ping(active)
        p.proc.send_signal(signal.SIGTERM)
        H.wait_for(lambda: p.get("/ready")[0] == 503, what="DRAINING")
        time.sleep(0.5)
        self.ping(active, b"still served")
        self.assertEqual(p.wait_exit(10), 0)
        self.assertNotIn("accept: Invalid argument", p.read_stderr())

    def test_signals_during_exit_keep_exit_status_0(self):
        # Regression: a SIGINT landing while the process tore down after a finished drain
        # killed it by signal (libev had restored the default action).
        for _ in range(20):
            p = self.echo_proxy("--drain-time-s", "30")
            p.expect_exit = 0
            p.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while p.proc.poll() is None and time.monotonic() < deadline:
                try:
                    p.proc.send_signal(signal.SIGINT)
                except ProcessLookupError:
                    break
                time.sleep(0.0002)
            self.assertEqual(p.wait_exit(10), 0)

    def test_sigint_exits_promptly_with_active_connection(self):
        p = self.echo_proxy("--drain-time-s", "30")
        p.expect_exit = 0
        active = self.connect(p)
        self.ping(active)
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGINT)
        self.assertEqual(p.wait_exit(10), 0)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertTrue(H.is_closed(active, 2))

    def test_concurrency_2(self):
        p = self.echo_proxy("--concurrency", "2")
        self.assertEqual(p.stat("server.concurrency"), 2)
        tasks = os.listdir("/proc/%d/task" % p.proc.pid)
        names = []
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/comm" % (p.proc.pid, t)) as f:
                    names.append(f.read().strip())
            except OSError:
                pass
        workers = [n for n in names if "worker" in n]
        self.assertEqual(len(workers), 2, names)
        socks = [self.connect(p) for _ in range(40)]
        for i, s in enumerate(socks):
            s.sendall(b"%04d" % i)
        for i, s in enumerate(socks):
            self.assertEqual(H.recv_exactly(s, 4), b"%04d" % i)
        lp = "listener.127.0.0.1_%d." % p.listener_port()
        self.assertEqual(p.stat(lp + "downstream_cx_active"), 40)
        for s in socks:
            s.close()
        p.wait_stat(lp + "downstream_cx_active", lambda v: v == 0)
        p.wait_stat("cluster.c.upstream_cx_active", lambda v: v == 0)

    def test_concurrency_0_runs_one_worker(self):
        p = self.echo_proxy("--concurrency", "0")
        self.assertEqual(p.stat("server.concurrency"), 1)
        self.ping(self.connect(p))


class LoggingTest(H.ProxyTestCase):
    def proxy_with_format(self, fmt, *args):
        up = self.upstream("echo")

        def cfg():
            b = H.simple_proxy_config(H.cluster("c", [up.address]))
            b["application_log_config"] = {"log_format": {"text_format": fmt}}
            return b
        return self.start_proxy(cfg, args=list(args))

    def log_lines(self, p):
        """Stop <p> and return its log lines (the harness checks the exit)."""
        problems = p.stop()
        self.assertEqual(problems, [])
        lines = [l for l in p.stderr_text.splitlines() if l.strip()]
        self.assertGreater(len(lines), 0, "no log output at all")
        return lines

    def test_istio_text_format(self):
        p = self.proxy_with_format(ISTIO_TEXT_FORMAT)
        pat = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\t%s\tenvoy [a-z_0-9]+ "
                         r"[^\t:]+:\d+\t.*\tthread=\d+$" % LEVELS)
        for line in self.log_lines(p):
            self.assertRegex(line, pat)

    def test_custom_text_format(self):
        p = self.proxy_with_format("MSM|%l|%n|%v")
        lines = self.log_lines(p)
        for line in lines:
            self.assertRegex(line, r"^MSM\|%s\|[a-z_0-9]+\|" % LEVELS)
        self.assertTrue(any("|main|" in l for l in lines), lines)

    def test_log_level_warning_hides_info(self):
        p = self.proxy_with_format("MSM|%l|%n|%v", "-l", "warning")
        p.proc.send_signal(signal.SIGINT)  # logs "caught SIGINT" at warning
        p.expect_exit = 0
        self.assertEqual(p.wait_exit(), 0)
        lines = self.log_lines(p)
        self.assertFalse([l for l in lines if l.startswith("MSM|info|")], lines)
        self.assertTrue([l for l in lines if l.startswith("MSM|warning|")], lines)

    def test_log_format_flag_conflicts_with_bootstrap_format(self):
        up = self.upstream("echo")
        cfg = H.simple_proxy_config(H.cluster("c", [up.address]))
        cfg["application_log_config"] = {"log_format": {"text_format": "%v"}}
        path = os.path.join(self.tmp, "conflict.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        r = self.run_binary(["--mode", "validate", "-c", path, "--log-format", "%v"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("log_format", r.stderr)


if __name__ == "__main__":
    H.main()

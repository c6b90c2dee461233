"""Every bootstrap in examples/ is booted (style.md: examples never rot). Their fixed ports are
rewritten to free ones first, so this runs in parallel with everything else."""
import glob
import os
import re
import socket

import harness as H

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples")
PORT_RE = re.compile(r'("?port_value"?\s*:\s*)(\d+)')


def example_files():
    return sorted(f for ext in ("yaml", "yml", "json")
                  for f in glob.glob(os.path.join(EXAMPLES, "**", "*." + ext), recursive=True))


class ExamplesTest(H.ProxyTestCase):
    def rewrite(self, path):
        """Copy <path> into the temp dir with every non-zero port_value replaced by a free port;
        returns (new path, {old port: new port})."""
        with open(path) as f:
            text = f.read()
        ports = {}
        for m in PORT_RE.finditer(text):
            old = int(m.group(2))
            if old and old not in ports:
                ports[old] = H.free_port()
        text = PORT_RE.sub(lambda m: m.group(1) + str(ports.get(int(m.group(2)),
                                                                int(m.group(2)))), text)
        out = os.path.join(self.tmp, os.path.basename(path))
        with open(out, "w") as f:
            f.write(text)
        return out, ports

    def boot(self, path):
        for _ in range(3):
            new, ports = self.rewrite(path)
            p = H.Proxy(self.tmp, None, args=["-c", new])
            self._proxies.append(p)
            self.addCleanup(self._stop_proxy, p)
            try:
                return p.start(), ports
            except H.PortRace:
                p.stop()
        self.fail("could not boot %s: ports kept being taken" % path)

    def test_every_example_validates_and_boots(self):
        files = example_files()
        if not files:
            self.skipTest("examples/ holds no bootstrap yet")
        for f in files:
            with self.subTest(example=os.path.relpath(f, EXAMPLES)):
                r = self.run_binary(["--mode", "validate", "-c", f])
                self.assertEqual(r.returncode, 0, r.stderr[-3000:])
                p, _ = self.boot(f)
                self.assertEqual(p.get("/ready")[0], 200)

    def test_tcp_proxy_example_serves_round_robin(self):
        path = os.path.join(EXAMPLES, "tcp-proxy.yaml")
        if not os.path.exists(path):
            self.skipTest("examples/tcp-proxy.yaml is gone")
        p, ports = self.boot(path)
        for name, port in (("first", 10001), ("second", 10002)):
            u = H.Upstream("identify", name, port=ports[port])
            self.addCleanup(u.stop)
        seq = []
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", ports[10000]), timeout=H.IO_TIMEOUT)
            self.addCleanup(s.close)
            seq.append(H.recv_line(s).strip())
            s.sendall(b"echo me")
            self.assertEqual(H.recv_exactly(s, 7), b"echo me")
            s.close()
        self.assertEqual(sorted(seq[:2]), [b"first", b"second"], seq)
        self.assertEqual(seq[2:], seq[:2], seq)
        self.assertEqual(p.stat("tcp.echo.downstream_cx_total"), 4)


if __name__ == "__main__":
    H.main()

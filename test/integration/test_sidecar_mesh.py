"""Two sidecars on one machine (issue 5 point 7): pods are network namespaces on a bridge, each
with istio-iptables' rules, msm-proxy as uid 1337 in each, configured by the test control plane
in the shape istiod renders (outbound <VIP>_<port> listeners behind virtualOutbound, EDS
clusters `outbound|PORT|SUBSET|HOST` with auto-mTLS transport_socket_matches, SDS `default` /
`ROOTCA`, virtualInbound with STRICT mTLS chains, metadata exchange, RBAC, ORIGINAL_DST inbound
clusters sourced from 127.0.0.6), and a TCP echo application in each server pod.

    client pod 10.88.0.2 --(veth, bridge)--> echo-v1 pod 10.88.0.3, echo-v2 pod 10.88.0.4

Shown, each by an assertion that can fail:
- the application bytes cross both sidecars, and the wire between the pods (tshark on the
  bridge port) carries a TLS handshake offering ALPN istio-peer-exchange,istio with Istio's SNI,
  TLS application data, and none of the plaintext;
- a cluster that expects another service account refuses the server (ssl.fail_verify_san);
- a VirtualService's 80/20 TCP weights over 1,000 connections, within 4 binomial sigmas;
- an endpoint ejected by outlier detection (consecutive connect failures) gets no new
  connections once it is reachable again;
- an AuthorizationPolicy DENY (port 9100 from the client's principal) blocks and counts.

Needs root (ip netns, iptables, veth, bridge) and tshark; skipped otherwise.

    /usr/bin/python3 test/integration/test_sidecar_mesh.py --binary build/msm-proxy
"""
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness as H
import netns_pods as N
import test_tls as T

NS = "default"
ECHO = "echo.default.svc.cluster.local"
ECHO_HA = "echo-ha.default.svc.cluster.local"
LEGACY = "legacy.default.svc.cluster.local"
CLIENT_SA = N.spiffe(NS, "client")
ECHO_SA = N.spiffe(NS, "echo")
IP = {"client": "10.88.0.2", "echo-v1": "10.88.0.3", "echo-v2": "10.88.0.4"}
VIP = {"echo": "10.96.0.10", "echo-ha": "10.96.0.11", "legacy": "10.96.0.12"}
APP_PORT, ADMIN_APP_PORT = 9000, 9100
WEIGHTS = (80, 20)


def workload(pod, version):
    return "%s;%s;echo;%s;Kubernetes" % (pod, NS, version)


class SidecarMesh:
    """The pods, their control planes, sidecars and echo applications. Also used by
    bench/mesh (greet=False: a pure echo application)."""

    def __init__(self, tag, workdir, C, types, pki, greet=True, concurrency=2, log_level=None):
        self.tmp = workdir
        os.chmod(workdir, 0o777)  # the proxies run as uid 1337
        self.C, self.types, self.pki = C, types, pki
        self.proxies, self.cps, self.apps = {}, {}, {}
        self.concurrency = concurrency
        self.log_level = log_level
        self.mesh = N.Mesh(tag)
        try:
            self.pods = {n: self.mesh.pod(n, ip) for n, ip in IP.items()}
            for n in ("echo-v1", "echo-v2"):
                self.apps[n] = N.IdServer(self.pods[n], APP_PORT, n, greet=greet)
                self.apps[n + ":admin"] = N.IdServer(self.pods[n], ADMIN_APP_PORT, n + "-admin",
                                                     greet=greet)
            self._client()
            for n, v in (("echo-v1", "v1"), ("echo-v2", "v2")):
                self._server(n, v)
            for n in self.proxies:
                self.proxies[n]._wait_ready()
        except BaseException:
            self.close()
            raise

    def _cp(self, pod):
        cp = N.PodControlPlane(self.C, self.types, os.path.join(self.tmp, pod + ".xds"))
        self.cps[pod] = cp
        return cp

    def _start(self, pod, node):
        args = ["--concurrency", str(self.concurrency)]
        if self.log_level:
            args += ["-l", self.log_level]
        p = N.PodProxy(self.pods[pod], self.tmp, N.sidecar_bootstrap(node, self.cps[pod].sock),
                       args=args, wait_ready=False)
        self.proxies[pod] = p
        p.start()

    def _client(self):
        cp = self._cp("client")
        sub = {s: N.cluster_name(APP_PORT, ECHO, s) for s in ("v1", "v2")}
        ha = N.cluster_name(APP_PORT, ECHO_HA)
        legacy = N.cluster_name(APP_PORT, LEGACY)
        admin = N.cluster_name(ADMIN_APP_PORT, ECHO)
        for l in (N.virtual_outbound(),
                  # VirtualService echo: tcp [{v1, 80}, {v2, 20}]
                  N.service_listener(VIP["echo"], APP_PORT, stat_prefix="echo.default",
                                     weighted=[(sub["v1"], WEIGHTS[0]), (sub["v2"], WEIGHTS[1])]),
                  N.service_listener(VIP["echo"], ADMIN_APP_PORT, cluster=admin),
                  N.service_listener(VIP["echo-ha"], APP_PORT, cluster=ha),
                  N.service_listener(VIP["legacy"], APP_PORT, cluster=legacy)):
            cp.set("lds", l)
        for s in ("v1", "v2"):
            cp.set("cds", N.outbound_cluster(APP_PORT, ECHO, [ECHO_SA], subset=s))
            pod = "echo-" + s
            cp.set("eds", N.load_assignment(sub[s], [(IP[pod], APP_PORT, workload(pod, s))]))
        cp.set("cds", N.outbound_cluster(ADMIN_APP_PORT, ECHO, [ECHO_SA]))
        cp.set("eds", N.load_assignment(admin, [(IP["echo-v1"], ADMIN_APP_PORT,
                                                 workload("echo-v1", "v1"))]))
        # DestinationRule echo-ha: ROUND_ROBIN, outlierDetection {consecutive5xxErrors: 3,
        # interval: 1s, baseEjectionTime: 120s, maxEjectionPercent: 50}
        cp.set("cds", N.outbound_cluster(
            APP_PORT, ECHO_HA, [ECHO_SA], lb_policy="ROUND_ROBIN",
            outlier_detection={"consecutive_5xx": 3, "enforcing_consecutive_5xx": 100,
                               "enforcing_consecutive_gateway_failure": 0,
                               "interval": "1s", "base_ejection_time": "120s",
                               "max_ejection_percent": 50, "enforcing_success_rate": 0}))
        cp.set("eds", N.load_assignment(ha, [(IP["echo-v1"], APP_PORT, workload("echo-v1", "v1")),
                                             (IP["echo-v2"], APP_PORT, workload("echo-v2", "v2"))]))
        # A service whose endpoints are expected to run as sa/legacy, but echo-v1 answers.
        cp.set("cds", N.outbound_cluster(APP_PORT, LEGACY, [N.spiffe(NS, "legacy")]))
        cp.set("eds", N.load_assignment(legacy, [(IP["echo-v1"], APP_PORT,
                                                  workload("echo-v1", "v1"))]))
        for c in N.passthrough_clusters():
            cp.set("cds", c)
        cp.set_secrets(N.secrets(self.types, *self.pki.client_pem))
        self._start("client", N.node("client-7d4b9-x2x4q", NS, IP["client"], "client", "client",
                                     "v1", "client"))

    def _server(self, pod, version):
        cp = self._cp(pod)
        deny = N.deny_port_from("deny-admin", ADMIN_APP_PORT, CLIENT_SA)
        for l in (N.virtual_outbound(), N.virtual_inbound([APP_PORT, ADMIN_APP_PORT], deny)):
            cp.set("lds", l)
        for p in (APP_PORT, ADMIN_APP_PORT):
            cp.set("cds", N.inbound_cluster(p, ECHO))
        for c in N.passthrough_clusters():
            cp.set("cds", c)
        cp.set_secrets(N.secrets(self.types, *self.pki.echo_pem))
        self._start(pod, N.node("%s-5f6d8-%s" % (pod, version), NS, IP[pod], "echo-" + version,
                                "echo", version, "echo"))

    def connect(self, vip, port, timeout=H.IO_TIMEOUT):
        """A TCP connection from the client pod's application (not uid 1337: captured)."""
        return self.pods["client"].call(socket.create_connection, (vip, port), timeout)

    def close(self):
        problems = []
        for name, p in self.proxies.items():
            for pr in p.stop():
                problems.append("%s: %s" % (name, pr))
        for cp in self.cps.values():
            cp.stop()
        for a in self.apps.values():
            a.stop()
        self.mesh.close()
        return problems


class Pki(T.Pki):
    def __init__(self):
        super().__init__()
        self.client = self.leaf("client", "URI:" + CLIENT_SA)
        self.echo = self.leaf("echo", "URI:" + ECHO_SA)
        ca = self.read(self.path("ca.pem"))
        self.client_pem = (self.read(self.client[0]), self.read(self.client[1]), ca)
        self.echo_pem = (self.read(self.echo[0]), self.read(self.echo[1]), ca)


def hello(sock):
    """The echo application's greeting ('<pod> <peer>'), then an echo round trip; None if the
    connection closed first."""
    try:
        first = H.recv_line(sock).decode()
        if not first.endswith("\n"):
            return None
        sock.sendall(b"ping\n")
        if H.recv_exactly(sock, 5) != b"ping\n":
            return None
        return first.split()
    except OSError:
        return None
    finally:
        sock.close()


def usable():
    if os.geteuid() != 0:
        return "needs root (ip netns, iptables)"
    for tool in ("ip", "iptables", "setpriv", "openssl"):
        if not shutil.which(tool):
            return "%s not found" % tool
    return None


@unittest.skipIf(usable(), usable())
class SidecarMeshTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.C = T.control_plane_module()
        cls.types = cls.C.Types(os.path.dirname(H.BINARY))
        cls.tmp = tempfile.mkdtemp(prefix="msmmesh-")
        cls.pki = None
        try:
            cls.pki = Pki()
            cls.m = SidecarMesh("msm%d" % os.getpid(), cls.tmp, cls.C, cls.types, cls.pki)
        except BaseException:  # tearDownClass does not run after a failed setUpClass
            if cls.pki:
                cls.pki.close()
            shutil.rmtree(cls.tmp, True)
            raise

    @classmethod
    def tearDownClass(cls):
        problems = cls.m.close()
        cls.pki.close()
        if problems:
            cls._dump()
        shutil.rmtree(cls.tmp, True)
        if problems:
            raise AssertionError("; ".join(problems))

    @classmethod
    def _dump(cls):
        for name, p in cls.m.proxies.items():
            sys.stderr.write("\n----- %s sidecar stderr:\n%s\n" % (name, p.read_stderr()[-8000:]))

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result else 0
        r = super().run(result)
        if result and len(result.failures) + len(result.errors) > before:
            self._dump()
        return r

    def px(self, pod):
        return self.m.proxies[pod]

    # ---- traffic through both sidecars over mTLS, checked on the wire -------------------------

    def test_mtls_on_the_wire(self):
        if not shutil.which("tshark"):
            self.skipTest("tshark not installed (scripts/deps.sh test)")
        pcap = os.path.join(self.tmp, "wire.pcap")
        client = self.m.pods["client"]
        cap = subprocess.Popen(self.m.mesh.hub.prefix() + [
            "tshark", "-i", client.hub_if, "-f", "tcp", "-w", pcap, "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(cap.stderr.close)
        try:
            # "Capture started." once dumpcap runs (its filter is attached a moment later).
            line = ""
            t0 = time.monotonic()
            while "Capture started" not in line:
                line = cap.stderr.readline()
                if (not line and cap.poll() is not None) or time.monotonic() - t0 > 20:
                    self.fail("tshark did not start: %s" % line)
            time.sleep(0.5)
            marker = b"PLAINTEXT-MARKER-0123456789/"
            data = (marker + os.urandom(200)) * 300  # ~68 KB, the marker 300 times
            before = {n: self.m.apps[n].accepted for n in ("echo-v1", "echo-v2")}
            s = self.m.connect(VIP["echo"], APP_PORT)
            greeting = H.recv_line(s).decode().split()
            # The application saw the connection from the inbound sidecar (127.0.0.6).
            self.assertIn(greeting[0], ("echo-v1", "echo-v2"))
            self.assertEqual(greeting[1], "127.0.0.6")
            got = bytearray()
            sender = threading.Thread(target=s.sendall, args=(data,))
            sender.start()
            while len(got) < len(data):
                b = s.recv(65536)
                if not b:
                    break
                got += b
            sender.join()
            s.close()
            self.assertEqual(bytes(got), data)
            server = greeting[0]
            self.assertEqual(self.m.apps[server].accepted, before[server] + 1)
            time.sleep(0.5)
        finally:
            cap.send_signal(signal.SIGINT)
            try:
                cap.wait(timeout=10)
            except subprocess.TimeoutExpired:
                cap.kill()
                cap.wait()
        subset = server.split("-")[1]

        def fields(filt, *names):
            r = subprocess.run(["tshark", "-r", pcap, "-d", "tcp.port==%d,tls" % APP_PORT,
                                "-Y", filt, "-T", "fields", "-E", "separator=|"] +
                               [x for n in names for x in ("-e", n)],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            return [l.split("|") for l in r.stdout.splitlines() if l]

        hellos = fields("tls.handshake.type == 1", "ip.src", "ip.dst", "tcp.dstport",
                        "tls.handshake.extensions_alpn_str", "tls.handshake.extensions_server_name")
        # One connection, one ClientHello (a retransmitted segment would repeat the row).
        self.assertEqual(sorted(set(map(tuple, hellos))),
                         [(IP["client"], IP[server], str(APP_PORT), "istio-peer-exchange,istio",
                           N.sni_name(APP_PORT, ECHO, subset))])
        self.assertEqual(set(map(tuple, fields("tls.handshake.type == 2", "ip.src"))),
                         {(IP[server],)})  # the ServerHello
        appdata = fields("tls.record.opaque_type == 23", "tls.record.length")
        # Everything after the handshake is TLS application data, carrying (at least) the
        # payload both ways.
        total = sum(int(x) for row in appdata for x in row[0].split(","))
        self.assertGreater(total, 2 * len(data))
        payload = bytearray()
        for row in fields("tcp.len > 0", "tcp.payload"):
            payload += bytes.fromhex(row[0].replace(":", ""))
        self.assertGreater(len(payload), 2 * len(data))
        self.assertNotIn(marker, payload)
        self.assertNotIn(b"127.0.0.6", payload)  # the greeting
        self.assertNotIn(b"x-envoy-peer-metadata", payload)  # the MX preamble is inside TLS
        # Both sidecars: one mTLS handshake, the metadata exchange each way.
        cl, sv = self.px("client"), self.px(server)
        cname = N.cluster_name(APP_PORT, ECHO, subset)
        self.assertGreaterEqual(cl.stat("cluster.%s.ssl.handshake" % cname), 1)
        sv.wait_stat("tcp.inbound|%d||.downstream_cx_total" % APP_PORT, lambda v: v >= 1)
        self.assertGreaterEqual(cl.stat("metadata_exchange.metadata_added"), 1)
        self.assertGreaterEqual(sv.stat("metadata_exchange.metadata_added"), 1)
        self.assertEqual(sv.stat("metadata_exchange.header_not_found"), 0)

    # ---- a wrong SAN is refused ------------------------------------------------------------

    def test_wrong_san_refused(self):
        cname = N.cluster_name(APP_PORT, LEGACY)
        cl = self.px("client")
        before = self.m.apps["echo-v1"].accepted
        fail0 = cl.stat("cluster.%s.ssl.fail_verify_san" % cname) or 0
        for _ in range(3):
            self.assertIsNone(hello(self.m.connect(VIP["legacy"], APP_PORT)))
        cl.wait_stat("cluster.%s.ssl.fail_verify_san" % cname, lambda v: v == fail0 + 3)
        self.assertEqual(cl.stat("cluster.%s.ssl.handshake" % cname) or 0, 0)
        self.assertEqual(self.m.apps["echo-v1"].accepted, before)
        # The same server under the right expectation is fine (the refusal was the SAN).
        got = hello(self.m.connect(VIP["echo"], APP_PORT))
        self.assertIsNotNone(got)

    # ---- 80/20 weights ------------------------------------------------------------------------

    def test_weights_80_20_over_1000_connections(self):
        n, workers = 1000, 4
        counts = {"echo-v1": 0, "echo-v2": 0, None: 0}
        lock = threading.Lock()

        def worker(k):
            for _ in range(k):
                g = hello(socket.create_connection((VIP["echo"], APP_PORT), H.IO_TIMEOUT))
                with lock:
                    counts[g[0] if g else None] += 1

        def run_all():
            ts = [threading.Thread(target=worker, args=(n // workers,)) for _ in range(workers)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        t0 = time.monotonic()
        self.m.pods["client"].call(run_all)  # threads started there live in the client pod
        H.note("1000 connections in %.1fs: %r", time.monotonic() - t0, counts)
        self.assertEqual(counts[None], 0)
        p = WEIGHTS[0] / sum(WEIGHTS)
        sigma = math.sqrt(n * p * (1 - p))
        self.assertLessEqual(abs(counts["echo-v1"] - n * p), 4 * sigma,
                             "v1 got %d of %d (expected %.0f +- %.1f)"
                             % (counts["echo-v1"], n, n * p, 4 * sigma))
        self.assertEqual(counts["echo-v1"] + counts["echo-v2"], n)

    # ---- outlier detection ----------------------------------------------------------------

    def test_ejected_endpoint_gets_no_new_connections(self):
        v2 = self.m.pods["echo-v2"]
        cl = self.px("client")
        cname = N.cluster_name(APP_PORT, ECHO_HA)
        # echo-v2's sidecar port answers with a reset (its inbound capture fails): connect
        # failures, counted as 5xx by the cluster's outlier detector.
        rule = ["INPUT", "-p", "tcp", "--dport", "15006", "-j", "REJECT", "--reject-with",
                "tcp-reset"]
        v2.run("iptables", "-I", *rule)
        blocked = True
        try:
            # Round robin (per worker) alternates between v1 and v2 until v2 failed 3 times in a
            # row: ejected at the third failure, so no fourth.
            ejected = "cluster.%s.outlier_detection.ejections_active" % cname
            names = []
            for _ in range(40):
                r = hello(self.m.connect(VIP["echo-ha"], APP_PORT))
                names.append(r[0] if r else None)
                if names.count(None) >= 3 and cl.stat(ejected) == 1:
                    break
            self.assertEqual(names.count(None), 3, names)
            self.assertEqual(set(names), {"echo-v1", None}, names)
            cl.wait_stat(ejected, lambda v: v == 1)
            v2.run("iptables", "-D", *rule)
            blocked = False
            # echo-v2 is reachable again, but still ejected (base_ejection_time 120s).
            v2_app = self.m.apps["echo-v2"].accepted
            v2_side = self.px("echo-v2").stat("listener.0.0.0.0_15006.downstream_cx_total")
            names = [hello(self.m.connect(VIP["echo-ha"], APP_PORT)) for _ in range(30)]
            self.assertEqual([x[0] if x else None for x in names], ["echo-v1"] * 30)
            self.assertEqual(self.m.apps["echo-v2"].accepted, v2_app)
            self.assertEqual(self.px("echo-v2").stat("listener.0.0.0.0_15006.downstream_cx_total"),
                             v2_side)
            st = cl.stats()
            self.assertEqual(st["cluster.%s.outlier_detection.ejections_enforced_consecutive_5xx"
                                % cname], 1)
            self.assertEqual(st["cluster.%s.upstream_cx_connect_fail" % cname], 3)
            # The subset clusters (the weights test) reach echo-v2 as before.
            self.assertEqual(hello(self.m.connect(VIP["echo"], APP_PORT)) is None, False)
        finally:
            if blocked:
                v2.run("iptables", "-D", *rule, check=False)

    # ---- RBAC DENY ----------------------------------------------------------------------------

    def test_rbac_deny_blocks_and_counts(self):
        sv = self.px("echo-v1")
        denied0 = sv.stat("tcp.rbac.denied") or 0
        admin_app = self.m.apps["echo-v1:admin"].accepted
        s = self.m.connect(VIP["echo"], ADMIN_APP_PORT)
        self.assertIsNone(hello(s))
        sv.wait_stat("tcp.rbac.denied", lambda v: v == denied0 + 1)
        self.assertEqual(self.m.apps["echo-v1:admin"].accepted, admin_app)
        # The same policy lets port 9000 through on the same chain shape: counted as allowed.
        allowed0 = sv.stat("tcp.rbac.allowed") or 0
        got = None
        for _ in range(20):  # weighted 80/20: echo-v1 comes soon
            got = hello(self.m.connect(VIP["echo"], APP_PORT))
            self.assertIsNotNone(got)
            if got[0] == "echo-v1":
                break
        self.assertEqual(got[0], "echo-v1")
        sv.wait_stat("tcp.rbac.allowed", lambda v: v >= allowed0 + 1)
        self.assertEqual(sv.stat("tcp.rbac.denied"), denied0 + 1)


if __name__ == "__main__":
    H.main()

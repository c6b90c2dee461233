"""Interop with an Envoy sidecar scripted from the spec using the openssl CLI (issue 5 point 7):

- `openssl s_client` as a client sidecar (Istio's ALPN istio-peer-exchange,istio, Istio's SNI,
  a SPIFFE client certificate, and the metadata-exchange preamble built here from the wire format:
  magic 0x3D230467, big-endian length, Any(Struct)) connects to msm-proxy's inbound chain (the
  Istio shape: DownstreamTlsContext requiring a client certificate from SDS, MX, istio.stats,
  tcp_proxy) and is accepted: the application gets exactly the bytes after the preamble, the
  proxy learns the peer, and what s_client receives is the proxy's preamble (byte-identical to
  the spec's deterministic encoding) followed by the application's echo.
- msm-proxy's outbound cluster (EDS, auto-mTLS, Istio's UpstreamTlsContext, cluster MX filter)
  connects to an `openssl s_server` that demands a client certificate and ALPN
  istio-peer-exchange: s_server receives the proxy's preamble then the application bytes intact;
  the preamble s_server sends back is stripped before the client application.

Loopback only, no root. Configuration and secrets come from the test control plane.

    /usr/bin/python3 test/integration/test_mesh_interop.py --binary build/msm-proxy
"""
import os
import shutil
import socket
import struct
import subprocess
import threading
import unittest

import harness as H
import netns_pods as N
import test_metadata_exchange as MX
import test_tls as T

ECHO = "echo.default.svc.cluster.local"
ECHO_SA = N.spiffe("default", "echo")
PEER_SA = N.spiffe("default", "client")
SNI = N.sni_name(9000, ECHO)
PROXY_NODE = N.node("echo-v1-5f6d8-abcde", "default", "10.88.0.3", "echo-v1", "echo", "v1",
                    "echo")
# The Envoy sidecar the openssl peers play.
PEER_NODE = {"id": "sidecar~10.88.0.2~client-7d4b9-x2x4q.default~default.svc.cluster.local",
             "metadata": {"NAME": "client-7d4b9-x2x4q", "NAMESPACE": "default",
                          "WORKLOAD_NAME": "client", "CLUSTER_ID": "Kubernetes",
                          "OWNER": "kubernetes://apis/apps/v1/namespaces/default/deployments/"
                                   "client",
                          "LABELS": {"app": "client", "version": "v1",
                                     "service.istio.io/canonical-name": "client",
                                     "service.istio.io/canonical-revision": "v1"}}}
DEBUG = ["--component-log-level", "filter:debug"]


class Pki(T.Pki):
    def __init__(self):
        super().__init__()
        self.echo = self.leaf("echo", "URI:" + ECHO_SA)
        self.peer = self.leaf("peer", "URI:" + PEER_SA)


PKI = None


def setUpModule():
    global PKI
    if not shutil.which("openssl"):
        raise unittest.SkipTest("openssl CLI not found")
    PKI = Pki()


def tearDownModule():
    if PKI:
        PKI.close()


def split_preamble(buf):
    """(Any type URL, Struct dict, raw preamble, rest) from bytes that start with a preamble,
    parsed as Envoy's reader does: 4-byte big-endian magic, 4-byte big-endian length, Any."""
    magic, n = struct.unpack(">II", bytes(buf[:8]))
    if magic != MX.MAGIC:
        raise AssertionError("no metadata-exchange magic: %r" % bytes(buf[:16]))
    url, val = MX.dec_any(bytes(buf[8:8 + n]))
    return url, MX.dec_struct(val), bytes(buf[:8 + n]), bytes(buf[8 + n:])


class Reader(threading.Thread):
    """Collects a process's stdout bytes."""

    def __init__(self, f):
        super().__init__(daemon=True)
        self.f, self.buf, self.lock = f, bytearray(), threading.Lock()
        self.start()

    def run(self):
        while True:
            b = os.read(self.f.fileno(), 65536)
            if not b:
                return
            with self.lock:
                self.buf += b

    def wait_len(self, n, timeout=H.IO_TIMEOUT, what="bytes"):
        H.wait_for(lambda: len(self.buf) >= n, timeout, what=what)
        with self.lock:
            return bytes(self.buf)


class InteropTest(H.ProxyTestCase):
    def start(self, s_server_port=None):
        C = T.control_plane_module()
        types = C.Types(os.path.dirname(H.BINARY))
        cp = N.PodControlPlane(C, types, os.path.join(self.tmp, "xds.sock"))
        self.addCleanup(cp.stop)
        self.app = MX.Recorder(self)
        self.in_port, self.out_port = H.free_port(), H.free_port()
        inbound = N.virtual_inbound([9000])
        # No capture here: the listener binds 127.0.0.1:<port> (not 15006 + original_dst) and
        # its per-port chain carries no destination_port; the chain itself is istiod's.
        chain = inbound["filter_chains"][1]
        del chain["filter_chain_match"]["destination_port"]
        cp.set("lds", {"name": "inbound", "address": N.sock("127.0.0.1", self.in_port),
                       "listener_filters": [inbound["listener_filters"][1]],
                       "traffic_direction": "INBOUND", "filter_chains": [chain]})
        cp.set("cds", H.cluster("inbound|9000||", [H.sock_addr(self.app.port)]))
        out = N.service_listener("127.0.0.1", self.out_port, cluster=N.cluster_name(9000, ECHO))
        del out["bind_to_port"]
        cp.set("lds", out)
        cp.set("cds", N.outbound_cluster(9000, ECHO, [ECHO_SA]))
        cp.set("eds", N.load_assignment(N.cluster_name(9000, ECHO), [
            ("127.0.0.1", s_server_port or 9, "echo-v1;default;echo;v1;Kubernetes")]))
        ca = PKI.read(PKI.path("ca.pem"))
        cp.set_secrets(N.secrets(types, PKI.read(PKI.echo[0]), PKI.read(PKI.echo[1]), ca))
        self.p = H.Proxy(self.tmp, N.sidecar_bootstrap(PROXY_NODE, cp.sock), args=DEBUG)
        self._proxies.append(self.p)
        self.addCleanup(self._stop_proxy, self.p)
        return self.p.start()

    def popen(self, args):
        p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)

        def stop():
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            for f in (p.stdin, p.stdout, p.stderr):
                try:
                    f.close()
                except OSError:
                    pass
        self.addCleanup(stop)
        return p

    def test_s_client_to_inbound_chain(self):
        p = self.start()
        mine = MX.preamble(MX.expected_exchange(PEER_NODE))
        app_bytes = b"interop ping\n" + bytes(range(256)) * 8 + b"\x3d\x23\x04\x67 not a preamble"
        c = self.popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.in_port,
                        "-servername", SNI, "-alpn", "istio-peer-exchange,istio",
                        "-cert", PKI.peer[0], "-key", PKI.peer[1], "-CAfile", PKI.path("ca.pem"),
                        "-verify_return_error", "-quiet", "-nocommands"])
        out = Reader(c.stdout)
        c.stdin.write(mine + app_bytes)
        c.stdin.flush()
        want = MX.preamble(MX.expected_exchange(PROXY_NODE))
        got = out.wait_len(len(want) + len(app_bytes), what="preamble and echo at s_client")
        url, exchange, raw, rest = split_preamble(got)
        self.assertEqual(url, MX.STRUCT_URL)
        self.assertEqual(exchange, MX.expected_exchange(PROXY_NODE))
        self.assertEqual(raw, want)  # byte for byte the deterministic encoding
        self.assertEqual(rest, app_bytes)  # the application's echo, intact
        self.assertEqual(bytes(self.app.got), app_bytes)  # our preamble was stripped
        H.wait_for(lambda: "(downstream): peer WORKLOAD_NAME=client NAMESPACE=default "
                   "CLUSTER_ID=Kubernetes app=client version=v1" in p.read_stderr(),
                   what="the proxy learnt the openssl peer's workload")
        st = p.stats()
        self.assertEqual(st["listener.127.0.0.1_%d.ssl.handshake" % self.in_port], 1)
        self.assertEqual(st["metadata_exchange.alpn_protocol_found"], 1)
        self.assertEqual(st["metadata_exchange.metadata_added"], 1)
        self.assertEqual(st["metadata_exchange.header_not_found"], 0)
        self.assertEqual(st["tcp.inbound|9000||.downstream_cx_total"], 1)
        c.stdin.close()

    def test_s_client_without_istio_alpn_is_refused(self):
        # STRICT chains match Istio's TCP ALPN only: a TLS client offering h2 has no chain.
        p = self.start()
        c = self.popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.in_port,
                        "-servername", SNI, "-alpn", "h2", "-cert", PKI.peer[0],
                        "-key", PKI.peer[1], "-CAfile", PKI.path("ca.pem"), "-quiet",
                        "-nocommands"])
        c.stdin.write(b"hello\n")
        c.stdin.flush()
        self.assertEqual(c.wait(timeout=H.IO_TIMEOUT), 1)
        p.wait_stat("listener.127.0.0.1_%d.no_filter_chain_match" % self.in_port,
                    lambda v: v == 1)
        self.assertEqual(self.app.got, bytearray())

    def test_outbound_cluster_to_s_server(self):
        port = H.free_port()
        s = self.popen(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port,
                        "-cert", PKI.echo[0], "-key", PKI.echo[1], "-CAfile", PKI.path("ca.pem"),
                        "-Verify", "1", "-verify_return_error",
                        "-alpn", "istio-peer-exchange,istio", "-quiet"])
        out = Reader(s.stdout)

        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        H.wait_for(listening, what="openssl s_server listening")
        p = self.start(s_server_port=port)
        app_bytes = b"ping over the mesh\n" + bytes(range(256)) * 4
        c = socket.create_connection(("127.0.0.1", self.out_port), timeout=H.IO_TIMEOUT)
        self.addCleanup(c.close)
        c.sendall(app_bytes)
        want = MX.preamble(MX.expected_exchange(PROXY_NODE))
        got = out.wait_len(len(want) + len(app_bytes), what="preamble and data at s_server")
        url, exchange, raw, rest = split_preamble(got)
        self.assertEqual(url, MX.STRUCT_URL)
        self.assertEqual(exchange, MX.expected_exchange(PROXY_NODE))
        self.assertEqual(raw, want)
        self.assertEqual(rest, app_bytes)
        # s_server answers as an Envoy server sidecar: its preamble, then application bytes.
        reply = b"pong \x3d\x23\x04\x67 from s_server\n"
        s.stdin.write(MX.preamble(MX.expected_exchange(PEER_NODE)) + reply)
        s.stdin.flush()
        self.assertEqual(H.recv_exactly(c, len(reply)), reply)
        H.wait_for(lambda: "(upstream): peer WORKLOAD_NAME=client NAMESPACE=default"
                   in p.read_stderr(), what="the proxy learnt the s_server peer's workload")
        cname = N.cluster_name(9000, ECHO)
        st = p.stats()
        self.assertEqual(st["cluster.%s.ssl.handshake" % cname], 1)
        self.assertEqual(st["metadata_exchange.alpn_protocol_found"], 1)
        self.assertEqual(st["metadata_exchange.header_not_found"], 0)
        c.close()


if __name__ == "__main__":
    H.main()

"""TLS transport sockets end to end, with SPIFFE certificates made by openssl at test time:
the proxy terminating mTLS (clients with and without a certificate, a wrong SAN, a wrong CA,
garbage, stalled handshakes), originating mTLS to `openssl s_server` (the SNI and ALPN it
offers), auto-mTLS through transport_socket_matches, and the Istio shape served by the test
control plane: SDS secrets `default` / `ROOTCA` over `sds-grpc`, tls_inspector chain matching
by ALPN, warming until the secrets arrive, rotation.

    /usr/bin/python3 test/integration/test_tls.py --binary build/msm-proxy
"""
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

import harness as H

UP = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
RAW = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
TD = "spiffe://cluster.local"
SERVER_ID = TD + "/ns/default/sa/server"
CLIENT_ID = TD + "/ns/default/sa/client"
SNI = "outbound_.8080_._.echo.default.svc.cluster.local"
ISTIO_ALPN = ["istio-peer-exchange", "istio"]


# ---- certificates ------------------------------------------------------------------------------

class Pki:
    """A CA and SPIFFE leaves (EC P-256) made with the openssl CLI in a private directory."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="msmtls-")
        self.ca = self._ca("ca", "cluster.local")
        self.rogue_ca = self._ca("rogue-ca", "evil.local")

    def close(self):
        shutil.rmtree(self.dir, True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def _run(self, *args):
        subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)

    def _ca(self, name, org):
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-nodes", "-keyout", self.path(name + ".key"), "-out", self.path(name + ".pem"),
                  "-days", "2", "-subj", "/O=" + org,
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return name

    def leaf(self, name, san, ca=None):
        """Key and certificate for <san> signed by <ca>; returns (cert path, key path)."""
        ca = ca or self.ca
        key, csr, pem = (self.path(name + e) for e in (".key", ".csr", ".pem"))
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n" % san)
        self._run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", key, "-out", csr, "-subj", "/O=" + name)
        self._run("x509", "-req", "-in", csr, "-CA", self.path(ca + ".pem"), "-CAkey",
                  self.path(ca + ".key"), "-CAcreateserial", "-out", pem, "-days", "2",
                  "-extfile", ext)
        return pem, key

    def expired_leaf(self, name, san_uri):
        """A leaf for <san_uri> signed by the CA whose validity ended yesterday (python3-
        cryptography, Debian; the openssl CLI of Debian 12 cannot back-date a certificate)."""
        import datetime
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        with open(self.path(self.ca + ".key"), "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), None)
        with open(self.path(self.ca + ".pem"), "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=3))
                .not_valid_after(now - datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(san_uri)]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem, keyp = self.path(name + ".pem"), self.path(name + ".key")
        with open(pem, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(keyp, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        return pem, keyp

    def read(self, path):
        with open(path) as f:
            return f.read()


PKI = None


def setUpModule():
    global PKI
    if not shutil.which("openssl"):
        raise unittest.SkipTest("openssl CLI not found")
    PKI = Pki()
    PKI.server = PKI.leaf("server", "URI:" + SERVER_ID + ",DNS:localhost")
    PKI.client = PKI.leaf("client", "URI:" + CLIENT_ID)
    PKI.other_td = PKI.leaf("other-td", "URI:spiffe://evil.local/ns/default/sa/client")
    PKI.rogue = PKI.leaf("rogue", "URI:" + CLIENT_ID, ca=PKI.rogue_ca)
    PKI.server2 = PKI.leaf("server2", "URI:" + TD + "/ns/default/sa/server2")


def tearDownModule():
    if PKI:
        PKI.close()


def fsrc(path):
    return {"filename": path}


def certs(pair):
    return [{"certificate_chain": fsrc(pair[0]), "private_key": fsrc(pair[1])}]


def tls_socket(ctx):
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def server_ctx(san_prefix=TD + "/", alpn=("istio-peer-exchange", "h2", "http/1.1")):
    """Istio's inbound DownstreamTlsContext, with inline files instead of SDS."""
    return {"@type": DOWN, "require_client_certificate": True,
            "common_tls_context": {
                "alpn_protocols": list(alpn),
                "tls_certificates": certs(PKI.server),
                "validation_context": {"trusted_ca": fsrc(PKI.path("ca.pem")),
                                       "match_subject_alt_names": [{"prefix": san_prefix}]}}}


def client_ctx(san=SERVER_ID, sni=SNI, alpn=ISTIO_ALPN, pair=None):
    """Istio's outbound UpstreamTlsContext for ISTIO_MUTUAL, with inline files."""
    return {"@type": UP, "sni": sni,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                               "tls_maximum_protocol_version": "TLSv1_3"},
                "alpn_protocols": list(alpn),
                "tls_certificates": certs(pair or PKI.client),
                "validation_context": {"trusted_ca": fsrc(PKI.path("ca.pem")),
                                       "match_subject_alt_names": [{"exact": san}]}}}


def py_client_ctx(pair=None, alpn=ISTIO_ALPN, trust="ca.pem"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(PKI.path(trust))
    if pair:
        ctx.load_cert_chain(pair[0], pair[1])
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_exchange(port, ctx, data=b"hello", sni=SNI):
    """Connect with <ctx>, send <data>, return (TLS socket, what came back) or raise."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
    s = ctx.wrap_socket(raw, server_hostname=sni)
    s.sendall(data)
    return s, H.recv_exactly(s, len(data))


def refused(port, ctx, sni=SNI):
    """True when the proxy ends the TLS connection without echoing."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
    s = None
    try:
        s = ctx.wrap_socket(raw, server_hostname=sni)
        s.sendall(b"hello")
        got = H.recv_exactly(s, 5)
    except (ssl.SSLError, OSError):
        return True
    finally:
        (s or raw).close()
    return got == b""


class SServer:
    """openssl s_server echoing lines reversed (-rev), requiring a client certificate from our
    CA, tracing what the client offered."""

    def __init__(self, test, pair=None, alpn="istio-peer-exchange,istio"):
        self.port = H.free_port()
        self.out = os.path.join(test.tmp, "s_server-%d.txt" % self.port)
        pair = pair or PKI.server
        args = ["openssl", "s_server", "-accept", "127.0.0.1:%d" % self.port, "-cert", pair[0],
                "-key", pair[1], "-CAfile", PKI.path("ca.pem"), "-Verify", "1",
                "-verify_return_error", "-alpn", alpn, "-rev", "-trace"]
        self.f = open(self.out, "wb")
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=self.f, stderr=self.f)
        test.addCleanup(self.stop)
        H.wait_for(self._up, what="openssl s_server listening")

    def _up(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)
        self.f.close()

    def text(self):
        with open(self.out, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def snis(self):
        """Server names from the traced ClientHellos."""
        out, lines = [], self.text().splitlines()
        for i, line in enumerate(lines):
            if "extension_type=server_name" not in line:
                continue
            data = b""
            for l2 in lines[i + 1:]:
                m = re.match(r"\s+[0-9a-f]{4} - ((?:[0-9a-f]{2}[ -]){1,16})", l2)
                if not m:
                    break
                data += bytes.fromhex(m.group(1).replace("-", " "))
            out.append(data[5:].decode())
        return out


# ---- the proxy terminating mTLS --------------------------------------------------------------

class TerminateTest(H.ProxyTestCase):
    def start(self, up, timeout="0.5s", ctx=None):
        port = H.free_port()
        chain = {"transport_socket": tls_socket(ctx or server_ctx()),
                 "transport_socket_connect_timeout": timeout,
                 "filters": [H.tcp_proxy_filter("in", "echo")]}
        cfg = H.bootstrap([H.listener("main", H.sock_addr(port), chains=[chain],
                                      stat_prefix="tls_in")],
                          [H.cluster("echo", [up.address])])
        p = self.start_proxy(cfg)
        return p, port

    def test_mtls_echo_and_s_client(self):
        up = self.upstream("echo")
        p, port = self.start(up)
        s, got = tls_exchange(port, py_client_ctx(PKI.client))
        self.assertEqual(got, b"hello")
        # The proxy picks by its own ALPN preference among what the client offered.
        self.assertEqual(s.selected_alpn_protocol(), "istio-peer-exchange")
        self.assertEqual(s.version(), "TLSv1.3")
        s.close()
        # openssl s_client as the client.
        r = subprocess.run(
            "(printf 'ping\\n'; sleep 0.5) | openssl s_client -connect 127.0.0.1:%d "
            "-servername %s -alpn istio,istio-peer-exchange -cert %s -key %s -CAfile %s"
            % (port, SNI, PKI.client[0], PKI.client[1], PKI.path("ca.pem")),
            shell=True, capture_output=True, text=True, timeout=20)
        self.assertIn("ALPN protocol: istio-peer-exchange", r.stdout)
        self.assertIn("Verify return code: 0 (ok)", r.stdout)
        self.assertIn("ping", r.stdout)
        p.wait_stat("listener.tls_in.ssl.handshake", lambda v: v == 2)
        st = p.stats()
        self.assertEqual(st["listener.tls_in.ssl.versions.TLSv1.3"], 2)
        self.assertEqual(st["listener.tls_in.ssl.connection_error"], 0)
        self.assertEqual(st["listener.tls_in.ssl.no_certificate"], 0)

    def test_refused_clients_are_counted(self):
        up = self.upstream("echo")
        p, port = self.start(up)
        # No client certificate.
        self.assertTrue(refused(port, py_client_ctx(None)))
        p.wait_stat("listener.tls_in.ssl.fail_verify_no_cert", lambda v: v == 1)
        # A SPIFFE id outside the trust domain (signed by the right CA).
        self.assertTrue(refused(port, py_client_ctx(PKI.other_td)))
        p.wait_stat("listener.tls_in.ssl.fail_verify_san", lambda v: v == 1)
        # The right SPIFFE id from another CA.
        self.assertTrue(refused(port, py_client_ctx(PKI.rogue)))
        p.wait_stat("listener.tls_in.ssl.fail_verify_error", lambda v: v == 1)
        # The right SPIFFE id from the right CA, but expired.
        self.assertTrue(refused(port, py_client_ctx(PKI.expired_leaf("expired", CLIENT_ID))))
        p.wait_stat("listener.tls_in.ssl.fail_verify_error", lambda v: v == 2)
        # A client that does not trust the proxy's CA.
        self.assertTrue(refused(port, py_client_ctx(PKI.client, trust="rogue-ca.pem")))
        p.wait_stat("listener.tls_in.ssl.connection_error", lambda v: v == 1)
        self.assertEqual(p.stat("listener.tls_in.ssl.handshake"), 0)
        # None of them reached the filter chain.
        self.assertEqual(up.accepted, 0)
        self.assertEqual(p.stat("tcp.in.downstream_cx_total") or 0, 0)

    def test_garbage_and_stalled_handshakes(self):
        up = self.upstream("echo")
        p, port = self.start(up)
        c = self.connect(p)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(H.is_closed(c))
        p.wait_stat("listener.tls_in.ssl.connection_error", lambda v: v == 1)
        # Silent client, and a client that stops in the middle of its ClientHello: both closed
        # by the handshake timeout (0.5 s here).
        silent, partial = self.connect(p), self.connect(p)
        partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        t0 = time.monotonic()
        self.assertTrue(H.is_closed(silent, timeout=5))
        self.assertTrue(H.is_closed(partial, timeout=5))
        self.assertLess(time.monotonic() - t0, 4)
        p.wait_stat("listener.tls_in.downstream_cx_transport_socket_connect_timeout",
                    lambda v: v == 2)
        self.assertEqual(up.accepted, 0)
        self.assertEqual(p.stat("listener.tls_in.downstream_cx_active"), 0)


# ---- the proxy originating mTLS --------------------------------------------------------------

class OriginateTest(H.ProxyTestCase):
    def test_s_server_sees_sni_alpn_and_our_certificate(self):
        srv = SServer(self)
        port, bad_port = H.free_port(), H.free_port()
        tls = {"transport_socket": tls_socket(client_ctx())}
        bad = {"transport_socket": tls_socket(client_ctx(san=TD + "/ns/default/sa/other"))}
        cfg = H.bootstrap(
            [H.listener("main", H.sock_addr(port), [H.tcp_proxy_filter("out", "tls_up")]),
             H.listener("bad", H.sock_addr(bad_port), [H.tcp_proxy_filter("bad", "bad_up")])],
            [H.cluster("tls_up", [H.sock_addr(srv.port)], **tls),
             H.cluster("bad_up", [H.sock_addr(srv.port)], **bad)])
        p = self.start_proxy(cfg)
        c = self.connect(p)
        c.sendall(b"hello\n")
        self.assertEqual(H.recv_exactly(c, 6), b"olleh\n")
        self.assertIn("ALPN protocols advertised by the client: istio-peer-exchange, istio",
                      srv.text())
        self.assertEqual(srv.snis(), [SNI])
        self.assertIn("O = client", srv.text())  # s_server verified our client certificate
        c.close()  # s_server serves one connection at a time
        st = p.stats()
        self.assertEqual(st["cluster.tls_up.ssl.handshake"], 1)
        self.assertEqual(st["cluster.tls_up.upstream_cx_connect_fail"], 0)
        # The server's SPIFFE id is not the one this cluster expects: no connection.
        b = self.connect(p, "bad")
        self.assertTrue(H.is_closed(b))
        p.wait_stat("cluster.bad_up.ssl.fail_verify_san", lambda v: v >= 1)
        p.wait_stat("cluster.bad_up.upstream_cx_connect_fail", lambda v: v >= 1)
        self.assertEqual(p.stat("cluster.bad_up.ssl.handshake"), 0)

    def test_auto_mtls_by_endpoint_metadata(self):
        """transport_socket_matches as istiod renders auto-mTLS: {tlsMode: istio} endpoints get
        TLS, the others raw_buffer."""
        srv = SServer(self)
        plain = self.upstream("echo")
        port = H.free_port()
        eps = [{"endpoint": {"address": H.sock_addr(srv.port)},
                "metadata": {"filter_metadata": {"envoy.transport_socket_match":
                                                 {"tlsMode": "istio"}}}},
               {"endpoint": {"address": plain.address}}]
        cl = {"name": "auto", "type": "STATIC", "connect_timeout": "2s",
              "lb_policy": "ROUND_ROBIN",
              "load_assignment": {"cluster_name": "auto", "endpoints": [{"lb_endpoints": eps}]},
              "transport_socket_matches": [
                  {"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
                   "transport_socket": tls_socket(client_ctx())},
                  {"name": "tlsMode-disabled", "match": {},
                   "transport_socket": {"name": "envoy.transport_sockets.raw_buffer",
                                        "typed_config": {"@type": RAW}}}]}
        cfg = H.bootstrap([H.listener("main", H.sock_addr(port),
                                      [H.tcp_proxy_filter("auto", "auto")])], [cl])
        p = self.start_proxy(cfg)
        got = set()
        for _ in range(2):
            c = self.connect(p)
            c.sendall(b"hello\n")
            got.add(H.recv_exactly(c, 6))
            c.close()
        self.assertEqual(got, {b"olleh\n", b"hello\n"})
        self.assertEqual(plain.accepted, 1)
        self.assertEqual(p.stat("cluster.auto.ssl.handshake"), 1)


# ---- Istio's shape over xDS + SDS ---------------------------------------------------------------

def control_plane_module():
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "controlplane"))
    try:
        import controlplane
    except ImportError as e:
        raise unittest.SkipTest("test control plane unavailable: %s" % e)
    return controlplane


def sds_source():
    return {"api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                                  "set_node_on_first_message_only": True,
                                  "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]},
            "initial_fetch_timeout": "0s", "resource_api_version": "V3"}


def sds_common(alpn, san):
    return {"alpn_protocols": alpn,
            "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": sds_source()}],
            "combined_validation_context": {
                "default_validation_context": {"match_subject_alt_names": [san]},
                "validation_context_sds_secret_config": {"name": "ROOTCA",
                                                         "sds_config": sds_source()}}}


class IstioSdsTest(H.ProxyTestCase):
    """virtualInbound-like listener (tls_inspector; TLS chain for Istio's TCP ALPN, plaintext
    chain otherwise) and an outbound ISTIO_MUTUAL cluster, both on SDS `default`/`ROOTCA`."""

    @classmethod
    def setUpClass(cls):
        cls.C = control_plane_module()
        cls.types = cls.C.Types(os.path.dirname(H.BINARY))

    def secret(self, name, pair=None, ca=None):
        d = {"name": name}
        if pair:
            d["tls_certificate"] = {"certificate_chain": {"inline_string": PKI.read(pair[0])},
                                    "private_key": {"inline_string": PKI.read(pair[1])}}
        else:
            d["validation_context"] = {"trusted_ca": {"inline_string": PKI.read(ca)}}
        return self.types.parse_json("envoy.extensions.transport_sockets.tls.v3.Secret", d)

    def _try(self, port, ctx):
        try:
            return tls_exchange(port, ctx)
        except OSError:
            return None

    def test_istio_shape_warming_and_rotation(self):
        C = self.C
        cp = C.ControlPlane(self.types)
        self.addCleanup(cp.stop)
        sock = os.path.join(self.tmp, "xds.sock")
        cp.listen("unix:" + sock)
        up = self.upstream("echo")
        in_port, out_port = H.free_port(), H.free_port()
        inbound = {
            "name": "virtualInbound", "address": H.sock_addr(in_port),
            "stat_prefix": "inbound",
            "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
                                  "typed_config": {"@type": "type.googleapis.com/envoy.extensions."
                                                            "filters.listener.tls_inspector.v3."
                                                            "TlsInspector"}}],
            "filter_chains": [
                {"name": "tcp-mtls",
                 "filter_chain_match": {"transport_protocol": "tls",
                                        "application_protocols": ISTIO_ALPN},
                 "transport_socket": tls_socket({
                     "@type": DOWN, "require_client_certificate": True,
                     "common_tls_context": sds_common(["istio-peer-exchange", "h2", "http/1.1"],
                                                      {"prefix": TD + "/"})}),
                 "filters": [H.tcp_proxy_filter("inbound_tcp", "inbound|9000||")]},
                {"name": "plaintext", "filter_chain_match": {"transport_protocol": "raw_buffer"},
                 "filters": [H.tcp_proxy_filter("inbound_plain", "inbound|9000||")]}]}
        outbound = H.listener("outbound", H.sock_addr(out_port),
                              [H.tcp_proxy_filter("outbound", "outbound|8080||echo")])
        cp.resources.set(self.types.parse_json("envoy.config.listener.v3.Listener", inbound))
        cp.resources.set(self.types.parse_json("envoy.config.listener.v3.Listener", outbound))
        cp.resources.set(self.types.parse_json("envoy.config.cluster.v3.Cluster",
                                               H.cluster("inbound|9000||", [up.address])))
        cp.resources.set(self.types.parse_json("envoy.config.cluster.v3.Cluster", H.cluster(
            "outbound|8080||echo", [H.sock_addr(in_port)], transport_socket=tls_socket({
                "@type": UP, "sni": SNI,
                "common_tls_context": dict(sds_common(ISTIO_ALPN, {"exact": SERVER_ID}),
                                           tls_params={"tls_minimum_protocol_version": "TLSv1_2",
                                                       "tls_maximum_protocol_version": "TLSv1_3"})
            }))))
        pipe = lambda name: {"name": name, "type": "STATIC", "connect_timeout": "1s",
                             "load_assignment": {"cluster_name": name, "endpoints": [
                                 {"lb_endpoints": [{"endpoint": {"address": H.pipe_addr(sock)}}]}]}}
        boot = H.bootstrap(clusters=[pipe("xds-grpc"), pipe("sds-grpc")],
                           node={"id": "sidecar~127.0.0.1~echo-1.default~default.svc.cluster.local",
                                 "cluster": "echo.default"},
                           dynamic_resources={
                               "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                                              "set_node_on_first_message_only": True,
                                              "grpc_services": [{"envoy_grpc": {
                                                  "cluster_name": "xds-grpc"}}]},
                               "cds_config": {"ads": {}, "resource_api_version": "V3"},
                               "lds_config": {"ads": {}, "resource_api_version": "V3"}})
        # No secrets yet: the proxy subscribes and waits (warming) before going live.
        p = H.Proxy(self.tmp, boot, wait_ready=False)
        self._proxies.append(p)
        self.addCleanup(self._stop_proxy, p)
        p.start()
        def sds_asked():
            names = set()
            for r in cp.reqs(C.TYPE_SDS):
                names.update(r.get("names") or [])
            return names >= {"default", "ROOTCA"}
        cp.wait_for(sds_asked)

        def admin_up():
            if os.path.exists(p.admin_path):
                with open(p.admin_path) as f:
                    p.admin = f.read().strip()
            return p.admin
        H.wait_for(admin_up, what="admin address")
        time.sleep(0.2)
        # The outbound cluster waits for its secrets, and start-up (LDS) waits for it.
        self.assertNotEqual(p.get("/ready")[0], 200)
        self.assertEqual(p.stat("cluster_manager.warming_clusters"), 1)
        cp.resources.set(self.secret("default", pair=PKI.server))
        cp.resources.set(self.secret("ROOTCA", ca=PKI.path("ca.pem")))
        cp.push()
        p._wait_ready()
        # Through both sidecar roles: plaintext in, mTLS between them, plaintext to the app.
        c = socket.create_connection(("127.0.0.1", out_port), timeout=H.IO_TIMEOUT)
        self.addCleanup(c.close)
        c.sendall(b"through the mesh")
        self.assertEqual(H.recv_exactly(c, 16), b"through the mesh")
        st = p.stats()
        self.assertEqual(st["cluster.outbound|8080||echo.ssl.handshake"], 1)
        self.assertEqual(st["listener.inbound.ssl.handshake"], 1)
        self.assertGreaterEqual(st["sds.default.update_success"], 1)
        # An external mTLS client offering Istio's ALPN reaches the TLS chain; plaintext still
        # goes to the plaintext chain (tls_inspector).
        old, got = tls_exchange(in_port, py_client_ctx(PKI.client))
        self.assertEqual(got, b"hello")
        first_cert = old.getpeercert(binary_form=True)
        plain = socket.create_connection(("127.0.0.1", in_port), timeout=H.IO_TIMEOUT)
        self.addCleanup(plain.close)
        plain.sendall(b"plain")
        self.assertEqual(H.recv_exactly(plain, 5), b"plain")
        # Rotation: new connections get the new certificate, the old connection continues.
        cp.resources.set(self.secret("default", pair=PKI.server2))
        cp.push()
        p.wait_stat("listener.inbound.server_ssl_socket_factory.ssl_context_update_by_sds",
                    lambda v: v >= 1)
        new, got = tls_exchange(in_port, py_client_ctx(PKI.client))
        self.assertEqual(got, b"hello")
        self.assertNotEqual(new.getpeercert(binary_form=True), first_cert)
        new.close()
        old.sendall(b"still here")
        self.assertEqual(H.recv_exactly(old, 10), b"still here")
        old.close()
        # The outbound cluster now sees a server id it does not expect (sa/server2): refused.
        c2 = socket.create_connection(("127.0.0.1", out_port), timeout=H.IO_TIMEOUT)
        self.addCleanup(c2.close)
        self.assertTrue(H.is_closed(c2))
        p.wait_stat("cluster.outbound|8080||echo.ssl.fail_verify_san", lambda v: v >= 1)
        # A new listener whose certificate secret is not there yet warms: not served until the
        # secret arrives.
        late_port = H.free_port()
        late = dict(inbound, name="late", address=H.sock_addr(late_port), stat_prefix="late")
        late["listener_filters"] = []
        late["filter_chains"] = [{
            "transport_socket": tls_socket({
                "@type": DOWN, "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [{"name": "late-cert",
                                                            "sds_config": sds_source()}]}}),
            "filters": [H.tcp_proxy_filter("late", "inbound|9000||")]}]
        cp.resources.set(self.types.parse_json("envoy.config.listener.v3.Listener", late))
        cp.push()
        p.wait_stat("listener_manager.total_listeners_warming", lambda v: v == 1)
        # Bound (the address is taken) but not listening while it warms, as Envoy defers
        # listen(): a connection is refused instead of waiting in a backlog nobody serves.
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", late_port), timeout=H.IO_TIMEOUT).close()
        taken = socket.socket()
        self.addCleanup(taken.close)
        with self.assertRaises(OSError):
            taken.bind(("127.0.0.1", late_port))
        cp.resources.set(self.secret("late-cert", pair=PKI.server))
        cp.push()
        p.wait_stat("listener_manager.total_listeners_warming", lambda v: v == 0)
        anyone = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        anyone.check_hostname = False
        anyone.verify_mode = ssl.CERT_NONE
        s3, got = H.wait_for(lambda: self._try(late_port, anyone), what="late listener")
        self.assertEqual(got, b"hello")
        s3.close()
        # /config_dump: the secrets, private keys redacted.
        status, body = p.get("/config_dump")
        self.assertEqual(status, 200)
        self.assertIn('"dynamic_active_secrets"', body)
        self.assertIn('"[redacted]"', body)
        self.assertNotIn("PRIVATE KEY", body)


if __name__ == "__main__":
    H.main()

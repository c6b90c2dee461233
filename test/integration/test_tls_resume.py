"""TLS session resumption between two proxies: A originates mTLS (UpstreamTlsContext,
max_session_keys) to B's mTLS listener (DownstreamTlsContext with an RBAC policy on the SPIFFE
principal). Checked for TLS 1.2 (tickets, and session ids when B disables tickets) and TLS 1.3:

- later connections resume (A's cluster.X.ssl.session_reused, B's listener ssl.session_reused);
- max_session_keys 0 never resumes; B with both resumption kinds disabled never resumes;
- a cluster whose expected server SAN does not match (same certificate and CA as a working
  cluster: the same OpenSSL context underneath) fails every time and is never resumed into;
- after SDS rotation of A's client certificate the first connection is a full handshake;
- on B, a resumed connection still carries the client's principal: RBAC allows A's SPIFFE id on
  resumed connections and still denies another identity of the same trust domain.

    /usr/bin/python3 test/integration/test_tls_resume.py --binary build/msm-proxy
"""
import os
import ssl
import socket
import time
import unittest

import harness as H
import test_tls as T

RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
AUTHN = "type.googleapis.com/io.istio.network.authn.Config"
INTRUDER_ID = T.TD + "/ns/default/sa/intruder"


def setUpModule():
    T.setUpModule()
    T.PKI.client2 = T.PKI.leaf("client2", "URI:" + T.CLIENT_ID)
    T.PKI.intruder = T.PKI.leaf("intruder", "URI:" + INTRUDER_ID)


def tearDownModule():
    T.tearDownModule()


def params(version):
    return {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": version}


def server_b(version, tickets=True, cache=True):
    ctx = T.server_ctx()
    ctx["common_tls_context"]["tls_params"] = params(version)
    if not tickets:
        ctx["disable_stateless_session_resumption"] = True
    if not cache:
        ctx["disable_stateful_session_resumption"] = True
    # Only A's SPIFFE id, both as the authenticated principal and istio_authn's filter state.
    rules = {"action": "ALLOW", "policies": {"only-a": {
        "permissions": [{"any": True}],
        "principals": [{"and_ids": {"ids": [
            {"authenticated": {"principal_name": {"exact": T.CLIENT_ID}}},
            {"filter_state": {"key": "io.istio.peer_principal",
                              "string_match": {"exact": T.CLIENT_ID}}}]}}]}}}
    return {"transport_socket": T.tls_socket(ctx),
            "filters": [{"name": "istio_authn", "typed_config": {"@type": AUTHN}},
                        {"name": "envoy.filters.network.rbac",
                         "typed_config": {"@type": RBAC, "stat_prefix": "b.", "rules": rules}},
                        H.tcp_proxy_filter("b", "echo")]}


def client_a(version, san=T.SERVER_ID, sds=True, pair=None, keys=None, untrusted=False):
    ctx = T.client_ctx(san=san, pair=pair)
    common = ctx["common_tls_context"]
    if untrusted:
        common["validation_context"]["trust_chain_verification"] = "ACCEPT_UNTRUSTED"
    common["tls_params"] = params(version)
    if sds:
        del common["tls_certificates"]
        common["tls_certificate_sds_secret_configs"] = [{"name": "default",
                                                         "sds_config": T.sds_source()}]
    if keys is not None:
        ctx["max_session_keys"] = keys
    return {"transport_socket": T.tls_socket(ctx)}


class ResumeTest(H.ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.C = T.control_plane_module()
        cls.types = cls.C.Types(os.path.dirname(H.BINARY))

    def secret(self, pair):
        return self.types.parse_json("envoy.extensions.transport_sockets.tls.v3.Secret", {
            "name": "default", "tls_certificate": {
                "certificate_chain": {"inline_string": T.PKI.read(pair[0])},
                "private_key": {"inline_string": T.PKI.read(pair[1])}}})

    def start_pair(self, version, tickets=True, cache=True):
        up = self.upstream("echo")

        def cfg_b():
            self.b_port = H.free_port()
            return H.bootstrap([H.listener("b", H.sock_addr(self.b_port),
                                           chains=[server_b(version, tickets, cache)],
                                           stat_prefix="b")],
                               [H.cluster("echo", [up.address])])
        b = self.start_proxy(cfg_b)
        cp = self.C.ControlPlane(self.types)
        self.addCleanup(cp.stop)
        sock = os.path.join(self.tmp, "sds-%s.sock" % version)
        cp.listen("unix:" + sock)
        cp.resources.set(self.secret(T.PKI.client))
        cp.push()
        to_b = [H.sock_addr(self.b_port)]
        # The clusters on SDS come over CDS (static clusters initialize before the xDS client
        # starts), the others are static.
        for cl in (H.cluster("to_b", to_b, **client_a(version)),
                   H.cluster("wrong", to_b, **client_a(version,
                                                       san=T.TD + "/ns/default/sa/other"))):
            cp.resources.set(self.types.parse_json("envoy.config.cluster.v3.Cluster", cl))
        cp.push()
        clusters = [
            H.cluster("nokeys", to_b, **client_a(version, sds=False, keys=0)),
            H.cluster("lenient", to_b, **client_a(version, sds=False, untrusted=True,
                                                  san=T.TD + "/ns/default/sa/other")),
            H.cluster("intruder", to_b, **client_a(version, sds=False, pair=T.PKI.intruder,
                                                    keys=4)),
            {"name": "sds-grpc", "type": "STATIC", "connect_timeout": "1s",
             "load_assignment": {"cluster_name": "sds-grpc", "endpoints": [
                 {"lb_endpoints": [{"endpoint": {"address": H.pipe_addr(sock)}}]}]}}]

        def cfg_a():
            ls = []
            for name in ("to_b", "nokeys", "wrong", "lenient", "intruder"):
                ls.append(H.listener(name, H.sock_addr(H.free_port()),
                                     [H.tcp_proxy_filter(name, name)]))
            # An xDS client (ADS on the same control plane) for the SDS subscription.
            return H.bootstrap(ls, clusters, dynamic_resources={"ads_config": {
                "api_type": "GRPC", "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]},
                "cds_config": {"ads": {}, "resource_api_version": "V3"}},
                node={"id": "sidecar~127.0.0.1~a-1.default~default.svc.cluster.local",
                      "cluster": "a.default"})
        a = self.start_proxy(cfg_a)
        return a, b, cp

    def through(self, a, name):
        """One connection through A's listener <name>: True when B echoed."""
        c = a.connect(name)
        try:
            c.sendall(b"hello")
            return H.recv_exactly(c, 5) == b"hello"
        except (OSError, AssertionError):
            return False
        finally:
            c.close()

    def run_version(self, version, tickets=True):
        a, b, cp = self.start_pair(version, tickets)
        n = 4
        for i in range(n):
            self.assertTrue(self.through(a, "to_b"), "connection %d" % i)
            a.wait_stat("cluster.to_b.ssl.handshake", lambda v, i=i: v == i + 1)
            # B ends its side once the echo is done; wait for it so the next connection's
            # handshake is counted separately.
            b.wait_stat("listener.b.downstream_cx_active", lambda v: v == 0)
        a.wait_stat("cluster.to_b.ssl.session_reused", lambda v: v == n - 1)
        want = {"1_2": "TLSv1.2", "1_3": "TLSv1.3"}[version[-3:]]
        self.assertEqual(a.stat("cluster.to_b.ssl.versions." + want), n)
        self.assertEqual(b.stat("listener.b.ssl.session_reused"), n - 1)
        # Resumed connections keep A's principal: all allowed by B's RBAC.
        self.assertEqual(b.stat("b.rbac.allowed"), n)
        self.assertEqual(b.stat("b.rbac.denied") or 0, 0)

        # max_session_keys: 0 disables resumption.
        for i in range(3):
            self.assertTrue(self.through(a, "nokeys"))
        a.wait_stat("cluster.nokeys.ssl.handshake", lambda v: v == 3)
        self.assertEqual(a.stat("cluster.nokeys.ssl.session_reused"), 0)

        # The server's SAN is not the expected one: refused every time, never resumed (to_b,
        # whose sessions are stored, shares the certificate and trust of this cluster).
        for i in range(3):
            self.assertFalse(self.through(a, "wrong"))
            a.wait_stat("cluster.wrong.ssl.fail_verify_san", lambda v, i=i: v == i + 1)
        self.assertEqual(a.stat("cluster.wrong.ssl.handshake"), 0)
        self.assertEqual(a.stat("cluster.wrong.ssl.session_reused"), 0)

        # ACCEPT_UNTRUSTED lets the same mismatch through, but such a session is not stored:
        # only servers that passed verification are resumed into.
        for i in range(3):
            self.assertTrue(self.through(a, "lenient"))
        a.wait_stat("cluster.lenient.ssl.handshake", lambda v: v == 3)
        self.assertEqual(a.stat("cluster.lenient.ssl.fail_verify_san"), 3)
        self.assertEqual(a.stat("cluster.lenient.ssl.session_reused"), 0)

        # Another identity of the trust domain: denied by RBAC, resumed or not.
        b_reused = b.stat("listener.b.ssl.session_reused")
        for i in range(3):
            self.assertFalse(self.through(a, "intruder"))
            a.wait_stat("cluster.intruder.ssl.handshake", lambda v, i=i: v == i + 1)
            b.wait_stat("b.rbac.denied", lambda v, i=i: v == i + 1)
        self.assertGreaterEqual(a.stat("cluster.intruder.ssl.session_reused"), 1)
        self.assertGreaterEqual(b.stat("listener.b.ssl.session_reused"), b_reused + 1)
        self.assertEqual(b.stat("b.rbac.allowed"), n + 6)

        # SDS rotation of A's client certificate: the new context starts with no session.
        cp.resources.set(self.secret(T.PKI.client2))
        cp.push()
        a.wait_stat("cluster.to_b.client_ssl_socket_factory.ssl_context_update_by_sds",
                    lambda v: v >= 1)
        # The new context reaches the workers asynchronously (as in Envoy): a connection made
        # in that window may still use, and resume, the old one. Within a few connections one
        # must be a full handshake (the new context's store starts empty); the next resumes.
        full = False
        for _ in range(5):
            hs = a.stat("cluster.to_b.ssl.handshake")
            before = a.stat("cluster.to_b.ssl.session_reused")
            self.assertTrue(self.through(a, "to_b"))
            a.wait_stat("cluster.to_b.ssl.handshake", lambda v, hs=hs: v == hs + 1)
            b.wait_stat("listener.b.downstream_cx_active", lambda v: v == 0)
            if a.stat("cluster.to_b.ssl.session_reused") == before:
                full = True
                break
            time.sleep(0.2)
        self.assertTrue(full, "no full handshake after the SDS rotation")
        reused = a.stat("cluster.to_b.ssl.session_reused")
        self.assertTrue(self.through(a, "to_b"))
        a.wait_stat("cluster.to_b.ssl.session_reused", lambda v: v == reused + 1)
        return a, b

    def test_tls13(self):
        self.run_version("TLSv1_3")

    def test_tls12_tickets(self):
        self.run_version("TLSv1_2")

    def test_tls12_session_ids(self):
        self.run_version("TLSv1_2", tickets=False)

    def test_server_without_resumption(self):
        """B with disable_stateless_session_resumption and disable_stateful_session_resumption:
        A offers its sessions, B never resumes."""
        for version in ("TLSv1_2", "TLSv1_3"):
            with self.subTest(version=version):
                a, b, _ = self.start_pair(version, tickets=False, cache=False)
                for i in range(3):
                    self.assertTrue(self.through(a, "to_b"))
                    a.wait_stat("cluster.to_b.ssl.handshake", lambda v, i=i: v == i + 1)
                self.assertEqual(a.stat("cluster.to_b.ssl.session_reused"), 0)
                self.assertEqual(b.stat("listener.b.ssl.session_reused"), 0)
                a.stop()
                b.stop()

    def test_python_client_resumes_with_principal(self):
        """A resumed downstream session (python's ssl as the client) still has the principal."""
        a, b, _ = self.start_pair("TLSv1_3")
        for pair, ok in ((T.PKI.client, True), (T.PKI.intruder, False)):
            ctx = T.py_client_ctx(pair)
            sess = None
            for i in range(3):
                raw = socket.create_connection(("127.0.0.1", self.b_port), timeout=H.IO_TIMEOUT)
                s = ctx.wrap_socket(raw, server_hostname=T.SNI, session=sess)
                try:
                    s.sendall(b"hello")
                    got = H.recv_exactly(s, 5)
                except (OSError, ssl.SSLError, AssertionError):
                    got = b""
                self.assertEqual(got == b"hello", ok, (pair, i))
                self.assertEqual(s.session_reused, i > 0, (pair, i))
                sess = s.session
                s.close()
        b.wait_stat("b.rbac.denied", lambda v: v == 3)
        self.assertEqual(b.stat("b.rbac.allowed"), 3)
        self.assertEqual(b.stat("listener.b.ssl.session_reused"), 4)


if __name__ == "__main__":
    H.main()

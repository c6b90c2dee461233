"""envoy.filters.network.rbac on real connections: ALLOW/DENY by source and destination,
Istio's mTLS principals (filter_state io.istio.peer_principal, authenticated principal_name)
with SPIFFE certificates made at test time, Istio's allow-nothing (`rules: {}`), shadow rules,
and the rbac.allowed/denied stats Istio's stats_matcher keeps."""
import socket
import ssl
import unittest

import harness as H
import test_tls as T

RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
AUTHN = "type.googleapis.com/io.istio.network.authn.Config"


def rbac_filter(rules=None, shadow=None, stat_prefix="tcp."):
    cfg = {"@type": RBAC, "stat_prefix": stat_prefix,
           "shadow_rules_stat_prefix": "istio_dry_run_allow_"}
    if rules is not None:
        cfg["rules"] = rules
    if shadow is not None:
        cfg["shadow_rules"] = shadow
    return {"name": "envoy.filters.network.rbac", "typed_config": cfg}


def policy(principals, permissions=({"any": True},)):
    return {"permissions": list(permissions), "principals": list(principals)}


def setUpModule():
    T.setUpModule()


def tearDownModule():
    T.tearDownModule()


class RbacTest(H.ProxyTestCase):
    def start(self, rules=None, shadow=None, tls=False):
        self.up = self.upstream("echo")

        def cfg():
            self.port = H.free_port()
            chain = {"filters": [
                {"name": "istio_authn", "typed_config": {"@type": AUTHN}},
                rbac_filter(rules, shadow),
                H.tcp_proxy_filter(stat_prefix="p", cluster="c")]}
            if tls:
                chain["transport_socket"] = T.tls_socket(T.server_ctx())
            return H.bootstrap(listeners=[{"name": "main", "address": H.sock_addr(self.port),
                                           "filter_chains": [chain]}],
                               clusters=[H.cluster("c", [self.up.address])])
        self.p = self.start_proxy(cfg)

    def plain_ok(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"ping")
        try:
            return H.recv_exactly(s, 4) == b"ping"
        except (OSError, AssertionError):
            return False

    def tls_ok(self, pair):
        try:
            s, got = T.tls_exchange(self.port, T.py_client_ctx(pair=pair), b"ping")
            s.close()
            return got == b"ping"
        except (OSError, ssl.SSLError, AssertionError):
            return False

    def test_allow_by_source_ip(self):
        self.start({"action": "ALLOW", "policies": {"local": policy(
            [{"remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}])}})
        self.assertTrue(self.plain_ok())
        self.assertEqual(self.p.stat("tcp.rbac.allowed"), 1)

    def test_deny_by_destination_port(self):
        self.start({"action": "DENY", "policies": {"no-port": policy(
            [{"any": True}], [{"destination_port": 1}, {"not_rule": {"any": True}}])}})
        self.assertTrue(self.plain_ok())  # port differs: no policy matches, allowed
        self.p.stop()
        self.start({"action": "DENY", "policies": {"this-port": {
            "permissions": [{"destination_port_range": {"start": 1, "end": 65535}}],
            "principals": [{"any": True}]}}})
        self.assertFalse(self.plain_ok())
        self.assertEqual(self.p.stat("tcp.rbac.denied"), 1)

    def test_istio_allow_nothing(self):
        # An AuthorizationPolicy whose rules are HTTP-only renders `rules: {}` for TCP chains.
        self.start({})
        self.assertFalse(self.plain_ok())
        self.assertEqual(self.p.stat("tcp.rbac.denied"), 1)
        self.assertEqual(self.up.accepted, 0)

    def test_no_rules_is_no_enforcement(self):
        self.start(None, shadow={"action": "DENY", "policies": {"all": policy([{"any": True}])}})
        self.assertTrue(self.plain_ok())
        self.assertEqual(self.p.stat("tcp.rbac.istio_dry_run_allow_shadow_denied"), 1)

    def test_spiffe_principals_over_mtls(self):
        client = T.CLIENT_ID
        self.start({"action": "ALLOW", "policies": {"ns[default]-policy[x]-rule[0]": policy([
            {"or_ids": {"ids": [{"filter_state": {"key": "io.istio.peer_principal",
                                                  "string_match": {"exact": client}}}]}}])}},
                   tls=True)
        self.assertTrue(self.tls_ok(T.PKI.client))
        self.assertFalse(self.tls_ok(T.PKI.server2))  # another identity of the same trust domain
        self.assertEqual(self.p.stat("tcp.rbac.allowed"), 1)
        self.assertEqual(self.p.stat("tcp.rbac.denied"), 1)

    def test_authenticated_namespace_regex(self):
        self.start({"action": "ALLOW", "policies": {"ns": policy([
            {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/default/.*"}}}}
        ])}}, tls=True)
        self.assertTrue(self.tls_ok(T.PKI.client))
        self.p.stop()
        self.start({"action": "ALLOW", "policies": {"ns": policy([
            {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/prod/.*"}}}}
        ])}}, tls=True)
        self.assertFalse(self.tls_ok(T.PKI.client))

    def test_unsupported_rule_rejected(self):
        r = self.run_binary(["--mode", "validate", "--config-yaml", H.to_yaml(H.bootstrap(
            listeners=[{"name": "main", "address": H.sock_addr(H.free_port()),
                        "filter_chains": [{"filters": [
                            rbac_filter({"action": "ALLOW", "policies": {"p": {
                                "permissions": [{"any": True}],
                                "principals": [{"any": True}],
                                "condition": {"const_expr": {"bool_value": True}}}}}),
                            H.tcp_proxy_filter(stat_prefix="p", cluster="c")]}]}],
            clusters=[H.cluster("c", [H.sock_addr(1)])]))])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("CEL conditions are not supported", r.stdout + r.stderr)


if __name__ == "__main__":
    H.main()

"""Replay of real istiod output: each sidecar config dump in ../shared/fixtures/istio/configdump
is served by the test control plane (Delta ADS, plus SDS with certificates made at test time in
place of the dump's redacted keys) to the real proxy, which must ACK every resource, go LIVE,
and show them in /config_dump. The configuration Envoy itself rejected (the DeathStarBench Lua
filter) must be NACKed too, with the reason, while the accepted config keeps serving.

Runs in its own network namespace (the dumps bind 15001/15006); needs root, else skipped."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import harness as H
import netns_pods as N

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "controlplane"))
import controlplane as C  # noqa: E402

DUMPS = ("ossm_hello-openshift_sidecar_1.20.8_config-dump.json",
         "deathstarbench_geo_sidecar_1.18.2_config_dump.json",
         "sidecar-listeners_authz_configdump.json")
TYPES = None


def types():
    global TYPES
    if TYPES is None:
        TYPES = C.Types(os.path.dirname(H.BINARY))
    return TYPES


def make_secrets(tmp):
    """default (SPIFFE leaf) and ROOTCA, as istio-agent serves them."""
    return C.make_istio_secrets(types(), tmp, "replay")


def fill_gaps(cp, dump):
    """What a dump does not carry but istiod would send: endpoints of EDS clusters and route
    configurations named by RDS (empty), and a cluster when the dump has none."""
    t = types()
    R = cp.resources
    have_eds = set(R.names(C.TYPE_EDS))
    have_rds = set(R.names(C.TYPE_RDS))
    for c in dump["configs"]:
        if c["@type"].endswith("ClustersConfigDump"):
            for k in ("dynamic_active_clusters", "dynamic_warming_clusters"):
                for e in c.get(k, []):
                    cl = e["cluster"]
                    if cl.get("type") == "EDS":
                        svc = cl.get("eds_cluster_config", {}).get("service_name") or cl["name"]
                        if svc not in have_eds:
                            have_eds.add(svc)
                            R.set(t.parse_json("envoy.config.endpoint.v3.ClusterLoadAssignment",
                                               {"cluster_name": svc}))

    def walk(o):
        if isinstance(o, dict):
            rds = o.get("rds")
            if isinstance(rds, dict) and rds.get("route_config_name") not in (None, *have_rds):
                have_rds.add(rds["route_config_name"])
                R.set(t.parse_json("envoy.config.route.v3.RouteConfiguration",
                                   {"name": rds["route_config_name"]}))
            for k, v in o.items():
                if k != "error_state":
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dump)
    if not R.names(C.TYPE_CDS):
        R.set(t.parse_json("envoy.config.cluster.v3.Cluster",
                           {"name": "BlackHoleCluster", "type": "STATIC",
                            "connect_timeout": "1s"}))


def bootstrap(sock, node):
    return H.bootstrap(clusters=[C.pipe_cluster(n, sock) for n in ("xds-grpc", "sds-grpc")],
                       node=node, dynamic_resources=C.ads_dynamic_resources("DELTA_GRPC"))


in_netns = N.in_test_netns


@unittest.skipUnless(in_netns(), "needs root: run as root to re-execute in a network namespace")
class ReplayTest(H.ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        cls.pki = tempfile.mkdtemp(prefix="msmreplay-")
        cls.secrets = make_secrets(cls.pki)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, True)

    def replay(self, name):
        with open(os.path.join(H.SHARED, "fixtures", "istio", "configdump", name)) as f:
            dump = json.load(f)
        cp = C.ControlPlane(types())
        self.addCleanup(cp.stop)
        cp.resources.load_config_dump(dump)
        for s in self.secrets:
            cp.resources.set(s)
        fill_gaps(cp, dump)
        sock = os.path.join(self.tmp, "xds.sock")
        cp.listen("unix:" + sock)
        node = None
        for c in dump["configs"]:
            if c["@type"].endswith("BootstrapConfigDump"):
                node = c["bootstrap"].get("node")
        node = node or {"id": "sidecar~10.0.0.1~replay.default~default.svc.cluster.local",
                        "cluster": "replay.default"}
        p = self.start_proxy(bootstrap(sock, node),
                             args=["--drain-time-s", "1", "--allow-unknown-static-fields"])
        return dump, cp, p

    def check_accepted(self, dump, cp, p, known_gaps=()):
        """Every resource ACKed, except listeners named in <known_gaps> (each a feature not
        built yet, NACKed by name)."""
        nacks = cp.nacks()
        if known_gaps:
            for n in nacks:
                self.assertEqual(n["type_url"], C.TYPE_LDS, n["error_message"])
                named = {part.split(":", 1)[0].strip() for part in
                         n["error_message"].split("; ")}
                self.assertTrue(named <= set(known_gaps), n["error_message"][:500])
            nacks = []
        self.assertEqual(nacks, [], "NACKed: %s" % [
            (n["type_url"], n["error_message"][:300]) for n in nacks])
        for t in (C.TYPE_CDS, C.TYPE_LDS):
            self.assertTrue(cp.acks(t) or (t == C.TYPE_LDS and known_gaps),
                            "no ACK for %s" % t)
        st = p.stats()
        if not known_gaps:
            self.assertEqual(st["listener_manager.lds.update_rejected"], 0)
        self.assertEqual(st["cluster_manager.cds.update_rejected"], 0)
        self.assertEqual(st["listener_manager.total_listeners_warming"], 0)
        self.assertEqual(st["cluster_manager.warming_clusters"], 0)
        served = set(cp.resources.names(C.TYPE_LDS)) - set(known_gaps)
        out = json.loads(p.get("/config_dump")[1])["configs"]
        ld = [c for c in out if c["@type"].endswith("ListenersConfigDump")][0]
        shown = {l["name"] for l in ld.get("dynamic_listeners", [])}
        self.assertEqual(shown, served)
        cd = [c for c in out if c["@type"].endswith("ClustersConfigDump")][0]
        shown = {c["cluster"]["name"] for c in cd.get("dynamic_active_clusters", [])}
        self.assertEqual(shown, set(cp.resources.names(C.TYPE_CDS)))

    def test_ossm_sidecar_1_20(self):
        self.check_accepted(*self.replay(DUMPS[0]))

    def test_authz_listeners(self):
        # Known gaps, each NACKed with its reason: connect_originate / connect_terminate /
        # main_internal are Istio's HBONE tunnel listeners (internal listeners and an HTTP
        # CONNECT terminator); virtualInbound carries a CUSTOM AuthorizationPolicy
        # (envoy.filters.http.ext_authz). Every other listener of the dump is accepted.
        self.check_accepted(*self.replay(DUMPS[2]),
                            known_gaps=("connect_originate", "connect_terminate",
                                        "main_internal", "virtualInbound"))

    def test_deathstarbench_1_18_and_the_lua_nack(self):
        dump, cp, p = self.replay(DUMPS[1])
        self.check_accepted(dump, cp, p)
        # The listener Envoy rejected: push it and expect the same rejection.
        failed = None
        for c in dump["configs"]:
            if c["@type"].endswith("ListenersConfigDump"):
                for l in c["dynamic_listeners"]:
                    if "error_state" in l:
                        failed = l["error_state"]["failed_configuration"]
        self.assertIsNotNone(failed)
        msg = types().parse_json("envoy.config.listener.v3.Listener",
                                 {k: v for k, v in failed.items() if k != "@type"})
        cp.resources.set(msg)
        cp.push()
        cp.wait_for(lambda: cp.nacks(C.TYPE_LDS))
        reason = cp.nacks(C.TYPE_LDS)[-1]["error_message"]
        self.assertIn("virtualInbound", reason)
        self.assertIn("envoy.filters.http.lua", reason)
        # The accepted virtualInbound keeps serving: still one LIVE proxy, nothing warming.
        self.assertEqual(p.get("/ready")[0], 200)
        self.assertEqual(p.stat("listener_manager.lds.update_rejected"), 1)


if __name__ == "__main__":
    N.main_in_netns("msmrp")

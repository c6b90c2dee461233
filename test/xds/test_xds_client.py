"""The xDS client (xds/) against the test control plane: Delta and SotW ADS, ACK/NACK, nonce and
version bookkeeping, subscription diffs, reconnects, SDS on its own socket, TCP and TLS
targets, initial_fetch_timeout, bad input and misbehaving control planes.

    /usr/bin/python3 test/xds/test_xds_client.py --probe build/test/msm-xds-probe --build build
"""
import os
import socket
import threading
import time

import xds_harness as H
from xds_harness import C


class DeltaTest(H.XdsTestCase):
    def setUp(self):
        super().setUp()
        self.cp = self.control_plane()
        for n in ("c0", "c1", "c2"):
            self.cp.resources.set(H.cluster_msg(n))
        for n in ("c0", "c1"):
            self.cp.resources.set(H.cla_msg(n))
        path = self.sock("xds")
        self.cp.listen("unix:" + path)
        self.p = self.probe(H.bootstrap(H.pipe_cluster("xds-grpc", path)))

    def test_ack_node_and_subscription_diffs(self):
        cp, p = self.cp, self.p
        p.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
        u = p.wait_update(C.TYPE_CDS)
        self.assertFalse(u["sotw"])
        self.assertEqual(sorted(r["name"] for r in u["resources"]), ["c0", "c1", "c2"])
        p.wait(lambda e: e["event"] == "ready" and e["type"] == C.TYPE_CDS and e["name"] is None)
        ack = cp.wait_for(lambda: cp.acks(C.TYPE_CDS))[0]
        first = cp.reqs(C.TYPE_CDS)[0]
        # set_node_on_first_message_only: the node goes in the stream's first request only.
        self.assertTrue(first["has_node"])
        self.assertEqual(first["node_id"], "sidecar~10.1.2.3~pod-1.ns~ns.svc.cluster.local")
        self.assertEqual(first["node_cluster"], "app.ns")
        self.assertEqual(first["user_agent_name"], "envoy")
        self.assertEqual(first["subscribe"], [])  # legacy wildcard
        self.assertFalse(ack["has_node"])
        self.assertEqual(ack["nonce"], cp.sent(C.TYPE_CDS)[0]["nonce"])
        self.assertEqual(ack["subscribe"], [])

        p.sub("eds", ["c0", "c1"], prefix="cluster.{}.")
        u = p.wait_update(C.TYPE_EDS)
        self.assertEqual(sorted(r["name"] for r in u["resources"]), ["c0", "c1"])
        r = cp.wait_for(lambda: [x for x in cp.reqs(C.TYPE_EDS) if x["kind"] == "request"])[0]
        self.assertEqual(r["subscribe"], ["c0", "c1"])
        self.assertFalse(r["has_node"])
        cp.wait_for(lambda: cp.acks(C.TYPE_EDS))

        # Replace the set: a spontaneous request (no nonce) with only the diff.
        p.sub("eds", ["c1", "c2"], prefix="cluster.{}.")
        r = cp.wait_for(lambda: [x for x in cp.reqs(C.TYPE_EDS) if x["kind"] == "request"
                                 and x["unsubscribe"]])[0]
        self.assertEqual(r["subscribe"], ["c2"])
        self.assertEqual(r["unsubscribe"], ["c0"])
        self.assertEqual(r["nonce"], "")

        # An update of a subscribed resource; one for an unsubscribed name never shows.
        cp.resources.set(H.cla_msg("c1", port=9090))
        cp.resources.set(H.cla_msg("c2"))
        cp.push()
        p.wait_update(C.TYPE_EDS, lambda e: "c2" in [r["name"] for r in e["resources"]])
        self.assertNotIn("c0", [r["name"] for r in p.updates(C.TYPE_EDS)[-1]["resources"]])

        # Removal in Delta: removed_resources.
        cp.resources.remove(C.TYPE_CDS, "c2")
        cp.push()
        u = p.wait_update(C.TYPE_CDS, lambda e: e["removed"])
        self.assertEqual(u["removed"], ["c2"])
        self.assertEqual(u["resources"], [])
        st = p.stats()
        self.assertEqual(st["cluster_manager.cds.update_success"], 2)
        self.assertEqual(st["cluster_manager.cds.update_rejected"], 0)
        self.assertEqual(st["control_plane.connected_state"], 1)
        self.assertEqual(st["cluster.c1.update_success"], 2)
        self.assertEqual(st["cluster_manager.cds.version_text"], u["version"])
        self.assertNotIn("cluster.c0.update_attempt", st)  # unsubscribed: stats released
        self.assertEqual(cp.nacks(), [])

    def test_nack_keeps_state_and_reason(self):
        cp, p = self.cp, self.p
        p.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
        p.wait_update(C.TYPE_CDS)
        cp.wait_for(lambda: cp.acks(C.TYPE_CDS))
        p.cmd("nack bad cluster bad: this exact reason")
        cp.resources.set(H.cluster_msg("bad"))
        cp.push()
        n = cp.wait_for(lambda: cp.nacks(C.TYPE_CDS))[0]
        self.assertEqual(n["error_code"], 13)
        self.assertEqual(n["error_message"], "cluster bad: this exact reason")
        self.assertEqual(n["nonce"], cp.sent(C.TYPE_CDS)[-1]["nonce"])
        st = p.stats()
        self.assertEqual(st["cluster_manager.cds.update_rejected"], 1)
        self.assertEqual(st["cluster_manager.cds.update_success"], 1)
        # Reconnect: the NACKed resource is not among the versions held.
        p.cmd("ack bad")
        cp.kill_streams()
        r = cp.wait_for(lambda: [x for x in cp.reqs(C.TYPE_CDS) if x["stream"] > 1])[0]
        self.assertEqual(sorted(r["initial_versions"]), ["c0", "c1", "c2"])


class SotwTest(H.XdsTestCase):
    def setUp(self):
        super().setUp()
        self.cp = self.control_plane()
        for n in ("c0", "c1"):
            self.cp.resources.set(H.cluster_msg(n))
            self.cp.resources.set(H.cla_msg(n))
        addr = self.cp.listen("127.0.0.1:0")
        host, port = addr.rsplit(":", 1)
        self.p = self.probe(H.bootstrap(H.tcp_cluster("xds-grpc", host, int(port)),
                                        api_type="GRPC"))

    def test_versions_nonces_nack_and_removal(self):
        cp, p = self.cp, self.p
        p.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
        u = p.wait_update(C.TYPE_CDS)
        self.assertTrue(u["sotw"])
        v1 = u["version"]
        ack = cp.wait_for(lambda: cp.acks(C.TYPE_CDS))[0]
        sent = cp.sent(C.TYPE_CDS)[0]
        self.assertEqual(ack["version_info"], v1)
        self.assertEqual(ack["nonce"], sent["nonce"])
        self.assertEqual(ack["names"], [])
        first = cp.reqs(C.TYPE_CDS)[0]
        self.assertEqual((first["version_info"], first["nonce"]), ("", ""))

        p.sub("eds", ["c0", "c1"], prefix="cluster.{}.")
        p.wait_update(C.TYPE_EDS)
        r = cp.wait_for(lambda: cp.acks(C.TYPE_EDS))[0]
        self.assertEqual(r["names"], ["c0", "c1"])

        # NACK: previous version, this response's nonce, the exact reason.
        p.cmd("nack c9 no such thing as c9")
        cp.resources.set(H.cluster_msg("c9"))
        cp.push()
        n = cp.wait_for(lambda: cp.nacks(C.TYPE_CDS))[0]
        self.assertEqual(n["version_info"], v1)
        self.assertEqual(n["nonce"], cp.sent(C.TYPE_CDS)[-1]["nonce"])
        self.assertEqual(n["error_code"], 13)
        self.assertEqual(n["error_message"], "no such thing as c9")
        # Fixed upstream: the next push is ACKed with its version; removal is by absence.
        p.cmd("ack c9")
        cp.resources.remove(C.TYPE_CDS, "c9")
        cp.resources.remove(C.TYPE_CDS, "c1")
        cp.push()
        u = p.wait_update(C.TYPE_CDS, lambda e: e["result"] == "ack" and e["version"] != v1)
        self.assertEqual([r["name"] for r in u["resources"]], ["c0"])
        a = cp.wait_for(lambda: [x for x in cp.acks(C.TYPE_CDS) if x["version_info"] ==
                                 u["version"]])[0]
        self.assertIsNone(a["error_code"])
        # Interest change: the whole set again, with the last nonce and version.
        # Let every EDS response be answered first (else the change legitimately carries the
        # version and nonce of the one before).
        cp.wait_for(lambda: cp.reqs(C.TYPE_EDS)[-1]["nonce"] == cp.sent(C.TYPE_EDS)[-1]["nonce"])
        last = cp.sent(C.TYPE_EDS)[-1]["nonce"]
        lastv = cp.sent(C.TYPE_EDS)[-1]["version_info"]
        p.sub("eds", ["c0"], prefix="cluster.{}.")
        r = cp.wait_for(lambda: [x for x in cp.reqs(C.TYPE_EDS) if x["names"] == ["c0"]])[0]
        self.assertEqual(r["nonce"], last)
        self.assertEqual(r["version_info"], lastv)
        st = p.stats()
        self.assertEqual(st["cluster_manager.cds.update_rejected"], 1)
        self.assertEqual(st["cluster_manager.cds.update_success"], 2)

    def test_reconnect_keeps_versions(self):
        cp, p = self.cp, self.p
        p.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
        v = p.wait_update(C.TYPE_CDS)["version"]
        cp.wait_for(lambda: cp.acks(C.TYPE_CDS))
        cp.stop()
        p.wait_stat("control_plane.connected_state", lambda x: x == 0)
        self.assertGreaterEqual(p.stats()["cluster_manager.cds.update_failure"], 1)
        cp.restart()
        r = cp.wait_for(lambda: [x for x in cp.reqs(C.TYPE_CDS) if x["stream"] > 1])[0]
        self.assertEqual(r["version_info"], v)
        self.assertEqual(r["nonce"], "")
        self.assertTrue(r["has_node"])
        p.wait_stat("control_plane.connected_state", lambda x: x == 1)


class BadResourceTest(H.XdsTestCase):
    def run_bad(self, api_type, expect):
        cp = self.control_plane()
        cp.resources.set(H.cluster_msg("good"))
        path = self.sock("xds")
        cp.listen("unix:" + path)
        p = self.probe(H.bootstrap(H.pipe_cluster("xds-grpc", path), api_type=api_type))
        p.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
        p.wait_update(C.TYPE_CDS)
        cp.wait_for(lambda: cp.acks(C.TYPE_CDS))
        # Bytes that do not decode as a Cluster.
        cp.resources.set_raw(C.TYPE_CDS, "junk", C.TYPE_CDS, b"\x0a\xff\xff\xff\xff\x0f")
        cp.push()
        n = cp.wait_for(lambda: cp.nacks(C.TYPE_CDS))[-1]
        self.assertIn(expect, n["error_message"])
        self.assertEqual(len(p.updates(C.TYPE_CDS)), 1)  # never reached apply
        # A resource whose Any has another type than the response.
        cp.resources.remove(C.TYPE_CDS, "junk")
        cp.resources.set_raw(C.TYPE_CDS, "alien", C.TYPE_LDS,
                             H.types().parse_json("envoy.config.listener.v3.Listener",
                                                  {"name": "alien"}).SerializeToString())
        cp.push()
        n = cp.wait_for(lambda: [x for x in cp.nacks(C.TYPE_CDS) if "does not match" in
                                 x["error_message"]])[0]
        self.assertIn("embedded in an individual Any does not match the message-wide type URL",
                      n["error_message"])
        self.assertEqual(p.stats()["cluster_manager.cds.update_rejected"], 2)
        p.wait(lambda e: e["event"] == "ready")

    def test_delta(self):
        self.run_bad("DELTA_GRPC", "resource 'junk':")

    def test_sotw(self):
        self.run_bad("GRPC", "resources[")


class DeltaReconnectTest(H.XdsTestCase):
    def test_initial_resource_versions(self):
        cp = self.control_plane()
        for n in ("a", "b"):
            cp.resources.set(H.cluster_msg(n))
            cp.resources.set(H.cla_msg(n))
        path = self.sock("xds")
        cp.listen("unix:" + path)
        p = self.probe(H.bootstrap(H.pipe_cluster("xds-grpc", path)))
        p.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
        p.sub("eds", ["a", "b", "missing"], prefix="cluster.{}.")
        p.wait_update(C.TYPE_EDS)
        cp.wait_for(lambda: cp.acks(C.TYPE_EDS) and cp.acks(C.TYPE_CDS))
        have = {n: v for n, (v, _, _) in cp.resources.snapshot(C.TYPE_EDS).items()}
        cp.stop()
        p.wait_stat("control_plane.connected_state", lambda x: x == 0)
        cp.resources.set(H.cla_msg("b", port=1234))
        cp.restart()
        eds = cp.wait_for(lambda: [x for x in cp.reqs(C.TYPE_EDS) if x["stream"] > 1])[0]
        self.assertEqual(eds["subscribe"], ["a", "b", "missing"])
        self.assertEqual(eds["initial_versions"], have)  # only what was received
        cds = cp.wait_for(lambda: [x for x in cp.reqs(C.TYPE_CDS) if x["stream"] > 1])[0]
        self.assertEqual(sorted(cds["initial_versions"]), ["a", "b"])
        self.assertTrue(cds["has_node"])
        # Only the changed resource comes again.
        u = p.wait_update(C.TYPE_EDS, lambda e: e["version"] != "" and
                          [r["name"] for r in e["resources"]] == ["b"])
        self.assertEqual(u["removed"], [])
        p.wait_stat("control_plane.connected_state", lambda x: x == 1)


class SdsTest(H.XdsTestCase):
    def test_sds_on_its_own_socket_and_rotation(self):
        ads = self.control_plane()
        sds = self.control_plane()
        ads_path, sds_path = self.sock("xds"), self.sock("sds")
        ads.listen("unix:" + ads_path)
        sds.resources.set(H.secret_msg("default", 1))
        sds.resources.set(H.secret_msg("ROOTCA", 1))
        sds.listen("unix:" + sds_path)
        b = H.bootstrap(H.pipe_cluster("xds-grpc", ads_path),
                        extra_clusters=[H.pipe_cluster("sds-grpc", sds_path)])
        src = {"api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                                     "set_node_on_first_message_only": True,
                                     "grpc_services": [{"envoy_grpc": {"cluster_name":
                                                                       "sds-grpc"}}]},
               "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
        p = self.probe(b, sources={"sds": src})
        p.sub("sds", ["default", "ROOTCA"], source="sds", prefix="sds.{}.")
        u = p.wait_update(C.TYPE_SDS)
        self.assertEqual(sorted(r["name"] for r in u["resources"]), ["ROOTCA", "default"])
        r = sds.wait_for(lambda: sds.acks(C.TYPE_SDS))[0]
        self.assertEqual(r["names"], ["ROOTCA", "default"])
        first = sds.reqs(C.TYPE_SDS)[0]
        self.assertTrue(first["has_node"])
        self.assertEqual(ads.requests, [])  # nothing went to ADS
        p.wait(lambda e: e["event"] == "ready" and e["name"] == "default")
        p.wait(lambda e: e["event"] == "ready" and e["name"] == "ROOTCA")
        # Rotation.
        sds.resources.set(H.secret_msg("default", 2))
        sds.push()
        p.wait_count(lambda e: e["event"] == "update" and e["type"] == C.TYPE_SDS, 2)
        sds.wait_for(lambda: len(sds.acks(C.TYPE_SDS)) >= 2)
        st = p.stats()
        self.assertEqual(st["sds.default.update_success"], 2)
        self.assertEqual(st["sds.ROOTCA.update_success"], 2)
        self.assertEqual(st["sds.default.control_plane.connected_state"], 1)


class TlsTest(H.XdsTestCase):
    def test_tls_target(self):
        key, cert = C.make_cert(self.tmp)
        with open(key, "rb") as f:
            kb = f.read()
        with open(cert, "rb") as f:
            cb = f.read()
        cp = self.control_plane()
        cp.resources.set(H.cluster_msg("tls-ok"))
        addr = cp.listen("127.0.0.1:0", tls=(kb, cb))
        host, port = addr.rsplit(":", 1)
        ts = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "UpstreamTlsContext",
            "sni": "localhost",
            "common_tls_context": {"validation_context": {"trusted_ca": {"filename": cert}}}}}
        p = self.probe(H.bootstrap(H.tcp_cluster("xds-grpc", host, int(port),
                                                 transport_socket=ts)))
        p.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
        u = p.wait_update(C.TYPE_CDS)
        self.assertEqual([r["name"] for r in u["resources"]], ["tls-ok"])
        cp.wait_for(lambda: cp.acks(C.TYPE_CDS))

    def test_tls_wrong_ca_never_connects(self):
        key, cert = C.make_cert(self.tmp)
        other = os.path.join(self.tmp, "other")
        os.mkdir(other)
        _, other_cert = C.make_cert(other)
        with open(key, "rb") as f:
            kb = f.read()
        with open(cert, "rb") as f:
            cb = f.read()
        cp = self.control_plane()
        addr = cp.listen("127.0.0.1:0", tls=(kb, cb))
        host, port = addr.rsplit(":", 1)
        ts = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "UpstreamTlsContext",
            "sni": "localhost",
            "common_tls_context": {"validation_context": {"trusted_ca": {"filename":
                                                                          other_cert}}}}}
        p = self.probe(H.bootstrap(H.tcp_cluster("xds-grpc", host, int(port),
                                                 transport_socket=ts)))
        p.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
        p.wait_stat("cluster_manager.cds.update_failure", lambda x: x and x >= 1)
        self.assertEqual(cp.requests, [])
        self.assertEqual(p.stats()["control_plane.connected_state"], 0)


class InitFetchTimeoutTest(H.XdsTestCase):
    def test_timeout_fires_and_zero_waits(self):
        cp = self.control_plane()
        path = self.sock("xds")
        cp.listen("unix:" + path)
        src_short = {"ads": {}, "initial_fetch_timeout": "0.3s", "resource_api_version": "V3"}
        src_zero = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
        p = self.probe(H.bootstrap(H.pipe_cluster("xds-grpc", path)),
                       sources={"short": src_short, "zero": src_zero})
        t0 = time.time()
        p.sub("eds", ["nowhere"], source="short", prefix="cluster.{}.")
        p.sub("rds", ["never"], source="zero", prefix="rds.{}.")
        p.wait(lambda e: e["event"] == "ready" and e["name"] == "nowhere", timeout=10)
        self.assertGreaterEqual(time.time() - t0, 0.25)
        st = p.stats()
        self.assertEqual(st["cluster.nowhere.init_fetch_timeout"], 1)
        time.sleep(1.0)
        self.assertFalse([e for e in p.events if e["event"] == "ready" and e["name"] == "never"])
        self.assertEqual(p.stats()["rds.never.init_fetch_timeout"], 0)


class MisbehavingControlPlaneTest(H.XdsTestCase):
    def test_garbage_then_recovers(self):
        cp = self.control_plane()
        cp.resources.set(H.cluster_msg("c0"))
        cp.garbage = True
        path = self.sock("xds")
        cp.listen("unix:" + path)
        p = self.probe(H.bootstrap(H.pipe_cluster("xds-grpc", path)))
        p.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
        # Each garbage response ends the stream; the client reconnects with backoff.
        cp.wait_for(lambda: cp.stream_count >= 2, timeout=20)
        self.assertEqual(p.updates(), [])
        cp.garbage = False
        cp.kill_streams()
        p.wait_update(C.TYPE_CDS, timeout=40)
        # The good response is ACKed, unless the stream that carried it was killed first (a
        # reconnect may land between the two lines above): then the next stream resumes with
        # c0 in initial_resource_versions and the control plane owes (and gets) nothing.
        cp.wait_for(lambda: cp.acks(C.TYPE_CDS) or any(
            (r.get("initial_versions") or {}).get("c0") for r in cp.requests))

    def test_hanging_control_plane_is_bounded(self):
        cp = self.control_plane()
        cp.hang = True
        path = self.sock("xds")
        cp.listen("unix:" + path)
        p = self.probe(H.bootstrap(H.pipe_cluster("xds-grpc", path)))
        p.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
        cp.wait_for(lambda: cp.reqs(C.TYPE_CDS))
        time.sleep(0.5)
        self.assertEqual(p.updates(), [])
        self.assertIn("cluster_manager.cds.update_attempt", p.stats())  # still responsive
        t0 = time.time()
        self.assertEqual(p.quit(), 0)
        self.assertLess(time.time() - t0, 15)

    def test_silent_tcp_peer_and_no_peer(self):
        # A TCP listener that accepts and never speaks HTTP/2, and a socket path with no one.
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
        held = []
        stop = threading.Event()

        def acceptor():
            ls.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(ls.accept()[0])
                except OSError:
                    pass
        th = threading.Thread(target=acceptor, daemon=True)
        th.start()
        try:
            port = ls.getsockname()[1]
            p1 = self.probe(H.bootstrap(H.tcp_cluster("xds-grpc", "127.0.0.1", port)))
            p1.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
            p2 = self.probe(H.bootstrap(H.pipe_cluster("xds-grpc", self.sock("nobody"))))
            p2.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
            p2.wait_stat("cluster_manager.cds.update_failure", lambda x: x and x >= 2)
            time.sleep(0.5)
            self.assertEqual(p1.stats()["control_plane.connected_state"], 0)
            for p in (p1, p2):
                t0 = time.time()
                self.assertEqual(p.quit(), 0)
                self.assertLess(time.time() - t0, 15)
        finally:
            stop.set()
            th.join(5)
            for s in held:
                s.close()
            ls.close()


class BootstrapErrorsTest(H.XdsTestCase):
    def fatal(self, b):
        p = H.Probe(self.tmp, b)
        self.probes.append(p)
        ev = p.wait(lambda e: e["event"] in ("started", "fatal"))
        self.assertEqual(ev["event"], "fatal")
        self.probes.remove(p)
        self.assertEqual(p.quit(), 3)
        self.assertFalse([m for m in H.SANITIZER_MARKERS if m in p.log()], p.log())
        return ev["msg"]

    def test_errors_are_clear(self):
        xc = H.pipe_cluster("xds-grpc", self.sock("x"))
        b = H.bootstrap(xc)
        b["dynamic_resources"]["ads_config"]["transport_api_version"] = "V2"
        self.assertIn("transport_api_version V3", self.fatal(b))
        b = H.bootstrap(xc)
        b["dynamic_resources"]["ads_config"]["api_type"] = "REST"
        self.assertIn("REST is not supported", self.fatal(b))
        b = H.bootstrap(xc)
        b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"][
            "cluster_name"] = "nope"
        self.assertIn("'nope': no such static cluster", self.fatal(b))
        b = H.bootstrap(dict(xc, type="EDS"))
        self.assertIn("cannot carry xDS", self.fatal(b))
        b = H.bootstrap(xc)
        del b["dynamic_resources"]["ads_config"]
        self.assertIn("uses ADS but dynamic_resources has no ads_config", self.fatal(b))
        b = H.bootstrap(xc)
        del b["dynamic_resources"]
        self.assertEqual(self.fatal(b), "no xDS")


class FixtureReplayTest(H.XdsTestCase):
    """Every dynamic resource of the real sidecar dumps decodes and is delivered (the fake
    apply ACKs all): the decode path accepts everything istiod sent."""

    def replay(self, dump, api_type):
        cp = self.control_plane()
        counts = cp.resources.load_config_dump(os.path.join(
            H.SHARED, "fixtures", "istio", "configdump", dump))
        self.assertTrue(counts)
        path = self.sock("xds-" + api_type)
        cp.listen("unix:" + path)
        p = self.probe(H.bootstrap(H.pipe_cluster("xds-grpc", path), api_type=api_type))
        p.sub("cds", prefix="cluster_manager.cds.", wildcard=True)
        p.sub("lds", prefix="listener_manager.lds.", wildcard=True)
        for t, alias in ((C.TYPE_EDS, "eds"), (C.TYPE_RDS, "rds"), (C.TYPE_SDS, "sds")):
            names = cp.resources.names(t)
            if names:
                p.sub(alias, names, prefix="%s.{}." % alias)
        for t in counts:
            want = set(cp.resources.names(t))

            def received(t=t):
                got = set()
                for u in p.updates(t):
                    self.assertEqual(u["result"], "ack")
                    got.update(r["name"] for r in u["resources"])
                return got
            end = time.time() + 60
            while received() != want and time.time() < end:
                time.sleep(0.1)
            self.assertEqual(received(), want, t)
            cp.wait_for(lambda t=t: cp.acks(t))
        self.assertEqual(cp.nacks(), [])

    def test_deathstarbench_delta(self):
        self.replay("deathstarbench_geo_sidecar_1.18.2_config_dump.json", "DELTA_GRPC")

    def test_ossm_sotw(self):
        self.replay("ossm_hello-openshift_sidecar_1.20.8_config-dump.json", "GRPC")


if __name__ == "__main__":
    H.main()

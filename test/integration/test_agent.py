"""The pilot-agent stand-in (istio-integration/agent, issue 7 point 3).

- Golden rendering: Istio's bootstrap template + each *.proxycfg of
  ../shared/fixtures/istio/bootstrap renders to its *_golden.json (compared as parsed JSON), with
  the inputs Istio's own test (pkg/bootstrap TestGolden) uses; plus the Go text/template subset.
- One pod (needs root: a fresh network namespace given to the agent, because the Istio
  bootstrap binds the fixed ports 15000/15001/15006/15021/15090): msm-proxy started by the
  agent with pilot-agent's command line as uid 1337 from the rendered Istio bootstrap; readiness
  only after CDS and LDS (LDS held back first); 15021 -> agent's /healthz/ready; 15090
  /stats/prometheus through the proxy and 15020's merged metrics; the SDS workload certificate
  presented on the inbound TLS listener, rotated on demand; a control-plane restart that leaves
  traffic alone; and pilot-agent's shutdown (graceful inbound drain, wait, SIGKILL), also with
  EXIT_ON_ZERO_ACTIVE_CONNECTIONS (waits for the last connection).
"""
import itertools
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness as H
import netns_pods as N

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "istio-integration"))

from agent import Agent, MeshCA  # noqa: E402
from agent import bootstrap as B  # noqa: E402
from agent.gotemplate import Template, TemplateError  # noqa: E402

ANY = "type.googleapis.com/"
TYPE_LDS = ANY + "envoy.config.listener.v3.Listener"
TYPE_CDS = ANY + "envoy.config.cluster.v3.Cluster"
ECHO_PORT = 9999
POD_IP = "10.78.0.2"


def bootstrap_dir():
    return os.path.join(H.SHARED, "fixtures", "istio", "bootstrap")


# ---- golden rendering -----------------------------------------------------------------------

UP = ("upstream_rq_1xx,upstream_rq_2xx,upstream_rq_3xx,upstream_rq_4xx,upstream_rq_5xx,"
      "upstream_rq_time,upstream_cx_tx_bytes_total,upstream_cx_rx_bytes_total,upstream_cx_total")
DOWN = ("downstream_rq_1xx,downstream_rq_2xx,downstream_rq_3xx,downstream_rq_4xx,"
        "downstream_rq_5xx,downstream_rq_time,downstream_cx_tx_bytes_total,"
        "downstream_cx_rx_bytes_total,downstream_cx_total")
RUNNING_ENV = {
    "ISTIO_META_ISTIO_PROXY_SHA": "istio-proxy:sha",
    "ISTIO_META_INTERCEPTION_MODE": "REDIRECT",
    "ISTIO_META_ISTIO_VERSION": "release-3.1",
    "ISTIO_META_POD_NAME": "svc-0-0-0-6944fb884d-4pgx8",
    "POD_NAME": "svc-0-0-0-6944fb884d-4pgx8",
    "POD_NAMESPACE": "test",
    "INSTANCE_IP": "10.10.10.1",
    "ISTIO_METAJSON_LABELS": '{"version": "v1alpha1", "app": "test", '
                             '"istio-locality":"regionA.zoneB.sub_zoneC"}',
}
# (environment, annotations) of each case in Istio's pkg/bootstrap/instance_test.go TestGolden
GOLDEN_CASES = {
    "default": ({}, None),
    "all": ({}, None),
    "runningsds": (RUNNING_ENV, {"istio.io/insecurepath": "{\"paths\":[\"/metrics\",\"/live\"]}"}),
    "stats_inclusion": ({}, {
        "sidecar.istio.io/statsInclusionPrefixes": "prefix1,prefix2,http.{pod_ip}_",
        "sidecar.istio.io/statsInclusionSuffixes": "suffix1,suffix2," + UP + "," + DOWN,
        "sidecar.istio.io/statsInclusionRegexps":
            "http.[0-9]*\\.[0-9]*\\.[0-9]*\\.[0-9]*_8080.downstream_rq_time",
        "sidecar.istio.io/extraStatTags": "dlp_status,dlp_error",
        "sidecar.istio.io/statsHistogramBuckets":
            '{"istio":[1,5,10,50,100,500,1000,5000,10000],'
            '"envoy":[1,5,10,25,50,100,250,500,1000,2500,5000,10000]}'}),
}


def render_golden_case(base, tmpdir):
    """The bootstrap text for <base> with Istio's test inputs (TestGolden): node id
    sidecar~1.2.3.4~foo~bar, four instance IPs (one duplicated), the pilot SAN, outlier log
    /dev/stdout, ports 15090/15021, socket file test.sock, version binary-1.0, configPath
    /tmp/bootstrap/<base> (the test's tmp dir after its /tmp normalisation), customConfigFile
    envoy_bootstrap.json (same), statusPort 15020 when unset, an empty proxyMetadata map."""
    env, annos = GOLDEN_CASES[base]
    with open(os.path.join(bootstrap_dir(), base + ".proxycfg")) as f:
        pc = B.load_proxy_config(f.read())
    pc["config_path"] = "/tmp/bootstrap/" + base
    pc["custom_config_file"] = "envoy_bootstrap.json"
    pc.setdefault("status_port", 15020)
    pc.setdefault("proxy_metadata", {})
    envs = ["ISTIO_METAJSON_LABELS={}"]
    if annos is not None:
        envs.append("ISTIO_METAJSON_ANNOTATIONS=" + json.dumps(annos, separators=(",", ":")))
    envs += ["%s=%s" % kv for kv in env.items()]
    afile = os.path.join(tmpdir, base + ".annotations")
    with open(afile, "w") as f:
        f.write(B.format_downward_api(annos or {}))
    node = B.get_node_metadata(
        "sidecar~1.2.3.4~foo~bar", envs, pc,
        instance_ips=["10.3.3.3", "10.4.4.4", "10.5.5.5", "10.6.6.6", "10.4.4.4"],
        pilot_san=["spiffe://cluster.local/ns/istio-system/sa/istio-pilot-service-account"],
        outlier_log_path="/dev/stdout", workload_identity_socket_file="test.sock",
        istio_version="binary-1.0", annotations_file=afile,
        labels_file=os.path.join(tmpdir, "no-such-labels-file"))
    with open(os.path.join(bootstrap_dir(), "envoy_bootstrap.json")) as f:
        text = B.render(f.read(), node)
    # Istio's test rewrites the xds-grpc pipe path (".../XDS") to /tmp/XDS before comparing.
    return re.sub(r'"path": ".*/XDS"', '"path": "/tmp/XDS"', text)


class GoldenTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="msmagent-golden-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_goldens(self):
        for base in GOLDEN_CASES:
            with self.subTest(base=base):
                got = json.loads(render_golden_case(base, self.tmp))
                with open(os.path.join(bootstrap_dir(), base + "_golden.json")) as f:
                    want = json.load(f)
                self.assertEqual(got, want)

    def test_golden_fails_on_a_changed_input(self):
        # the comparison can fail: a different proxy admin port changes the rendered text
        text = render_golden_case("default", self.tmp)
        got = json.loads(text.replace("15000", "15005"))
        with open(os.path.join(bootstrap_dir(), "default_golden.json")) as f:
            self.assertNotEqual(got, json.load(f))

    def test_template_subset(self):
        t = Template('a {{- if .x }} X {{- else if .y -}} Y {{ else }}N{{ end -}} |'
                     '{{ range $i, $v := .l }}{{ $i }}={{ $v }};{{ end }}|'
                     '{{ js .s }}|{{ toJson .m }}|{{ or .none .y }}|{{ and .x .y }}|'
                     '{{ .missing }}|{{ printf "%s-%d" "p" 3 }}|{{ .n }}')
        out = t.execute({"x": False, "y": "yy", "l": ["p", "q"], "s": 'a\\b"<=',
                         "m": {"k": [1.0, 2.5]}, "n": 7})
        self.assertEqual(out, 'aY |0=p;1=q;|a\\\\b\\"\\u003C\\u003D|{"k":[1,2.5]}|yy|false|'
                              '<no value>|p-3|7')
        with self.assertRaises(TemplateError):
            Template("{{ if .x }}unterminated")
        with self.assertRaises(TemplateError):
            Template("{{ nosuchfunc .x }}").execute({"x": 1})

    def test_textproto_and_proxy_config_json(self):
        pc = B.parse_textproto('a_b: "x" # comment\nd: {seconds: 5}\nl: ["p", "q"]\n'
                               'm { k: 1 }\nm2: { mode: NONE }\n')
        self.assertEqual(pc, {"a_b": "x", "d": {"seconds": 5}, "l": ["p", "q"], "m": {"k": 1},
                              "m2": {"mode": "NONE"}})
        self.assertEqual(B.proxy_config_json(pc),
                         {"aB": "x", "d": "5s", "l": ["p", "q"], "m": {"k": 1}})


# ---- one pod ---------------------------------------------------------------------------------

def tcp_proxy(prefix, cluster):
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": ANY + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": prefix, "cluster": cluster}}


def sds_ref(name):
    # istiod's SDS config source (contract 3.2)
    return {"name": name, "sds_config": {
        "api_config_source": {"api_type": "GRPC", "set_node_on_first_message_only": True,
                              "transport_api_version": "V3",
                              "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]},
        "initial_fetch_timeout": "0s", "resource_api_version": "V3"}}


def static_cluster(name, port):
    return {"@type": ANY + "envoy.config.cluster.v3.Cluster", "name": name, "type": "STATIC",
            "connect_timeout": "1s", "alt_stat_name": name + ";",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                             "port_value": port}}}}]}]}}


def listener(name, port, direction, filters, tls=False):
    lst = {"@type": ANY + "envoy.config.listener.v3.Listener", "name": name,
           "traffic_direction": direction,
           "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
           "filter_chains": [{"filters": filters}]}
    if tls:
        lst["filter_chains"][0]["transport_socket"] = {
            "name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": ANY + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": True,
                "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [sds_ref("default")],
                    "combined_validation_context": {
                        "default_validation_context": {
                            "match_subject_alt_names": [{"prefix": "spiffe://cluster.local/"}]},
                        "validation_context_sds_secret_config": sds_ref("ROOTCA")}}}}
    return lst


def config_dump(listeners=True, extra_listener=False):
    """A config_dump dict (the shape istiogen produces): clusters, and the inbound (mTLS with
    SDS secrets) and outbound listeners unless <listeners> is False."""
    clusters = [static_cluster("inbound|9999||", ECHO_PORT),
                static_cluster("outbound|9999||echo.ns.svc.cluster.local", ECHO_PORT)]
    cfgs = [{"@type": ANY + "envoy.admin.v3.ClustersConfigDump",
             "dynamic_active_clusters": [{"cluster": c} for c in clusters]}]
    if listeners:
        ls = [listener("virtualInbound", 15006, "INBOUND",
                       [tcp_proxy("inbound|9999||", "inbound|9999||")], tls=True),
              listener("virtualOutbound", 15001, "OUTBOUND",
                       [tcp_proxy("outbound|9999||echo.ns.svc.cluster.local",
                                  "outbound|9999||echo.ns.svc.cluster.local")])]
        if extra_listener:
            ls.append(listener("0.0.0.0_9100", 9100, "OUTBOUND",
                               [tcp_proxy("extra", "outbound|9999||echo.ns.svc.cluster.local")]))
        cfgs.append({"@type": ANY + "envoy.admin.v3.ListenersConfigDump",
                     "dynamic_listeners": [{"name": x["name"], "active_state": {"listener": x}}
                                           for x in ls]})
    return {"configs": cfgs}


def app_echo(agent):
    """The application: an echo server on 127.0.0.1:ECHO_PORT inside the agent's pod."""
    return N.IdServer(agent.in_netns, ECHO_PORT, "echo", ip="127.0.0.1", greet=False)


def make_pod_netns():
    """A fresh network namespace with lo up and the pod's address on a veth (as a pod has)."""
    ns = N.Netns("msmag%d_%d" % (os.getpid(), next(_NS_IDS)))
    try:
        ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        ns.ip("addr", "add", POD_IP + "/24", "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")
        ns.ip("link", "set", "eth0p", "up")
    except RuntimeError:
        ns.delete()
        raise
    return ns.name


_NS_IDS = itertools.count(1)


@unittest.skipUnless(os.geteuid() == 0, "needs root (network namespace, uid 1337)")
class PodTest(unittest.TestCase):
    """One pod's life, in order (the test methods are numbered). The pod is a fresh network
    namespace given to the agent (Agent(netns=...)): the proxy, the status server and every
    client socket of the test live there, the XDS/SDS unix sockets in the run directory."""

    @classmethod
    def setUpClass(cls):
        cls.ns = make_pod_netns()
        cls.tmp = tempfile.mkdtemp(prefix="msmagent-")
        cls.agent = cls.echo = None
        try:
            cls._start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _start(cls):
        os.chmod(cls.tmp, 0o755)
        cls.ca = MeshCA()
        cls.agent = Agent(
            os.path.join(cls.tmp, "pod"), H.BINARY, pod="cam-v1-0", namespace="media",
            service_account="camera", pod_ip=POD_IP,
            labels={"app": "camera", "version": "v1"},
            annotations={"sidecar.istio.io/statsInclusionPrefixes": "tcp."},
            xds_dump=config_dump(listeners=False), ca=cls.ca, uid=1337, gid=1337,
            netns=cls.ns,
            drain_duration=1, termination_drain_duration=3, log_level="info",
            template=os.path.join(bootstrap_dir(), "envoy_bootstrap.json"))
        cls.echo = app_echo(cls.agent)
        cls.agent.start()
        cls.client_pem = os.path.join(cls.tmp, "client.pem")
        cls.client_key = os.path.join(cls.tmp, "client.key")
        cert, key = cls.ca.issue("media", "player")
        with open(cls.client_pem, "wb") as f:
            f.write(cert)
        with open(cls.client_key, "wb") as f:
            f.write(key)

    @classmethod
    def tearDownClass(cls):
        if cls.agent:
            cls.agent.close()
            if os.environ.get("MSM_IT_VERBOSE"):
                sys.stderr.write(cls.agent.log_tail(6000))
        if cls.echo:
            cls.echo.stop()
        subprocess.run(["ip", "netns", "del", cls.ns])
        shutil.rmtree(cls.tmp, True)

    # ---- helpers --------------------------------------------------------------------------

    def connect(self, port, host="127.0.0.1"):
        return self.agent.in_netns(lambda: socket.create_connection((host, port), timeout=3))

    def echo_through(self, port, data=b"hello\n"):
        s = self.connect(port)
        with s:
            s.sendall(data)
            got = b""
            while len(got) < len(data):
                d = s.recv(4096)
                if not d:
                    break
                got += d
        return got

    def tls_peer(self):
        """(serial hex, SANs) of the certificate the inbound listener presents to a mesh
        client (mTLS with a certificate of the same CA)."""
        from cryptography import x509
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cadata=self.ca.root_pem.decode())
        ctx.load_cert_chain(self.client_pem, self.client_key)
        raw = self.connect(15006, POD_IP)
        with ctx.wrap_socket(raw) as s:
            der = s.getpeercert(binary_form=True)
            s.sendall(b"tls-echo\n")
            self.assertEqual(H.recv_line(s), b"tls-echo\n")
        c = x509.load_der_x509_certificate(der)
        sans = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return "%x" % c.serial_number, [u for u in sans.get_values_for_type(
            x509.UniformResourceIdentifier)]

    def probe(self, port, timeout=3.0):
        """Status of GET /healthz/ready on <port>; None when nothing answers."""
        try:
            return self.agent.http(port, "/healthz/ready", timeout=timeout)[0]
        except OSError:
            return None

    def wait(self, pred, timeout=10.0, what="condition"):
        end = time.time() + timeout
        while time.time() < end:
            v = pred()
            if v:
                return v
            time.sleep(0.1)
        self.fail("timed out waiting for " + what)

    # ---- the pod's life -------------------------------------------------------------------

    def test_01_command_line_uid_and_bootstrap(self):
        a = self.agent
        self.assertEqual(a.proxy_argv[1:], [
            "-c", "etc/istio/proxy/envoy-rev.json", "--drain-time-s", "1",
            "--drain-strategy", "immediate", "--local-address-ip-version", "v4",
            "--file-flush-interval-msec", "1000", "--disable-hot-restart",
            "--allow-unknown-static-fields", "-l", "info", "--component-log-level",
            "misc:error", "--concurrency", "2"])
        with open("/proc/%d/cmdline" % a.proc.pid, "rb") as f:
            self.assertEqual(f.read().split(b"\0")[:-1], [x.encode() for x in a.proxy_argv])
        with open("/proc/%d/status" % a.proc.pid) as f:
            status = f.read()
        self.assertRegex(status, r"\nUid:\s+1337\s+1337\s+1337\s+1337\n")
        self.assertRegex(status, r"\nGid:\s+1337\s+1337\s+1337\s+1337\n")
        self.assertEqual(os.readlink("/proc/%d/cwd" % a.proc.pid), a.run_dir)
        # the proxy runs from Istio's rendered template: node and metadata as a pod's
        node = a.bootstrap["node"]
        self.assertEqual(node["id"], "sidecar~%s~cam-v1-0.media~media.svc.cluster.local"
                         % POD_IP)
        self.assertEqual(node["cluster"], "camera.media")
        md = node["metadata"]
        self.assertEqual(md["LABELS"], {"app": "camera", "version": "v1"})
        self.assertEqual(md["NAMESPACE"], "media")
        self.assertEqual(md["SERVICE_ACCOUNT"], "camera")
        self.assertEqual(md["INSTANCE_IPS"], POD_IP)
        self.assertIn({"prefix": "tcp."},
                      a.bootstrap["stats_config"]["stats_matcher"]["inclusion_list"]["patterns"])
        sds = [c for c in a.bootstrap["static_resources"]["clusters"] if c["name"] == "sds-grpc"]
        self.assertEqual(sds[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
                         ["endpoint"]["address"]["pipe"]["path"],
                         "./var/run/secrets/workload-spiffe-uds/socket")
        # --version as uid 1337 too
        r = subprocess.run([H.BINARY, "--version"], capture_output=True, timeout=10,
                           preexec_fn=lambda: (os.setgroups([]), os.setgid(1337),
                                               os.setuid(1337)))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"version", r.stdout + r.stderr)

    def test_02_ready_only_after_cds_and_lds(self):
        a = self.agent
        # CDS is served and ACKed, LDS is held back (no listener yet): not ready, repeatedly
        a.xds.wait_for(lambda: a.xds.acks(TYPE_CDS), timeout=15)
        time.sleep(0.5)
        for _ in range(5):
            ok, why = a.ready()
            self.assertFalse(ok)
            self.assertIn("config not fully received", why)
            self.assertEqual(a.http(a.status_port, "/healthz/ready")[0], 503)
            # via the proxy: as in Envoy, listeners accept only once workers start (after
            # the initial CDS+LDS), so the kubelet's probe gets no answer (or a 503)
            self.assertIn(self.probe(15021, timeout=0.5), (None, 503))
            time.sleep(0.2)
        self.assertFalse(a.xds.acks(TYPE_LDS))
        # release LDS
        a.push(config_dump())
        a.wait_ready(timeout=15)
        self.assertTrue(a.xds.acks(TYPE_LDS))
        self.assertEqual(a.http(15021, "/healthz/ready")[0], 200)
        self.assertEqual(a.http(a.status_port, "/healthz/ready")[0], 200)
        self.assertEqual(self.echo_through(15001), b"hello\n")

    def test_03_prometheus(self):
        a = self.agent
        code, body = a.http(15090, "/stats/prometheus")
        self.assertEqual(code, 200)
        self.assertIn(b'envoy_cluster_upstream_cx_total{cluster_name="xds-grpc"}', body)
        self.assertTrue(re.search(rb"\nenvoy_server_state(\{\})? 0\n", body), "server_state")
        code, merged = a.http(a.status_port, "/stats/prometheus")
        self.assertEqual(code, 200)
        self.assertRegex(merged, rb"istio_agent_startup_duration_seconds [0-9.e+-]+\n")
        self.assertIn(b"envoy_server_state", merged)

    def test_04_sds_certificate_and_rotation(self):
        a = self.agent
        serial, sans = self.wait(lambda: self._try_tls(), what="TLS on 15006")
        self.assertEqual(sans, ["spiffe://cluster.local/ns/media/sa/camera"])
        self.assertEqual(serial, a.cert_serials[-1])
        # the SDS secrets as istioctl proxy-config secret reads them (/certs is empty in
        # msm-proxy: nothing registers a certificate provider, see the README)
        self.assertEqual(self.secrets(), {"default", "ROOTCA"})
        old = serial
        a.rotate_cert()
        new = a.cert_serials[-1]
        self.assertNotEqual(new, old)
        self.wait(lambda: (self._try_tls() or ("",))[0] == new, what="rotated certificate")
        self.assertIn(b"istio_agent_cert_rotations_total 1",
                      a.http(a.status_port, "/stats/prometheus")[1])

    def secrets(self):
        _, body = self.agent.admin("/config_dump?mask=dynamic_active_secrets")
        doc = json.loads(body)
        names = set()
        for c in doc.get("configs", []):
            for sec in c.get("dynamic_active_secrets", []):
                names.add(sec.get("name"))
        return names

    def _try_tls(self):
        try:
            return self.tls_peer()
        except (OSError, ssl.SSLError):
            return None

    def test_05_control_plane_restart_keeps_serving(self):
        a = self.agent
        streams = a.xds.stream_count
        s = self.connect(15001)
        self.addCleanup(s.close)
        s.sendall(b"before\n")
        self.assertEqual(H.recv_line(s), b"before\n")
        a.xds.stop()
        a.sds.stop()
        self.assertFalse(os.path.exists(a.xds_socket) and self._accepts(a.xds_socket))
        time.sleep(1.0)
        # control plane down: the proxy still serves, old and new connections
        s.sendall(b"during\n")
        self.assertEqual(H.recv_line(s), b"during\n")
        self.assertEqual(self.echo_through(15001, b"new\n"), b"new\n")
        self.assertEqual(a.http(15021, "/healthz/ready")[0], 200)
        a.xds.restart()
        a.sds.restart()
        a._open_sockets()
        a.xds.wait_for(lambda: a.xds.stream_count > streams, timeout=20)
        s.sendall(b"after\n")
        self.assertEqual(H.recv_line(s), b"after\n")
        # the new stream carries config: a new listener appears
        a.push(config_dump(extra_listener=True))
        self.wait(lambda: self._echo_ok(9100), what="listener pushed after the restart")
        # and the new SDS stream carries a rotation
        a.rotate_cert()
        self.wait(lambda: (self._try_tls() or ("",))[0] == a.cert_serials[-1],
                  timeout=15, what="certificate pushed after the restart")
        # restart_control_plane() does the same in one call
        streams = a.xds.stream_count
        a.restart_control_plane(down_for=0.3)
        a.xds.wait_for(lambda: a.xds.stream_count > streams, timeout=20)
        self.assertEqual(self.echo_through(15001, b"again\n"), b"again\n")

    @staticmethod
    def _accepts(path):
        c = socket.socket(socket.AF_UNIX)
        try:
            c.connect(path)
            return True
        except OSError:
            return False
        finally:
            c.close()

    def _echo_ok(self, port):
        try:
            return self.echo_through(port) == b"hello\n"
        except OSError:
            return False

    def test_06_shutdown_drains_inbound_then_sigkill(self):
        a = self.agent
        self.assertIsNotNone(self._try_tls())
        inflight = self.connect(15001)
        self.addCleanup(inflight.close)
        inflight.sendall(b"x\n")
        self.assertEqual(H.recv_line(inflight), b"x\n")
        t0 = time.time()
        th = threading.Thread(target=a.shutdown)
        th.start()
        # draining: server.state 1, readiness off; after --drain-time-s (1 s) the inbound
        # listener is closed while outbound still accepts and in-flight sessions go on
        self.wait(lambda: a.stats("^server\\.state$").get("server.state") == 1, timeout=2,
                  what="DRAINING")
        self.assertEqual(a.http(15021, "/healthz/ready")[0], 503)
        self.wait(lambda: self._try_tls() is None, timeout=2.5, what="inbound listener closed")
        self.assertTrue(a.proc.poll() is None)
        self.assertEqual(self.echo_through(15001, b"out\n"), b"out\n")
        inflight.sendall(b"y\n")
        self.assertEqual(H.recv_line(inflight), b"y\n")
        th.join(10)
        elapsed = time.time() - t0
        self.assertEqual(a.returncode, -9)  # SIGKILL, as pilot-agent
        self.assertGreaterEqual(elapsed, 2.9)
        self.assertLess(elapsed, 6)
        whats = [w for _, w in a.events]
        self.assertLess(whats.index("drain"), whats.index("SIGKILL"))


@unittest.skipUnless(os.geteuid() == 0, "needs root (network namespace, uid 1337)")
class ExitOnZeroActiveConnectionsTest(unittest.TestCase):
    """EXIT_ON_ZERO_ACTIVE_CONNECTIONS: after the drain and minDrainDuration the agent waits
    while a listener still has an active downstream connection, and SIGKILLs once none is
    left."""

    def setUp(self):
        self.ns = make_pod_netns()
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.ns])
        self.tmp = tempfile.mkdtemp(prefix="msmagent-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.agent = Agent(
            os.path.join(self.tmp, "pod"), H.BINARY, pod="cam-v2-0", namespace="media",
            service_account="camera", pod_ip=POD_IP, labels={"app": "camera"},
            xds_dump=config_dump(), netns=self.ns, drain_duration=30,
            exit_on_zero_active_connections=True, min_drain_duration=0.5,
            template=os.path.join(bootstrap_dir(), "envoy_bootstrap.json"))
        self.addCleanup(self.agent.close)
        self.echo = app_echo(self.agent)
        self.addCleanup(self.echo.stop)

    def test_waits_for_the_last_connection(self):
        a = self.agent
        a.start()
        a.wait_ready(timeout=20)
        self.assertEqual(a.bootstrap["node"]["metadata"]["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"],
                         "true")
        self.assertIn({"suffix": "downstream_cx_active"}, a.bootstrap["stats_config"]
                      ["stats_matcher"]["inclusion_list"]["patterns"])
        c = a.in_netns(lambda: socket.create_connection(("127.0.0.1", 15001), timeout=3))
        self.addCleanup(c.close)
        c.sendall(b"a\n")
        self.assertEqual(H.recv_line(c), b"a\n")
        self.assertEqual(a.active_connections(), 1)
        th = threading.Thread(target=a.shutdown)
        th.start()
        time.sleep(3.0)  # minDrainDuration passed, the connection is still open
        self.assertIsNone(a.proc.poll())
        c.sendall(b"b\n")
        self.assertEqual(H.recv_line(c), b"b\n")
        t0 = time.time()
        c.close()
        th.join(10)
        self.assertEqual(a.returncode, -9)
        self.assertLess(time.time() - t0, 5.0)


if __name__ == "__main__":
    H.main()

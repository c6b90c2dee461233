"""xDS apply benchmark: how long msm-proxy takes, and how much memory it needs, to apply N
clusters with their endpoints plus L listeners pushed in one response each, and a 1-resource
change on top of that (Delta: only the changed resource is sent).

Run by bench/xds/run.sh; by hand:

    /usr/bin/python3 bench/xds/xds_bench.py --binary build-bench/msm-proxy \
        [--sizes 1000,10000,50000] [--listeners 1000] [--reps 3] [--api delta,sotw]
        [--change-on 10000] [--change-reps 5] [--endpoints 3] [--raw FILE] [--out FILE.md]

Resources have Istio's shape (as in ../shared/fixtures/istio/configdump): EDS clusters
"outbound|8080||svcN.nsM.svc.cluster.local" with Istio metadata, metadata exchange, and the
tlsMode-istio / tlsMode-disabled transport_socket_matches whose TLS context takes its
certificate and root CA from SDS ("default", "ROOTCA" through sds-grpc); one
ClusterLoadAssignment per cluster with --endpoints endpoints (istio workload metadata and the
tlsMode label); outbound VIP_PORT listeners (bind_to_port false, istio.stats + tcp_proxy with
Istio's access log). The test control plane (test/controlplane/controlplane.py) serves them over
Delta or SotW ADS and SDS on a unix socket.

One repetition = one fresh proxy: it starts LIVE on a 1-cluster / 1-listener baseline; the N
clusters, N assignments and L listeners are added and pushed at once (CDS and LDS responses;
EDS follows when the proxy subscribes to the new clusters' assignments, as with istiod). What is
recorded (CLOCK_MONOTONIC unless said):

- sent->ACK per type: from the control plane handing the response to gRPC to the proxy's
  ACK arriving (a NACK fails the run). "proxy time" is the union of these intervals (the time
  a response was with the proxy); "end to end" is push -> last ACK, and also includes the
  Python control plane building the responses and the EDS request round trip.
- the proxy's own view: cluster_manager.cds.update_time / listener_manager.lds.update_time
  (when it finished applying, epoch ms) against the send time, and the gauges
  cluster_manager.active_clusters / warming_clusters, listener_manager.total_listeners_active,
  polled until every cluster is active and nothing warms;
- CPU seconds the proxy used (utime+stime) over the apply;
- stalls: max /ready latency (main thread) and max 64 B echo RTT through a static listener
  (workers) during the apply, from bench/xds/probe.py in its own process; baseline p50 before;
- memory: VmHWM (peak RSS) and VmRSS after the apply, from /proc/PID/status;
- the whole machine's busy % during the apply (the machine is shared), as bench/run.sh does.

Medians over --reps repetitions go to the markdown table; every repetition's raw record goes to
--raw (JSON lines). This is a benchmark, not a test: it fails only when it cannot run (or the
proxy NACKs / never gets all clusters active)."""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
sys.path.insert(0, os.path.join(ROOT, "test", "controlplane"))
import harness as H  # noqa: E402
import controlplane as C  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PY = "/usr/bin/python3"
SDS = {"api_config_source": {"api_type": "GRPC", "grpc_services": [
    {"envoy_grpc": {"cluster_name": "sds-grpc"}}], "set_node_on_first_message_only": True,
    "transport_api_version": "V3"}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
ALOG_FMT = ("[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
            "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% "
            "%CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" "
            "%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "
            "\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" "
            "\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% "
            "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
            "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n")
ALOG = {"name": "envoy.access_loggers.file", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "path": "/dev/stdout", "log_format": {"text_format_source": {"inline_string": ALOG_FMT}}}}
PORT = 8080


# ---- resources in Istio's shape ---------------------------------------------------------------

def svc(i, base):
    ns = "ns%d" % (i % 64)
    host = "%s%d.%s.svc.cluster.local" % (base, i, ns)
    return "outbound|%d||%s" % (PORT, host), host, "%s%d" % (base, i), ns


class Gen:
    """Serialized resources, made from one parsed template per type (json_format is too slow
    for 50k messages)."""

    def __init__(self, types, endpoints, tls=True):
        self.t = types
        self.endpoints = endpoints
        self.tls = tls
        name, host, short, ns = svc(0, "tmpl")
        self.cluster_tmpl = types.parse_json("envoy.config.cluster.v3.Cluster", {
            "name": name, "type": "EDS",
            "eds_cluster_config": {"eds_config": {"ads": {}, "initial_fetch_timeout": "0s",
                                                  "resource_api_version": "V3"},
                                   "service_name": name},
            "connect_timeout": "10s", "lb_policy": "LEAST_REQUEST",
            "circuit_breakers": {"thresholds": [{
                "max_connections": 4294967295, "max_pending_requests": 4294967295,
                "max_requests": 4294967295, "max_retries": 4294967295,
                "track_remaining": True}]},
            "metadata": {"filter_metadata": {"istio": {"services": [
                {"name": short, "host": host, "namespace": ns}]}}},
            "common_lb_config": {"locality_weighted_lb_config": {}},
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "use_downstream_protocol_config": {"http_protocol_options": {},
                                                       "http2_protocol_options": {}}}},
            "filters": [{"name": "istio.metadata_exchange", "typed_config": {
                "@type": "type.googleapis.com/envoy.tcp.metadataexchange.config."
                         "MetadataExchange", "protocol": "istio-peer-exchange"}}],
            "transport_socket_matches": [
                {"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
                 "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                              "UpstreamTlsContext"}}},
                {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
                    "name": "envoy.transport_sockets.raw_buffer", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets."
                                 "raw_buffer.v3.RawBuffer"}}}]})
        self.tls_tmpl = types.parse_json(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", {
                "common_tls_context": {
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                                   "tls_maximum_protocol_version": "TLSv1_3"},
                    "alpn_protocols": ["istio-peer-exchange", "istio"],
                    "tls_certificate_sds_secret_configs": [{"name": "default",
                                                            "sds_config": SDS}],
                    "combined_validation_context": {
                        "default_validation_context": {"match_subject_alt_names": [
                            {"exact": "spiffe://cluster.local/ns/%s/sa/default" % ns}]},
                        "validation_context_sds_secret_config": {"name": "ROOTCA",
                                                                 "sds_config": SDS}}},
                "sni": "outbound_.%d_._.%s" % (PORT, host)})
        self.cla_tmpl = types.parse_json("envoy.config.endpoint.v3.ClusterLoadAssignment", {
            "cluster_name": name,
            "endpoints": [{"locality": {"region": "eu-west-1", "zone": "eu-west-1a"},
                           "lb_endpoints": [{
                               "endpoint": {"address": {"socket_address": {
                                   "address": "10.0.0.1", "port_value": PORT}}},
                               "health_status": "HEALTHY",
                               "metadata": {"filter_metadata": {
                                   "envoy.transport_socket_match": {"tlsMode": "istio"},
                                   "istio": {"workload": "%s;%s;%s;v1;Kubernetes"
                                             % (short, ns, short)}}},
                               "load_balancing_weight": 1} for _ in range(endpoints)],
                           "load_balancing_weight": endpoints}],
            "policy": {"overprovisioning_factor": 140}})
        self.listener_tmpl = types.parse_json("envoy.config.listener.v3.Listener", {
            "name": "10.96.0.1_%d" % PORT,
            "address": {"socket_address": {"address": "10.96.0.1", "port_value": PORT}},
            "filter_chains": [{"filters": [
                {"name": "istio.stats", "typed_config": {
                    "@type": "type.googleapis.com/stats.PluginConfig"}},
                {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                    "@type": H.TCP_PROXY_TYPE, "stat_prefix": name, "cluster": name,
                    "access_log": [ALOG]}}]}],
            "traffic_direction": "OUTBOUND", "bind_to_port": False,
            "access_log": [dict(ALOG, filter={"response_flag_filter": {"flags": ["NR"]}})]})
        self.tp_cls = types.cls("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy")

    def cluster(self, i, base="svc", timeout_s=10):
        name, host, short, ns = svc(i, base)
        c = self.t.new("envoy.config.cluster.v3.Cluster")
        c.CopyFrom(self.cluster_tmpl)
        c.name = name
        c.eds_cluster_config.service_name = name
        c.connect_timeout.seconds = timeout_s
        s = c.metadata.filter_metadata["istio"]["services"][0]
        s["name"] = short
        s["host"] = host
        s["namespace"] = ns
        tls = self.t.new("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")
        tls.CopyFrom(self.tls_tmpl)
        tls.sni = "outbound_.%d_._.%s" % (PORT, host)
        tls.common_tls_context.combined_validation_context.default_validation_context \
            .match_subject_alt_names[0].exact = "spiffe://cluster.local/ns/%s/sa/default" % ns
        c.transport_socket_matches[0].transport_socket.typed_config.Pack(tls)
        if not self.tls:
            c.ClearField("transport_socket_matches")
        return C.TYPE_CDS, name, C.TYPE_CDS, c.SerializeToString()

    def cla(self, i, base="svc", shift=0):
        name, _, short, ns = svc(i, base)
        m = self.t.new("envoy.config.endpoint.v3.ClusterLoadAssignment")
        m.CopyFrom(self.cla_tmpl)
        m.cluster_name = name
        loc = m.endpoints[0]
        wl = "%s;%s;%s;v1;Kubernetes" % (short, ns, short)
        for k, lb in enumerate(loc.lb_endpoints):
            n = i * self.endpoints + k + shift
            lb.endpoint.address.socket_address.address = "10.%d.%d.%d" % (
                (n >> 16) & 255, (n >> 8) & 255, n & 255)
            lb.metadata.filter_metadata["istio"]["workload"] = wl
        return C.TYPE_EDS, name, C.TYPE_EDS, m.SerializeToString()

    def listener(self, j, cluster_index, base="svc", prefix=None):
        cname = svc(cluster_index, base)[0]
        ip = "10.%d.%d.%d" % (96 + ((j >> 16) & 15), (j >> 8) & 255, j & 255)
        m = self.t.new("envoy.config.listener.v3.Listener")
        m.CopyFrom(self.listener_tmpl)
        m.name = "%s_%d" % (ip, PORT)
        m.address.socket_address.address = ip
        tp = self.tp_cls()
        m.filter_chains[0].filters[1].typed_config.Unpack(tp)
        tp.stat_prefix = prefix or cname
        tp.cluster = cname
        m.filter_chains[0].filters[1].typed_config.Pack(tp)
        return C.TYPE_LDS, m.name, C.TYPE_LDS, m.SerializeToString()


def make_secrets(types, tmp):
    """"default" (a SPIFFE leaf) and "ROOTCA", as istio-agent serves them over SDS."""
    return [(C.TYPE_SDS, m.name, C.TYPE_SDS, m.SerializeToString())
            for m in C.make_istio_secrets(types, tmp, "bench")]


def istio_stats_config(shared):
    """stats_config of Istio's sidecar bootstrap (the golden file in the shared fixtures): its
    stats_matcher keeps only cluster_manager.*, listener_manager.*, server.*, istio metrics...
    so the per-cluster stats of outbound clusters are not exported."""
    path = os.path.join(shared, "fixtures", "istio", "bootstrap", "default_golden.json")
    with open(path) as f:
        sc = json.load(f).get("stats_config", {})
    return {"stats_matcher": sc["stats_matcher"]} if "stats_matcher" in sc else None


def bootstrap(sock, echo_port, probe_port, api, stats_config=None):
    clusters = [C.pipe_cluster(n, sock) for n in ("xds-grpc", "sds-grpc")]
    clusters.append(H.cluster("probe_echo", [H.sock_addr(echo_port)]))
    listeners = [H.listener("probe", H.sock_addr(probe_port),
                            [H.tcp_proxy_filter("probe", "probe_echo")])]
    extra = {"stats_config": stats_config} if stats_config else {}
    return H.bootstrap(
        listeners=listeners, clusters=clusters, **extra,
        node={"id": "sidecar~10.0.0.1~bench.default~default.svc.cluster.local",
              "cluster": "bench.default"},
        dynamic_resources=C.ads_dynamic_resources("DELTA_GRPC" if api == "delta" else "GRPC"))


# ---- measurement helpers ----------------------------------------------------------------------

class TimedList(list):
    """The control plane's request/response records, stamped when they are appended."""

    def append(self, rec):
        rec["t"] = time.monotonic()
        rec["wall"] = time.time()
        super().append(rec)


def timed_cp(types):
    cp = C.ControlPlane(types)
    with cp.lock:
        cp.requests = TimedList()
        cp.responses = TimedList()
    return cp


def proc_status(pid, field):
    return H.rss_kb(pid, field)


def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK_TCK


def sys_ticks():
    with open("/proc/stat") as f:
        v = f.readline().split()
    # user nice system idle iowait irq softirq steal
    return int(v[1]) + int(v[2]) + int(v[3]) + int(v[6]) + int(v[7]), int(v[8])


def stats(proxy, regex):
    st, body = proxy.get("/stats?filter=" + regex, timeout=60)
    if st != 200:
        raise RuntimeError("/stats: %d %s" % (st, body[:200]))
    out = {}
    for line in body.splitlines():
        name, sep, val = line.rpartition(": ")
        if sep:
            try:
                out[name] = int(val)
            except ValueError:
                out[name] = val
    return out


def union_len(intervals):
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def pct(v, q):
    if not v:
        return None
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


class Run:
    """One proxy + control plane + probe for one repetition."""

    def __init__(self, args, types, api, baseline, tmp):
        self.args = args
        self.types = types
        self.api = api
        self.tmp = tmp
        self.cp = timed_cp(types)
        sock = os.path.join(tmp, "xds.sock")
        self.cp.listen("unix:" + sock)
        with self.cp.resources.lock:
            for r in baseline:
                self.cp.resources.set_raw(*r)
        self.probe = subprocess.Popen([PY, os.path.join(HERE, "probe.py")],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        echo_port = int(self.probe.stdout.readline().split()[1])
        probe_port = H.free_port()
        self.proxy = H.Proxy(tmp, bootstrap(sock, echo_port, probe_port, api,
                                            args.stats_config_json),
                             args=["--concurrency", "1", "--log-level", "warn"],
                             env={"MSM_BENCH": "1"})
        self.proxy.start()
        self.pid = self.proxy.proc.pid
        self.probe.stdin.write("go %s %d\n" % (self.proxy.admin, probe_port))
        self.probe.stdin.flush()
        self.samples = None

    def finish(self):
        problems = []
        if self.probe.poll() is None:
            self.probe.stdin.close()
            try:
                self.samples = json.loads(self.probe.stdout.readline() or "{}")
            except ValueError:
                self.samples = {}
            self.probe.wait(timeout=40)
        problems += self.proxy.stop()
        self.cp.stop()
        return problems

    def wait_acks(self, t0, want, timeout):
        """Wait until, for each type in <want> ({type: set of names or None}), responses sent
        after <t0> carrying those names (None: any response) are all ACKed. Returns
        {type: [(sent_rec, ack_rec), ...]}; raises on NACK or timeout."""
        cp = self.cp
        deadline = time.monotonic() + timeout

        def check():
            out = {}
            for t, names in want.items():
                sent = [r for r in cp.responses if r["type_url"] == t and r["t"] >= t0]
                if not sent:
                    return None
                if names is not None:
                    got = set()
                    for r in sent:
                        got.update(r["names"])
                    if not names <= got:
                        return None
                pairs = []
                for r in sent:
                    a = [q for q in cp.requests if q["type_url"] == t and q["nonce"] == r["nonce"]
                         and q["kind"] in ("ack", "nack") and q["stream"] == r["stream"]]
                    if not a:
                        return None
                    if a[0]["kind"] == "nack":
                        raise RuntimeError("NACK for %s: %s" % (t, a[0]["error_message"]))
                    pairs.append((r, a[0]))
                out[t] = pairs
            return out
        with cp.lock:
            while True:
                v = check()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("no ACK within %.0fs for %s" % (timeout, list(want)))
                cp.lock.wait(min(left, 0.2))

    def wait_active(self, clusters, listeners, timeout):
        """Check (after the ACKs) that every cluster and listener is active. Not a timing: each
        /stats call lists every stat (1.5M at 10k clusters), so it is polled sparingly."""
        deadline = time.monotonic() + timeout
        while True:
            s = stats(self.proxy, r"^(cluster_manager|listener_manager)\.")
            if (s.get("cluster_manager.active_clusters") == clusters and
                    s.get("cluster_manager.warming_clusters") == 0 and
                    s.get("listener_manager.total_listeners_active") == listeners and
                    s.get("listener_manager.total_listeners_warming", 0) == 0):
                return time.monotonic(), s
            if time.monotonic() > deadline:
                raise RuntimeError("not all active within %.0fs: %r" % (timeout, {
                    k: v for k, v in s.items() if "active" in k or "warming" in k}))
            time.sleep(0.5)


def window(samples, a, b):
    return [ms for t, ms in samples if a <= t <= b]


def run_rep(args, types, gen, size, api, rep, secrets, big):
    tmp = tempfile.mkdtemp(prefix="msm-xdsbench-")
    base = [gen.cluster(0, "base"), gen.cla(0, "base"), gen.listener(15 << 16, 0, "base")] + secrets
    run = None
    rec = {"size": size, "api": api, "rep": rep, "listeners": min(args.listeners, size),
           "endpoints": args.endpoints}
    try:
        run = Run(args, types, api, base, tmp)
        pid = run.pid
        time.sleep(args.settle)
        base_stats = stats(run.proxy, r"^(cluster_manager|listener_manager)\.")
        rec["rss_before_kb"] = proc_status(pid, "VmRSS")
        clusters, clas, listeners = big
        new_cla_names = {r[1] for r in clas}
        cpu0 = proc_cpu_s(pid)
        s0 = sys_ticks()
        R = run.cp.resources
        with R.lock:
            for r in clusters + clas + listeners:
                R.set_raw(*r)
        perf = None
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "--call-graph",
                                     os.environ.get("XDS_BENCH_CALLGRAPH", "fp"), "-q", "-p",
                                     str(pid), "-o",
                                     "%s.%s.%d.%d" % (args.perf, api, size, rep)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        t0 = time.monotonic()
        w0 = time.time()
        run.cp.push()
        timeout = 60 + size / 100.0
        want = {C.TYPE_CDS: None, C.TYPE_EDS: new_cla_names}
        if listeners:
            want[C.TYPE_LDS] = None
        acks = run.wait_acks(t0, want, timeout)
        # The apply window ends with the last ACK (CPU, busy %, stalls); /stats afterwards.
        t_end = time.monotonic()
        s1 = sys_ticks()
        cpu1 = proc_cpu_s(pid)
        rec["hwm_at_ack_kb"] = proc_status(pid, "VmHWM")
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)
        t_active, st = run.wait_active(base_stats["cluster_manager.active_clusters"] + size,
                                       base_stats["listener_manager.total_listeners_active"] +
                                       len(listeners), timeout)
        wall = t_end - t0
        rec["machine_busy_pct"] = round((s1[0] - s0[0]) / CLK_TCK / wall * 100)
        rec["steal_pct"] = round((s1[1] - s0[1]) / CLK_TCK / wall * 100)
        rec["proxy_cpu_s"] = round(cpu1 - cpu0, 3)
        intervals = []
        for t, key in ((C.TYPE_CDS, "cds"), (C.TYPE_EDS, "eds"), (C.TYPE_LDS, "lds")):
            pairs = acks.get(t, [])
            rec[key + "_sent_to_ack_s"] = round(sum(a["t"] - r["t"] for r, a in pairs), 4)
            rec[key + "_responses"] = len(pairs)
            rec[key + "_resources"] = sum(len(r["names"]) for r, _ in pairs)
            intervals += [(r["t"], a["t"]) for r, a in pairs]
        rec["proxy_time_s"] = round(union_len(intervals), 4)
        rec["end_to_end_s"] = round(max(b for _, b in intervals) - t0, 4)
        rec["active_checked_s"] = round(t_active - t0, 4)
        # The proxy's own view: when it finished applying CDS / LDS, against the send time.
        cds_sent_wall = min(r["wall"] for r, _ in acks[C.TYPE_CDS])
        lds_sent_wall = min((r["wall"] for r, _ in acks.get(C.TYPE_LDS, [])), default=None)
        rec["proxy_cds_applied_s"] = round(st["cluster_manager.cds.update_time"] / 1000.0 -
                                           cds_sent_wall, 4)
        if lds_sent_wall is not None:
            rec["proxy_lds_applied_s"] = round(st["listener_manager.lds.update_time"] / 1000.0 -
                                               lds_sent_wall, 4)
        rec["push_wall"] = w0
        rec["hwm_kb"] = proc_status(pid, "VmHWM")
        rec["rss_after_kb"] = proc_status(pid, "VmRSS")
        rec["window"] = (t0, t_end)
        if args.hold:
            print("xds_bench: applied; proxy pid %d held %.0fs" % (pid, args.hold),
                  file=sys.stderr, flush=True)
            time.sleep(args.hold)
        if args.change_on == size:
            rec["change"] = change_bench(args, run, gen, size, api)
            rec["hwm_after_change_kb"] = proc_status(pid, "VmHWM")
    finally:
        if run:
            problems = run.finish()
            if problems:
                rec["problems"] = problems
            smp = run.samples or {}
            if "window" in rec:
                a, b = rec.pop("window")
                rd = window(smp.get("ready", []), a, b)
                ec = window(smp.get("echo", []), a, b)
                rb = window(smp.get("ready", []), 0, a)
                eb = window(smp.get("echo", []), 0, a)
                rec["ready_max_ms"] = round(max(rd), 1) if rd else None
                rec["ready_samples"] = len(rd)
                rec["echo_max_ms"] = round(max(ec), 2) if ec else None
                rec["echo_samples"] = len(ec)
                rec["ready_base_p50_ms"] = round(pct(rb, 0.5), 2) if rb else None
                rec["echo_base_p50_ms"] = round(pct(eb, 0.5), 3) if eb else None
                rec["probe_errors"] = smp.get("errors", [])[:5]
        shutil.rmtree(tmp, True)
    return rec


def change_bench(args, run, gen, size, api):
    """One-resource changes on top of <size>: a cluster (CDS), an assignment (EDS), a listener
    (LDS), each --change-reps times; sent->ACK, resources in the response, proxy CPU."""
    out = {}
    R = run.cp.resources
    perf = None
    if args.perf:
        perf = subprocess.Popen(["perf", "record", "--call-graph",
                                 os.environ.get("XDS_BENCH_CALLGRAPH", "fp"), "-q", "-p",
                                 str(run.pid), "-o", "%s.%s.%d.change" % (args.perf, api, size)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    cases = (("cds", C.TYPE_CDS, lambda k: gen.cluster(k, "svc", timeout_s=11 + k)),
             ("eds", C.TYPE_EDS, lambda k: gen.cla(k, "svc", shift=7 + k)),
             ("lds", C.TYPE_LDS, lambda k: gen.listener(k, k, "svc", prefix="changed%d" % k)))
    for key, t, make in cases:
        times, cpus, nres, stalls = [], [], [], []
        for k in range(args.change_reps):
            r = make(k)
            cpu0 = proc_cpu_s(run.pid)
            with R.lock:
                R.set_raw(*r)
            t0 = time.monotonic()
            run.cp.push()
            acks = run.wait_acks(t0, {t: {r[1]}}, 120)
            cpus.append(proc_cpu_s(run.pid) - cpu0)
            pairs = acks[t]
            times.append(sum(a["t"] - s["t"] for s, a in pairs))
            nres.append(sum(len(s["names"]) for s, _ in pairs))
            time.sleep(0.2)
        out[key + "_sent_to_ack_ms"] = round(statistics.median(times) * 1000, 2)
        out[key + "_sent_to_ack_max_ms"] = round(max(times) * 1000, 2)
        out[key + "_proxy_cpu_ms"] = round(statistics.median(cpus) * 1000, 1)
        out[key + "_resources_sent"] = statistics.median(nres)
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)
    return out


# ---- report -------------------------------------------------------------------------------------

def med(recs, key):
    v = [r[key] for r in recs if r.get(key) is not None]
    return statistics.median(v) if v else None


def fmt(v, unit="", digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return ("%%.%df" % digits) % v + unit
    return str(v) + unit


def report(recs, args, started):
    lines = []
    lines.append("xDS apply, %s UTC, %s, %d rep(s) per row (medians), %d endpoints per cluster, "
                 "listeners = min(%d, clusters), stats_matcher: %s%s" % (
                     started, os.path.basename(args.binary), args.reps, args.endpoints,
                     args.listeners, args.stats_matcher, ", no TLS" if args.no_tls else ""))
    lines.append("")
    lines.append("| API | clusters | listeners | proxy time (s) | CDS sent→ACK (s) | "
                 "EDS sent→ACK (s) | LDS sent→ACK (s) | end to end (s) | "
                 "proxy CPU (s) | peak RSS (MB) | RSS after (MB) | max /ready (ms) | "
                 "max echo RTT (ms) | machine busy % |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    keyf = lambda r: (r["api"], r["size"])  # noqa: E731
    groups = {}
    for r in recs:
        groups.setdefault(keyf(r), []).append(r)
    for (api, size), g in sorted(groups.items()):
        ok = [r for r in g if "proxy_time_s" in r]
        if not ok:
            lines.append("| %s | %d | | failed: %s |" % (api, size, g[0].get("error", "?")))
            continue
        lines.append("| %s | %d | %d | **%s** | %s | %s | %s | %s | %s | **%s** | %s | %s |"
                     " %s | %s |" % (
                         api, size, ok[0]["listeners"], fmt(med(ok, "proxy_time_s"), "", 3),
                         fmt(med(ok, "cds_sent_to_ack_s"), "", 3),
                         fmt(med(ok, "eds_sent_to_ack_s"), "", 3),
                         fmt(med(ok, "lds_sent_to_ack_s"), "", 3),
                         fmt(med(ok, "end_to_end_s"), "", 3),
                         fmt(med(ok, "proxy_cpu_s"), "", 2),
                         fmt(med(ok, "hwm_kb") / 1024.0, "", 1),
                         fmt(med(ok, "rss_after_kb") / 1024.0, "", 1),
                         fmt(med(ok, "ready_max_ms"), "", 0),
                         fmt(med(ok, "echo_max_ms"), "", 2),
                         fmt(med(ok, "machine_busy_pct"), "", 0)))
    ch = [r for r in recs if r.get("change")]
    if ch:
        lines.append("")
        lines.append("One-resource change on top of %d clusters (median of %d changes per rep, "
                     "then median over reps):" % (args.change_on, args.change_reps))
        lines.append("")
        lines.append("| API | change | resources sent | sent→ACK (ms) | max (ms) | proxy CPU (ms) |")
        lines.append("|---|---|---:|---:|---:|---:|")
        for api in sorted({r["api"] for r in ch}):
            g = [r["change"] for r in ch if r["api"] == api]
            for key, what in (("cds", "1 cluster"), ("eds", "1 ClusterLoadAssignment"),
                              ("lds", "1 listener")):
                lines.append("| %s | %s | %s | %s | %s | %s |" % (
                    api, what, fmt(med(g, key + "_resources_sent"), "", 0),
                    fmt(med(g, key + "_sent_to_ack_ms"), "", 1),
                    fmt(med(g, key + "_sent_to_ack_max_ms"), "", 1),
                    fmt(med(g, key + "_proxy_cpu_ms"), "", 1)))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--listeners", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--api", default="delta,sotw")
    ap.add_argument("--change-on", type=int, default=10000)
    ap.add_argument("--change-reps", type=int, default=5)
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds of probe baseline before the push")
    ap.add_argument("--stats-matcher", choices=("istio", "none"), default="istio",
                    help="istio: the stats_matcher of Istio's sidecar bootstrap (default); "
                         "none: every stat visible")
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"),
                    help="the shared fixtures (for Istio's bootstrap stats_config)")
    ap.add_argument("--no-tls", action="store_true",
                    help="clusters without transport_socket_matches (to see what TLS costs)")
    ap.add_argument("--perf", default=None,
                    help="perf record -g the proxy during each apply into PREFIX.API.SIZE.REP")
    ap.add_argument("--hold", type=float, default=0,
                    help="keep each proxy this many seconds after the apply (to attach gdb, "
                         "perf, /proc readers)")
    ap.add_argument("--raw", default=None, help="append one JSON line per repetition here")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args()
    H.BINARY = os.path.abspath(args.binary)
    args.stats_config_json = (istio_stats_config(args.shared)
                              if args.stats_matcher == "istio" else None)
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    types = C.Types(os.path.dirname(H.BINARY))
    gen = Gen(types, args.endpoints, tls=not args.no_tls)
    pki = tempfile.mkdtemp(prefix="msm-xdsbench-pki-")
    secrets = make_secrets(types, pki)
    shutil.rmtree(pki, True)
    recs = []
    for size in [int(s) for s in args.sizes.split(",")]:
        t = time.monotonic()
        big = ([gen.cluster(i) for i in range(size)], [gen.cla(i) for i in range(size)],
               [gen.listener(j, j) for j in range(min(args.listeners, size))])
        mb = sum(len(r[3]) for r in big[0]) / 1e6
        sys.stderr.write("xds_bench: %d clusters generated in %.1fs (CDS %.1f MB, EDS %.1f MB, "
                         "LDS %.1f MB)\n" % (size, time.monotonic() - t, mb,
                                             sum(len(r[3]) for r in big[1]) / 1e6,
                                             sum(len(r[3]) for r in big[2]) / 1e6))
        for rep in range(args.reps):
            for api in args.api.split(","):
                try:
                    rec = run_rep(args, types, gen, size, api, rep, secrets, big)
                except Exception as e:  # a failed rep is reported, the run goes on
                    rec = {"size": size, "api": api, "rep": rep, "error": str(e)[:300]}
                sys.stderr.write("xds_bench: %s\n" % json.dumps(rec))
                recs.append(rec)
                if args.raw:
                    with open(args.raw, "a") as f:
                        f.write(json.dumps(rec) + "\n")
        del big
    md = report(recs, args, started)
    sys.stdout.write(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    return 0 if all("error" not in r for r in recs) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    sys.exit(main())

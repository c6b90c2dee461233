#!/usr/bin/python3
"""The whole mesh on one machine (issue 7 point 4): msm-proxy as the Istio sidecar of every pod.

    sudo /usr/bin/python3 istio-integration/e2e/mesh_e2e.py --binary build/msm-proxy --shared ../shared

Pods are network namespaces on a bridge, each with Istio's iptables capture rules (netns.py) and
an msm-proxy sidecar run by the pilot-agent stand-in (../agent) from the xDS that istiod would
send it, rendered by ../istiogen from the sample manifests (../manifests) plus the Pod objects
written here. The pods: camera-v1 and camera-v2 (synthetic GStreamer RTSP cameras, service
account camera) behind Service camera (VIP 10.96.0.10:8554, tcp-rtsp); two viewer pods (sa viewer:
ffprobe and GStreamer players, a scripted RTSP client); one intruder pod (sa intruder). STRICT
mTLS, DestinationRule ISTIO_MUTUAL with subsets v1/v2, VirtualService 90/10, AuthorizationPolicy
allowing only sa viewer, the EnvoyFilter inserting msm.filters.network.rtsp_proxy before tcp_proxy
on 8554. A real Prometheus scrapes every sidecar's 15090.

Checks (each can fail; a table is printed at the end; exit status 0 only if all pass):
  1 decode      both viewers decode video through both sidecars (ffprobe UDP+TCP, GStreamer
                UDP+TCP)
  2 fanout      many players, yet each camera serves at most one session per server-side sidecar
  3 split       N sessions with distinct URLs land 90/10 on v1/v2 within a binomial region
  4 rbac        the intruder is refused (no answer but an error; rbac denied on the camera side;
                nothing reaches the camera)
  5 prometheus  istio_tcp_* (both reporters, workloads, service, mutual_tls) and rtsp media series
                scraped by Prometheus
  6 readiness   a sidecar whose LDS is held back stays unready after CDS, turns ready after LDS
  7 drain       pilot-agent's shutdown of a camera sidecar (drain_listeners?inboundonly&graceful,
                wait, SIGKILL): a playing stream keeps flowing through the whole drain window
  8 xds-restart restarting the stand-in control planes disturbs no stream; proxies reconnect and
                ACK

Needs root (network namespaces, iptables, uid 1337). Everything it creates (namespaces, their
interfaces and iptables rules, /etc/netns/<ns>, processes, temp dirs) is removed on any exit.
"""
import argparse
import atexit
import copy
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.dirname(HERE)
REPO = os.path.dirname(INTEGRATION)
sys.path.insert(0, HERE)
sys.path.insert(0, INTEGRATION)

import netns  # noqa: E402
import peers  # noqa: E402

NAMESPACE = "media"
SERVICE_HOST = "camera.media.svc.cluster.local"
VIP = "10.96.0.10"
PORT = 8554
TRUST_DOMAIN = "cluster.local"
MANIFESTS = ("namespace.yaml", "camera.yaml", "clients.yaml", "security.yaml", "traffic.yaml",
             "envoyfilter-rtsp.yaml")
CAMERA_PATH = "/cam"
URL = "rtsp://camera.media.svc:%d%s" % (PORT, CAMERA_PATH)
URL_FQDN = "rtsp://%s:%d%s" % (SERVICE_HOST, PORT, CAMERA_PATH)
URL_VIP = "rtsp://%s:%d%s" % (VIP, PORT, CAMERA_PATH)
TYPE_LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
TYPE_CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

# (pod name, Deployment in the manifests, role)
PODS = (
    ("camera-v1-5c7d9-x4k2q", "camera-v1", "camera"),
    ("camera-v2-6f8b4-p9m3z", "camera-v2", "camera"),
    ("viewer-7d6c5-ffm01", "viewer", "viewer"),
    ("viewer-7d6c5-gst02", "viewer", "viewer"),
    ("intruder-84b9f-r7t5w", "intruder", "intruder"),
)
HELD_POD = "intruder-84b9f-r7t5w"  # check 6: its LDS is held back at start


def log(fmt, *a):
    sys.stdout.write("[%7.2f] %s\n" % (time.monotonic() - T0, fmt % a if a else fmt))
    sys.stdout.flush()


T0 = time.monotonic()
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: AddressSanitizer", "UndefinedBehaviorSanitizer")


class CheckFailed(AssertionError):
    pass


# msm-proxy gaps the e2e shows and that are reported, not hidden: a check that hits one ends as
# XFAIL (the run still passes); once the gap is fixed the check ends as XPASS, which fails the
# run until the entry is removed here.
KNOWN_GAPS = {}


class KnownGap(Exception):
    def __init__(self, gap, detail):
        super().__init__(detail)
        self.gap = gap
        self.detail = detail


def require(cond, fmt, *a):
    if not cond:
        raise CheckFailed(fmt % a if a else fmt)


def wait_for(pred, timeout, what, interval=0.2):
    end = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except (OSError, ValueError, RuntimeError) as e:
            last = e
        if time.monotonic() >= end:
            raise CheckFailed("timed out after %.0fs waiting for %s%s" % (
                timeout, what, (" (last error: %s)" % last) if last else ""))
        time.sleep(interval)


def parse_stats(text):
    out = {}
    for line in text.splitlines():
        name, sep, val = line.rpartition(": ")
        if sep and val.strip().lstrip("-").isdigit():
            out[name.strip()] = int(val)
    return out


def binomial_region(n, p, alpha):
    """The central acceptance region [lo, hi] of Binomial(n, p) with at most alpha/2 in each
    tail."""
    pmf = [math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)]
    lo, acc = 0, 0.0
    while acc + pmf[lo] <= alpha / 2:
        acc += pmf[lo]
        lo += 1
    hi, acc = n, 0.0
    while acc + pmf[hi] <= alpha / 2:
        acc += pmf[hi]
        hi -= 1
    return lo, hi


# ---- the world: manifests + the Pod objects of this run --------------------------------------

def load_yaml_docs(path):
    import yaml
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def build_world_objects(manifest_dir, pod_ips):
    """The sample manifests, plus one Pod object per netns pod made from its Deployment's
    template (labels, annotations, service account, containers), with ownerReferences (so the
    workload name is the Deployment's) and status.podIP; the Service gets its ClusterIP."""
    objs = []
    for m in MANIFESTS:
        p = os.path.join(manifest_dir, m)
        if not os.path.exists(p):
            raise RuntimeError("manifest %s is missing" % p)
        objs += load_yaml_docs(p)
    deployments = {(o["metadata"].get("namespace", "default"), o["metadata"]["name"]): o
                   for o in objs if o.get("kind") == "Deployment"}
    for o in objs:
        if o.get("kind") == "Service" and o["metadata"]["name"] == "camera":
            o["spec"]["clusterIP"] = VIP
    pods = []
    for name, deploy, _ in PODS:
        d = deployments.get((NAMESPACE, deploy))
        if d is None:
            raise RuntimeError("no Deployment %s/%s in the manifests" % (NAMESPACE, deploy))
        tpl = copy.deepcopy(d["spec"]["template"])
        rs = name.rsplit("-", 1)[0]
        meta = tpl.get("metadata") or {}
        labels = dict(meta.get("labels") or {})
        labels["pod-template-hash"] = rs.rsplit("-", 1)[1]
        # What the sidecar injector adds to an injected pod's labels.
        labels.setdefault("security.istio.io/tlsMode", "istio")
        labels.setdefault("service.istio.io/canonical-name", labels.get("app", deploy))
        labels.setdefault("service.istio.io/canonical-revision", labels.get("version", "latest"))
        pods.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels,
                         "annotations": dict(meta.get("annotations") or {}),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": rs, "controller": True}]},
            "spec": tpl["spec"],
            "status": {"podIP": pod_ips[name], "phase": "Running"},
        })
    return objs + pods, pods


class Config:
    """What istiod sends each pod: istiogen's render()."""

    def __init__(self, objects):
        import istiogen
        self.istiogen = istiogen
        self.world = istiogen.World.load(objects)

    def dump(self, pod_name):
        return self.istiogen.render(self.world, pod=pod_name, namespace=NAMESPACE)


def without_listeners(dump):
    d = copy.deepcopy(dump)
    for c in d.get("configs", []):
        if c.get("@type", "").endswith("ListenersConfigDump"):
            c["dynamic_listeners"] = []
    return d


# ---- the mesh ----------------------------------------------------------------------------------

class Mesh:
    def __init__(self, args):
        self.args = args
        self.reaper = peers.Reaper()
        self.cleanups = []
        self.topology = None
        self.agents = {}
        self.cameras = {}
        self.pods = {}
        self.pod_objs = {}
        self.dumps = {}
        self.prom = None
        self.workdir = tempfile.mkdtemp(prefix="msm-e2e-")
        os.chmod(self.workdir, 0o755)
        self._closed = False

    # -- cleanup --
    def close(self):
        if self._closed:
            return
        self._closed = True
        def close_agent(a):
            try:
                a.close()
            except Exception as e:  # keep cleaning
                log("cleanup: agent %s: %s", getattr(a, "pod", "?"), e)
        ths = [threading.Thread(target=close_agent, args=(a,)) for a in self.agents.values()]
        for th in ths:
            th.start()
        for th in ths:
            th.join(30)
        self.reaper.stop_all()
        self.sanitizer_reports = []
        for n in self.agents:
            txt = self.proxy_log(n, 10 ** 8)
            if any(s in txt for s in SANITIZER_MARKERS):
                self.sanitizer_reports.append((n, txt[-4000:]))
        if self.topology:
            errs = self.topology.destroy()
            if errs:
                log("cleanup: %s", errs)
        left = netns.leftovers(self.args.prefix)
        if left:
            log("cleanup: namespaces left: %s", left)
        if self.args.keep:
            log("kept %s", self.workdir)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- setup --
    def setup_network(self):
        hosts = {"camera.media.svc": VIP, SERVICE_HOST: VIP, "camera.media": VIP}
        self.topology = netns.Topology(self.args.prefix, hosts=hosts)
        for name, deploy, role in PODS:
            pod = self.topology.add_pod(name)
            pod.deploy, pod.role = deploy, role
            netns.istio_iptables(pod.ns)
            self.pods[name] = pod
        log("network: node %s, pods %s", self.topology.node,
            ", ".join("%s=%s" % (p.name, p.ip) for p in self.pods.values()))

    def setup_cameras(self):
        for p in self.pods.values():
            if p.role == "camera":
                self.cameras[p.name] = peers.Camera(self.reaper, p, self.workdir, port=PORT,
                                                    paths=(CAMERA_PATH,))
        log("cameras listening on :%d in %s", PORT, ", ".join(self.cameras))

    def render(self):
        objs, pods = build_world_objects(self.args.manifests,
                                         {n: p.ip for n, p in self.pods.items()})
        with open(os.path.join(self.workdir, "world-pods.json"), "w") as f:
            json.dump(pods, f, indent=1)
        self.pod_objs = {p["metadata"]["name"]: p for p in pods}
        self.config = Config(objs)
        for name in self.pods:
            self.dumps[name] = self.config.dump(name)
            with open(os.path.join(self.workdir, "xds-%s.json" % name), "w") as f:
                json.dump(self.dumps[name], f, indent=1)
        log("rendered xDS for %d pods (istiogen)", len(self.dumps))

    def start_sidecars(self):
        from agent import Agent, MeshCA
        self.ca = MeshCA(trust_domain=TRUST_DOMAIN)
        for name, pod in self.pods.items():
            o = self.pod_objs[name]
            meta = o["metadata"]
            sa = o["spec"].get("serviceAccountName", "default")
            ports = [{"name": p.get("name"), "containerPort": p["containerPort"],
                      "protocol": p.get("protocol", "TCP")}
                     for c in o["spec"].get("containers", []) for p in c.get("ports") or []]
            env = {  # what the injection template sets on istio-proxy
                "ISTIO_META_WORKLOAD_NAME": pod.deploy,
                "ISTIO_META_OWNER": "kubernetes://apis/apps/v1/namespaces/%s/deployments/%s"
                                    % (NAMESPACE, pod.deploy),
                "ISTIO_META_CLUSTER_ID": "Kubernetes",
                "ISTIO_META_MESH_ID": TRUST_DOMAIN,
                "ISTIO_META_INTERCEPTION_MODE": "REDIRECT",
                "ISTIO_META_APP_CONTAINERS": ",".join(c["name"] for c in o["spec"]["containers"]),
                "ISTIO_META_POD_PORTS": json.dumps(ports),
                "TRUST_DOMAIN": TRUST_DOMAIN,
            }
            env.update(peers.sanitizer_env())
            dump = self.dumps[name]
            if name == HELD_POD:
                dump = without_listeners(dump)
            run_dir = os.path.join(self.workdir, "pods", name)
            a = Agent(run_dir, binary=self.args.binary, pod=name, namespace=NAMESPACE,
                      service_account=sa, pod_ip=pod.ip, labels=meta["labels"],
                      annotations=meta["annotations"], xds_dump=dump, ca=self.ca,
                      netns=pod.ns, concurrency=2, drain_duration=45,
                      termination_drain_duration=self.args.drain_window, env=env,
                      log_level=self.args.log_level)
            self.agents[name] = a
        # Start them all, then wait (the proxies boot in parallel).
        for name, a in self.agents.items():
            a.start()
        log("agents started; proxy argv: %s", " ".join(self.agents[PODS[0][0]].proxy_argv))

    def wait_sidecars_ready(self, names, timeout):
        for name in names:
            a = self.agents[name]
            try:
                a.wait_ready(timeout=timeout)
            except Exception as e:
                raise CheckFailed("sidecar of %s not ready: %s\n%s" % (name, e, self.proxy_log(name)))

    def proxy_log(self, name, tail=3000):
        a = self.agents.get(name)
        try:
            with open(a.log_path) as f:
                return f.read()[-tail:]
        except (OSError, AttributeError):
            return ""

    def start_prometheus(self):
        targets = [(n, "%s:15090" % p.ip) for n, p in self.pods.items()]
        self.prom = peers.Prometheus(self.reaper, self.topology.node, self.topology.gateway,
                                     self.workdir, targets)
        log("prometheus on %s:9090 in %s scraping %d sidecars", self.topology.gateway,
            self.topology.node, len(targets))

    # -- observation helpers --
    def stats(self, name):
        st, body = self.agents[name].admin("/stats")
        if st != 200:
            raise RuntimeError("%s /stats: %d" % (name, st))
        return parse_stats(body.decode("utf-8", "replace") if isinstance(body, bytes) else body)

    def stat_sum(self, name, regex):
        r = re.compile(regex)
        return sum(v for k, v in self.stats(name).items() if r.search(k))

    def pods_by_role(self, role):
        return [p for p in self.pods.values() if p.role == role]

    def sidecars_alive(self):
        dead = []
        for n, a in self.agents.items():
            rc = a.proc.poll() if a.proc is not None else None
            if rc is not None and not a._shutting_down:
                dead.append("%s (exit %s): %s" % (n, rc, self.proxy_log(n, 1500)))
        return dead


# ---- checks ------------------------------------------------------------------------------------

def check_readiness(m):
    """6: the held pod is not ready after CDS (LDS held back), ready after LDS is released; every
    other sidecar, once ready, has cds and lds update_success > 0."""
    a = m.agents[HELD_POD]
    wait_for(lambda: a.xds.acks(TYPE_CDS), 30, "CDS ACK from the held pod's proxy")
    wait_for(lambda: a.xds.reqs(TYPE_LDS), 10, "LDS request from the held pod's proxy")
    require(not a.xds.sent(TYPE_LDS) or all(not r["names"] for r in a.xds.sent(TYPE_LDS)),
            "the control plane sent listeners while they were held back")
    samples = []
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        ok, why = a.ready()
        samples.append((ok, why))
        require(not ok, "ready while LDS is held back (CDS done): %s", why)
        time.sleep(0.25)
    st = m.stats(HELD_POD)
    require(st.get("cluster_manager.cds.update_success", 0) > 0,
            "cds.update_success = 0 on the held pod: %s",
            {k: v for k, v in st.items() if ".cds." in k})
    require(st.get("listener_manager.lds.update_success", 0) == 0,
            "lds.update_success > 0 while LDS is held")
    t = time.monotonic()
    a.push(m.dumps[HELD_POD])
    a.wait_ready(timeout=30)
    dt = time.monotonic() - t
    st = m.stats(HELD_POD)
    require(st.get("listener_manager.lds.update_success", 0) > 0, "ready without an LDS update")
    others = []
    for n in m.pods:
        s = m.stats(n)
        require(s.get("cluster_manager.cds.update_success", 0) > 0
                and s.get("listener_manager.lds.update_success", 0) > 0,
                "%s ready without cds+lds success", n)
        others.append(n)
    return ("held pod not ready for %d samples after its CDS ACK (%s); ready %.1fs after LDS "
            "release; all %d sidecars: cds+lds update_success > 0"
            % (len(samples), samples[-1][1] if samples else "", dt, len(others)))


def check_decode(m):
    """1: each viewer decodes through its sidecar and a camera sidecar, UDP and TCP."""
    v_ff, v_gst = m.pods_by_role("viewer")
    results = []
    before = {n: m.stat_sum(n, r"^rtsp\.outbound\.downstream_rq_play$") for n in (v_ff.name, v_gst.name)}
    cam_before = {n: m.stat_sum(n, r"^rtsp\.inbound\.downstream_rq_play$")
                  for n in m.cameras}
    for tr in ("udp", "tcp"):
        frames, err = peers.ffprobe(v_ff, URL, tr, seconds=2.0)
        require(frames >= 10, "ffprobe (%s) in %s decoded %d frames: %s\n%s", tr, v_ff.name,
                frames, err[-800:], m.proxy_log(v_ff.name, 1500))
        results.append("ffprobe/%s %d frames" % (tr, frames))
    for tr in ("udp", "tcp"):
        ok, out = peers.gst_frames(v_gst, URL_FQDN, tr, frames=25)
        require(ok, "GStreamer (%s) in %s did not decode 25 frames: %s\n%s", tr, v_gst.name,
                out[-800:], m.proxy_log(v_gst.name, 1500))
        results.append("gst/%s 25 frames" % tr)
    for n, b in before.items():
        a = m.stat_sum(n, r"^rtsp\.outbound\.downstream_rq_play$")
        require(a - b >= 2, "client sidecar %s saw %d PLAYs (rtsp.outbound), want 2", n, a - b)
    cam_plays = sum(m.stat_sum(n, r"^rtsp\.inbound\.downstream_rq_play$") - b
                    for n, b in cam_before.items())
    require(cam_plays >= 1, "no PLAY reached a camera sidecar's rtsp_proxy (rtsp.inbound)")
    return "; ".join(results) + "; PLAYs through client sidecars and camera sidecar(s)"


def check_fanout(m):
    """2: 6 players on 2 client sidecars; each camera sees <= 1 session (one per server-side
    sidecar), each camera sidecar <= 1 upstream session."""
    v_ff, v_gst = m.pods_by_role("viewer")
    procs = []
    clients = []
    try:
        for tr in ("udp", "tcp"):
            procs.append(peers.ffprobe_popen(m.reaper, v_ff, URL, tr, 6.0))
            procs.append(peers.ffprobe_popen(m.reaper, v_gst, URL, tr, 6.0))
        for pod in (v_ff, v_gst):
            c = peers.RtspClient(pod, VIP, PORT)
            c.play_tcp(URL_VIP)
            clients.append(c)

        def playing():
            subs = sum(m.stat_sum(p.name, r"^rtsp\.outbound\.subscribers_active$")
                       for p in (v_ff, v_gst))
            return subs >= 5 and subs
        subs = wait_for(playing, 20, ">= 5 playing subscribers on the client sidecars")
        time.sleep(1.0)
        samples = []
        for _ in range(6):
            row = {}
            for n, cam in m.cameras.items():
                row[n] = (cam.sessions(), m.stat_sum(n, r"^rtsp\.inbound\.upstream_sessions_active$"),
                          m.stat_sum(n, r"^rtsp\.inbound\.subscribers_active$"))
            samples.append(row)
            time.sleep(0.3)
        up_client = {p.name: m.stat_sum(p.name, r"^rtsp\.outbound\.upstream_sessions_active$")
                     for p in (v_ff, v_gst)}
        for row in samples:
            for n, (cam_sessions, up, down) in row.items():
                require(cam_sessions <= 1, "camera %s serves %d sessions (want <= 1: one per "
                        "server-side sidecar) with %d downstream subscribers at its sidecar",
                        n, cam_sessions, down)
                require(up <= 1, "camera sidecar %s holds %d upstream sessions", n, up)
        total_cam = max(sum(r[n][0] for n in r) for r in samples)
        total_down = max(sum(r[n][2] for n in r) for r in samples)
        require(total_cam >= 1, "no camera session while %d players play", subs)
        for n, up in up_client.items():
            require(up <= 2, "client sidecar %s holds %d upstream sessions for one URL (want <= "
                    "one per subset)", n, up)
        for c in clients:
            pk, _, _ = c.snapshot()
            require(pk > 0 and not c.error, "scripted player in %s: %d packets, %s", c.pod.name,
                    pk, c.error)
        return ("%d players (%d subscribers on client sidecars) -> client sidecars' upstream "
                "sessions %s -> camera sidecars' subscribers %d -> camera sessions max %d in total "
                "(per camera <= 1)" % (len(procs) + len(clients), subs, up_client, total_down,
                                       total_cam))
    finally:
        for c in clients:
            c.close()
        for p in procs:
            peers.Reaper.stop(p, timeout=8)


def check_split(m):
    """3: N DESCRIBE sessions with distinct URLs (so fan-out never merges them), from both
    viewers; the camera each lands on is counted at the cameras (new connections) and at the
    client sidecars (subset clusters' upstream connections)."""
    n = m.args.split_n
    lo, hi = binomial_region(n, 0.10, m.args.alpha)
    viewers = m.pods_by_role("viewer")
    cams = {p.deploy: p.name for p in m.pods_by_role("camera")}
    cam_before = {d: m.cameras[name].connected_total() for d, name in cams.items()}
    # Istio's stats matcher keeps cluster.outbound|... stats out of the sidecars; the camera
    # sidecars' own RTSP counters (rtsp.* is included by the pods' annotation) cross-check.
    up_re = r"^rtsp\.inbound\.upstream_sessions_total$"
    cl_before = {d: m.stat_sum(name, up_re) for d, name in cams.items()}
    statuses = []
    errs = []
    lock = threading.Lock()
    tag = int(time.time()) % 100000

    def one(i):
        pod = viewers[i % len(viewers)]
        st, err = peers.describe_once(pod, VIP, PORT, "%s?e2e=%d-%d" % (URL_VIP, tag, i))
        with lock:
            statuses.append(st)
            if st != 200:
                errs.append("%d: %s %s" % (i, st, err))

    t = time.monotonic()
    batch = 6
    for start in range(0, n, batch):
        ths = [threading.Thread(target=one, args=(i,)) for i in range(start, min(n, start + batch))]
        for th in ths:
            th.start()
        for th in ths:
            th.join(60)
    dt = time.monotonic() - t
    require(not errs, "%d of %d DESCRIBEs failed: %s", len(errs), n, errs[:5])

    def cam_counts():
        return {d: m.cameras[name].connected_total() - cam_before[d] for d, name in cams.items()}
    wait_for(lambda: sum(cam_counts().values()) >= n, 10,
             "%d new camera connections (one per distinct URL)" % n)
    cc = cam_counts()
    cl = {d: m.stat_sum(name, up_re) - cl_before[d] for d, name in cams.items()}
    require(sum(cc.values()) == n, "cameras saw %s new connections for %d distinct sessions "
            "(fan-out merged distinct URLs, or a session was retried)", cc, n)
    v2 = cc.get("camera-v2", 0)
    require(lo <= v2 <= hi, "camera-v2 got %d of %d sessions: outside the %.2g-level binomial "
            "region [%d, %d] for weight 10%% (v1 got %d)", v2, n, m.args.alpha, lo, hi,
            cc.get("camera-v1", 0))
    require(cl == cc, "camera sidecars' new upstream sessions %s differ from what the cameras "
            "saw %s", cl, cc)
    return ("%d sessions in %.1fs: v1 %d, v2 %d (acceptance region for v2 at alpha=%g: [%d, %d]); "
            "the camera sidecars' RTSP counters agree" % (n, dt, cc.get("camera-v1", 0), v2,
                                                   m.args.alpha, lo, hi))


def check_rbac(m):
    """4: the intruder's DESCRIBE gets no 200; the camera sidecars count an RBAC denial; nothing
    reaches a camera. A viewer right after is served (control)."""
    intr = m.pods_by_role("intruder")[0]
    viewer = m.pods_by_role("viewer")[0]
    den_re = r"(^|\.)rbac\.denied$"
    den_before = sum(m.stat_sum(n, den_re) for n in m.cameras)
    cam_before = {n: c.connected_total() for n, c in m.cameras.items()}
    results = []
    for i in range(3):
        st, err = peers.describe_once(intr, VIP, PORT, "%s?intruder=%d" % (URL_VIP, i))
        results.append(st or err)
        require(st != 200, "the intruder got 200 to DESCRIBE")
    wait_for(lambda: sum(m.stat_sum(n, den_re) for n in m.cameras) - den_before >= 3, 10,
             "3 rbac.denied on the camera sidecars")
    denied = sum(m.stat_sum(n, den_re) for n in m.cameras) - den_before
    cam_after = {n: c.connected_total() for n, c in m.cameras.items()}
    require(cam_after == cam_before, "the camera saw connections from the intruder: %s -> %s",
            cam_before, cam_after)
    st, err = peers.describe_once(viewer, VIP, PORT, "%s?control=1" % URL_VIP)
    require(st == 200, "control: the viewer's DESCRIBE got %s %s", st, err)
    return ("intruder answers %s; camera sidecars: +%d rbac.denied; cameras untouched; viewer "
            "still 200" % (results, denied))


def repush_all(agent):
    """What istiod does for a proxy that reconnects: send every resource again (new versions,
    same content); the proxy must ACK and must not disturb what runs on unchanged config."""
    res = agent.xds.resources
    with res.lock:
        for t, by_name in list(res.by_type.items()):
            for name, (_, at, value) in sorted(by_name.items()):
                res.set_raw(t, name, at, value)
    agent.xds.push()


def check_xds_restart(m):
    """8: while a stream plays, every stand-in control plane is stopped and restarted; the stream
    has no gap, no reconnect upstream; every proxy reconnects and ACKs a new push."""
    viewer = m.pods_by_role("viewer")[1]
    c = peers.RtspClient(viewer, VIP, PORT)
    try:
        cam = play_and_find_camera(m, c, URL_VIP + "?e2e=xds-restart")
        conn_before = {n: cc.connected_total() for n, cc in m.cameras.items()}
        up_before = m.stat_sum(viewer.name, r"^rtsp\.outbound\.upstream_sessions_total$")
        c.measure_gaps_from_now()
        streams_before = {n: a.xds.stream_count for n, a in m.agents.items()}
        acks_before = {n: len(a.xds.acks()) for n, a in m.agents.items()}
        t = time.monotonic()
        ths = [threading.Thread(target=a.restart_control_plane, kwargs={"down_for": 2.0})
               for a in m.agents.values()]
        for th in ths:
            th.start()
        for th in ths:
            th.join(30)
        for n, a in m.agents.items():
            wait_for(lambda: a.xds.stream_count > streams_before[n], 30,
                     "%s's proxy to reconnect to XDS" % n)
        for n, a in m.agents.items():
            repush_all(a)
        for n, a in m.agents.items():
            wait_for(lambda: len(a.xds.acks()) > acks_before[n], 20, "%s's proxy to ACK" % n)
            require(not a.xds.nacks(), "%s NACKed: %s", n, a.xds.nacks()[-1:])
        time.sleep(1.0)
        pk, last, gap = c.snapshot()
        require(not c.error, "the stream broke during the control plane restart: %s", c.error)
        require(time.monotonic() - last < 1.0, "the stream stopped (last packet %.1fs ago)",
                time.monotonic() - last)
        require(gap < 1.0, "the stream paused %.2fs during the restart", gap)
        conn_after = {n: cc.connected_total() for n, cc in m.cameras.items()}
        require(conn_after == conn_before, "a camera saw a reconnect: %s -> %s", conn_before,
                conn_after)
        up_after = m.stat_sum(viewer.name, r"^rtsp\.outbound\.upstream_sessions_total$")
        require(up_after == up_before, "the client sidecar opened %d new upstream sessions",
                up_after - up_before)
        return ("stream via %s kept flowing through a %.1fs restart of all %d control planes "
                "(max gap %.2fs, %d packets, no reconnect); all proxies reconnected and ACKed a "
                "new push, no NACK" % (cam, time.monotonic() - t, len(m.agents), gap, pk))
    finally:
        c.close()


def play_and_find_camera(m, c, url):
    """Play <url> (a URL no one else plays) on scripted client <c>; returns the camera pod that
    serves it: the one whose camera got the new upstream connection."""
    def counts():
        return {n: cam.connected_total() for n, cam in m.cameras.items()}
    # The cameras write their counters every 100 ms: let earlier checks' connections settle.
    prev = counts()
    for _ in range(20):
        time.sleep(0.3)
        before = counts()
        if before == prev:
            break
        prev = before
    c.play_tcp(url)
    wait_for(lambda: c.snapshot()[0] > 20, 10, "packets on the scripted stream")
    new = [n for n, cam in m.cameras.items() if cam.connected_total() > before[n]]
    require(len(new) == 1, "%s: expected one camera with a new connection, got %s", url, new)
    return new[0]


def check_prometheus(m):
    """5: what a real Prometheus scraped from the sidecars' 15090."""
    p = m.prom
    out = []
    # Traffic of its own (so that the check stands alone): one short decode per viewer.
    for v in m.pods_by_role("viewer"):
        frames, err = peers.ffprobe(v, URL, "tcp", seconds=1.0)
        require(frames > 0, "ffprobe in %s: %s", v.name, err[-300:])

    def all_up():
        t = p.targets()
        return len(t) == len(m.pods) and all(x["health"] == "up" for x in t) and t
    try:
        wait_for(all_up, 20, "all %d scrape targets up" % len(m.pods))
    except CheckFailed:
        raise CheckFailed("targets: %s" % [(x["labels"].get("pod"), x["health"],
                                            x.get("lastError")) for x in p.targets()])
    out.append("%d targets up" % len(m.pods))
    cam_wl = "camera-v1|camera-v2"
    base_dst = ('reporter="destination",destination_workload=~"%s",source_workload="viewer",'
                'destination_service="%s",connection_security_policy="mutual_tls",'
                'destination_workload_namespace="media",source_workload_namespace="media",'
                'source_canonical_service="viewer",destination_canonical_service="camera",'
                'destination_service_name="camera",destination_service_namespace="media",'
                'source_principal="spiffe://cluster.local/ns/media/sa/viewer",'
                'destination_principal="spiffe://cluster.local/ns/media/sa/camera"'
                % (cam_wl, SERVICE_HOST))
    base_src = ('reporter="source",source_workload="viewer",source_workload_namespace="media",'
                'source_app="viewer",source_canonical_service="viewer",'
                'destination_service="%s",destination_service_name="camera"' % SERVICE_HOST)
    queries = {
        "opened (destination)": "sum(istio_tcp_connections_opened_total{%s})" % base_dst,
        "closed (destination)": "sum(istio_tcp_connections_closed_total{%s})" % base_dst,
        "sent bytes (destination)": "sum(istio_tcp_sent_bytes_total{%s})" % base_dst,
        "received bytes (destination)": "sum(istio_tcp_received_bytes_total{%s})" % base_dst,
        "opened (source)": "sum(istio_tcp_connections_opened_total{%s})" % base_src,
        "sent bytes (source)": "sum(istio_tcp_sent_bytes_total{%s})" % base_src,
        "received bytes (source)": "sum(istio_tcp_received_bytes_total{%s})" % base_src,
        "rtsp media tx (camera sidecars)":
            'sum(msm_rtsp_downstream_rtp_tx_packets{msm_rtsp_prefix="inbound",pod=~"camera.*"})',
        "rtsp media rx (camera sidecars)":
            'sum(msm_rtsp_upstream_rtp_rx_packets{msm_rtsp_prefix="inbound",pod=~"camera.*"})',
        "rtsp media tx (viewer sidecars)":
            'sum(msm_rtsp_downstream_rtp_tx_packets{msm_rtsp_prefix="outbound",pod=~"viewer.*"})',
        "rtsp sessions (viewer sidecars)":
            'sum(msm_rtsp_sessions_total{msm_rtsp_prefix="outbound",pod=~"viewer.*"})',
    }

    def values():
        v = {}
        for k, q in queries.items():
            r = p.query(q)
            v[k] = float(r[0]["value"][1]) if r else 0.0
        return v
    try:
        vals = wait_for(lambda: (lambda v: all(x > 0 for x in v.values()) and v)(values()), 25,
                        "every istio_tcp_* / rtsp series to have data")
    except CheckFailed:
        v = values()
        missing = [k for k, x in v.items() if x <= 0]
        sample = p.query('{__name__=~"istio_tcp_connections_opened_total"}')
        raise CheckFailed("no data for %s; istio_tcp_connections_opened_total series: %s" % (
            missing, [s["metric"] for s in sample][:6]))
    require(vals["sent bytes (destination)"] > vals["received bytes (destination)"],
            "camera side sent %d bytes <= received %d: media should dominate",
            vals["sent bytes (destination)"], vals["received bytes (destination)"])
    # The intruder's refused connections are not reported as served by the camera workloads.
    r = p.query('sum(istio_tcp_sent_bytes_total{reporter="destination",source_workload="intruder"})')
    intr_bytes = float(r[0]["value"][1]) if r else 0.0
    require(intr_bytes == 0, "camera sidecars report %d bytes sent to the intruder", intr_bytes)
    out.append(", ".join("%s=%d" % (k, v) for k, v in vals.items()))
    # On the client sidecar the RTSP filter's upstream session is shared by its clients
    # (fan-out): the server sidecar's identity its metadata exchange (and mTLS handshake) learnt
    # is every client connection's destination.
    q = ('sum(istio_tcp_connections_opened_total{%s,destination_workload=~"%s",'
         'destination_app="camera",destination_version=~"v1|v2",'
         'destination_workload_namespace="media",destination_canonical_service="camera",'
         'destination_service_namespace="media",'
         'destination_principal="spiffe://cluster.local/ns/media/sa/camera"})' % (base_src, cam_wl))
    r = p.query(q)
    have = bool(r) and float(r[0]["value"][1]) > 0
    if not have:
        sample = p.query('{__name__="istio_tcp_connections_opened_total",reporter="source"}')
        raise CheckFailed("%s; reporter=source has no series for %s; reporter=source series: %s"
                          % ("; ".join(out), q, [s["metric"] for s in sample][:4]))
    out.append("reporter=source: destination workload/app/version/namespace/principal of the "
               "camera (%d connections)" % float(r[0]["value"][1]))
    return "; ".join(out)


def check_drain(m):
    """7: pilot-agent's shutdown of the camera sidecar serving a playing stream: drain inbound
    listeners gracefully, wait the termination drain duration, SIGKILL. The stream flows until
    the kill."""
    viewer = m.pods_by_role("viewer")[0]
    c = peers.RtspClient(viewer, VIP, PORT)
    try:
        cam = play_and_find_camera(m, c, URL_VIP + "?e2e=drain")
        a = m.agents[cam]
        c.measure_gaps_from_now()
        t0 = time.monotonic()
        done = {}

        def shut():
            try:
                a.shutdown()
            except Exception as e:
                done["err"] = e
            done["t"] = time.monotonic()
        th = threading.Thread(target=shut)
        th.start()
        # During the drain window, keep the session alive and watch it.
        mid = []
        while th.is_alive() and time.monotonic() - t0 < m.args.drain_window + 15:
            time.sleep(0.5)
            pk, last, gap = c.snapshot()
            if th.is_alive():
                mid.append((time.monotonic() - t0, pk, gap, c.error))
        th.join(10)
        require("err" not in done, "agent shutdown failed: %s", done.get("err"))
        t_kill = done["t"]
        window = t_kill - t0
        require(window >= m.args.drain_window * 0.9, "shutdown took only %.1fs (drain window %ss)",
                window, m.args.drain_window)
        # Before the kill: no error, no gap.
        errs = [x for x in mid if x[3] and x[0] < window - 0.6]
        require(not errs, "the stream broke %.1fs into the drain window: %s", errs[0][0] if errs
                else 0, errs[:1])
        gaps = [x for x in mid if x[2] >= 1.0 and x[0] < window - 0.6]
        require(not gaps, "the stream paused %.2fs during the drain window", gaps[0][2] if gaps
                else 0)
        pk, last, gap = c.snapshot()
        require(last is not None and last >= t_kill - 1.0,
                "last packet %.1fs before the SIGKILL", t_kill - (last or t0))
        return ("camera sidecar %s: drain_listeners?inboundonly&graceful, %.1fs window, SIGKILL; "
                "stream flowed until %.2fs before the kill (%d packets, max gap %.2fs)"
                % (cam, window, max(0.0, t_kill - last), pk, max(x[2] for x in mid) if mid else gap))
    finally:
        c.close()


CHECKS = (
    (6, "readiness", check_readiness),
    (1, "decode", check_decode),
    (2, "fanout", check_fanout),
    (3, "split", check_split),
    (4, "rbac", check_rbac),
    (8, "xds-restart", check_xds_restart),
    (5, "prometheus", check_prometheus),
    (7, "drain", check_drain),
)


def print_table(results):
    w = max(len(r[1]) for r in results)
    print("\n%-3s %-*s %-6s %6s  %s" % ("#", w, "check", "result", "secs", "detail"))
    for num, name, res, secs, detail in sorted(results, key=lambda r: r[0]):
        lines = detail.splitlines() or [""]
        print("%-3s %-*s %-6s %6.1f  %s" % (num, w, name, res, secs, lines[0][:300]))
        for l in lines[1:8]:
            print("%s  %s" % (" " * (w + 20), l[:300]))
    sys.stdout.flush()


def main():
    global T0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=os.path.join(REPO, "build", "msm-proxy"))
    ap.add_argument("--shared", default=os.path.join(REPO, "..", "shared"))
    ap.add_argument("--manifests", default=os.path.join(INTEGRATION, "manifests"))
    ap.add_argument("--split-n", type=int, default=100, help="sessions for the 90/10 check")
    ap.add_argument("--alpha", type=float, default=1e-3,
                    help="false-failure probability of the split check")
    ap.add_argument("--drain-window", type=float, default=3.0,
                    help="terminationDrainDuration of the drained sidecar (s)")
    ap.add_argument("--only", help="comma-separated check names to run (setup always runs)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, xDS dumps)")
    ap.add_argument("--log-level", default="warning", help="proxy -l level")
    ap.add_argument("--prefix", default="msme2e%d" % os.getpid(), help=argparse.SUPPRESS)
    args = ap.parse_args()
    T0 = time.monotonic()
    if os.geteuid() != 0:
        sys.exit("mesh_e2e: needs root (network namespaces, iptables, running the proxy as uid "
                 "1337); run it with sudo. CI runs it as root.")
    args.binary = os.path.abspath(args.binary)
    args.shared = os.path.abspath(args.shared)
    missing = [t for t in ("ip", "iptables-restore", "prometheus", "ffprobe", "gst-launch-1.0",
                           "setpriv") if not shutil.which(t)]
    if not os.access(args.binary, os.X_OK):
        missing.append(args.binary)
    if missing:
        sys.exit("mesh_e2e: missing %s (run scripts/deps.sh test)" % ", ".join(missing))
    os.environ.setdefault("MSM_SHARED_DIR", args.shared)

    mesh = Mesh(args)
    atexit.register(mesh.close)

    def on_signal(sig, frame):
        raise SystemExit(128 + sig)
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, on_signal)

    results = []
    only = set(args.only.split(",")) if args.only else None
    try:
        t = time.monotonic()
        try:
            mesh.setup_network()
            mesh.setup_cameras()
            mesh.render()
            mesh.start_sidecars()
            mesh.wait_sidecars_ready([n for n in mesh.pods if n != HELD_POD], 60)
            mesh.start_prometheus()
        except Exception as e:
            traceback.print_exc()
            results.append((0, "setup", "FAIL", time.monotonic() - t, str(e)))
            print_table(results)
            return 1
        nacks = {n: a.xds.nacks() for n, a in mesh.agents.items() if a.xds.nacks()}
        if nacks:
            results.append((0, "setup", "FAIL", time.monotonic() - t,
                            "NACKs of istiogen's config: %s" % {
                                n: [(r["type_url"].rsplit(".", 1)[-1], r["error_message"])
                                    for r in v[:2]] for n, v in nacks.items()}))
        else:
            acked = sum(len(a.xds.acks()) for a in mesh.agents.values())
            results.append((0, "setup", "PASS", time.monotonic() - t,
                            "%d pods, %d sidecars ready, %d xDS ACKs, no NACK"
                            % (len(mesh.pods), len(mesh.agents), acked)))
        for num, name, fn in CHECKS:
            if only and name not in only and not (name == "readiness"):
                continue
            t = time.monotonic()
            log("check %d %s ...", num, name)
            try:
                detail = fn(mesh)
                res = "PASS"
                for gap in KNOWN_GAPS:
                    if gap in getattr(fn, "known_gaps", ()):
                        res, detail = "XPASS", "%s (known gap %r is fixed: remove it from " \
                            "KNOWN_GAPS)" % (detail, gap)
            except KnownGap as e:
                if e.gap in KNOWN_GAPS:
                    res, detail = "XFAIL", "%s\nknown gap: %s" % (e.detail, KNOWN_GAPS[e.gap])
                else:
                    res, detail = "FAIL", e.detail
            except CheckFailed as e:
                res, detail = "FAIL", str(e)
            except Exception as e:
                res, detail = "FAIL", "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc())
            dead = mesh.sidecars_alive() if name != "drain" else []
            if dead and res == "PASS":
                res, detail = "FAIL", "sidecar(s) exited: %s" % dead
            results.append((num, name, res, time.monotonic() - t, detail))
            log("check %d %s: %s (%.1fs)", num, name, res, time.monotonic() - t)
            if res != "PASS":
                log("  %s", detail)
        late = {n: a.xds.nacks() for n, a in mesh.agents.items() if a.xds.nacks()}
        if late:
            results.append((9, "no-nack", "FAIL", 0.0, "NACKs during the run: %s" % {
                n: [r["error_message"] for r in v[:2]] for n, v in late.items()}))
    finally:
        log("cleaning up")
        mesh.close()
    for n, txt in getattr(mesh, "sanitizer_reports", []):
        print("---- sanitizer report in %s's proxy log ----\n%s" % (n, txt))
    if getattr(mesh, "sanitizer_reports", None):
        results.append((9, "sanitizers", "FAIL", 0.0, "sanitizer report in %s"
                        % [n for n, _ in mesh.sanitizer_reports]))
    print_table(results)
    ok = all(r[2] in ("PASS", "XFAIL") for r in results)
    print("\nmesh e2e: %s in %.0fs" % ("PASS" if ok else "FAIL", time.monotonic() - T0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

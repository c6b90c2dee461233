"""Agent: pilot-agent's side of one sidecar, for msm-proxy (see README.md)."""
import ctypes
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import bootstrap as B
from .ca import MeshCA

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_TEMPLATE = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "istio", "bootstrap",
                                "envoy_bootstrap.json")

XDS_REL = "etc/istio/proxy/XDS"
SDS_DIR_REL = "var/run/secrets/workload-spiffe-uds"
BOOTSTRAP_REL = "etc/istio/proxy/envoy-rev.json"
PODINFO_REL = "etc/istio/pod"
TYPE_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SECRET_MSG = "envoy.extensions.transport_sockets.tls.v3.Secret"
CLONE_NEWNET = 0x40000000
# The Istio version the agent reports in node metadata (istiod gates config on it): the version
# of the istiod whose output is served here (the fixture dumps and istiogen are 1.20.8).
ISTIO_VERSION = "1.20.8"


def _controlplane():
    p = os.path.join(REPO, "test", "controlplane")
    if p not in sys.path:
        sys.path.insert(0, p)
    import controlplane
    return controlplane


def netns_path(netns):
    if netns is None:
        return None
    return netns if "/" in netns else os.path.join("/var/run/netns", netns)


def _setns(path):
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns(%s): %s" % (path, os.strerror(e)))
    finally:
        os.close(fd)


class NetnsRunner:
    """A thread living in a network namespace: sockets made with run(fn) belong to it (a socket
    keeps its namespace whatever thread later uses it)."""

    def __init__(self, path):
        self.path = path
        self.q = queue.Queue()
        ready = queue.Queue()
        self.t = threading.Thread(target=self._loop, args=(ready,), daemon=True,
                                  name="netns-" + os.path.basename(path))
        self.t.start()
        err = ready.get()
        if err:
            raise err

    def _loop(self, ready):
        try:
            _setns(self.path)
        except Exception as e:  # report to the constructor
            ready.put(e)
            return
        ready.put(None)
        while True:
            item = self.q.get()
            if item is None:
                return
            fn, box, done = item
            try:
                box.append((True, fn()))
            except BaseException as e:
                box.append((False, e))
            done.set()

    def run(self, fn):
        if not self.t.is_alive():
            raise OSError("network namespace runner for %s is closed" % self.path)
        box = []
        done = threading.Event()
        self.q.put((fn, box, done))
        done.wait()
        ok, v = box[0]
        if not ok:
            raise v
        return v

    def close(self):
        self.q.put(None)
        self.t.join(2)


def http_request(connect, host, port, path, method="GET", body=b"", headers=None, timeout=3.0):
    """(status, body bytes) of one HTTP/1.1 request (Connection: close); <connect>(host, port,
    timeout) makes the socket (so it can be made inside a network namespace)."""
    s = connect(host, port, timeout)
    try:
        s.settimeout(timeout)
        h = {"Host": "%s:%d" % (host, port), "Connection": "close", "User-Agent": "msm-agent",
             "Content-Length": str(len(body))}
        h.update(headers or {})
        req = "%s %s HTTP/1.1\r\n%s\r\n" % (method, path,
                                            "".join("%s: %s\r\n" % kv for kv in h.items()))
        s.sendall(req.encode() + body)
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines or not lines[0].startswith(b"HTTP/"):
        raise OSError("bad HTTP response from %s:%d%s: %r" % (host, port, path, data[:100]))
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
        out = b""
        while rest:
            n, _, rest = rest.partition(b"\r\n")
            size = int(n.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2:]
        rest = out
    return status, rest


def _parse_stats(text, names):
    """pilot-agent's parseStats: the first line starting with each name, 'name: value'."""
    vals = {}
    for line in text.splitlines():
        for n in names:
            if n not in vals and line.startswith(n):
                parts = line.split(":")
                if len(parts) == 2:
                    try:
                        vals[n] = int(parts[1].strip())
                    except ValueError:
                        pass
    return {n: vals.get(n, 0) for n in names}


class Agent:
    def __init__(self, run_dir, binary, pod="pod", namespace="default", service_account="default",
                 pod_ip="127.0.0.1", labels=None, annotations=None, proxycfg=None, xds_dump=None,
                 ca=None, netns=None, uid=1337, gid=1337, status_port=15020, admin_port=None,
                 log_level="warning", component_log_level="misc:error", concurrency=None,
                 drain_duration=None, termination_drain_duration=None,
                 exit_on_zero_active_connections=False, min_drain_duration=5.0, env=None,
                 bootstrap_edit=None, build_dir=None, types=None, template=None,
                 trust_domain="cluster.local", cluster_id="Kubernetes", mesh_id="cluster.local",
                 istio_version=ISTIO_VERSION, status_host="0.0.0.0", extra_args=()):
        self.run_dir = os.path.abspath(run_dir)
        self.binary = os.path.abspath(binary)
        self.pod, self.namespace, self.service_account = pod, namespace, service_account
        self.pod_ip = pod_ip
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.ca = ca or MeshCA(trust_domain)
        self.netns = netns_path(netns)
        self.uid, self.gid = uid, gid
        self.log_level, self.component_log_level = log_level, component_log_level
        self.exit_on_zero = exit_on_zero_active_connections
        self.min_drain_duration = min_drain_duration
        self.env = dict(env or {})
        self.bootstrap_edit = bootstrap_edit
        self.template_path = template or DEFAULT_TEMPLATE
        self.cluster_id, self.mesh_id = cluster_id, mesh_id
        self.istio_version = istio_version
        self.status_host = status_host
        self.extra_args = list(extra_args)
        self._xds_source = xds_dump

        pc = B.merge_proxy_config(B.DEFAULT_PROXY_CONFIG, B.load_proxy_config(proxycfg))
        if admin_port is not None:
            pc["proxy_admin_port"] = admin_port
        if status_port is not None:
            pc["status_port"] = status_port
        if concurrency is not None:
            pc["concurrency"] = concurrency
        if drain_duration is not None:
            pc["drain_duration"] = {"seconds": int(drain_duration)}
        if termination_drain_duration is not None:
            sec = float(termination_drain_duration)
            pc["termination_drain_duration"] = {"seconds": int(sec),
                                                "nanos": int(round((sec - int(sec)) * 1e9))}
        self.proxy_config = pc
        self.admin_port = int(pc.get("proxy_admin_port", 15000))
        self.status_port = int(pc.get("status_port", 15020))
        tdd = pc.get("termination_drain_duration") or {"seconds": 5}
        self.termination_drain_duration = tdd.get("seconds", 0) + tdd.get("nanos", 0) / 1e9

        cp = _controlplane()
        self._cpmod = cp
        self.build_dir = build_dir or os.path.dirname(self.binary)
        self.types = types or cp.Types(self.build_dir)
        self.xds = cp.ControlPlane(self.types)
        self.sds = cp.ControlPlane(self.types)
        self.proc = None
        self.returncode = None
        self.log_path = os.path.join(self.run_dir, "proxy.log")
        self.proxy_argv = None
        self.bootstrap = None          # the rendered bootstrap (dict, after bootstrap_edit)
        self.node = None
        self._runner = NetnsRunner(self.netns) if self.netns else None
        self._status = None
        self._received_first_update = False
        self._at_least_once_ready = False
        self._started_at = None
        self._ready_at = None
        self._lock = threading.Lock()
        self._closed = False
        self._shutting_down = False
        self.events = []               # (time, what) of the lifecycle, for tests and logs
        self.cert_serials = []         # serials of every workload certificate served

    # ---- paths --------------------------------------------------------------------------------

    def path(self, rel):
        return os.path.join(self.run_dir, rel)

    @property
    def xds_socket(self):
        return self.path(XDS_REL)

    @property
    def sds_socket(self):
        return self.path(os.path.join(SDS_DIR_REL, "socket"))

    def _event(self, what):
        self.events.append((time.time(), what))

    # ---- bootstrap ----------------------------------------------------------------------------

    def pod_env(self):
        """The environment the injector gives istio-proxy (the part the bootstrap reads)."""
        e = {
            "POD_NAME": self.pod, "POD_NAMESPACE": self.namespace,
            "INSTANCE_IP": self.pod_ip, "SERVICE_ACCOUNT": self.service_account,
            "HOST_IP": self.pod_ip, "ISTIO_CPU_LIMIT": "2",
            "ISTIO_META_CLUSTER_ID": self.cluster_id, "ISTIO_META_MESH_ID": self.mesh_id,
            "ISTIO_META_INTERCEPTION_MODE": "REDIRECT",
            "ISTIO_META_WORKLOAD_NAME": self.labels.get("app", self.pod),
            "ISTIO_META_OWNER": "kubernetes://apis/apps/v1/namespaces/%s/deployments/%s" % (
                self.namespace, self.labels.get("app", self.pod)),
            "ISTIO_META_APP_CONTAINERS": self.labels.get("app", self.pod),
            "TRUST_DOMAIN": self.ca.trust_domain,
            "PROXY_CONFIG": json.dumps(B.proxy_config_json(self.proxy_config)),
        }
        if self.exit_on_zero:
            e["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"] = "true"
        e.update(self.env)
        return e

    def node_id(self):
        return "sidecar~%s~%s.%s~%s.svc.cluster.local" % (self.pod_ip, self.pod, self.namespace,
                                                          self.namespace)

    def render_bootstrap(self):
        """Write etc/istio/pod/{labels,annotations} (downward API) and render
        etc/istio/proxy/envoy-rev.json; returns the bootstrap dict."""
        podinfo = self.path(PODINFO_REL)
        os.makedirs(podinfo, exist_ok=True)
        with open(os.path.join(podinfo, "labels"), "w") as f:
            f.write(B.format_downward_api(self.labels))
        with open(os.path.join(podinfo, "annotations"), "w") as f:
            f.write(B.format_downward_api(self.annotations))
        env = self.pod_env()
        envs = ["%s=%s" % kv for kv in env.items()]
        self.node = B.get_node_metadata(
            self.node_id(), envs, self.proxy_config, instance_ips=[self.pod_ip],
            pilot_san=["istiod.istio-system.svc"], outlier_log_path="",
            exit_on_zero_active_connections=self.exit_on_zero,
            workload_identity_socket_file="socket", istio_version=self.istio_version,
            labels_file=os.path.join(podinfo, "labels"),
            annotations_file=os.path.join(podinfo, "annotations"))
        with open(self.template_path) as f:
            text = B.render(f.read(), self.node)
        doc = json.loads(text)
        if self.bootstrap_edit:
            doc = self.bootstrap_edit(doc) or doc
        out = self.path(BOOTSTRAP_REL)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(doc, f, indent=1)
        os.chmod(out, 0o666)
        self.bootstrap = doc
        return doc

    # ---- XDS / SDS ------------------------------------------------------------------------------

    def _load(self, dump):
        """Make the XDS resources exactly those of <dump>: changed ones replaced, gone ones
        removed, unchanged ones untouched (no version bump)."""
        tmp = self._cpmod.Resources(self.types)
        if dump:
            tmp.load_config_dump(dump)
        res = self.xds.resources
        with res.lock:
            for t in set(res.by_type) | set(tmp.by_type):
                new = tmp.by_type.get(t, {})
                old = res.by_type.get(t, {})
                for name in list(old):
                    if name not in new:
                        res.remove(t, name)
                for name, (_, at, value) in sorted(new.items()):
                    o = old.get(name)
                    if o is None or o[1] != at or o[2] != value:
                        res.set_raw(t, name, at, value)

    def push(self, dump=None):
        """Serve <dump> (a config_dump dict; default: call/reuse xds_dump) and push changes."""
        if dump is None:
            dump = self._xds_source() if callable(self._xds_source) else self._xds_source
        else:
            self._xds_source = dump
        self._load(dump)
        self.xds.push()

    def _set_secrets(self):
        cert, key = self.ca.issue(self.namespace, self.service_account)
        from .ca import cert_serial
        self.cert_serials.append(cert_serial(cert))
        b64 = __import__("base64").b64encode
        self.sds.resources.set(self.types.parse_json(SECRET_MSG, {
            "name": "default", "tls_certificate": {
                "certificate_chain": {"inline_bytes": b64(cert).decode()},
                "private_key": {"inline_bytes": b64(key).decode()}}}))
        if "ROOTCA" not in self.sds.resources.names(TYPE_SECRET):
            self.sds.resources.set(self.types.parse_json(SECRET_MSG, {
                "name": "ROOTCA", "validation_context": {
                    "trusted_ca": {"inline_bytes": b64(self.ca.root_pem).decode()}}}))
        return cert

    def rotate_cert(self):
        """Issue a new workload certificate and push it over SDS; returns its PEM."""
        cert = self._set_secrets()
        self.sds.push()
        self._event("rotate")
        return cert

    def _open_sockets(self):
        for p in (self.xds_socket, self.sds_socket):
            os.chmod(p, 0o777)

    def _listen(self):
        os.makedirs(os.path.dirname(self.xds_socket), exist_ok=True)
        os.makedirs(os.path.dirname(self.sds_socket), exist_ok=True)
        self.xds.listen("unix:" + self.xds_socket)
        self.sds.listen("unix:" + self.sds_socket)
        self._open_sockets()

    def restart_control_plane(self, down_for=0.0):
        """Stop the XDS and SDS servers (every stream ends), wait <down_for> s, listen again on
        the same sockets with the same resources. The proxy is not touched."""
        self.xds.stop()
        self.sds.stop()
        self._event("control plane down")
        if down_for:
            time.sleep(down_for)
        self.xds.restart()
        self.sds.restart()
        self._open_sockets()
        self._event("control plane up")

    # ---- network namespace helpers ----------------------------------------------------------------

    def in_netns(self, fn):
        """fn() run inside the pod's network namespace (sockets it makes live there)."""
        return self._runner.run(fn) if self._runner else fn()

    def _connect(self, host, port, timeout):
        fn = lambda: socket.create_connection((host, port), timeout=timeout)  # noqa: E731
        return self._runner.run(fn) if self._runner else fn()

    def http(self, port, path, method="GET", host="127.0.0.1", body=b"", headers=None,
             timeout=3.0):
        """(status, body) of an HTTP request to <host>:<port> inside the pod's namespace."""
        return http_request(self._connect, host, port, path, method, body, headers, timeout)

    def admin(self, path, method="GET", timeout=3.0):
        return self.http(self.admin_port, path, method, timeout=timeout)

    def stats(self, filter_re):
        """{name: int} of /stats?usedonly&filter=<re> (text format)."""
        _, body = self.admin("/stats?usedonly&filter=" + filter_re)
        out = {}
        for line in body.decode(errors="replace").splitlines():
            k, sep, v = line.partition(":")
            if sep:
                try:
                    out[k.strip()] = int(v.strip())
                except ValueError:
                    pass
        return out

    # ---- readiness (pilot-agent status/ready/probe.go) ------------------------------------------------

    def ready(self):
        """One readiness check as pilot-agent's probe: (ok, reason)."""
        if self._shutting_down:
            return False, "agent is shutting down"
        if self.proc is None or self.proc.poll() is not None:
            return False, "proxy is not running"
        try:
            if not self._received_first_update:
                _, body = self.admin("/stats?usedonly&filter=^(cluster_manager\\.cds|"
                                     "listener_manager\\.lds)\\.(update_success|update_rejected)$")
                s = _parse_stats(body.decode(errors="replace"), [
                    "cluster_manager.cds.update_success", "cluster_manager.cds.update_rejected",
                    "listener_manager.lds.update_success", "listener_manager.lds.update_rejected"])
                cds = s["cluster_manager.cds.update_success"] > 0
                lds = s["listener_manager.lds.update_success"] > 0
                desc = "cds updates: %d successful, %d rejected; lds updates: %d successful, " \
                    "%d rejected" % (s["cluster_manager.cds.update_success"],
                                     s["cluster_manager.cds.update_rejected"],
                                     s["listener_manager.lds.update_success"],
                                     s["listener_manager.lds.update_rejected"])
                if not (cds and lds):
                    if not cds and not lds:
                        return False, "config not received from XDS server (is Istiod " \
                            "running?): " + desc
                    if s["cluster_manager.cds.update_rejected"] or \
                            s["listener_manager.lds.update_rejected"]:
                        return False, "config received from XDS server, but was rejected: " + desc
                    return False, "config not fully received from XDS server: " + desc
                self._received_first_update = True
            if not self._at_least_once_ready:
                _, body = self.admin("/stats?usedonly&filter=^(server\\.state|"
                                     "listener_manager\\.workers_started)", timeout=3.0)
                text = body.decode(errors="replace")
                if "server.state" not in text:
                    return False, "server.state is not yet updated: " + text
                if "listener_manager.workers_started" not in text:
                    return False, "listener_manager.workers_started is not yet updated: " + text
                s = _parse_stats(text, ["server.state", "listener_manager.workers_started"])
                if s["server.state"] != 0:
                    names = {1: "DRAINING", 2: "PRE_INITIALIZING", 3: "INITIALIZING"}
                    return False, "server is not live, current state is: " + \
                        names.get(s["server.state"], "UNKNOWN")
                if s["listener_manager.workers_started"] != 1:
                    return False, "workers have not yet started"
                self._at_least_once_ready = True
                self._ready_at = time.time()
                self._event("ready")
        except OSError as e:
            return False, "failed to get readiness stats: %s" % e
        return True, ""

    def wait_ready(self, timeout=30.0):
        end = time.time() + timeout
        why = ""
        while time.time() < end:
            ok, why = self.ready()
            if ok:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("proxy exited (%s): %s" % (self.proc.returncode,
                                                             self.log_tail()))
            time.sleep(0.1)
        raise TimeoutError("not ready after %.0fs: %s" % (timeout, why))

    def log_tail(self, n=3000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    # ---- status server (15020) ------------------------------------------------------------------------

    def _status_handler(self):
        agent = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, body=b"", ctype="text/plain; charset=utf-8"):
                if isinstance(body, str):
                    body = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/healthz/ready":
                    ok, why = agent.ready()
                    self._send(200 if ok else 503, "" if ok else why + "\n")
                elif path in ("/stats/prometheus", "/metrics"):
                    code, body = agent.merged_metrics(self.path.partition("?")[2])
                    self._send(code, body, "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._send(404, "not found\n")

            def do_POST(self):
                path = self.path.split("?", 1)[0]
                if self.client_address[0] not in ("127.0.0.1", "::1"):
                    self._send(403, "only from localhost\n")
                elif path == "/quitquitquit":
                    self._send(200, "OK\n")
                    threading.Thread(target=agent.shutdown, daemon=True).start()
                elif path == "/drain":
                    agent.drain(skip_exit=True)
                    self._send(200, "OK\n")
                else:
                    self._send(404, "not found\n")
        return H

    def merged_metrics(self, query=""):
        """pilot-agent's merged /stats/prometheus: agent metrics, then the proxy's (from the
        15090 listener, text/plain)."""
        lines = ["# TYPE istio_agent_startup_duration_seconds gauge"]
        if self._ready_at:
            lines.append("istio_agent_startup_duration_seconds %g" %
                         (self._ready_at - self._started_at))
        lines.append("# TYPE istio_agent_cert_rotations_total counter")
        lines.append("istio_agent_cert_rotations_total %d" % max(0, len(self.cert_serials) - 1))
        own = "\n".join(lines) + "\n"
        port = int((self.bootstrap or {}).get("node", {}).get("metadata", {})
                   .get("ENVOY_PROMETHEUS_PORT", 15090))
        try:
            code, body = self.http(port, "/stats/prometheus" + ("?" + query if query else ""),
                                   headers={"Accept": "text/plain"})
        except OSError as e:
            return 503, own + "# proxy metrics unavailable: %s\n" % e
        if code != 200:
            return 503, own + "# proxy metrics: HTTP %d\n" % code
        return 200, own.encode() + body

    def _start_status(self):
        handler = self._status_handler()
        make = lambda: ThreadingHTTPServer((self.status_host, self.status_port), handler)  # noqa
        srv = self._runner.run(make) if self._runner else make()
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True, name="status-%s" % self.pod).start()
        self._status = srv

    # ---- proxy process --------------------------------------------------------------------------

    def argv(self):
        """pilot-agent's command line (pkg/envoy/proxy.go), contract section 1.2."""
        pc = self.proxy_config
        dd = pc.get("drain_duration") or {"seconds": 45}
        ips = [self.pod_ip]
        v6 = all(":" in ip for ip in ips)
        a = [self.binary, "-c", BOOTSTRAP_REL,
             "--drain-time-s", str(int(dd.get("seconds", 0))),
             "--drain-strategy", "immediate",
             "--local-address-ip-version", "v6" if v6 else "v4",
             "--file-flush-interval-msec", str(self._flush_ms()),
             "--disable-hot-restart",
             "--allow-unknown-static-fields"]
        if pc.get("file_flush_min_size_kb"):
            a += ["--file-flush-min-size-kb", str(pc["file_flush_min_size_kb"])]
        level = self.log_level
        comp = self.component_log_level
        if ":" in level:  # --proxyLogLevel=warning,misc:error
            parts = level.split(",")
            level = next((p for p in parts if ":" not in p), "warning")
            comp = ",".join(p for p in parts if ":" in p)
        a += ["-l", level]
        if comp:
            a += ["--component-log-level", comp]
        if int(pc.get("concurrency") or 0) > 0:
            a += ["--concurrency", str(int(pc["concurrency"]))]
        return a + self.extra_args

    def _flush_ms(self):
        d = self.proxy_config.get("file_flush_interval")
        if not d:
            return 1000
        return int(d.get("seconds", 0)) * 1000 + int(d.get("nanos", 0)) // 1000000

    def _preexec(self):
        ns = self.netns
        uid, gid = self.uid, self.gid

        def fn():
            os.setsid()
            if ns:
                _setns(ns)
            if gid is not None:
                os.setgroups([])
                os.setgid(gid)
            if uid is not None:
                os.setuid(uid)
        return fn

    def _prepare_dirs(self):
        for rel in ("", "etc", "etc/istio", "etc/istio/proxy", "etc/istio/pod", "var", "var/run",
                    "var/run/secrets", SDS_DIR_REL, "var/lib/istio/data"):
            p = self.path(rel)
            os.makedirs(p, exist_ok=True)
            os.chmod(p, 0o755)
        if self.uid is not None:
            os.chown(self.path("var/lib/istio/data"), self.uid, self.gid if self.gid else -1)
            # parents of the run directory must be traversable by the proxy's uid
            d = os.path.dirname(self.run_dir)
            while d and d != "/":
                m = os.stat(d).st_mode
                if not m & stat.S_IXOTH:
                    os.chmod(d, m | stat.S_IXOTH)
                d = os.path.dirname(d)

    def start(self):
        """Render the bootstrap, serve XDS + SDS + the status port, start the proxy."""
        self._started_at = time.time()
        self._prepare_dirs()
        self.render_bootstrap()
        self._set_secrets()
        src = self._xds_source() if callable(self._xds_source) else self._xds_source
        self._load(src)
        self._listen()
        self._start_status()
        self.proxy_argv = self.argv()
        env = dict(os.environ)
        env.update(self.pod_env())
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.proxy_argv, cwd=self.run_dir, env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         preexec_fn=self._preexec())
        finally:
            log.close()
        self._event("proxy started pid %d" % self.proc.pid)
        return self

    def drain(self, skip_exit=False):
        """POST /drain_listeners?inboundonly&graceful[&skip_exit] (sidecar)."""
        path = "/drain_listeners?inboundonly&graceful" + ("&skip_exit" if skip_exit else "")
        self._event("drain")
        return self.admin(path, method="POST")

    def active_connections(self):
        """pilot-agent's activeProxyConnections: -1 when no stats."""
        _, body = self.admin("/stats?usedonly&filter=downstream_cx_active$", timeout=2.0)
        text = body.decode(errors="replace")
        if not text:
            return -1
        known = {"listener.0.0.0.0_15021.downstream_cx_active",
                 "listener.0.0.0.0_15090.downstream_cx_active",
                 "listener.admin.downstream_cx_active",
                 "listener.admin.main_thread.downstream_cx_active"}
        n = 0
        for line in text.splitlines():
            parts = line.split(":")
            if len(parts) != 2:
                continue
            name = parts[0]
            if not name.startswith("listener.") or "worker_" in name or \
                    name.startswith("listener.envoy_internal_") or name in known:
                continue
            try:
                n += int(parts[1].strip())
            except ValueError:
                pass
        return n

    def shutdown(self):
        """pilot-agent's terminate(): drain inbound listeners gracefully, wait
        terminationDrainDuration (or, with EXIT_ON_ZERO_ACTIVE_CONNECTIONS, minDrainDuration
        then until no active connection), then SIGKILL. Returns the proxy's exit status."""
        with self._lock:
            if self._shutting_down or self.proc is None:
                return self.returncode
            self._shutting_down = True
        try:
            self.drain()
        except OSError as e:
            self._event("drain failed: %s" % e)
        if self.exit_on_zero:
            self._wait_exit(self.min_drain_duration)
            retries = 0
            while self.proc.poll() is None:
                time.sleep(1.0)
                try:
                    ac = self.active_connections()
                except OSError:
                    retries += 1
                    if retries > 4:
                        break
                    continue
                retries = 0
                if ac <= 0:
                    break
        else:
            self._wait_exit(self.termination_drain_duration)
        if self.proc.poll() is None:
            self._event("SIGKILL")
            os.kill(self.proc.pid, signal.SIGKILL)
        self.returncode = self.proc.wait()
        self._event("proxy exited %s" % self.returncode)
        return self.returncode

    def _wait_exit(self, seconds):
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self.proc is not None and self.proc.poll() is None:
            if self._shutting_down:
                self.proc.kill()
                self.proc.wait()
            else:
                self.shutdown()
        if self._status:
            self._status.shutdown()
            self._status.server_close()
        self.xds.stop()
        self.sds.stop()
        if self._runner:
            self._runner.close()
        for p in (self.path(BOOTSTRAP_REL),):  # pilot-agent deletes envoy-rev.json on exit
            try:
                os.unlink(p)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

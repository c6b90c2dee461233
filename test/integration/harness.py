"""Integration harness: runs the real msm-proxy binary against real peers on loopback.

Stdlib only; run with Debian's /usr/bin/python3:

    /usr/bin/python3 test/integration/test_tcp.py --binary build/msm-proxy [--shared DIR] [-k name]

What it provides:
- Proxy: writes a bootstrap (dict -> JSON/YAML file) into a private temp dir, starts the binary with
  --admin-address-path, waits for /ready == 200, talks to the admin API, and always stops the
  process (SIGINT, then SIGKILL). A proxy's stderr goes to a file; it is printed when a test fails,
  and a sanitizer report in it or an abnormal exit fails the test.
- Upstream: a threaded TCP or unix-socket server whose behaviour is one of echo, sink, identify
  (sends its own name, then echoes), or a callable for custom scripts.
- ProxyTestCase: unittest.TestCase with helpers (start_proxy with retry on a lost port race,
  upstream(), connect(), wait_for()).
Every wait is bounded; every process and thread started here is stopped in a cleanup.
"""
import argparse
import atexit
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

BINARY = None
SHARED = None

# Generous for an ASan+UBSan Debug build on a loaded 2-core box; a healthy release build is far
# below every one of these.
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
IO_TIMEOUT = 10.0

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "WARNING: ThreadSanitizer",
    "ERROR: ThreadSanitizer",
    "runtime error:",  # UBSan
    "UndefinedBehaviorSanitizer",
    "SUMMARY: AddressSanitizer",
)

# Applied to every proxy we start; they do nothing for a build without sanitizers. A small
# quarantine keeps an ASan build's RSS meaningful for the back-pressure test.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1:quarantine_size_mb=16:"
                    "malloc_context_size=20:detect_stack_use_after_return=0",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "LSAN_OPTIONS": "exitcode=23",
}

# Admin requests never go through an HTTP proxy from the environment (http_proxy, ...).
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_live_procs = set()
_live_lock = threading.Lock()


def _kill_leftovers():
    with _live_lock:
        procs = list(_live_procs)
    for p in procs:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


atexit.register(_kill_leftovers)

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # The proxy gets SIGKILL if this test process dies without cleaning up.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def parse_args():
    """Strip --binary/--shared from sys.argv (the rest goes to unittest)."""
    global BINARY, SHARED
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--binary", default=os.environ.get("MSM_PROXY_BINARY"))
    ap.add_argument("--shared", default=os.environ.get("MSM_SHARED_DIR"))
    args, rest = ap.parse_known_args()
    if not args.binary:
        here = os.path.dirname(os.path.abspath(__file__))
        args.binary = os.path.join(here, "..", "..", "build", "msm-proxy")
    if not args.shared:
        here = os.path.dirname(os.path.abspath(__file__))
        args.shared = os.path.join(here, "..", "..", "..", "shared")
    BINARY = os.path.abspath(args.binary)
    SHARED = os.path.abspath(args.shared)
    if not os.access(BINARY, os.X_OK):
        sys.exit("msm-proxy binary not found or not executable: %s" % BINARY)
    sys.argv = [sys.argv[0]] + rest


def main():
    parse_args()
    unittest.main(verbosity=2)


# ---- small utilities ---------------------------------------------------------------------------

def note(fmt, *args):
    """Diagnostic line for humans (margins of timing/memory checks); MSM_IT_VERBOSE=1 shows it."""
    if os.environ.get("MSM_IT_VERBOSE"):
        sys.stderr.write("  [note] " + (fmt % args) + "\n")


def free_port():
    """A TCP port that was free a moment ago (bind to 0, read it, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_for(pred, timeout=IO_TIMEOUT, interval=0.02, what="condition"):
    """Poll <pred> until it returns a truthy value; that value, or AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def recv_exactly(sock, n, timeout=IO_TIMEOUT):
    sock.settimeout(timeout)
    chunks = []
    got = 0
    while got < n:
        b = sock.recv(min(n - got, 1 << 20))
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def recv_until_eof(sock, timeout=IO_TIMEOUT, limit=1 << 30):
    """Everything until the peer's FIN. Raises socket.timeout if no EOF within <timeout>."""
    sock.settimeout(timeout)
    chunks = []
    got = 0
    while got < limit:
        b = sock.recv(1 << 20)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def recv_line(sock, timeout=IO_TIMEOUT):
    sock.settimeout(timeout)
    buf = b""
    while not buf.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            break
        buf += b
    return buf


def is_closed(sock, timeout=IO_TIMEOUT):
    """True if the peer closes (EOF or reset) within <timeout> without sending any data."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return data == b""


def rss_kb(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def to_yaml(v, indent=0):
    """A tiny YAML emitter for config dicts (block style, strings always quoted)."""
    pad = "  " * indent
    if isinstance(v, dict):
        if not v:
            return "{}"
        out = []
        for k, x in v.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", k):
                k = json.dumps(k)
            if isinstance(x, (dict, list)) and x:
                out.append("%s%s:\n%s" % (pad, k, to_yaml(x, indent + 1)))
            else:
                out.append("%s%s: %s" % (pad, k, to_yaml(x, 0)))
        return "\n".join(out)
    if isinstance(v, list):
        if not v:
            return "[]"
        out = []
        for x in v:
            body = to_yaml(x, indent + 1)
            if isinstance(x, (dict, list)) and x:
                out.append("%s- %s" % (pad, body.lstrip()))
            else:
                out.append("%s- %s" % (pad, body))
        return "\n".join(out)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))


# ---- config builders ---------------------------------------------------------------------------

TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def sock_addr(port, host="127.0.0.1"):
    return {"socket_address": {"address": host, "port_value": port}}


def pipe_addr(path):
    return {"pipe": {"path": path}}


def tcp_proxy_filter(stat_prefix="tcp", cluster=None, weighted=None, **extra):
    cfg = {"@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix}
    if weighted is not None:
        cfg["weighted_clusters"] = {"clusters": [{"name": n, "weight": w} for n, w in weighted]}
    else:
        cfg["cluster"] = cluster
    cfg.update(extra)
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": cfg}


def listener(name, address, filters=None, chains=None, **extra):
    d = {"name": name, "address": address}
    if chains is not None:
        d["filter_chains"] = chains
    elif filters is not None:
        d["filter_chains"] = [{"filters": filters}]
    d.update(extra)
    return d


def cluster(name, endpoints, lb_policy=None, ctype="STATIC", connect_timeout="2s", **extra):
    """<endpoints>: list of addresses (dicts from sock_addr/pipe_addr) or (address, weight)."""
    lbs = []
    for ep in endpoints:
        if isinstance(ep, tuple):
            lbs.append({"endpoint": {"address": ep[0]}, "load_balancing_weight": ep[1]})
        else:
            lbs.append({"endpoint": {"address": ep}})
    d = {"name": name, "type": ctype, "connect_timeout": connect_timeout,
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lbs}]}}
    if lb_policy:
        d["lb_policy"] = lb_policy
    d.update(extra)
    return d


def bootstrap(listeners=(), clusters=(), admin=True, **extra):
    b = {"static_resources": {"listeners": list(listeners), "clusters": list(clusters)}}
    if admin:
        b["admin"] = {"address": sock_addr(0)}
    b.update(extra)
    return b


def simple_proxy_config(cluster_def, port=None, stat_prefix="tcp", **tp_extra):
    port = port or free_port()
    return bootstrap(
        listeners=[listener("main", sock_addr(port),
                            [tcp_proxy_filter(stat_prefix, cluster_def["name"], **tp_extra)])],
        clusters=[cluster_def])


# ---- upstream servers --------------------------------------------------------------------------

class Upstream:
    """A threaded server on 127.0.0.1:0 (or a unix socket path).

    mode: "echo" echoes until EOF then closes; "sink" reads and counts until EOF then closes;
    "identify" sends name + "\\n" on accept then echoes; "hold" keeps the connection open without
    reading until stop(); or a callable f(conn, upstream) that owns the connection.
    """

    def __init__(self, mode="echo", name=None, path=None, backlog=128, port=0):
        self.mode = mode
        self.name = name or "up"
        self.path = path
        self.accepted = 0
        self.bytes_in = 0
        self.lock = threading.Lock()
        self.conns = []
        self.threads = []
        self.stopping = threading.Event()
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", port))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(backlog)
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return pipe_addr(self.path) if self.path else sock_addr(self.port)

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            with self.lock:
                self.accepted += 1
                self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            with self.lock:
                self.threads.append(t)
            t.start()

    def _serve(self, c):
        try:
            if callable(self.mode):
                self.mode(c, self)
            elif self.mode == "hold":
                self.stopping.wait(60)
            else:
                if self.mode == "identify":
                    c.sendall(self.name.encode() + b"\n")
                while True:
                    b = c.recv(1 << 20)
                    if not b:
                        break
                    with self.lock:
                        self.bytes_in += len(b)
                    if self.mode in ("echo", "identify"):
                        c.sendall(b)
                c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def active(self):
        """Connections accepted and not yet closed by either side (best effort)."""
        with self.lock:
            return sum(1 for c in self.conns if c.fileno() >= 0)

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
            threads = list(self.threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        self.thread.join(timeout=5)
        for t in threads:
            t.join(timeout=5)
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass


# ---- the proxy process ---------------------------------------------------------------------------

class ProxyStartError(Exception):
    pass


class PortRace(ProxyStartError):
    """A listener port we picked was taken before the proxy bound it."""


_proxy_seq = itertools.count()


class Proxy:
    def __init__(self, workdir, config=None, args=(), fmt="json", config_yaml=None, env=None,
                 wait_ready=True):
        self.workdir = workdir
        self.config = config
        self.extra_args = list(args)
        self.fmt = fmt
        self.config_yaml = config_yaml
        self.env = env
        self.wait_ready = wait_ready
        self.proc = None
        self.admin = None
        self.stderr_text = ""
        self.expect_exit = None  # set by tests that end the process themselves
        n = next(_proxy_seq)
        self.stderr_path = os.path.join(workdir, "stderr%d.txt" % n)
        self.admin_path = os.path.join(workdir, "admin%d.txt" % n)
        self.config_path = None
        if config is not None:
            self.config_path = os.path.join(workdir, "bootstrap%d.%s" % (n, fmt))
            with open(self.config_path, "w") as f:
                if fmt == "yaml":
                    f.write(to_yaml(config) + "\n")
                else:
                    json.dump(config, f, indent=1)

    def argv(self):
        a = [BINARY]
        if self.config_path:
            a += ["-c", self.config_path]
        if self.config_yaml is not None:
            a += ["--config-yaml", self.config_yaml]
        a += ["--admin-address-path", self.admin_path]
        if not any(x.startswith("--concurrency") for x in self.extra_args):
            a += ["--concurrency", "1"]
        return a + self.extra_args

    def start(self):
        env = dict(os.environ)
        env.update(SANITIZER_ENV)
        if self.env:
            env.update(self.env)
        self._stderr_f = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=self._stderr_f, stderr=self._stderr_f, env=env,
                                     preexec_fn=_die_with_parent, cwd=self.workdir)
        with _live_lock:
            _live_procs.add(self.proc)
        if self.wait_ready:
            self._wait_ready()
        return self

    def read_stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return self.stderr_text

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.read_stderr()
                if "cannot bind" in err and "Address already in use" in err:
                    raise PortRace(err)
                raise ProxyStartError("msm-proxy exited with %s before becoming ready:\n%s"
                                      % (self.proc.returncode, err))
            if self.admin is None and os.path.exists(self.admin_path):
                with open(self.admin_path) as f:
                    txt = f.read().strip()
                if txt:
                    self.admin = txt
            if self.admin:
                try:
                    st, _ = self.get("/ready", timeout=1)
                    if st == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.02)
        raise ProxyStartError("msm-proxy not ready within %.0fs:\n%s"
                              % (READY_TIMEOUT, self.read_stderr()))

    # -- admin -------------------------------------------------------------------------------

    def request(self, method, path, timeout=IO_TIMEOUT):
        req = urllib.request.Request("http://%s%s" % (self.admin, path), method=method)
        try:
            with _opener.open(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def get(self, path, timeout=IO_TIMEOUT):
        return self.request("GET", path, timeout)

    def post(self, path, timeout=IO_TIMEOUT):
        return self.request("POST", path, timeout)

    def stats(self, query=""):
        """Counters and gauges from /stats as {name: int} (histograms are skipped)."""
        st, body = self.get("/stats" + query)
        if st != 200:
            raise AssertionError("/stats returned %d: %s" % (st, body))
        out = {}
        for line in body.splitlines():
            name, sep, val = line.rpartition(": ")
            if sep and re.fullmatch(r"\d+", val):
                out[name] = int(val)
        return out

    def stat(self, name):
        return self.stats().get(name)

    def wait_stat(self, name, pred, timeout=IO_TIMEOUT):
        last = [None]

        def check():
            last[0] = self.stats().get(name)
            return last[0] is not None and pred(last[0])
        try:
            wait_for(check, timeout, 0.05, name)
        except AssertionError:
            raise AssertionError("stat %s: condition not met within %.1fs (last value %r)"
                                 % (name, timeout, last[0]))
        return last[0]

    def listener_port(self, name="main"):
        for l in self.config["static_resources"]["listeners"]:
            if l["name"] == name:
                return l["address"]["socket_address"]["port_value"]
        raise KeyError(name)

    def connect(self, name="main", timeout=IO_TIMEOUT):
        return socket.create_connection(("127.0.0.1", self.listener_port(name)), timeout=timeout)

    # -- stopping ------------------------------------------------------------------------------

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """Stop (SIGINT, then SIGKILL) and return a list of problems found (empty = clean)."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            if self.wait_exit() is None:
                problems.append("msm-proxy did not exit within %.0fs of SIGINT; killed"
                                % STOP_TIMEOUT)
                self.proc.kill()
                self.proc.wait(timeout=10)
            elif self.proc.returncode != 0 and self.expect_exit is None:
                problems.append("msm-proxy exited with %d after SIGINT" % self.proc.returncode)
        rc = self.proc.returncode
        if self.expect_exit is not None and rc != self.expect_exit:
            problems.append("msm-proxy exit code %r, expected %r" % (rc, self.expect_exit))
        if rc is not None and rc < 0 and rc != -signal.SIGKILL:
            problems.append("msm-proxy died from signal %d" % -rc)
        with _live_lock:
            _live_procs.discard(self.proc)
        self._stderr_f.close()
        self.stderr_text = self.read_stderr()
        for m in SANITIZER_MARKERS:
            if m in self.stderr_text:
                problems.append("sanitizer report in msm-proxy stderr (%r)" % m)
                break
        return problems


# ---- test case base ----------------------------------------------------------------------------

class ProxyTestCase(unittest.TestCase):
    """Each test gets a temp dir; proxies and upstreams it starts are stopped in cleanups, and the
    proxies' stderr is printed if the test fails."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="msmit-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self._proxies = []

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        self._proxies = []
        r = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            for i, p in enumerate(self._proxies):
                sys.stderr.write("\n----- msm-proxy #%d: %s\n----- stderr:\n%s\n-----\n"
                                 % (i, " ".join(p.argv()), p.stderr_text[-20000:]))
        return r

    def _stop_proxy(self, p):
        problems = p.stop()
        if problems:
            self.fail("; ".join(problems))

    def start_proxy(self, config_fn, attempts=3, **kw):
        """Start msm-proxy with config_fn() (called again, with new free ports, if a port we picked
        was taken meanwhile). <config_fn> may be a dict for configs without listener ports."""
        last = None
        for _ in range(attempts):
            cfg = config_fn() if callable(config_fn) else config_fn
            p = Proxy(self.tmp, cfg, **kw)
            self._proxies.append(p)
            self.addCleanup(self._stop_proxy, p)
            try:
                return p.start()
            except PortRace as e:
                last = e
                p.stop()
                continue
            except ProxyStartError:
                p.stop()
                raise
        raise last

    def upstream(self, mode="echo", name=None, unix=False, **kw):
        path = None
        if unix:
            path = os.path.join(self.tmp, "%s-%d.sock" % (name or "up", len(os.listdir(self.tmp))))
        u = Upstream(mode, name, path, **kw)
        self.addCleanup(u.stop)
        return u

    def connect(self, proxy, name="main", timeout=IO_TIMEOUT):
        s = proxy.connect(name, timeout)
        self.addCleanup(s.close)
        return s

    def run_binary(self, args, timeout=30, input=None):
        """Run msm-proxy to completion (CLI tests): CompletedProcess with text output."""
        env = dict(os.environ)
        env.update(SANITIZER_ENV)
        r = subprocess.run([BINARY] + list(args), capture_output=True, text=True,
                           timeout=timeout, env=env, cwd=self.tmp, input=input)
        out = r.stdout + r.stderr
        for m in SANITIZER_MARKERS:
            if m in out:
                self.fail("sanitizer report from %s:\n%s" % (args, out))
        if r.returncode < 0:
            self.fail("msm-proxy %s died from signal %d:\n%s" % (args, -r.returncode, out))
        return r

"""Harness for the xDS client tests: runs msm-xds-probe (test/xds/msm_xds_probe.c) against the
test control plane (test/controlplane/controlplane.py) running inside the test process.

    /usr/bin/python3 test/xds/test_xds_client.py --probe build/test/msm-xds-probe --build build

Every wait is bounded; every process and server started here is stopped in a cleanup. A probe's
stderr goes to a file that is printed when a test fails; a sanitizer report in it or a non-zero
exit fails the test.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "controlplane"))
import controlplane as C  # noqa: E402

PROBE = None
BUILD = None
SHARED = None
TYPES = None

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer", "SUMMARY: AddressSanitizer")
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1:"
                    "detect_stack_use_after_return=0",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "LSAN_OPTIONS": "exitcode=23",
}

WAIT = 20.0


def types():
    global TYPES
    if TYPES is None:
        TYPES = C.Types(BUILD)
    return TYPES


class Probe:
    """A running msm-xds-probe: send commands, wait for JSON events."""

    def __init__(self, tmpdir, bootstrap, sources=None, log_level="debug"):
        self.tmpdir = tmpdir
        path = os.path.join(tmpdir, "bootstrap-%d.json" % id(self))
        with open(path, "w") as f:
            json.dump(bootstrap, f)
        args = [PROBE, "-c", path]
        for name, cs in (sources or {}).items():
            args += ["--source", "%s=%s" % (name, json.dumps(cs))]
        self.stderr_path = os.path.join(tmpdir, "probe-%d.stderr" % id(self))
        self.stderr = open(self.stderr_path, "w")
        env = dict(os.environ, MSM_LOG_LEVEL=log_level, **SANITIZER_ENV)
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.stderr, text=True, env=env)
        self.cond = threading.Condition()
        self.events = []
        self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "garbage", "line": line}
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait(self, pred, timeout=WAIT, what="event"):
        end = time.time() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = end - time.time()
                if left <= 0 or self.closed:
                    raise AssertionError("probe: no %s in %.1fs (closed=%s); events: %r" %
                                         (what, timeout, self.closed, self.events[-8:]))
                self.cond.wait(min(left, 0.2))

    def wait_count(self, pred, n, timeout=WAIT):
        end = time.time() + timeout
        with self.cond:
            while True:
                got = [ev for ev in self.events if pred(ev)]
                if len(got) >= n:
                    return got
                left = end - time.time()
                if left <= 0 or self.closed:
                    raise AssertionError("probe: %d/%d events in %.1fs; events: %r" %
                                         (len(got), n, timeout, self.events[-8:]))
                self.cond.wait(min(left, 0.2))

    def cmd(self, line):
        """Send a command; returns its reply (ok/error/stats event)."""
        with self.cond:
            mark = len(self.events)
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        end = time.time() + WAIT
        with self.cond:
            while True:
                for ev in self.events[mark:]:
                    if ev["event"] in ("ok", "error", "stats"):
                        return ev
                left = end - time.time()
                if left <= 0 or self.closed:
                    raise AssertionError("probe: no reply to %r" % line)
                self.cond.wait(min(left, 0.2))

    def sub(self, typ, names=(), source="ads", prefix="-", wildcard=False):
        ev = self.cmd("sub %s %s %s %s%s" % (typ, source, prefix, "* " if wildcard else "",
                                             " ".join(names)))
        if ev["event"] != "ok":
            raise AssertionError("sub failed: %r" % ev)

    def stats(self):
        return self.cmd("stats")["stats"]

    def updates(self, type_url=None):
        with self.cond:
            return [e for e in self.events
                    if e["event"] == "update" and (not type_url or e["type"] == type_url)]

    def wait_update(self, type_url, pred=lambda e: True, timeout=WAIT):
        return self.wait(lambda e: e["event"] == "update" and e["type"] == type_url and pred(e),
                         timeout, "update of " + type_url)

    def wait_stat(self, name, pred, timeout=WAIT):
        end = time.time() + timeout
        while True:
            v = self.stats().get(name)
            if pred(v):
                return v
            if time.time() > end:
                raise AssertionError("stat %s stayed %r" % (name, v))
            time.sleep(0.1)

    def quit(self, timeout=30):
        """Stop the probe and check it exited cleanly (bounded)."""
        if self.p.poll() is None:
            try:
                self.p.stdin.write("quit\n")
                self.p.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
            raise AssertionError("probe did not exit within %ds" % timeout)
        finally:
            self.stderr.close()
            self.reader.join(5)
            for f in (self.p.stdin, self.p.stdout):
                try:
                    f.close()
                except (BrokenPipeError, ValueError, OSError):
                    pass
        return rc

    def log(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()


class XdsTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="msm-xds-")
        self.probes = []
        self.cps = []

    def tearDown(self):
        failed = False
        for p in self.probes:
            try:
                rc = p.quit()
            except AssertionError as e:
                rc = str(e)
            log = p.log()
            bad = [m for m in SANITIZER_MARKERS if m in log]
            if rc != 0 or bad:
                failed = True
                sys.stderr.write("---- probe stderr (rc=%r) ----\n%s\n" % (rc, log[-20000:]))
        for cp in self.cps:
            cp.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if failed:
            self.fail("probe exited badly or a sanitizer reported an error")

    def control_plane(self):
        cp = C.ControlPlane(types())
        self.cps.append(cp)
        return cp

    def probe(self, bootstrap, sources=None):
        p = Probe(self.tmp, bootstrap, sources)
        self.probes.append(p)
        started = p.wait(lambda e: e["event"] in ("started", "fatal"), what="start")
        if started["event"] == "fatal":
            raise AssertionError("probe: %s" % started["msg"])
        return p

    def sock(self, name):
        return os.path.join(self.tmp, name)


def pipe_cluster(name, path, **extra):
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"pipe": {"path": path}}}}]}]}}
    c.update(extra)
    return c


def tcp_cluster(name, host, port, **extra):
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": host,
                                                          "port_value": port}}}}]}]}}
    c.update(extra)
    return c


def bootstrap(xds_cluster, api_type="DELTA_GRPC", extra_clusters=(), node_first_only=True):
    return {
        "node": {"id": "sidecar~10.1.2.3~pod-1.ns~ns.svc.cluster.local", "cluster": "app.ns",
                 "locality": {"region": "r1", "zone": "z1"},
                 "metadata": {"ISTIO_VERSION": "1.22.0", "NAMESPACE": "ns"}},
        "dynamic_resources": {
            "ads_config": {"api_type": api_type, "transport_api_version": "V3",
                           "set_node_on_first_message_only": node_first_only,
                           "grpc_services": [{"envoy_grpc": {"cluster_name":
                                                             xds_cluster["name"]}}]},
            "cds_config": {"ads": {}, "initial_fetch_timeout": "0s",
                           "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "initial_fetch_timeout": "0s",
                           "resource_api_version": "V3"}},
        "static_resources": {"clusters": [xds_cluster] + list(extra_clusters)},
    }


def cluster_msg(name, eds=True):
    d = {"name": name, "connect_timeout": "1s"}
    if eds:
        d.update({"type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}}})
    else:
        d.update({"type": "STATIC"})
    return types().parse_json("envoy.config.cluster.v3.Cluster", d)


def cla_msg(name, port=8080):
    return types().parse_json("envoy.config.endpoint.v3.ClusterLoadAssignment", {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "10.0.0.1", "port_value": port}}}}]}]})


def secret_msg(name, serial):
    return types().parse_json("envoy.extensions.transport_sockets.tls.v3.Secret", {
        "name": name, "tls_certificate": {
            "certificate_chain": {"inline_string": "CERT-%s-%d" % (name, serial)},
            "private_key": {"inline_string": "KEY-%s-%d" % (name, serial)}}})


def main():
    global PROBE, BUILD, SHARED
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "..", "shared"))
    ap.add_argument("-k", dest="pattern", action="append")
    args, rest = ap.parse_known_args()
    PROBE = os.path.abspath(args.probe)
    BUILD = os.path.abspath(args.build)
    SHARED = os.path.abspath(args.shared)
    argv = [sys.argv[0]] + rest
    if args.pattern:
        for p in args.pattern:
            argv += ["-k", p]
    unittest.main(module="__main__", argv=argv, verbosity=2)

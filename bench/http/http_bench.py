"""bench/http: HTTP through msm-proxy, nginx and haproxy on loopback, in the same run.

Processes (all started here, all stopped on exit):
- upstream: one nginx, worker_processes 1, answering every request with a 1 KiB body from
  memory (`return 200`), keep-alive without a request limit; on the tools' CPUs;
- proxies, each with one worker on the proxy CPU (taskset): msm-proxy --concurrency 1 (static
  bootstrap listener -> HCM -> route -> cluster), nginx worker_processes 1 (proxy_pass to an
  upstream block with keepalive, proxy_http_version 1.1), haproxy nbthread 1 (mode http,
  http-reuse always); each has an HTTP/1.1 port and an HTTP/2 (cleartext, prior knowledge)
  port, and speaks HTTP/1.1 to the upstream over reused connections;
- load generators on the tools' CPUs: wrk (HTTP/1.1, closed loop, fixed connection count),
  h2load (HTTP/2 closed loop; and HTTP/1.1 and HTTP/2 at a fixed request rate with --rps).

Scenarios, targets interleaved (rotated) per repetition:
- h1rate:  wrk -t1 -c64: requests/s, the proxy's CPU share, requests/s per proxy core;
- h2rate:  h2load -c4 -m16 (64 streams): the same;
- h1lat / h2lat: h2load -c16 at --lat-rate requests/s in total (open timer per connection,
           at most one request in flight per connection for h1), latency percentiles from
           h2load's per-request log;
- mtls:    client sidecar -> mTLS (ISTIO_MUTUAL shape: SPIFFE certificates, SNI, ALPN) ->
           server sidecar -> upstream, at each of --mtls-rates requests/s (h2load --h1 -c16
           --rps), CPU seconds of both sidecars from /proc/<pid>/stat over the measured window:
           vCPU per 1000 requests/s; msm-proxy pair and haproxy pair.

Usage: /usr/bin/python3 bench/http/http_bench.py --binary B [--reps N] [--duration S]
    [--scenarios h1rate,h2rate,h1lat,h2lat,mtls] [--targets direct,msm,nginx,haproxy]
    [--lat-rate R] [--mtls-rates 1000,4000] [--pin split|none] [--perf DIR] [--out FILE]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))

import test_tls as T  # noqa: E402  (the openssl-CLI PKI of the TLS tests)

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
BODY_SIZE = 1024
PATH = "/1k"
TD = "spiffe://cluster.local"
CLIENT_SA = TD + "/ns/default/sa/client"
SERVER_SA = TD + "/ns/default/sa/echo"
SNI = "outbound_.8080_._.echo.default.svc.cluster.local"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc=None, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited before listening on %d" % port)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d" % port)


def machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6], v[7]  # busy (user nice system irq softirq), steal


def _children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def proc_cpu(pid):
    """utime + stime (seconds) of <pid>, all its threads, and its live children (nginx's
    worker under its master)."""
    total = 0.0
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return 0.0
    for c in _children(pid):
        total += proc_cpu(c)
    return total


def proc_sched(pid):
    """Time on CPU (seconds) of every thread of <pid> and of its live children, from
    /proc/<pid>/task/*/schedstat (nanoseconds, not sampled at the clock tick as stat is)."""
    total = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
    except OSError:
        pass
    return total / 1e9 + sum(proc_sched(c) for c in _children(pid))


def proc_rss_kb(pid):
    """Resident set (kB) of <pid> and of its live children."""
    total = 0
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total = int(line.split()[1])
    except OSError:
        return 0
    return total + sum(proc_rss_kb(c) for c in _children(pid))


def h2_frame(typ, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([typ, flags]) + sid.to_bytes(4, "big") + payload


def h2load_result(out):
    """(requests/s, errors) from h2load's output: errors are failed + errored streams and
    answers other than 2xx."""
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", out)
    st = re.search(r"status codes: (\d+) 2xx", out)
    if not m or not r:
        raise RuntimeError("h2load: %s" % out)
    return float(m.group(1)), int(r.group(5)) + int(r.group(6)) + max(
        0, int(r.group(4)) - (int(st.group(1)) if st else 0))


def pct(values, q):
    """q-th percentile (0..100) of sorted <values>, nearest rank."""
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, int(round(q / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


class Bench:
    def __init__(self, a):
        self.a = a
        self.tmp = tempfile.mkdtemp(prefix="msm-httpbench-")
        os.chmod(self.tmp, 0o755)
        self.procs = []
        ncpu = os.cpu_count()
        if a.pin == "split" and ncpu >= 2:
            self.proxy_cpus = str(ncpu - 1)
            self.tool_cpus = "0" if ncpu == 2 else "0-%d" % (ncpu - 2)
        else:
            self.proxy_cpus = self.tool_cpus = "0-%d" % (ncpu - 1)
        self.up_port, self.up_h2_port = free_port(), free_port()
        self.ports = {t: (free_port(), free_port())
                      for t in ("msm", "msm-lean", "nginx", "haproxy")}
        self.pids = {}
        self.pki = None

    # ---- processes ----------------------------------------------------------------------------

    def spawn(self, cpus, argv, name):
        log = open(os.path.join(self.tmp, name + ".log"), "wb")
        p = subprocess.Popen(["taskset", "-c", cpus] + argv, stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, p))
        return p

    def nginx_conf(self, name, http_block):
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        temps = "".join("  %s_temp_path %s/%s;\n" % (k, d, k)
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = ("worker_processes 1;\ndaemon off;\npid %s/nginx.pid;\nerror_log %s/error.log "
                "warn;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n"
                "  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n%s%s}\n"
                % (d, d, temps, http_block))
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        return path

    def start_upstream(self):
        body = "x" * BODY_SIZE
        conf = self.nginx_conf("upstream", (
            "  server {\n    listen 127.0.0.1:%d;\n    listen 127.0.0.1:%d http2;\n"
            "    location / {\n      default_type application/octet-stream;\n"
            "      return 200 \"%s\";\n    }\n  }\n" % (self.up_port, self.up_h2_port, body)))
        p = self.spawn(self.tool_cpus, ["nginx", "-e", "stderr", "-c", conf], "upstream")
        wait_port(self.up_port, p)
        wait_port(self.up_h2_port, p)

    def msm_listener(self, name, port, cluster, prefix, tls=None, lean=False):
        chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                              "typed_config": {
                                  "@type": HCM, "stat_prefix": prefix,
                                  "http_filters": [ROUTER],
                                  "route_config": {"name": "rc", "virtual_hosts": [{
                                      "name": "all", "domains": ["*"], "routes": [{
                                          "match": {"prefix": "/"},
                                          "route": {"cluster": cluster}}]}]}}}]}
        if lean:
            # The work haproxy and nginx do: none of the headers Envoy adds by default
            # (x-request-id, x-envoy-expected-rq-timeout-ms, x-envoy-upstream-service-time),
            # the upstream's server header passed through. x-forwarded-proto stays (Envoy
            # always sets it).
            tc = chain["filters"][0]["typed_config"]
            tc["generate_request_id"] = False
            tc["server_header_transformation"] = "PASS_THROUGH"
            tc["http_filters"] = [{"name": ROUTER["name"], "typed_config": dict(
                ROUTER["typed_config"], suppress_envoy_headers=True)}]
        if tls:
            chain["transport_socket"] = tls
        return {"name": name, "address": {"socket_address": {"address": "127.0.0.1",
                                                               "port_value": port}},
                "filter_chains": [chain]}

    @staticmethod
    def msm_cluster(name, port, tls=None):
        c = {"name": name, "connect_timeout": "1s", "type": "STATIC",
             "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
                 "endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                             "port_value": port}}}}]}]}}
        if tls:
            c["transport_socket"] = tls
        return c

    def start_msm(self, name, listeners, clusters):
        admin = free_port()
        cfg = {"admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                        "port_value": admin}}},
               "static_resources": {"listeners": listeners, "clusters": clusters}}
        path = os.path.join(self.tmp, name + ".json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)
        p = self.spawn(self.proxy_cpus, [self.a.binary, "-c", path, "--concurrency", "1",
                                         "--log-level", "warn"], name)
        end = time.monotonic() + 15
        while True:
            if p.poll() is not None:
                raise RuntimeError("%s exited: %s" % (name, self.log_text(name)))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/ready" % admin, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > end:
                raise RuntimeError("%s never became ready" % name)
            time.sleep(0.1)
        return p, admin

    def log_text(self, name):
        with open(os.path.join(self.tmp, name + ".log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    def start_proxies(self):
        targets = self.a.targets.split(",")
        if "msm" in targets:
            h1, h2 = self.ports["msm"]
            p, self.msm_admin = self.start_msm(
                "msm", [self.msm_listener("h1", h1, "up", "h1"),
                        self.msm_listener("h2", h2, "up", "h2")],
                [self.msm_cluster("up", self.up_port)])
            self.pids["msm"] = p.pid
        if "msm-lean" in targets:
            h1, h2 = self.ports["msm-lean"]
            p, _ = self.start_msm(
                "msm-lean", [self.msm_listener("h1", h1, "up", "h1", lean=True),
                             self.msm_listener("h2", h2, "up", "h2", lean=True)],
                [self.msm_cluster("up", self.up_port)])
            self.pids["msm-lean"] = p.pid
        if "nginx" in targets:
            h1, h2 = self.ports["nginx"]
            conf = self.nginx_conf("nginx-proxy", (
                "  upstream up {\n    server 127.0.0.1:%d;\n    keepalive 256;\n"
                "    keepalive_requests 1000000;\n    keepalive_timeout 300s;\n  }\n"
                "  server {\n    listen 127.0.0.1:%d;\n    listen 127.0.0.1:%d http2;\n"
                "    location / {\n      proxy_pass http://up;\n      proxy_http_version 1.1;\n"
                "      proxy_set_header Connection \"\";\n    }\n  }\n" % (self.up_port, h1, h2)))
            p = self.spawn(self.proxy_cpus, ["nginx", "-e", "stderr", "-c", conf], "nginx")
            wait_port(h1, p)
            wait_port(h2, p)
            self.pids["nginx"] = p.pid
        if "haproxy" in targets:
            h1, h2 = self.ports["haproxy"]
            cfg = ("global\n  nbthread 1\n  maxconn 4000\n"
                   "defaults\n  mode http\n  timeout connect 1s\n  timeout client 300s\n"
                   "  timeout server 300s\n  timeout http-keep-alive 300s\n  http-reuse always\n"
                   "frontend h1\n  bind 127.0.0.1:%d\n  default_backend up\n"
                   "frontend h2\n  bind 127.0.0.1:%d proto h2\n  default_backend up\n"
                   "backend up\n  server s1 127.0.0.1:%d\n" % (h1, h2, self.up_port))
            path = os.path.join(self.tmp, "haproxy.cfg")
            with open(path, "w") as f:
                f.write(cfg)
            p = self.spawn(self.proxy_cpus, ["haproxy", "-db", "-f", path], "haproxy")
            wait_port(h1, p)
            wait_port(h2, p)
            self.pids["haproxy"] = p.pid

    # ---- mTLS sidecar pairs ----------------------------------------------------------------------

    def make_pki(self):
        self.pki = T.Pki()
        self.client_pair = self.pki.leaf("client", "URI:" + CLIENT_SA)
        # haproxy checks the server name against the SNI it sends: a DNS SAN for it too.
        self.server_pair = self.pki.leaf("echo", "URI:%s,DNS:%s" % (SERVER_SA, SNI))
        for n in os.listdir(self.pki.dir):
            os.chmod(os.path.join(self.pki.dir, n), 0o644)
        os.chmod(self.pki.dir, 0o755)

    def start_msm_pair(self):
        ca = {"filename": self.pki.path("ca.pem")}

        def certs(pair):
            return [{"certificate_chain": {"filename": pair[0]},
                     "private_key": {"filename": pair[1]}}]
        down = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": certs(self.server_pair),
                "validation_context": {"trusted_ca": ca,
                                       "match_subject_alt_names": [{"prefix": TD + "/"}]}}}}
        up = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "UpstreamTlsContext",
            "sni": SNI,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                               "tls_maximum_protocol_version": "TLSv1_3"},
                "alpn_protocols": ["istio-http/1.1", "istio", "http/1.1"],
                "tls_certificates": certs(self.client_pair),
                "validation_context": {"trusted_ca": ca,
                                       "match_subject_alt_names": [{"exact": SERVER_SA}]}}}}
        sport, cport = free_port(), free_port()
        ps, _ = self.start_msm("msm-server", [self.msm_listener(
            "virtualInbound", sport, "inbound|8080||", "inbound_0.0.0.0_8080", tls=down)],
            [self.msm_cluster("inbound|8080||", self.up_port)])
        pc, _ = self.start_msm("msm-client", [self.msm_listener(
            "outbound", cport, "outbound|8080||echo", "outbound_0.0.0.0_8080")],
            [self.msm_cluster("outbound|8080||echo", sport, tls=up)])
        return cport, [pc, ps]

    def start_haproxy_pair(self):
        pem = {}
        for name, pair in (("client", self.client_pair), ("server", self.server_pair)):
            pem[name] = os.path.join(self.tmp, name + "-hap.pem")
            with open(pem[name], "w") as f:
                f.write(self.pki.read(pair[0]) + self.pki.read(pair[1]))
        ca = self.pki.path("ca.pem")
        sport, cport = free_port(), free_port()
        head = ("global\n  nbthread 1\n  maxconn 4000\n  tune.ssl.default-dh-param 2048\n"
                "defaults\n  mode http\n  timeout connect 1s\n  timeout client 300s\n"
                "  timeout server 300s\n  timeout http-keep-alive 300s\n  http-reuse always\n")
        srv = head + ("frontend inbound\n  bind 127.0.0.1:%d ssl crt %s ca-file %s verify "
                      "required alpn h2,http/1.1\n  default_backend app\n"
                      "backend app\n  server app 127.0.0.1:%d\n" % (sport, pem["server"], ca,
                                                                    self.up_port))
        cli = head + ("frontend outbound\n  bind 127.0.0.1:%d\n  default_backend echo\n"
                      "backend echo\n  server s 127.0.0.1:%d ssl crt %s ca-file %s verify "
                      "required sni str(%s) alpn istio-http/1.1,istio,http/1.1\n"
                      % (cport, sport, pem["client"], ca, SNI))
        procs = []
        for name, text, port in (("hap-server", srv, sport), ("hap-client", cli, cport)):
            path = os.path.join(self.tmp, name + ".cfg")
            with open(path, "w") as f:
                f.write(text)
            p = self.spawn(self.proxy_cpus, ["haproxy", "-db", "-f", path], name)
            wait_port(port, p)
            procs.append(p)
        return cport, procs[::-1]

    def stop(self, procs):
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = [(n, q) for n, q in self.procs if q not in procs]

    def close(self):
        self.stop([p for _, p in self.procs])
        if self.pki:
            self.pki.close()
        shutil.rmtree(self.tmp, True)

    # ---- load generators ---------------------------------------------------------------------

    def tool(self, argv, timeout):
        return subprocess.run(["taskset", "-c", self.tool_cpus] + argv, capture_output=True,
                              text=True, timeout=timeout)

    def measure(self, pids, argv, settle, duration=None):
        """Run <argv>; CPU of <pids> and of the machine from <settle> s after the start (the
        tool's warm-up) to its end."""
        duration = duration or self.a.duration
        p = subprocess.Popen(["taskset", "-c", self.tool_cpus] + argv, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(settle)
        c0 = [proc_cpu(x) for x in pids]
        k0 = [proc_sched(x) for x in pids]
        s0, t0 = machine_ticks(), time.monotonic()
        try:
            out, err = p.communicate(timeout=duration + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        wall = time.monotonic() - t0
        s1 = machine_ticks()
        c1 = [proc_cpu(x) for x in pids]
        k1 = [proc_sched(x) for x in pids]
        ncpu = os.cpu_count()
        res = {"rc": p.returncode, "wall": wall,
               "proxy_cpu": [(b - a) / wall for a, b in zip(c0, c1)],
               "proxy_cpu_sched": [(b - a) / wall for a, b in zip(k0, k1)],
               "busy_pct": 100.0 * (s1[0] - s0[0]) / CLK_TCK / wall / ncpu,
               "steal_pct": 100.0 * (s1[1] - s0[1]) / CLK_TCK / wall / ncpu}
        return out + err, res

    def url(self, target, h2=False):
        if target == "direct":  # the upstream itself (HTTP/2 on its second port)
            return "http://127.0.0.1:%d%s" % (self.up_h2_port if h2 else self.up_port, PATH)
        return "http://127.0.0.1:%d%s" % (self.ports[target][1 if h2 else 0], PATH)

    def wrk(self, target):
        pids = [self.pids[target]] if target in self.pids else []
        # wrk has no warm-up: CPU is sampled from 0.5 s in; requests/s is wrk's whole-run rate.
        out, res = self.measure(pids, ["wrk", "-t1", "-c64", "-d%ds" % self.a.duration,
                                       "--latency", self.url(target)], 0.5)
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not m:
            raise RuntimeError("wrk: %s" % out)
        res["rps"] = float(m.group(1))
        lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
        res["sat_p50_us"] = self.dur_us(lat.get("50"))
        res["sat_p99_us"] = self.dur_us(lat.get("99"))
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                         out)
        res["errors"] = (int(bad.group(1)) if bad else 0) + (
            sum(int(x) for x in errs.groups()) if errs else 0)
        return res

    @staticmethod
    def dur_us(s):
        if not s:
            return float("nan")
        m = re.match(r"([\d.]+)(us|ms|s)$", s)
        return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]

    def h2load(self, target, pids, url, extra, log=None, duration=None):
        w = self.a.warmup
        duration = duration or self.a.duration
        argv = ["h2load", "-t1", "-D", str(duration), "--warm-up-time", str(w)] + extra
        if log:
            argv += ["--log-file", log]
        out, res = self.measure(pids, argv + [url], w, duration)
        res["rps"], res["errors"] = h2load_result(out)
        if log:
            lat = []
            with open(log) as f:
                for line in f:
                    c = line.split("\t")
                    if len(c) >= 3 and c[1] == "200":
                        lat.append(int(c[2]))
            os.unlink(log)
            lat.sort()
            res["n"] = len(lat)
            for q in (50, 90, 99, 99.9):
                res["p%s_us" % str(q).replace(".", "_")] = pct(lat, q)
        return res

    def run_one(self, scen, target):
        pids = [self.pids[target]] if target in self.pids else []
        if scen == "h1rate":
            return self.wrk(target)
        if scen == "h2rate":
            return self.h2load(target, pids, self.url(target, h2=True), ["-c4", "-m16"])
        per = self.a.lat_rate / 16.0
        log = os.path.join(self.tmp, "h2load.log")
        if scen == "h1lat":
            return self.h2load(target, pids, self.url(target), ["--h1", "-c16", "-m1",
                                                                "--rps", "%g" % per], log)
        if scen == "h2lat":
            return self.h2load(target, pids, self.url(target, h2=True),
                               ["-c16", "-m1", "--rps", "%g" % per], log)
        raise ValueError(scen)

    def corun(self, scen, target, rep, base="haproxy"):
        """<target> and <base> at the same time on the proxy CPU, each under its own load
        generator (closed loop, as in h1rate / h2rate): the scheduler interleaves the two every
        few milliseconds, so a drift of the machine's speed hits both alike. Each proxy's
        requests per second of its own CPU time (schedstat) over the same window."""
        d, w = self.a.duration, self.a.warmup
        pair = [target, base] if rep % 2 == 0 else [base, target]
        procs = {}
        for t in pair:
            if scen == "h2pair":
                argv = ["h2load", "-t1", "-c4", "-m16", self.url(t, h2=True)]
            else:
                argv = ["h2load", "--h1", "-t1", "-c64", self.url(t)]
            argv[1:1] = ["-D", str(d), "--warm-up-time", str(w)]
            procs[t] = subprocess.Popen(["taskset", "-c", self.tool_cpus] + argv,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        time.sleep(w)
        k0 = {t: proc_sched(self.pids[t]) for t in pair}
        s0, t0 = machine_ticks(), time.monotonic()
        outs = {}
        for t in pair:
            try:
                outs[t] = procs[t].communicate(timeout=d + 60)[0]
            except subprocess.TimeoutExpired:
                procs[t].kill()
                outs[t] = procs[t].communicate()[0]
        wall = time.monotonic() - t0
        s1 = machine_ticks()
        k1 = {t: proc_sched(self.pids[t]) for t in pair}
        ncpu = os.cpu_count()
        res = {"wall": wall, "base": base,
               "busy_pct": 100.0 * (s1[0] - s0[0]) / CLK_TCK / wall / ncpu,
               "steal_pct": 100.0 * (s1[1] - s0[1]) / CLK_TCK / wall / ncpu}
        res["errors"] = 0
        for t, key in ((target, ""), (base, "base_")):
            res[key + "rps"], errors = h2load_result(outs[t])
            res[key + "cpu"] = (k1[t] - k0[t]) / wall
            res["errors"] += errors
        res["ratio"] = (res["rps"] / res["cpu"]) / (res["base_rps"] / res["base_cpu"])
        return res

    def idlemem(self, target, proto):
        """RSS added per idle downstream connection: <n> connections each make one request,
        read the answer and stay open."""
        pid = self.pids[target]
        port = self.ports[target][1 if proto == "h2" else 0]
        if proto == "h2":
            # preface, empty SETTINGS, HEADERS (END_STREAM|END_HEADERS): GET / http, authority
            # as a literal with an indexed name (RFC 7541 6.2.1)
            req = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b"") +
                   h2_frame(1, 5, 1, b"\x82\x84\x86\x41\x09127.0.0.1"))
        else:
            req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        time.sleep(0.5)
        r0 = proc_rss_kb(pid)
        socks, answered = [], 0
        try:
            for _ in range(self.a.idle_conns):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(req)
                socks.append(s)
            for s in socks:
                try:
                    answered += 1 if s.recv(65536) else 0
                except OSError:
                    pass
            time.sleep(0.5)
            r1 = proc_rss_kb(pid)
        finally:
            for s in socks:
                s.close()
        time.sleep(1.0)
        return {"conns": len(socks), "answered": answered, "rss_kb": r1 - r0,
                "kb_per_conn": (r1 - r0) / max(1, len(socks)), "errors": len(socks) - answered}

    def run(self):
        rows = []
        scens = self.a.scenarios.split(",")
        targets = self.a.targets.split(",")
        pair_scens = [s for s in scens if s in ("h1pair", "h2pair")]
        mem = [s for s in scens if s == "idlemem"]
        plain = [s for s in scens if s != "mtls" and s not in pair_scens and s not in mem]
        if plain or pair_scens or mem:
            self.start_upstream()
            self.start_proxies()
        elif "mtls" in scens:
            self.start_upstream()
        if "mtls" in scens:
            self.make_pki()
        for rep in range(self.a.reps):
            order = targets[rep % len(targets):] + targets[:rep % len(targets)]
            for scen in plain:
                for t in order:
                    res = self.run_one(scen, t)
                    res.update(rep=rep, scen=scen, target=t)
                    rows.append(res)
                    sys.stderr.write(json.dumps(res) + "\n")
                    time.sleep(0.3)
            for t in targets if mem and rep == 0 else []:
                for proto in ("h1", "h2") if t != "direct" else ():
                    res = self.idlemem(t, proto)
                    res.update(rep=rep, scen="idlemem-" + proto, target=t)
                    rows.append(res)
                    sys.stderr.write(json.dumps(res) + "\n")
            for scen in pair_scens:
                for t in targets:
                    if t in ("direct", "haproxy") or "haproxy" not in targets:
                        continue
                    res = self.corun(scen, t, rep)
                    res.update(rep=rep, scen=scen, target=t)
                    rows.append(res)
                    sys.stderr.write(json.dumps(res) + "\n")
                    time.sleep(0.3)
            if "mtls" in scens:
                pairs = ["msm", "haproxy"] if rep % 2 == 0 else ["haproxy", "msm"]
                for t in pairs:
                    if t not in targets:
                        continue
                    port, procs = (self.start_msm_pair() if t == "msm"
                                   else self.start_haproxy_pair())
                    try:
                        for rate in [int(x) for x in self.a.mtls_rates.split(",")]:
                            res = self.h2load(t, [p.pid for p in procs],
                                              "http://127.0.0.1:%d%s" % (port, PATH),
                                              ["--h1", "-c16", "-m1", "--rps",
                                               "%g" % (rate / 16.0)],
                                              os.path.join(self.tmp, "h2load.log"),
                                              self.a.mtls_duration)
                            res.update(rep=rep, scen="mtls%d" % rate, target=t, rate=rate)
                            rows.append(res)
                            sys.stderr.write(json.dumps(res) + "\n")
                    finally:
                        self.stop(procs)
        if self.a.perf and "msm" in self.pids:
            self.perf()
        return rows

    def perf(self):
        """One extra h1rate run on msm-proxy under `perf record -g` (not in the table)."""
        os.makedirs(self.a.perf, exist_ok=True)
        data = os.path.join(self.a.perf, "perf.data")
        cg = ["-g"] if self.a.perf_callgraph == "fp" else ["--call-graph", "dwarf,16384"]
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999"] + cg +
                               ["-p", str(self.pids["msm"]), "-o", data, "--", "sleep",
                                str(self.a.duration)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        res = self.wrk("msm")
        rec.wait(timeout=self.a.duration + 30)
        sys.stderr.write("perf run: %.0f req/s\n" % res["rps"])
        with open(os.path.join(self.a.perf, "top-self.txt"), "w") as f:
            subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol",
                            "--stdio", "-g", "none", "--percent-limit", "0.3"], stdout=f,
                           stderr=subprocess.DEVNULL)
        with open(os.path.join(self.a.perf, "top-dso.txt"), "w") as f:
            subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso",
                            "--stdio", "-g", "none"], stdout=f, stderr=subprocess.DEVNULL)
        with open(os.path.join(self.a.perf, "callers.txt"), "w") as f:
            subprocess.run(["perf", "report", "-i", data, "--children", "--sort", "symbol",
                            "--stdio", "-g", "none", "--percent-limit", "2"], stdout=f,
                           stderr=subprocess.DEVNULL)


# ---- report ------------------------------------------------------------------------------------

def med(rows, scen, target, key):
    v = [r[key] for r in rows if r["scen"] == scen and r["target"] == target and key in r]
    v = [x for x in v if x == x]
    return statistics.median(v) if v else float("nan")


def per_core(rows, scen, target):
    v = [r["rps"] / sum(r["proxy_cpu"]) for r in rows if r["scen"] == scen and
         r["target"] == target and r["proxy_cpu"] and sum(r["proxy_cpu"]) > 0]
    return statistics.median(v) if v else float("nan")


def paired(rows, scen, target, base="haproxy"):
    """Per-core ratio of <target> to <base> within each repetition (the two ran seconds apart,
    so a drift of the machine's speed between repetitions cancels), as (median, min, max)."""
    pc = {}
    for r in rows:
        if r["scen"] == scen and r["proxy_cpu"] and sum(r["proxy_cpu"]) > 0:
            pc.setdefault(r["rep"], {})[r["target"]] = r["rps"] / sum(r["proxy_cpu"])
    v = sorted(x[target] / x[base] for x in pc.values() if target in x and base in x)
    if not v:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(v), v[0], v[-1]


def fmt(x, f="%.0f"):
    return "-" if x != x else f % x


def report(rows, a):
    names = {"direct": "direct (no proxy)", "msm": "msm-proxy",
             "msm-lean": "msm-proxy, without Envoy's extra headers", "nginx": "nginx",
             "haproxy": "haproxy"}
    targets = a.targets.split(",")
    out = []
    busy = [r["busy_pct"] for r in rows if "busy_pct" in r] or [float("nan")]
    steal = [r["steal_pct"] for r in rows if "steal_pct" in r] or [float("nan")]
    out.append("%d CPUs, kernel %s; proxies: 1 worker each (msm-proxy --concurrency 1, nginx "
               "worker_processes 1, haproxy nbthread 1) on CPU %s; load generator and upstream "
               "nginx on CPU %s; %d repetitions x %gs, medians. Machine busy during runs: median "
               "%.0f%% (min %.0f, max %.0f) of all CPUs, steal median %.1f%%."
               % (os.cpu_count(), os.uname().release, a.proxy_cpus, a.tool_cpus, a.reps,
                  a.duration, statistics.median(busy), min(busy), max(busy),
                  statistics.median(steal)))
    scens = a.scenarios.split(",")
    for scen, title in (("h1rate", "HTTP/1.1 rate, wrk -t1 -c64, 1 KiB responses"),
                        ("h2rate", "HTTP/2 rate, h2load -c4 -m16 (64 streams), 1 KiB responses")):
        if scen not in scens:
            continue
        out += ["", "**%s**" % title, "",
                "| target | req/s | proxy CPU | req/s per proxy core | vs haproxy (per core) | "
                "vs haproxy, paired per repetition: median (min–max) |"
                + (" p50 / p99 at saturation (wrk) |" if scen == "h1rate" else "") + " errors |",
                "|---|---:|---:|---:|---:|---:|" + ("---:|" if scen == "h1rate" else "") + "---:|"]
        hp = per_core(rows, scen, "haproxy")
        for t in targets:
            rps = med(rows, scen, t, "rps")
            cpu = statistics.median([sum(r["proxy_cpu"]) for r in rows if r["scen"] == scen
                                     and r["target"] == t] or [0])
            pc = per_core(rows, scen, t)
            pm, plo, phi = paired(rows, scen, t)
            line = "| %s | %s | %s | %s | %s | %s |" % (
                names[t], fmt(rps), "-" if t == "direct" else "%.0f%%" % (100 * cpu),
                "-" if t == "direct" else fmt(pc), "-" if t == "direct" else fmt(pc / hp, "%.2f"),
                "-" if t in ("direct", "haproxy") or pm != pm else "%.2f (%.2f–%.2f)" % (
                    pm, plo, phi))
            if scen == "h1rate":
                line += " %s / %s µs |" % (fmt(med(rows, scen, t, "sat_p50_us")),
                                           fmt(med(rows, scen, t, "sat_p99_us")))
            errs = sum(r["errors"] for r in rows if r["scen"] == scen and r["target"] == t)
            out.append(line + " %d |" % errs)
    for scen, title in (("h1pair", "HTTP/1.1, h2load --h1 -c64"),
                        ("h2pair", "HTTP/2, h2load -c4 -m16 (64 streams)")):
        if scen not in scens:
            continue
        out += ["", "**%s: co-scheduled with haproxy** (both proxies at once on CPU %s, each "
                "under its own load generator; requests per second of each proxy's own CPU time "
                "from schedstat over the same window)" % (title, a.proxy_cpus), "",
                "| target | req/s per proxy core vs haproxy: median (min–max) | req/s | CPU | "
                "haproxy req/s | haproxy CPU | errors |", "|---|---:|---:|---:|---:|---:|---:|"]
        for t in targets:
            rs = [r for r in rows if r["scen"] == scen and r["target"] == t]
            if not rs:
                continue
            v = sorted(r["ratio"] for r in rs)
            out.append("| %s | **%.3f** (%.3f–%.3f) | %s | %.0f%% | %s | %.0f%% | %d |" % (
                names[t], statistics.median(v), v[0], v[-1], fmt(med(rows, scen, t, "rps")),
                100 * med(rows, scen, t, "cpu"), fmt(med(rows, scen, t, "base_rps")),
                100 * med(rows, scen, t, "base_cpu"), sum(r["errors"] for r in rs)))
    if "idlemem" in scens:
        out += ["", "**Memory per idle connection** (%d downstream connections, each answered "
                "once and left open; the proxy's RSS before and after, with nginx's worker)"
                % a.idle_conns, "", "| target | HTTP/1.1 kB per connection | HTTP/2 kB per "
                "connection | unanswered |", "|---|---:|---:|---:|"]
        for t in targets:
            rs = {r["scen"]: r for r in rows if r["scen"].startswith("idlemem") and
                  r["target"] == t}
            if rs:
                out.append("| %s | %s | %s | %d |" % (
                    names[t], fmt(rs["idlemem-h1"]["kb_per_conn"], "%.1f"),
                    fmt(rs["idlemem-h2"]["kb_per_conn"], "%.1f"),
                    sum(r["errors"] for r in rs.values())))
    for scen, title in (("h1lat", "HTTP/1.1"), ("h2lat", "HTTP/2")):
        if scen not in scens:
            continue
        out += ["", "**%s latency at a fixed %d req/s** (h2load %s-c16 -m1 --rps %g, per-request "
                "log; µs)" % (title, a.lat_rate, "--h1 " if scen == "h1lat" else "",
                              a.lat_rate / 16.0), "",
                "| target | achieved req/s | p50 | p90 | p99 | p99.9 | p99 added vs direct | "
                "proxy CPU |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        d99 = med(rows, scen, "direct", "p99_us")
        for t in targets:
            cpu = statistics.median([sum(r["proxy_cpu"]) for r in rows if r["scen"] == scen
                                     and r["target"] == t] or [0])
            p99 = med(rows, scen, t, "p99_us")
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                names[t], fmt(med(rows, scen, t, "rps")), fmt(med(rows, scen, t, "p50_us")),
                fmt(med(rows, scen, t, "p90_us")), fmt(p99), fmt(med(rows, scen, t, "p99_9_us")),
                "-" if t == "direct" else fmt(p99 - d99),
                "-" if t == "direct" else "%.0f%%" % (100 * cpu)))
    mt = sorted({r["scen"] for r in rows if r["scen"].startswith("mtls")},
                key=lambda s: int(s[4:]))
    if mt:
        out += ["", "**Two sidecars with mTLS** (client sidecar -> mTLS, SPIFFE certificates, "
                "SNI, ALPN istio-http/1.1 -> server sidecar -> upstream; h2load --h1 -c16 "
                "--rps; CPU of both sidecars from /proc/<pid>/stat over the measured window)",
                "", "| pair | offered req/s | achieved req/s | client + server sidecar CPU | "
                "vCPU per 1000 req/s (both) | per sidecar | same from schedstat (both) | "
                "p50 / p99 (µs) | errors |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for scen in mt:
            for t in ("msm", "haproxy"):
                rs = [r for r in rows if r["scen"] == scen and r["target"] == t]
                if not rs:
                    continue
                per_k = statistics.median([sum(r["proxy_cpu"]) / (r["rps"] / 1000.0)
                                           for r in rs if r["rps"] > 0] or [float("nan")])
                per_ks = statistics.median([sum(r["proxy_cpu_sched"]) / (r["rps"] / 1000.0)
                                            for r in rs if r["rps"] > 0] or [float("nan")])
                out.append("| %s | %d | %s | %.1f%% + %.1f%% | %.3f | %.3f | %.3f | %s / %s | %d |"
                           % (names[t], rs[0]["rate"], fmt(med(rows, scen, t, "rps")),
                              100 * statistics.median([r["proxy_cpu"][0] for r in rs]),
                              100 * statistics.median([r["proxy_cpu"][1] for r in rs]),
                              per_k, per_k / 2, per_ks, fmt(med(rows, scen, t, "p50_us")),
                    fmt(med(rows, scen, t, "p99_us")), sum(r["errors"] for r in rs)))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--scenarios", default="h1rate,h2rate,h1pair,h2pair,h1lat,h2lat,idlemem,mtls")
    ap.add_argument("--targets", default="direct,msm,nginx,haproxy")
    ap.add_argument("--lat-rate", type=int, default=2000)
    ap.add_argument("--mtls-rates", default="1000,4000")
    ap.add_argument("--idle-conns", type=int, default=2000)
    ap.add_argument("--mtls-duration", type=int, default=10)
    ap.add_argument("--pin", choices=("split", "none"), default="split")
    ap.add_argument("--perf", default=None, help="directory: also profile msm-proxy (h1rate)")
    ap.add_argument("--perf-callgraph", choices=("fp", "dwarf"), default="fp",
                    help="fp: perf record -g; dwarf: --call-graph dwarf (callers through -O3 "
                         "code without frame pointers, heavier)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    a.binary = os.path.abspath(a.binary)
    # SIGTERM (run.sh's trap, timeout) unwinds through close(): nothing started here survives.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    b = Bench(a)
    a.proxy_cpus, a.tool_cpus = b.proxy_cpus, b.tool_cpus
    try:
        rows = b.run()
    finally:
        b.close()
    text = report(rows, a)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        with open(a.out + ".jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()

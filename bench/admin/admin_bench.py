#!/usr/bin/env python3
"""Admin endpoints at scale (issue 6): /stats/prometheus, /stats and /config_dump of a proxy
with N static clusters (default 10 000).

For each endpoint: cold latency (first request: tag extraction runs then), the main thread's
CPU time for it (independent of the machine's load), warm latency (median and max of --runs
requests), response size, and the main-loop stall measured from outside: a
probe connection sends GET /ready every 5 ms during the big request; the longest /ready wait is
the time the main loop could not serve anything else. A TCP echo through the proxy runs at the
same time to show the data path (worker threads) is not affected.

    /usr/bin/python3 bench/admin/admin_bench.py --binary build-admin/msm-proxy [--clusters 10000]
        [--istio] [--runs 5]

--istio uses Istio's stats_config (bootstrap golden: regex tags, inclusion list), so most
cluster stats are hidden as in a real sidecar; without it every stat of every cluster is
exported with Envoy's default tags (the worst case). Prints a Markdown table."""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def echo_server():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def serve(c):
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        c.close()

    def loop():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


def config(n, echo_port, admin_port, lst_port, istio, shared):
    def ep(port):
        return {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                             "port_value": port}}}}
    clusters = [{"name": "outbound|%d||svc-%d.ns.svc.cluster.local" % (9000 + i % 1000, i),
                 "alt_stat_name": "outbound|%d||svc-%d.ns.svc.cluster.local;" % (9000 + i % 1000,
                                                                                 i),
                 "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": "c%d" % i,
                                     "endpoints": [{"lb_endpoints": [ep(10000 + i % 50000)]}]}}
                for i in range(n)]
    clusters.append({"name": "echo", "type": "STATIC", "connect_timeout": "1s",
                     "load_assignment": {"cluster_name": "echo",
                                         "endpoints": [{"lb_endpoints": [ep(echo_port)]}]}})
    b = {"admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                  "port_value": admin_port}}},
         "static_resources": {"clusters": clusters, "listeners": [{
             "name": "echo", "address": {"socket_address": {"address": "127.0.0.1",
                                                            "port_value": lst_port}},
             "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                                             "typed_config": {
                                                 "@type": "type.googleapis.com/envoy.extensions."
                                                          "filters.network.tcp_proxy.v3.TcpProxy",
                                                 "stat_prefix": "echo", "cluster": "echo"}}]}]}]}}
    if istio:
        with open(os.path.join(shared, "fixtures/istio/bootstrap/default_golden.json")) as f:
            b["stats_config"] = json.load(f)["stats_config"]
    return b


def get(admin, path, timeout=60):
    t0 = time.monotonic()
    with opener.open("http://%s%s" % (admin, path), timeout=timeout) as r:
        body = r.read()
    return time.monotonic() - t0, len(body)


class Probe:
    """GET /ready every 5 ms on a keep-alive connection; records each wait."""

    def __init__(self, admin):
        host, port = admin.split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.waits = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        req = b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n"
        while not self.stop.is_set():
            t0 = time.monotonic()
            self.sock.sendall(req)
            buf = b""
            while not buf.endswith(b"LIVE\n"):
                buf += self.sock.recv(4096)
            self.waits.append(time.monotonic() - t0)
            time.sleep(0.005)

    def done(self):
        self.stop.set()
        self.t.join()
        self.sock.close()
        return max(self.waits) if self.waits else 0


class Echo:
    """1 KiB round trips through the proxy's TCP listener; records each RTT."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rtts = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        msg = b"x" * 1024
        while not self.stop.is_set():
            t0 = time.monotonic()
            self.sock.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(self.sock.recv(65536))
            self.rtts.append(time.monotonic() - t0)
            time.sleep(0.002)

    def done(self):
        self.stop.set()
        self.t.join()
        self.sock.close()
        return max(self.rtts) if self.rtts else 0


def main_cpu(pid):
    """CPU seconds (user + system) used so far by the proxy's main thread: the admin work
    itself, independent of how loaded the machine is."""
    with open("/proc/%d/task/%d/stat" % (pid, pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(admin, lst_port, path, runs, pid):
    out = {}
    for i in range(runs + 1):
        probe = Probe(admin)
        echo = Echo(lst_port)
        time.sleep(0.05)
        cpu0 = main_cpu(pid)
        lat, size = get(admin, path)
        cpu = main_cpu(pid) - cpu0
        time.sleep(0.05)
        stall = probe.done()
        rtt = echo.done()
        if i == 0:
            out["cold"] = lat
            out["cold_stall"] = stall
            out["cold_cpu"] = cpu
        else:
            out.setdefault("lat", []).append(lat)
            out.setdefault("stall", []).append(stall)
            out.setdefault("rtt", []).append(rtt)
        out["size"] = size
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(HERE, "../../build/msm-proxy"))
    ap.add_argument("--shared", default=os.path.join(HERE, "../../../shared"))
    ap.add_argument("--clusters", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--istio", action="store_true")
    ap.add_argument("--settle", type=float, default=10.0,
                    help="seconds between ready and the first request (the stats flush "
                         "precomputes tag extraction meanwhile); 0 = measure a truly cold "
                         "first scrape")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="msm-admin-bench-")
    echo_port = echo_server()
    admin_port, lst_port = free_port(), free_port()
    cfg = os.path.join(tmp, "bootstrap.json")
    with open(cfg, "w") as f:
        json.dump(config(a.clusters, echo_port, admin_port, lst_port, a.istio, a.shared), f)
    admin = "127.0.0.1:%d" % admin_port
    t0 = time.monotonic()
    proc = subprocess.Popen([a.binary, "-c", cfg, "--concurrency", "2", "-l", "warning"],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "w"))
    try:
        while True:
            try:
                if get(admin, "/ready", 1)[0] is not None:
                    break
            except OSError:
                time.sleep(0.05)
            if time.monotonic() - t0 > 120:
                sys.exit("proxy not ready")
        startup = time.monotonic() - t0
        time.sleep(a.settle)
        with open("/proc/%d/status" % proc.pid) as f:
            rss = [l for l in f if l.startswith("VmRSS")][0].split()[1]
        # /stats/prometheus goes first: with --settle 0 it is the truly cold first scrape
        # (snapshot sort and tag extraction of every stat on the spot).
        rows = []
        for path in ("/stats/prometheus", "/stats", "/stats?format=json", "/config_dump",
                     "/clusters"):
            m = measure(admin, lst_port, path, a.runs, proc.pid)
            rows.append("| %s | %d | %.0f ms | %.0f ms | %.0f ms | %.0f / %.0f ms | %.0f ms "
                        "| %.1f ms |" % (
                path, m["size"], m["cold"] * 1000, m["cold_stall"] * 1000, m["cold_cpu"] * 1000,
                statistics.median(m["lat"]) * 1000, max(m["lat"]) * 1000,
                max(m["stall"]) * 1000, max(m["rtt"]) * 1000))
        with open("/proc/%d/status" % proc.pid) as f:
            rss2 = [l for l in f if l.startswith("VmRSS")][0].split()[1]
        print("clusters=%d istio_stats_config=%s startup=%.2fs settle=%.0fs rss=%s kB "
              "(after the scrapes: %s kB)" % (a.clusters, a.istio, startup, a.settle, rss, rss2))
        print()
        print("| endpoint | bytes | first latency | first stall | first main-thread CPU "
              "| later latency median / max | later stall max | echo RTT max during |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()

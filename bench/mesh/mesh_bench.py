"""bench/mesh: two sidecars in network namespaces, msm-proxy against haproxy, same run.

Pods (test/integration/netns_pods.py): `client` and `server` with istio-iptables' capture, and
`dclient` / `dserver` without (the direct baseline), on one bridge. The server pods run
tcp_bench servers: echo on 9000 (latency), echo closing after 1 KiB on 9001 (new connections),
sink on 9002 (throughput). Targets, interleaved per repetition:

- direct:  dclient -> dserver, no proxy;
- msm:     client app -> VIP:port -> iptables -> msm-proxy 15001 (Istio's outbound listener,
           EDS cluster, auto-mTLS, metadata exchange) -> mTLS -> iptables -> msm-proxy 15006
           (virtualInbound STRICT chain: MX, istio.stats, tcp_proxy, ORIGINAL_DST from
           127.0.0.6) -> app; configuration and SDS certificates from the test control plane;
- haproxy: the same capture, haproxy as uid 1337 in both pods: `bind :15001` + `server ...
           ssl crt ... ca-file ... verify required sni ... alpn istio-peer-exchange,istio` in the
           client pod, `bind :15006 ssl crt ... ca-file ... verify required alpn ...` + `server
           <pod ip>:<port> source 127.0.0.6` in the server pod (dst_port picks the backend, from
           SO_ORIGINAL_DST as msm-proxy's use_original_dst / original_dst do).

Scenarios (tcp_bench): lat (1 connection, 1 KiB ping-pong, RTT percentiles), conn (16 slots:
connect, 1 KiB echo, server closes; each connection is a new mTLS handshake between the
sidecars), tput (4 connections of 64 KiB writes, sent bytes). Each run records both sidecars'
CPU time (/proc/<pid>/stat) and the machine's busy % (/proc/stat) and steal %.

Usage (root): /usr/bin/python3 bench/mesh/mesh_bench.py --binary B --tcp-bench T [--reps N]
    [--duration S] [--warmup S] [--out FILE]
"""
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
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
sys.path.insert(0, os.path.join(ROOT, "test", "controlplane"))

import harness as H  # noqa: E402
import netns_pods as N  # noqa: E402
import test_tls as T  # noqa: E402

ECHO = "echo.default.svc.cluster.local"
ECHO_SA = N.spiffe("default", "echo")
IP = {"client": "10.88.0.2", "server": "10.88.0.3", "dclient": "10.88.0.4",
      "dserver": "10.88.0.5"}
VIP = "10.96.0.10"
PORTS = {"lat": 9000, "conn": 9001, "tput": 9002}
SIZE = 1024


def ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6], v[7]  # busy (user nice system irq softirq), steal


def proc_cpu(pid):
    """utime + stime of <pid> and its threads, seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            f_ = f.read().rsplit(")", 1)[1].split()
        return (int(f_[11]) + int(f_[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def parse_result(out):
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return dict(kv.split("=", 1) for kv in line.split()[1:])
    raise RuntimeError("no RESULT in: %s" % out)


class Bench:
    def __init__(self, args):
        self.a = args
        H.BINARY = os.path.abspath(args.binary)
        self.tmp = tempfile.mkdtemp(prefix="msm-meshbench-")
        os.chmod(self.tmp, 0o777)
        self.pki = T.Pki()
        self.client_pair = self.pki.leaf("client", "URI:" + N.spiffe("default", "client"))
        # haproxy checks the server name against the SNI it sends (it cannot match a URI SAN):
        # the server certificate carries Istio's SNI as a DNS SAN too.
        self.server_pair = self.pki.leaf("echo", "URI:%s,%s" % (ECHO_SA, ",".join(
            "DNS:" + N.sni_name(p, ECHO) for p in PORTS.values())))
        self.mesh = N.Mesh("mb%d" % os.getpid())
        self.pods = {n: self.mesh.pod(n, ip, capture=n in ("client", "server"))
                     for n, ip in IP.items()}
        self.procs = []
        for pod in ("server", "dserver"):
            self.server_tools(pod)
        self.C = T.control_plane_module()
        self.types = self.C.Types(os.path.dirname(H.BINARY))

    def spawn(self, pod, argv, **kw):
        p = subprocess.Popen(self.pods[pod].prefix() + argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def server_tools(self, pod):
        tb = self.a.tcp_bench
        for mode, port, extra in (("echo", PORTS["lat"], []),
                                  ("echo", PORTS["conn"], ["--close-after", str(SIZE)]),
                                  ("sink", PORTS["tput"], [])):
            self.spawn(pod, [tb, mode, "--host", IP[pod], "--allow-netns", "--port", str(port),
                             "--duration", "3600"] + extra, stdout=subprocess.DEVNULL)

    # ---- sidecars ---------------------------------------------------------------------------

    def start_msm(self):
        ca = self.pki.read(self.pki.path("ca.pem"))
        cps, procs = [], []
        for pod in ("client", "server"):
            cp = N.PodControlPlane(self.C, self.types, os.path.join(self.tmp, pod + ".xds"))
            cps.append(cp)
            if pod == "client":
                cp.set("lds", N.virtual_outbound())
                for port in PORTS.values():
                    name = N.cluster_name(port, ECHO)
                    cp.set("lds", N.service_listener(VIP, port, cluster=name))
                    cp.set("cds", N.outbound_cluster(port, ECHO, [ECHO_SA]))
                    cp.set("eds", N.load_assignment(name, [(IP["server"], port,
                                                            "echo;default;echo;v1;Kubernetes")]))
                pair = self.client_pair
                node = N.node("client-1", "default", IP[pod], "client", "client", "v1", "client")
            else:
                cp.set("lds", N.virtual_outbound())
                cp.set("lds", N.virtual_inbound(list(PORTS.values())))
                for port in PORTS.values():
                    cp.set("cds", N.inbound_cluster(port, ECHO))
                pair = self.server_pair
                node = N.node("echo-1", "default", IP[pod], "echo", "echo", "v1", "echo")
            for c in N.passthrough_clusters():
                cp.set("cds", c)
            cp.set_secrets(N.secrets(self.types, self.pki.read(pair[0]), self.pki.read(pair[1]),
                                     ca))
            p = N.PodProxy(self.pods[pod], self.tmp, N.sidecar_bootstrap(node, cp.sock),
                           args=["--concurrency", str(self.a.concurrency), "-l", "warning"])
            p.start()
            procs.append(p)
        return {"kind": "msm", "pids": [p.proc.pid for p in procs],
                "stop": lambda: ([p.stop() for p in procs], [c.stop() for c in cps])}

    def start_haproxy(self, reuse=False):
        pem = {}
        for name, pair in (("client", self.client_pair), ("server", self.server_pair)):
            pem[name] = os.path.join(self.tmp, name + "-hap.pem")
            with open(pem[name], "w") as f:
                f.write(self.pki.read(pair[0]) + self.pki.read(pair[1]))
        ca = os.path.join(self.tmp, "ca-hap.pem")  # readable by uid 1337
        shutil.copy(self.pki.path("ca.pem"), ca)
        os.chmod(ca, 0o644)
        for f in pem.values():
            os.chown(f, 1337, 1337)
        head = ("global\n  nbthread %d\n  maxconn 8000\n  tune.ssl.default-dh-param 2048\n"
                "defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 1h\n"
                "  timeout server 1h\n" % self.a.concurrency)
        cli = head + "frontend outbound\n  bind 0.0.0.0:15001\n"
        srv = head + ("frontend inbound\n  bind 0.0.0.0:15006 ssl crt %s ca-file %s verify "
                      "required alpn istio-peer-exchange,h2,http/1.1\n" % (pem["server"], ca))
        backends_c, backends_s = "", ""
        for port in PORTS.values():
            cli += "  use_backend out%d if { dst_port %d }\n" % (port, port)
            srv += "  use_backend in%d if { dst_port %d }\n" % (port, port)
            # no-ssl-reuse: a full handshake per connection, as msm-proxy does (it does not
            # resume sessions); the haproxy-reuse target keeps haproxy's default resumption.
            backends_c += ("backend out%d\n  server s %s:%d ssl crt %s ca-file %s verify required "
                           "sni str(%s) alpn istio-peer-exchange,istio%s\n"
                           % (port, IP["server"], port, pem["client"], ca,
                              N.sni_name(port, ECHO), "" if reuse else " no-ssl-reuse"))
            backends_s += ("backend in%d\n  server app %s:%d source 127.0.0.6\n"
                           % (port, IP["server"], port))
        procs = []
        for pod, text in (("client", cli + backends_c), ("server", srv + backends_s)):
            path = os.path.join(self.tmp, "haproxy-%s.cfg" % pod)
            with open(path, "w") as f:
                f.write(text)
            p = self.spawn(pod, ["setpriv", "--reuid", "1337", "--regid", "1337",
                                 "--clear-groups", "haproxy", "-db", "-f", path],
                           stdout=subprocess.DEVNULL, stderr=open(path + ".log", "w"))
            procs.append(p)
        time.sleep(1.0)
        for pod, p in zip(("client", "server"), procs):
            if p.poll() is not None:
                with open(os.path.join(self.tmp, "haproxy-%s.cfg.log" % pod)) as f:
                    raise RuntimeError("haproxy (%s pod) exited: %s" % (pod, f.read()))

        def stop():
            for p in procs:
                p.send_signal(signal.SIGUSR1)  # soft stop
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        return {"kind": "haproxy-reuse" if reuse else "haproxy", "pids": [p.pid for p in procs],
                "stop": stop}

    # ---- one measurement ------------------------------------------------------------------

    def run_tool(self, target, scen, side):
        tb, a = self.a.tcp_bench, self.a
        if target == "direct":
            pod, host = "dclient", IP["dserver"]
        else:
            pod, host = "client", VIP
        port = PORTS[scen]
        args = {"lat": ["latency", "--conns", "1", "--size", str(SIZE)],
                "conn": ["connrate", "--conns", "16", "--size", str(SIZE)],
                "tput": ["throughput", "--conns", "4", "--size", "65536"]}[scen]
        argv = [tb] + args + ["--host", host, "--port", str(port), "--allow-netns",
                              "--duration", str(a.duration), "--warmup", str(a.warmup)]
        pids = side["pids"] if side else []
        c0 = [proc_cpu(p) for p in pids]
        s0, t0 = ticks(), time.monotonic()
        r = subprocess.run(self.pods[pod].prefix() + argv, capture_output=True, text=True,
                           timeout=a.duration + a.warmup + 60)
        wall = time.monotonic() - t0
        s1 = ticks()
        c1 = [proc_cpu(p) for p in pids]
        res = parse_result(r.stdout)
        tck = os.sysconf("SC_CLK_TCK")
        res["busy_pct"] = 100.0 * (s1[0] - s0[0]) / tck / wall / os.cpu_count()
        res["steal_pct"] = 100.0 * (s1[1] - s0[1]) / tck / wall / os.cpu_count()
        # Sidecar CPU over the whole run (warm-up included), as % of one core; [client, server].
        res["sidecar_cpu_pct"] = [100.0 * (b - a_) / wall for a_, b in zip(c0, c1)]
        res["wall"] = wall
        return res

    def run(self):
        rows = []
        for rep in range(self.a.reps):
            for target in self.a.targets.split(","):
                side = None
                if target == "msm":
                    side = self.start_msm()
                elif target in ("haproxy", "haproxy-reuse"):
                    side = self.start_haproxy(reuse=target == "haproxy-reuse")
                try:
                    for scen in ("lat", "conn", "tput"):
                        res = self.run_tool(target, scen, side)
                        res.update(rep=rep, target=target, scen=scen)
                        rows.append(res)
                        sys.stderr.write("%s\n" % json.dumps(res))
                finally:
                    if side:
                        side["stop"]()
        return rows

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.mesh.close()
        self.pki.close()
        shutil.rmtree(self.tmp, True)


def med(rows, target, scen, key):
    v = [float(r[key]) for r in rows if r["target"] == target and r["scen"] == scen]
    return statistics.median(v) if v else float("nan")


def report(rows, args):
    out = []
    busy = [r["busy_pct"] for r in rows]
    steal = [r["steal_pct"] for r in rows]
    out.append("Machine: %d CPUs (%s); sidecars: %d worker(s) / nbthread; %d repetitions x %gs "
               "(+%gs warm-up), medians. Machine busy %% during runs: median %.0f%% (min %.0f, "
               "max %.0f), steal median %.1f%%."
               % (os.cpu_count(), subprocess.run(["uname", "-r"], capture_output=True,
                                                 text=True).stdout.strip(), args.concurrency,
                  args.reps, args.duration, args.warmup, statistics.median(busy), min(busy),
                  max(busy), statistics.median(steal)))
    out.append("")
    out.append("| figure | direct | haproxy | msm-proxy | msm / haproxy |")
    out.append("|---|---|---|---|---|")

    def line(name, key, scen, fmt, per_hop=False, better="low"):
        d, hp, ms = (med(rows, t, scen, key) for t in ("direct", "haproxy", "msm"))
        if per_hop:
            hp_, ms_ = (hp - d) / 2, (ms - d) / 2
            out.append("| %s | - | %s | %s | %.2f |" % (name, fmt % hp_, fmt % ms_, ms_ / hp_))
        else:
            out.append("| %s | %s | %s | %s | %.2f |" % (name, fmt % d, fmt % hp, fmt % ms,
                                                         ms / hp))
    line("1 KiB echo RTT p50 (µs)", "p50_us", "lat", "%.0f")
    line("1 KiB echo RTT p99 (µs)", "p99_us", "lat", "%.0f")
    line("added latency per hop, p50 (µs)", "p50_us", "lat", "%.1f", per_hop=True)
    line("added latency per hop, p99 (µs)", "p99_us", "lat", "%.1f", per_hop=True)
    line("new connections/s = mTLS handshakes/s (1 KiB echo each)", "cps", "conn", "%.0f")
    line("throughput, 4 connections (Gbit/s)", "gbps", "tput", "%.2f")
    # Efficiency: per core of sidecar CPU (client + server sidecars together).
    for scen, key, name, unit in (("conn", "cps", "mTLS connections per sidecar-core-second",
                                   "%.0f"),
                                  ("tput", "gbps", "Gbit/s per sidecar core (mTLS)", "%.2f")):
        vals = {}
        for t in ("haproxy", "msm"):
            per = [float(r[key]) / (sum(r["sidecar_cpu_pct"]) / 100.0)
                   for r in rows if r["target"] == t and r["scen"] == scen
                   and sum(r["sidecar_cpu_pct"]) > 0]
            vals[t] = statistics.median(per) if per else float("nan")
        out.append("| %s | - | %s | %s | %.2f |" % (name, unit % vals["haproxy"],
                                                    unit % vals["msm"],
                                                    vals["msm"] / vals["haproxy"]))
    if any(r["target"] == "haproxy-reuse" for r in rows):
        hr = med(rows, "haproxy-reuse", "conn", "cps")
        per = [float(r["cps"]) / (sum(r["sidecar_cpu_pct"]) / 100.0) for r in rows
               if r["target"] == "haproxy-reuse" and r["scen"] == "conn"
               and sum(r["sidecar_cpu_pct"]) > 0]
        out.append("")
        out.append("haproxy with its default TLS session reuse (a TLS 1.3 ticket reused for "
                   "many connections; msm-proxy, as Envoy, uses each ticket once, "
                   "max_session_keys 1): %.0f connections/s, %.0f per sidecar-core-second; "
                   "msm-proxy / haproxy-reuse = %.2f."
                   % (hr, statistics.median(per) if per else float("nan"),
                      med(rows, "msm", "conn", "cps") / hr))
    out.append("")
    out.append("Sidecar CPU, % of one core (client + server sidecar), medians:")
    out.append("")
    out.append("| scenario | haproxy | msm-proxy |")
    out.append("|---|---|---|")
    for scen in ("lat", "conn", "tput"):
        c = {}
        for t in ("haproxy", "msm"):
            c[t] = statistics.median([sum(r["sidecar_cpu_pct"]) for r in rows
                                      if r["target"] == t and r["scen"] == scen] or [0])
        out.append("| %s | %.0f | %.0f |" % (scen, c["haproxy"], c["msm"]))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--tcp-bench", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--targets", default="direct,msm,haproxy,haproxy-reuse")
    args = ap.parse_args()
    b = Bench(args)
    try:
        rows = b.run()
    finally:
        b.close()
    text = report(rows, args)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(args.out + ".jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()

"""Pods as Linux network namespaces, for the whole-mesh end-to-end (mesh_e2e.py).

- Topology: a "node" namespace holding a bridge (the pod network's gateway) and one namespace
  per pod, joined to the bridge by a veth pair (eth0 in the pod). Nothing is created in the
  caller's own namespace: deleting the namespaces removes every interface, route and iptables
  rule with them.
- istio_iptables(): Istio's sidecar capture rules (what istio-iptables/istio-init installs,
  REDIRECT mode): outbound TCP to 15001, inbound TCP to 15006, uid/gid 1337 (the proxy) exempt,
  127.0.0.6 (the inbound upstream source) returned, the proxy's own ports excluded from inbound
  capture. Loaded atomically with iptables-restore.
- in_ns(): run a Python callable on a thread that has entered a pod's namespace (setns is
  per-thread on Linux), so the driver can open sockets "inside" a pod without a subprocess;
  sockets keep their namespace after the thread ends.
- ns_argv(): the prefix that runs a command in a pod (`ip netns exec`, which also bind-mounts
  /etc/netns/<ns>/hosts over /etc/hosts: how pods resolve the service name here).

Needs root. in_ns() and the iptables rules come from test/integration/netns_pods.py.
"""
import os
import shutil
import subprocess
import sys

# The namespace-thread helper and Istio's rule set have one owner, test/integration/netns_pods.py
# (also used by test_sidecar_mesh, test_mesh_interop and bench/mesh). The e2e imports it rather
# than the other way round: mesh_e2e already puts test/integration on sys.path for the harness,
# so this is the only extra cross-tree import.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test",
                                "integration"))
from netns_pods import in_netns as in_ns, istio_iptables, istio_rules  # noqa: E402,F401


def sh(*cmd, ns=None, input=None):
    """Run a command (in namespace <ns> if given); raise with its stderr on failure."""
    argv = (["ip", "netns", "exec", ns] if ns else []) + [str(c) for c in cmd]
    r = subprocess.run(argv, input=input, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), r.returncode, r.stderr.strip()))
    return r.stdout


def ns_argv(ns):
    return ["ip", "netns", "exec", ns]


class Pod:
    def __init__(self, name, ns, ip):
        self.name = name
        self.ns = ns
        self.ip = ip

    def argv(self):
        return ns_argv(self.ns)

    def __repr__(self):
        return "Pod(%s, %s)" % (self.name, self.ip)


class Topology:
    """One node namespace with bridge br0 (gateway <subnet>.1) and pods <subnet>.2, .3, ...
    All names start with <prefix> (keep it short and unique: the pid)."""

    def __init__(self, prefix, subnet="10.244.0", hosts=None):
        self.prefix = prefix
        self.subnet = subnet
        self.gateway = subnet + ".1"
        self.hosts = hosts or {}  # name -> ip written to every pod's /etc/netns/<ns>/hosts
        self.namespaces = []
        self.etc_dirs = []
        self.pods = {}
        self.node = prefix + "-node"
        self._add_ns(self.node)
        sh("ip", "-n", self.node, "link", "set", "lo", "up")
        sh("ip", "-n", self.node, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.node, "addr", "add", self.gateway + "/24", "dev", "br0")
        sh("ip", "-n", self.node, "link", "set", "br0", "up")

    def _add_ns(self, ns):
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)

    def add_pod(self, name):
        idx = len(self.pods) + 2
        ip = "%s.%d" % (self.subnet, idx)
        ns = "%s-%s" % (self.prefix, name)
        self._add_ns(ns)
        host_if = "veth%d" % idx
        sh("ip", "-n", self.node, "link", "add", host_if, "type", "veth", "peer", "name",
           "eth0", "netns", ns)
        sh("ip", "-n", self.node, "link", "set", host_if, "master", "br0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", self.gateway)
        # /etc/hosts of the pod (ip netns exec bind-mounts it): localhost, itself, services.
        d = os.path.join("/etc/netns", ns)
        os.makedirs(d, exist_ok=True)
        self.etc_dirs.append(d)
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n%s %s\n" % (ip, name))
            for h, a in sorted(self.hosts.items()):
                f.write("%s %s\n" % (a, h))
        pod = Pod(name, ns, ip)
        self.pods[name] = pod
        return pod

    def destroy(self):
        """Delete every namespace (and with them interfaces and rules) and hosts file."""
        errors = []
        for ns in reversed(self.namespaces):
            r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if r.returncode and "No such file" not in r.stderr:
                errors.append("%s: %s" % (ns, r.stderr.strip()))
        self.namespaces = []
        for d in self.etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.etc_dirs = []
        return errors


def leftovers(prefix):
    """Namespaces whose name starts with <prefix> (should be none after destroy())."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [l.split()[0] for l in r.stdout.splitlines() if l.startswith(prefix)]

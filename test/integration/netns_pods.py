"""Pods on one machine: network namespaces joined by veth pairs to a bridge in a hub namespace,
each pod with Istio's sidecar iptables rules, and msm-proxy running in it as uid/gid 1337.

Used by test_sidecar_mesh.py, test_mesh_interop.py and bench/mesh/. Needs root (ip netns,
iptables). Everything made here is removed by Mesh.close() (and at exit): deleting a namespace
deletes its veth end and its iptables rules.

    mesh = Mesh("t%d" % os.getpid())
    client = mesh.pod("client", "10.88.0.2")
    client.call(lambda: socket.create_connection(("10.96.0.10", 9000)))   # from inside the pod

Python 3.11 has no os.setns: Netns.call() runs a function in a fresh thread that entered the
namespace with libc setns(2). A socket keeps the namespace it was made in, so a socket created
there may be used from any thread afterwards; threads started from that thread inherit it.
"""
import atexit
import ctypes
import os
import socket
import subprocess
import sys
import threading
import unittest

import harness as H

CLONE_NEWNET = 0x40000000
PROXY_UID = 1337
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*cmd, check=True, input=None):
    r = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(cmd), r.returncode, r.stderr.strip()))
    return r.stdout


def istio_rules(proxy_uid=PROXY_UID, proxy_gid=PROXY_UID, outbound_port=15001,
                inbound_port=15006, exclude_inbound=(15090, 15021, 15020), inbound_tunnel=15008):
    """The nat table istio-iptables (tools/istio-iptables, istio-init) writes for a sidecar in
    REDIRECT mode with the default injection values, as iptables-restore input: inbound TCP to
    15006 except the proxy's own ports, outbound TCP to 15001, the proxy's own uid/gid exempt,
    loopback traffic of the app left alone, traffic from 127.0.0.6 (inbound upstreams) returned,
    and a proxy's connection to its own pod IP over lo sent back through the inbound path.
    The one rule set of the tree: test_sidecar_mesh, test_mesh_interop, bench/mesh and
    istio-integration/e2e (netns.py) all install it."""
    r = ["*nat",
         ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
         ":POSTROUTING ACCEPT [0:0]",
         ":ISTIO_INBOUND - [0:0]", ":ISTIO_IN_REDIRECT - [0:0]", ":ISTIO_OUTPUT - [0:0]",
         ":ISTIO_REDIRECT - [0:0]",
         "-A PREROUTING -p tcp -j ISTIO_INBOUND",
         "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
         "-A ISTIO_INBOUND -p tcp --dport %d -j RETURN" % inbound_tunnel]
    r += ["-A ISTIO_INBOUND -p tcp --dport %d -j RETURN" % p for p in exclude_inbound]
    r += ["-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
          "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports %d" % inbound_port,
          "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports %d" % outbound_port,
          # The inbound cluster's upstream connections come from 127.0.0.6: never captured.
          "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
          # The proxy talking to its own pod IP (a pod calling itself through its service):
          # treated as inbound.
          "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp ! --dport %d -m owner --uid-owner %d "
          "-j ISTIO_IN_REDIRECT" % (inbound_tunnel, proxy_uid),
          "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner %d -j RETURN" % proxy_uid,
          "-A ISTIO_OUTPUT -m owner --uid-owner %d -j RETURN" % proxy_uid,
          "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner %d "
          "-j ISTIO_IN_REDIRECT" % proxy_gid,
          "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner %d -j RETURN" % proxy_gid,
          "-A ISTIO_OUTPUT -m owner --gid-owner %d -j RETURN" % proxy_gid,
          "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
          "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
          "COMMIT", ""]
    return "\n".join(r)


def istio_iptables(ns, **kw):
    """Install Istio's capture rules (istio_rules(**kw)) in namespace <ns>, atomically with
    iptables-restore (replacing its nat table)."""
    sh("ip", "netns", "exec", ns, "iptables-restore", input=istio_rules(**kw))


def enter_netns(ns):
    """setns(2) the calling thread into network namespace <ns> (a name under /run/netns)."""
    fd = os.open("/run/netns/" + ns, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns(%s): %s" % (ns, os.strerror(e)))
    finally:
        os.close(fd)


def in_netns(ns, fn, *args, **kw):
    """fn(*args, **kw) on a fresh thread inside network namespace <ns>; returns its result or
    raises its exception."""
    out = {}

    def body():
        try:
            enter_netns(ns)
            out["r"] = fn(*args, **kw)
        except BaseException as e:  # handed to the caller
            out["e"] = e
    t = threading.Thread(target=body, name="ns-" + ns, daemon=True)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out.get("r")


# ---- a whole test file in a fresh namespace of its own (test_capture, test_replay, ...) --------

NETNS_FLAG = "--in-netns"


def in_test_netns():
    """True in the re-executed test process (inside its own namespace)."""
    return NETNS_FLAG in sys.argv


def reexec_in_netns(prefix):
    """Run this test file again inside a new namespace <prefix><pid>; its exit code."""
    ns = "%s%d" % (prefix, os.getpid())
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable] + sys.argv + [NETNS_FLAG])
        return r.returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def main_in_netns(prefix):
    """A test file's main: as root, re-execute in a namespace of its own (the tests that need it
    are skipped unless in_test_netns()); then the harness's arguments and unittest."""
    if not in_test_netns() and os.geteuid() == 0:
        sys.exit(reexec_in_netns(prefix))
    H.parse_args()
    sys.argv = [a for a in sys.argv if a != NETNS_FLAG]
    unittest.main(verbosity=2)


class Netns:
    def __init__(self, name):
        self.name = name
        sh("ip", "netns", "add", name)
        self.path = "/var/run/netns/" + name
        self.ip("link", "set", "lo", "up")

    def ip(self, *args, check=True):
        return sh("ip", "-n", self.name, *args, check=check)

    def run(self, *cmd, check=True):
        return sh("ip", "netns", "exec", self.name, *cmd, check=check)

    def prefix(self):
        """argv prefix running a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def call(self, fn, *args, **kw):
        """fn(*args, **kw) in a thread inside this namespace; its result, or its exception."""
        return in_netns(self.name, fn, *args, **kw)

    def spawn(self, fn, *args):
        """fn(*args) in a daemon thread inside this namespace (not joined)."""
        def body():
            enter_netns(self.name)
            fn(*args)
        t = threading.Thread(target=body, daemon=True)
        t.start()
        return t

    def delete(self):
        sh("ip", "netns", "del", self.name, check=False)


class Pod(Netns):
    """A namespace with eth0 (a veth whose other end is on the hub's bridge), an address, a
    default route (so connects to any service VIP reach iptables), and Istio's rules."""

    def __init__(self, mesh, name, ip, capture=True):
        super().__init__("%s-%s" % (mesh.tag, name))
        self.pod_name = name
        self.addr = ip
        self.hub_if = "%s-p%d" % (mesh.tag[-8:], len(mesh.pods))
        sh("ip", "link", "add", self.hub_if, "netns", mesh.hub.name, "type", "veth", "peer",
           "name", "eth0", "netns", self.name)
        mesh.hub.ip("link", "set", self.hub_if, "master", "br0")
        mesh.hub.ip("link", "set", self.hub_if, "up")
        self.ip("addr", "add", ip + "/24", "dev", "eth0")
        self.ip("link", "set", "eth0", "up")
        self.ip("route", "add", "default", "dev", "eth0")
        if capture:
            istio_iptables(self.name)


class Mesh:
    """A hub namespace with a bridge, and pods attached to it."""

    def __init__(self, tag):
        self.tag = tag
        self.pods = []
        self.hub = Netns(tag + "-hub")
        atexit.register(self.close)
        self.hub.ip("link", "add", "br0", "type", "bridge")
        self.hub.ip("link", "set", "br0", "up")

    def pod(self, name, ip, capture=True):
        try:
            p = Pod(self, name, ip, capture)
        except BaseException:
            sh("ip", "netns", "del", "%s-%s" % (self.tag, name), check=False)
            raise
        self.pods.append(p)
        return p

    def close(self):
        for p in self.pods:
            p.delete()
        self.pods = []
        if self.hub:
            self.hub.delete()
            self.hub = None


class PodProxy(H.Proxy):
    """msm-proxy inside a pod, as uid/gid 1337 (the identity istio-iptables exempts). The admin
    API listens inside the pod, so admin requests are made from a thread in its namespace."""

    def __init__(self, pod, workdir, config, **kw):
        self.pod = pod
        super().__init__(workdir, config, **kw)

    def argv(self):
        return (self.pod.prefix() + ["setpriv", "--reuid", str(PROXY_UID), "--regid",
                                     str(PROXY_UID), "--clear-groups"] + super().argv())

    def request(self, method, path, timeout=H.IO_TIMEOUT):
        return self.pod.call(H.Proxy.request, self, method, path, timeout)


class IdServer:
    """The pod's application: accepts on (ip, port) inside <pod>, answers each connection with
    '<name> <peer ip>\\n' (unless greet is False), then echoes. Counts the connections it
    accepted. <pod>: a Netns, a callable running a function in some namespace (e.g.
    Agent.in_netns), or None for the caller's own namespace."""

    def __init__(self, pod, port, name, ip="0.0.0.0", greet=True):
        self.name = name
        self.greet = greet
        self.accepted = 0
        self.peers = []
        self.lock = threading.Lock()

        def mk():
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
            s.listen(256)
            return s
        run = getattr(pod, "call", pod)
        self.s = run(mk) if run else mk()
        self.s.settimeout(0.2)
        self.stop_ev = threading.Event()
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while not self.stop_ev.is_set():
            try:
                c, peer = self.s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.peers.append(peer[0])
            threading.Thread(target=self.echo, args=(c, peer), daemon=True).start()

    def echo(self, c, peer):
        with c:
            try:
                c.settimeout(30)
                if self.greet:
                    c.sendall(("%s %s\n" % (self.name, peer[0])).encode())
                while True:
                    d = c.recv(65536)
                    if not d:
                        return
                    c.sendall(d)
            except OSError:
                return

    def stop(self):
        self.stop_ev.set()
        self.s.close()


# ---- Istio's shapes (as istiod renders them for a sidecar; see the 1.20.8 dumps in
# ../shared/fixtures/istio/configdump and reference/istio-contract.md sections 3 and 4) ---------

UP_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWN_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
RAW = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
AUTHN = "type.googleapis.com/io.istio.network.authn.Config"
LF = "type.googleapis.com/envoy.extensions.filters.listener."
TD = "spiffe://cluster.local"
MX_ALPN = ["istio-peer-exchange", "istio"]


def spiffe(ns, sa):
    return "%s/ns/%s/sa/%s" % (TD, ns, sa)


def sds_source():
    return {"api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                                  "set_node_on_first_message_only": True,
                                  "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]},
            "initial_fetch_timeout": "0s", "resource_api_version": "V3"}


def ads_source():
    return {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}


def sds_common_tls(alpn, san_matchers):
    return {"alpn_protocols": list(alpn),
            "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": sds_source()}],
            "combined_validation_context": {
                "default_validation_context": {"match_subject_alt_names": list(san_matchers)},
                "validation_context_sds_secret_config": {"name": "ROOTCA",
                                                         "sds_config": sds_source()}}}


def upstream_tls(sni, sans, alpn=MX_ALPN):
    """ISTIO_MUTUAL / auto-mTLS client context (contract 3.3)."""
    common = sds_common_tls(alpn, [{"exact": s} for s in sans])
    common["tls_params"] = {"tls_minimum_protocol_version": "TLSv1_2",
                            "tls_maximum_protocol_version": "TLSv1_3"}
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": UP_TLS, "sni": sni, "common_tls_context": common}}


def downstream_tls(alpn=("istio-peer-exchange", "h2", "http/1.1")):
    """virtualInbound's server context for TCP chains (contract 3.4)."""
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": DOWN_TLS, "require_client_certificate": True,
                             "common_tls_context": sds_common_tls(alpn, [{"prefix": TD + "/"}])}}


def mx_filter():
    return {"name": "istio.metadata_exchange", "typed_config": {
        "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type_url": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
        "value": {"protocol": "istio-peer-exchange", "enable_discovery": True}}}


def istio_stats(inbound=False):
    cfg = {"@type": "type.googleapis.com/stats.PluginConfig"}
    if inbound:
        cfg["disable_host_header_fallback"] = True
    return {"name": "istio.stats", "typed_config": cfg}


def tcp_proxy(stat_prefix, cluster=None, weighted=None):
    cfg = {"@type": TCP_PROXY, "stat_prefix": stat_prefix}
    if weighted:
        cfg["weighted_clusters"] = {"clusters": [{"name": n, "weight": w} for n, w in weighted]}
    else:
        cfg["cluster"] = cluster
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": cfg}


def sock(ip, port):
    return {"socket_address": {"address": ip, "port_value": port}}


CB = {"thresholds": [{"max_connections": 4294967295, "max_pending_requests": 4294967295,
                      "max_requests": 4294967295, "max_retries": 4294967295,
                      "track_remaining": True}]}


def cluster_name(port, host, subset=""):
    return "outbound|%d|%s|%s" % (port, subset, host)


def sni_name(port, host, subset=""):
    return "outbound_.%d_.%s_.%s" % (port, subset, host)


def outbound_cluster(port, host, sans, subset="", lb_policy="LEAST_REQUEST", **extra):
    """An EDS cluster of a mesh service with auto-mTLS (transport_socket_matches on tlsMode)
    and the cluster-level metadata exchange filter."""
    name = cluster_name(port, host, subset)
    svc, ns = host.split(".")[0], host.split(".")[1]
    istio_md = {"services": [{"host": host, "name": svc, "namespace": ns}],
                "default_original_port": port}
    if subset:
        istio_md["subset"] = subset
    c = {"name": name, "type": "EDS",
         "eds_cluster_config": {"eds_config": ads_source(), "service_name": name},
         "connect_timeout": "10s", "lb_policy": lb_policy, "circuit_breakers": CB,
         "common_lb_config": {"locality_weighted_lb_config": {}},
         "metadata": {"filter_metadata": {"istio": istio_md}},
         "filters": [mx_filter()],
         "transport_socket_matches": [
             {"name": "tlsMode-istio", "match": {"tlsMode": "istio"},
              "transport_socket": upstream_tls(sni_name(port, host, subset), sans)},
             {"name": "tlsMode-disabled", "match": {},
              "transport_socket": {"name": "envoy.transport_sockets.raw_buffer",
                                   "typed_config": {"@type": RAW}}}]}
    c.update(extra)
    return c


def load_assignment(name, endpoints):
    """endpoints: [(ip, port, workload "<name>;<ns>;<svc>;<rev>;<cluster>")]"""
    lbe = [{"endpoint": {"address": sock(ip, port), "health_check_config": {}},
            "health_status": "HEALTHY", "load_balancing_weight": 1,
            "metadata": {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"},
                                             "istio": {"workload": wl}}}}
           for ip, port, wl in endpoints]
    return {"cluster_name": name, "endpoints": [{"locality": {}, "lb_endpoints": lbe,
                                                 "load_balancing_weight": len(lbe)}]}


def service_listener(vip, port, cluster=None, weighted=None, stat_prefix=None):
    """<VIP>_<port> for a TCP service port (bind_to_port false, reached via virtualOutbound)."""
    return {"name": "%s_%d" % (vip, port), "address": sock(vip, port),
            "filter_chains": [{"filters": [istio_stats(),
                                           tcp_proxy(stat_prefix or cluster, cluster, weighted)]}],
            "listener_filters_timeout": "0s", "traffic_direction": "OUTBOUND",
            "continue_on_listener_filters_timeout": True, "bind_to_port": False}


def virtual_outbound():
    return {"name": "virtualOutbound", "address": sock("0.0.0.0", 15001),
            "use_original_dst": True, "traffic_direction": "OUTBOUND",
            "filter_chains": [
                {"name": "virtualOutbound-blackhole",
                 "filter_chain_match": {"destination_port": 15001},
                 "filters": [istio_stats(), tcp_proxy("BlackHoleCluster", "BlackHoleCluster")]},
                {"name": "virtualOutbound-catchall-tcp",
                 "filters": [istio_stats(),
                             tcp_proxy("PassthroughCluster", "PassthroughCluster")]}]}


def rbac_filter(rules):
    return {"name": "envoy.filters.network.rbac",
            "typed_config": {"@type": RBAC, "rules": rules, "stat_prefix": "tcp.",
                             "shadow_rules_stat_prefix": "istio_dry_run_allow_"}}


def deny_port_from(policy, port, principal):
    """An AuthorizationPolicy DENY {from: principals [p], to: ports [port]}, as istiod 1.20
    renders it for TCP chains (istio_authn puts the peer principal in filter state)."""
    return {"action": "DENY", "policies": {"ns[default]-policy[%s]-rule[0]" % policy: {
        "permissions": [{"and_rules": {"rules": [{"or_rules": {"rules": [
            {"destination_port": port}]}}]}}],
        "principals": [{"and_ids": {"ids": [{"or_ids": {"ids": [{"filter_state": {
            "key": "io.istio.peer_principal", "string_match": {"exact": principal}}}]}}]}}]}}}


def virtual_inbound(ports, rbac_rules=None):
    """0.0.0.0:15006 with original_dst + tls_inspector, STRICT mTLS: per target port the TCP
    chain for Istio's mTLS ALPN (metadata exchange, [authn, RBAC,] stats, tcp_proxy)."""
    chains = [{"name": "virtualInbound-blackhole",
               "filter_chain_match": {"destination_port": 15006},
               "filters": [mx_filter(), istio_stats(True),
                           tcp_proxy("BlackHoleCluster", "BlackHoleCluster")]}]
    for p in ports:
        filters = [mx_filter()]
        if rbac_rules is not None:
            filters = [{"name": "istio_authn", "typed_config": {"@type": AUTHN}}] + filters + \
                [rbac_filter(rbac_rules)]
        filters += [istio_stats(True), tcp_proxy("inbound|%d||" % p, "inbound|%d||" % p)]
        chains.append({"name": "0.0.0.0_%d" % p,
                       "filter_chain_match": {"destination_port": p, "transport_protocol": "tls",
                                              "application_protocols": MX_ALPN},
                       "transport_socket": downstream_tls(),
                       "filters": filters})
    disabled = {"destination_port_range": {"start": 15006, "end": 15007}}
    return {"name": "virtualInbound", "address": sock("0.0.0.0", 15006),
            "listener_filters": [
                {"name": "envoy.filters.listener.original_dst",
                 "typed_config": {"@type": LF + "original_dst.v3.OriginalDst"}},
                {"name": "envoy.filters.listener.tls_inspector",
                 "typed_config": {"@type": LF + "tls_inspector.v3.TlsInspector"},
                 "filter_disabled": disabled}],
            "listener_filters_timeout": "0s", "traffic_direction": "INBOUND",
            "continue_on_listener_filters_timeout": True, "filter_chains": chains}


def inbound_cluster(port, host):
    svc, ns = host.split(".")[0], host.split(".")[1]
    return {"name": "inbound|%d||" % port, "type": "ORIGINAL_DST", "connect_timeout": "10s",
            "lb_policy": "CLUSTER_PROVIDED", "circuit_breakers": CB,
            "upstream_bind_config": {"source_address": {"address": "127.0.0.6",
                                                        "port_value": 0}},
            "metadata": {"filter_metadata": {"istio": {"services": [
                {"host": host, "name": svc, "namespace": ns}]}}}}


def passthrough_clusters():
    return [{"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s"},
            {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "connect_timeout": "10s",
             "lb_policy": "CLUSTER_PROVIDED", "circuit_breakers": CB}]


def node(pod_name, ns, ip, workload, app, version, sa):
    return {"id": "sidecar~%s~%s.%s~%s.svc.cluster.local" % (ip, pod_name, ns, ns),
            "cluster": "%s.%s" % (app, ns),
            "metadata": {"NAME": pod_name, "NAMESPACE": ns, "WORKLOAD_NAME": workload,
                         "CLUSTER_ID": "Kubernetes", "MESH_ID": "cluster.local",
                         "ISTIO_VERSION": "1.20.8", "INTERCEPTION_MODE": "REDIRECT",
                         "SERVICE_ACCOUNT": sa,
                         "OWNER": "kubernetes://apis/apps/v1/namespaces/%s/deployments/%s"
                                  % (ns, workload),
                         "LABELS": {"app": app, "version": version,
                                    "service.istio.io/canonical-name": app,
                                    "service.istio.io/canonical-revision": version}}}


def sidecar_bootstrap(node_dict, xds_sock):
    """pilot-agent's bootstrap, reduced: ADS and SDS over unix sockets (here: one socket served
    by the test control plane for both)."""
    import controlplane  # test/controlplane: on sys.path of every user of a PodControlPlane
    return H.bootstrap(
        clusters=[controlplane.pipe_cluster(n, xds_sock) for n in ("xds-grpc", "sds-grpc")],
        node=node_dict, dynamic_resources=controlplane.ads_dynamic_resources("GRPC"))


def secrets(types, cert_pem, key_pem, ca_pem):
    """SDS `default` and `ROOTCA` as the istio-agent serves them (controlplane.istio_secrets)."""
    import controlplane  # test/controlplane: on sys.path of every user of a PodControlPlane
    return controlplane.istio_secrets(types, cert_pem, key_pem, ca_pem)


class PodControlPlane:
    """The test control plane (test/controlplane) serving one pod's sidecar over a unix socket
    reachable from any namespace, readable by uid 1337."""

    def __init__(self, C, types, sock_path):
        self.C, self.types = C, types
        self.cp = C.ControlPlane(types)
        self.cp.listen("unix:" + sock_path)
        os.chmod(sock_path, 0o777)
        self.sock = sock_path

    def set(self, kind, d):
        full = {"lds": "envoy.config.listener.v3.Listener",
                "cds": "envoy.config.cluster.v3.Cluster",
                "eds": "envoy.config.endpoint.v3.ClusterLoadAssignment"}[kind]
        self.cp.resources.set(self.types.parse_json(full, d))

    def set_secrets(self, msgs):
        for m in msgs:
            self.cp.resources.set(m)

    def stop(self):
        self.cp.stop()

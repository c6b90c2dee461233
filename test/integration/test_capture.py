"""Sidecar capture: Istio's iptables REDIRECT to 15001/15006, the use_original_dst hand-off to
bind_to_port:false listeners, the original_dst listener filter, ORIGINAL_DST clusters, inbound
upstreams sourced from 127.0.0.6, and the http_inspector (RTSP and SIP request lines are not
HTTP).

The capture tests need root: the test re-executes itself inside a fresh network namespace where
it installs the iptables rules (uid 1337 exempt, as istio-iptables does) and runs msm-proxy as
uid 1337. Without root they are skipped with a message."""
import os
import socket
import subprocess
import time
import unittest

import harness as H
import netns_pods as N

POD_IP = "10.77.0.2"       # the pod's own address (inbound destination)
VIP = "10.77.0.99"         # a "service VIP": nothing listens there, only a listener exists
OTHER = "10.77.0.50"       # an address outside the mesh config (passthrough)
in_netns = N.in_test_netns


def tcp_proxy(prefix, cluster):
    return H.tcp_proxy_filter(stat_prefix=prefix, cluster=cluster)


def sidecar_config():
    """The shape istiod gives a sidecar, reduced to what capture needs."""
    return H.bootstrap(
        listeners=[
            {"name": "virtualOutbound", "address": H.sock_addr(15001, "0.0.0.0"),
             "use_original_dst": True,
             "filter_chains": [
                 {"name": "virtualOutbound-blackhole",
                  "filter_chain_match": {"destination_port": 15001},
                  "filters": [tcp_proxy("BlackHoleCluster", "BlackHoleCluster")]},
                 {"name": "virtualOutbound-catchall-tcp",
                  "filters": [tcp_proxy("PassthroughCluster", "PassthroughCluster")]}]},
            {"name": VIP + "_9000", "address": H.sock_addr(9000, VIP), "bind_to_port": False,
             "filter_chains": [{"filters": [tcp_proxy("outbound|9000||svc", "outbound|9000||svc")]}]},
            {"name": "virtualInbound", "address": H.sock_addr(15006, "0.0.0.0"),
             "listener_filters": [
                 {"name": "envoy.filters.listener.original_dst",
                  "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters."
                                            "listener.original_dst.v3.OriginalDst"}}],
             "filter_chains": [{"filters": [tcp_proxy("inbound|8080||", "inbound|8080||")]}]},
        ],
        clusters=[
            H.cluster("outbound|9000||svc", [H.sock_addr(9001)]),
            {"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "1s"},
            {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
             "connect_timeout": "1s"},
            {"name": "inbound|8080||", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
             "connect_timeout": "1s",
             "upstream_bind_config": {"source_address": {"address": "127.0.0.6",
                                                         "port_value": 0}}},
        ])


def sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class CaptureProxy(H.Proxy):
    """msm-proxy as uid/gid 1337, the identity iptables exempts (as in an Istio pod)."""

    def argv(self):
        return ["setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups"] + super().argv()


@unittest.skipUnless(in_netns(), "needs root: run as root to re-execute in a network namespace")
class CaptureTest(H.ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        sh("ip", "link", "set", "lo", "up")
        # A default route, as a pod has, so a connect to a service VIP gets as far as iptables.
        # (a veth pair: the dummy driver is not always available)
        sh("ip", "link", "add", "msmv0", "type", "veth", "peer", "name", "msmv1")
        sh("ip", "link", "set", "msmv0", "up")
        sh("ip", "link", "set", "msmv1", "up")
        sh("ip", "route", "add", "default", "dev", "msmv0")
        for ip in (POD_IP, OTHER):
            sh("ip", "addr", "add", ip + "/32", "dev", "lo")
        # istio-iptables, reduced: outbound TCP from anyone but uid/gid 1337 goes to 15001,
        # except to 127.0.0.1; "inbound" (here: locally originated, to the pod IP port 8080) to
        # 15006.
        ipt = ["iptables", "-t", "nat"]
        sh(*ipt, "-N", "ISTIO_OUTPUT")
        sh(*ipt, "-A", "OUTPUT", "-p", "tcp", "-j", "ISTIO_OUTPUT")
        sh(*ipt, "-A", "ISTIO_OUTPUT", "-m", "owner", "--uid-owner", "1337", "-j", "RETURN")
        sh(*ipt, "-A", "ISTIO_OUTPUT", "-m", "owner", "--gid-owner", "1337", "-j", "RETURN")
        sh(*ipt, "-A", "ISTIO_OUTPUT", "-d", "127.0.0.1/32", "-j", "RETURN")
        sh(*ipt, "-A", "ISTIO_OUTPUT", "-d", POD_IP + "/32", "-p", "tcp", "--dport", "8080",
           "-j", "REDIRECT", "--to-ports", "15006")
        sh(*ipt, "-A", "ISTIO_OUTPUT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001")
        # The pod's applications, in this (the test's own) namespace.
        cls.servers = [N.IdServer(None, 9001, "svc", ip="127.0.0.1"),
                       N.IdServer(None, 8080, "app", ip=POD_IP),
                       N.IdServer(None, 7777, "external", ip=OTHER)]

    @classmethod
    def tearDownClass(cls):
        for s in cls.servers:
            s.stop()

    def setUp(self):
        super().setUp()
        os.chmod(self.tmp, 0o777)  # the proxy runs as uid 1337
        p = CaptureProxy(self.tmp, sidecar_config(), args=["--concurrency", "2"])
        self._proxies.append(p)
        self.addCleanup(self._stop_proxy, p)
        self.p = p.start()

    def hello(self, ip, port):
        s = socket.create_connection((ip, port), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        first = H.recv_line(s).decode().split()
        s.sendall(b"ping\n")
        self.assertEqual(H.recv_line(s), b"ping\n")
        return first

    def test_outbound_to_service_listener(self):
        # Redirected to 15001, handed off to the bind_to_port:false listener of VIP:9000.
        name, _ = self.hello(VIP, 9000)
        self.assertEqual(name, "svc")
        self.assertEqual(self.p.stat("tcp.outbound|9000||svc.downstream_cx_total"), 1)
        self.assertEqual(self.p.stat("tcp.PassthroughCluster.downstream_cx_total"), 0)

    def test_outbound_passthrough(self):
        # No listener for OTHER:7777: virtualOutbound's catch-all chain, ORIGINAL_DST cluster.
        name, peer = self.hello(OTHER, 7777)
        self.assertEqual(name, "external")
        self.assertEqual(self.p.stat("tcp.PassthroughCluster.downstream_cx_total"), 1)
        self.assertEqual(self.p.stat("cluster.PassthroughCluster.upstream_cx_total"), 1)

    def test_inbound_original_dst_from_127_0_0_6(self):
        name, peer = self.hello(POD_IP, 8080)
        self.assertEqual(name, "app")
        self.assertEqual(peer, "127.0.0.6")  # upstream_bind_config, as Istio's inbound
        self.assertEqual(self.p.stat("tcp.inbound|8080||.downstream_cx_total"), 1)

    def test_blackhole_direct_to_15001(self):
        # A connection straight to 15001 (not redirected) matches the blackhole chain.
        s = socket.create_connection(("127.0.0.1", 15001), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        self.assertTrue(H.is_closed(s))
        self.p.wait_stat("tcp.BlackHoleCluster.downstream_cx_total", lambda v: v == 1)


class InspectorTest(H.ProxyTestCase):
    """http_inspector picks the HTTP chain by ALPN; RTSP/SIP/raw bytes take the default chain."""

    def setUp(self):
        super().setUp()
        self.http = self.upstream("identify", name="http")
        self.tcp = self.upstream("identify", name="tcp")

        def cfg():
            self.port = H.free_port()
            return H.bootstrap(
                listeners=[{
                    "name": "main", "address": H.sock_addr(self.port),
                    "listener_filters": [
                        {"name": "envoy.filters.listener.http_inspector",
                         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters."
                                                   "listener.http_inspector.v3.HttpInspector"}}],
                    "listener_filters_timeout": "0.3s",
                    "continue_on_listener_filters_timeout": True,
                    "filter_chains": [{
                        "filter_chain_match": {"application_protocols": ["http/1.1", "h2c"]},
                        "filters": [tcp_proxy("http", "http")]}],
                    "default_filter_chain": {"filters": [tcp_proxy("tcp", "tcp")]}}],
                clusters=[H.cluster("http", [self.http.address]),
                          H.cluster("tcp", [self.tcp.address])])
        self.p = self.start_proxy(cfg)

    def first_line(self, data, split=None):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        if split:
            s.sendall(data[:split])
            time.sleep(0.05)
            s.sendall(data[split:])
        else:
            s.sendall(data)
        return H.recv_line(s).decode().strip()

    def test_http11(self):
        self.assertEqual(self.first_line(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"), "http")

    def test_http11_in_pieces(self):
        self.assertEqual(self.first_line(b"POST /upload HTTP/1.1\r\nHost: a\r\n\r\n", split=7),
                         "http")

    def test_h2c_preface(self):
        self.assertEqual(self.first_line(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "http")

    def test_rtsp_is_not_http(self):
        self.assertEqual(self.first_line(b"OPTIONS rtsp://cam/live RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
                         "tcp")
        self.assertEqual(self.first_line(b"DESCRIBE rtsp://cam/live RTSP/1.0\r\nCSeq: 2\r\n\r\n"),
                         "tcp")

    def test_sip_is_not_http(self):
        self.assertEqual(self.first_line(b"INVITE sip:bob@example.com SIP/2.0\r\n"), "tcp")
        self.assertEqual(self.first_line(b"OPTIONS sip:bob@example.com SIP/2.0\r\n"), "tcp")

    def test_binary_is_not_http(self):
        self.assertEqual(self.first_line(b"\x00\x01\x02binary\n"), "tcp")

    def test_server_first_protocol_times_out_to_default(self):
        # The client sends nothing (a server-first protocol): after listener_filters_timeout
        # with continue_on_listener_filters_timeout the default chain takes the connection.
        s = socket.create_connection(("127.0.0.1", self.port), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        self.assertEqual(H.recv_line(s).decode().strip(), "tcp")
        self.assertEqual(self.p.stat("listener.127.0.0.1_%d.downstream_pre_cx_timeout"
                                     % self.port), 1)


if __name__ == "__main__":
    N.main_in_netns("msmit")

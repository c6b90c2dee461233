"""Access log operators of Istio's default format and the request/response timings, for HTTP
(http_connection_manager) and TCP (tcp_proxy), with values checked against what the peers saw:
%UPSTREAM_LOCAL_ADDRESS% is the address the upstream saw the proxy connect from,
%UPSTREAM_HOST% names the host also when it could not be reached (UF) with
%UPSTREAM_TRANSPORT_FAILURE_REASON% "delayed_connect_error:_Connection_refused",
%REQUEST_DURATION% / %REQUEST_TX_DURATION% / %RESPONSE_DURATION% / %RESPONSE_TX_DURATION% follow
a client and an upstream that pause, %ROUTE_NAME% the route, %CONNECTION_TERMINATION_DETAILS%
network RBAC's deny ("rbac_access_denied_matched_policy[<policy>]"). An unknown operator is a
config error naming it."""
import json
import os
import socket
import threading
import time

import harness as H

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
OPS = ["UPSTREAM_LOCAL_ADDRESS", "UPSTREAM_HOST", "UPSTREAM_TRANSPORT_FAILURE_REASON",
       "CONNECTION_TERMINATION_DETAILS", "ROUTE_NAME", "RESPONSE_CODE", "RESPONSE_FLAGS",
       "RESPONSE_CODE_DETAILS", "DURATION", "REQUEST_DURATION", "REQUEST_TX_DURATION",
       "RESPONSE_DURATION", "RESPONSE_TX_DURATION", "UPSTREAM_CLUSTER", "BYTES_RECEIVED",
       "BYTES_SENT"]
JSON_FORMAT = {op.lower(): "%" + op + "%" for op in OPS}


class PausingUpstream:
    """HTTP/1.1: reads one request (content-length body), waits 0.2 s, sends the headers and
    half the body, waits 0.3 s, sends the rest and closes. TCP: echoes. Records the peer address
    of every connection."""

    def __init__(self, http=True):
        self.http = http
        self.peers = []
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.address = H.sock_addr(self.port)
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.ls.close()

    def _accept(self):
        while True:
            try:
                c, peer = self.ls.accept()
            except OSError:
                return
            self.peers.append("%s:%d" % peer)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(H.IO_TIMEOUT)
            if not self.http:
                while True:
                    d = c.recv(65536)
                    if not d:
                        return
                    c.sendall(d)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += c.recv(65536)
            head, _, body = buf.partition(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    n = int(v)
            while len(body) < n:
                body += c.recv(65536)
            time.sleep(0.2)
            c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\n12345")
            time.sleep(0.3)
            c.sendall(b"67890")
        except OSError:
            pass
        finally:
            c.close()


def file_log(path, fmt):
    return {"name": "envoy.access_loggers.file", "typed_config": {
        "@type": FILE_LOG, "path": path, "log_format": fmt}}


class AccessLogOperatorsTest(H.ProxyTestCase):
    def lines(self, path, n):
        def count():
            if not os.path.exists(path):
                return 0
            with open(path) as f:
                return f.read().count("\n")
        H.wait_for(lambda: count() >= n, what="%d access log lines in %s" % (n, path))
        time.sleep(0.3)
        with open(path) as f:
            out = f.read().splitlines()
        self.assertEqual(len(out), n, out)
        return out

    def test_http_and_tcp(self):
        up = PausingUpstream()
        self.addCleanup(up.stop)
        echo = PausingUpstream(http=False)
        self.addCleanup(echo.stop)
        dead = H.free_port()
        http_json, tcp_json = (os.path.join(self.tmp, n) for n in ("http.json", "tcp.json"))

        def cfg():
            hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": HCM, "stat_prefix": "in", "http_filters": [ROUTER],
                "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                    {"name": "slow-route", "match": {"prefix": "/slow"},
                     "route": {"cluster": "up"}},
                    {"name": "dead-route", "match": {"prefix": "/dead"},
                     "route": {"cluster": "dead"}}]}]},
                "access_log": [file_log(http_json, {"json_format": JSON_FORMAT})]}}
            tcp = H.tcp_proxy_filter("tcp", "echo",
                                     access_log=[file_log(tcp_json, {"json_format": JSON_FORMAT})])
            tcp_dead = H.tcp_proxy_filter("tcp_dead", "dead",
                                          access_log=[file_log(tcp_json,
                                                               {"json_format": JSON_FORMAT})])
            rbac = {"name": "envoy.filters.network.rbac", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                "stat_prefix": "tcp.", "rules": {"action": "DENY", "policies": {"deny-all": {
                    "permissions": [{"any": True}], "principals": [{"any": True}]}}}}}
            tcp_denied = H.tcp_proxy_filter("tcp_denied", "echo",
                                            access_log=[file_log(tcp_json,
                                                                 {"json_format": JSON_FORMAT})])
            return H.bootstrap(
                listeners=[H.listener("http", H.sock_addr(H.free_port()), [hcm]),
                           H.listener("tcp", H.sock_addr(H.free_port()), [tcp]),
                           H.listener("tcp_dead", H.sock_addr(H.free_port()), [tcp_dead]),
                           H.listener("tcp_denied", H.sock_addr(H.free_port()),
                                      [rbac, tcp_denied])],
                clusters=[H.cluster("up", [up.address]), H.cluster("echo", [echo.address]),
                          H.cluster("dead", [H.sock_addr(dead)])])
        p = self.start_proxy(cfg, args=["--file-flush-interval-msec", "100"])

        # HTTP: the client pauses 0.3 s inside the body, the upstream 0.2 s before answering
        # and 0.3 s inside its body.
        s = socket.create_connection(("127.0.0.1", p.listener_port("http")),
                                     timeout=H.IO_TIMEOUT)
        s.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        time.sleep(0.3)
        s.sendall(b"67890")
        got = b""
        while not got.endswith(b"1234567890"):
            d = s.recv(65536)
            self.assertTrue(d, got)
            got += d
        s.close()
        s = socket.create_connection(("127.0.0.1", p.listener_port("http")),
                                     timeout=H.IO_TIMEOUT)
        s.sendall(b"GET /dead HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertIn(b" 503 ", H.recv_until_eof(s).split(b"\r\n")[0])
        s.close()
        ok, uf = [json.loads(x) for x in self.lines(http_json, 2)]
        self.assertEqual(ok["upstream_local_address"], up.peers[0])
        self.assertEqual(ok["upstream_host"], "127.0.0.1:%d" % up.port)
        self.assertEqual((ok["route_name"], ok["response_code"], ok["response_flags"]),
                         ("slow-route", 200, None))
        self.assertIsNone(ok["upstream_transport_failure_reason"])
        self.assertIsNone(ok["connection_termination_details"])
        rq, rq_tx = ok["request_duration"], ok["request_tx_duration"]
        rs, rs_tx, dur = ok["response_duration"], ok["response_tx_duration"], ok["duration"]
        H.note("durations: request %d tx %d response %d tx %d total %d", rq, rq_tx, rs, rs_tx,
               dur)
        # Pauses of 300 / 200 / 300 ms; lower bounds leave room for a loaded (sanitizer) run.
        self.assertTrue(150 <= rq <= rq_tx < 2000, ok)
        self.assertTrue(rq_tx + 100 <= rs < 3000, ok)
        self.assertTrue(150 <= rs_tx < 2000, ok)
        self.assertTrue(abs(dur - (rs + rs_tx)) <= 2, ok)
        self.assertEqual((ok["bytes_received"], ok["bytes_sent"]), (10, 10))
        self.assertEqual(uf["upstream_host"], "127.0.0.1:%d" % dead)
        self.assertEqual(uf["upstream_transport_failure_reason"],
                         "delayed_connect_error:_Connection_refused")
        self.assertEqual((uf["response_code"], uf["response_flags"], uf["route_name"]),
                         (503, "UF", "dead-route"))
        for k in ("upstream_local_address", "response_duration", "response_tx_duration",
                  "request_tx_duration", "connection_termination_details"):
            self.assertIsNone(uf[k], k)

        # TCP: echo, a connect failure, a connection network RBAC denies.
        s = socket.create_connection(("127.0.0.1", p.listener_port("tcp")), timeout=H.IO_TIMEOUT)
        s.sendall(b"ping")
        self.assertEqual(H.recv_exactly(s, 4), b"ping")
        s.close()
        tcp = json.loads(self.lines(tcp_json, 1)[0])
        self.assertEqual(tcp["upstream_local_address"], echo.peers[0])
        self.assertEqual(tcp["upstream_host"], "127.0.0.1:%d" % echo.port)
        for k in ("route_name", "upstream_transport_failure_reason",
                  "connection_termination_details", "response_flags", "response_duration"):
            self.assertIsNone(tcp[k], k)
        self.assertEqual((tcp["bytes_received"], tcp["bytes_sent"], tcp["response_code"]),
                         (4, 4, 0))
        s = socket.create_connection(("127.0.0.1", p.listener_port("tcp_dead")),
                                     timeout=H.IO_TIMEOUT)
        self.assertTrue(H.is_closed(s))
        s.close()
        tcp_uf = json.loads(self.lines(tcp_json, 2)[1])
        self.assertEqual((tcp_uf["upstream_host"], tcp_uf["response_flags"],
                          tcp_uf["upstream_transport_failure_reason"]),
                         ("127.0.0.1:%d" % dead, "UF", "delayed_connect_error:_Connection_refused"))
        self.assertIsNone(tcp_uf["upstream_local_address"])
        s = socket.create_connection(("127.0.0.1", p.listener_port("tcp_denied")),
                                     timeout=H.IO_TIMEOUT)
        self.assertTrue(H.is_closed(s))
        s.close()
        denied = json.loads(self.lines(tcp_json, 3)[2])
        self.assertEqual(denied["connection_termination_details"],
                         "rbac_access_denied_matched_policy[deny-all]")
        self.assertIsNone(denied["upstream_host"])
        self.assertEqual(p.stat("tcp.rbac.denied"), 1)

    def test_unknown_operator_is_a_config_error(self):
        path = os.path.join(self.tmp, "bad.json")
        hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": HCM, "stat_prefix": "in", "http_filters": [ROUTER],
            "route_config": {"virtual_hosts": []},
            "access_log": [file_log(os.path.join(self.tmp, "x.log"), {
                "text_format_source": {
                    "inline_string": "%START_TIME% %UPSTREAM_LOCAL_ADRESS%\n"}})]}}
        with open(path, "w") as f:
            json.dump(H.bootstrap(listeners=[H.listener("l", H.sock_addr(0), [hcm])]), f)
        r = self.run_binary(["--mode", "validate", "-c", path])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Not supported field in StreamInfo: UPSTREAM_LOCAL_ADRESS",
                      r.stdout + r.stderr)


if __name__ == "__main__":
    H.main()

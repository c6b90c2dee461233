"""HTTP upgrades and CONNECT through the HTTP connection manager (Envoy's upgrade path).

WebSocket (RFC 6455) with a stdlib client and echo server written here: the handshake with
Sec-WebSocket-Accept checked, masked client frames, text and binary messages up to 8 MB each
way at once (back-pressure), ping/close; through one sidecar and through two sidecars with mTLS
between them (certificates from test_tls's Pki). Half-close both ways, the stream idle timeout
and the route's idle_timeout, the 403 Envoy sends when the upgrade type is not enabled (HCM and
per-route upgrade_configs, Envoy's table), a non-101 answer relayed as a plain response, stats
and the single access log entry of a tunnel. CONNECT: terminated here (route connect_config:
raw TCP upstream, curl --proxytunnel through it) and forwarded as a CONNECT to an HTTP/1.1
upstream proxy; HTTP/2 CONNECT and RFC 8441 extended CONNECT (nghttp2's own client library
through a tiny C-free path: a stdlib HTTP/2 client with an HPACK decoder subset). Upgrades and
CONNECT to an HTTP/2-only upstream (a second proxy as the h2 peer: extended CONNECT out, its
200 back as a 101; a peer without allow_connect refuses: 503), and upgrade_configs[].filters."""
import base64
import ctypes
import ctypes.util
import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
import threading
import time

import harness as H
import http_peers as P
import test_http_mtls as M
import test_tls as T

HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"
BIG = 8 * 1024 * 1024


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def read_head(sock, timeout=H.IO_TIMEOUT):
    """Bytes up to and including the blank line, and what was read after it."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            raise EOFError("closed before the end of the header block: %r" % buf)
        buf += d
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for ln in lines[1:]:
        if ln:
            k, _, v = ln.partition(":")
            hdrs.setdefault(k.strip().lower(), []).append(v.strip())
    return lines[0], hdrs


class BufSock:
    """A socket with a read-ahead buffer (bytes that came with the header block)."""

    def __init__(self, sock, pending=b""):
        self.sock = sock
        self.buf = bytearray(pending)

    def recv_exact(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(max(65536, n - len(self.buf)))
            if not d:
                raise EOFError("closed with %d of %d bytes" % (len(self.buf), n))
            self.buf += d
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def recv_to_eof(self):
        out = bytes(self.buf)
        self.buf.clear()
        return out + H.recv_until_eof(self.sock)


def ws_frame(payload, opcode=2, mask=True, fin=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    # XOR with the repeated key, fast: as big integers
    k = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big") \
        if n else b""
    return head + key + masked


def ws_read_frame(bs):
    """(fin, opcode, masked, payload) of the next frame (unmasked)."""
    b0, b1 = bs.recv_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", bs.recv_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", bs.recv_exact(8))[0]
    masked = bool(b1 & 0x80)
    key = bs.recv_exact(4) if masked else None
    payload = bs.recv_exact(n)
    if masked and n:
        k = (key * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")
    return bool(b0 & 0x80), b0 & 0x0F, masked, payload


class WsServer:
    """Upstream mode: a WebSocket echo server. Checks the handshake, answers 101 with the
    accept hash, then echoes every data frame (unmasked, as a server must), answers pings, and
    answers a close with a close. Records each request's header block and protocol errors."""

    def __init__(self, test, reply=None):
        self.requests = []
        self.errors = []
        self.lock = threading.Lock()
        self.reply = reply  # optional: a full response to send instead of the 101
        self.up = test.upstream(self.serve, name="ws")

    @property
    def address(self):
        return self.up.address

    def serve(self, c, up):
        try:
            head, rest = read_head(c, timeout=30)
            line, hdrs = parse_head(head)
            with self.lock:
                self.requests.append((line, hdrs))
            if self.reply:
                c.sendall(self.reply)
                return
            key = hdrs.get("sec-websocket-key", [""])[0]
            if (hdrs.get("upgrade", [""])[0].lower() != "websocket" or
                    "upgrade" not in hdrs.get("connection", [""])[0].lower() or not key):
                c.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                return
            c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                       % ws_accept(key)).encode())
            bs = BufSock(c, rest)
            c.settimeout(60)
            while True:
                fin, op, masked, payload = ws_read_frame(bs)
                if not masked:
                    with self.lock:
                        self.errors.append("unmasked client frame")
                    return
                if op == 8:
                    c.sendall(ws_frame(payload[:2], opcode=8, mask=False))
                    return
                if op == 9:
                    c.sendall(ws_frame(payload, opcode=10, mask=False))
                    continue
                c.sendall(ws_frame(payload, opcode=op, mask=False, fin=fin))
        except (OSError, EOFError, ValueError) as e:
            with self.lock:
                self.errors.append(repr(e))


def ws_connect(port, path="/ws", host="ws.example", extra=(), sock=None):
    """(BufSock, status line, headers) after the handshake; checks 101 and the accept hash."""
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, host, key))
    for k, v in extra:
        req += "%s: %s\r\n" % (k, v)
    s.sendall((req + "\r\n").encode())
    head, rest = read_head(s)
    line, hdrs = parse_head(head)
    return BufSock(s, rest), line, hdrs, key


def hcm(prefix, cluster, upgrades=("websocket",), routes=None, **extra):
    cfg = {"@type": HCM, "stat_prefix": prefix, "http_filters": [ROUTER],
           "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": routes or [
               {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]}}
    if upgrades:
        cfg["upgrade_configs"] = [{"upgrade_type": u} for u in upgrades]
    cfg.update(extra)
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": cfg}


def read_file(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def file_log(path, fmt):
    return {"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path, "log_format": {"text_format_source": {"inline_string": fmt}}}}


class UpgradeTestCase(H.ProxyTestCase):
    def one_sidecar(self, server, upgrades=("websocket",), routes=None, **extra):
        def cfg():
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()),
                                      [hcm("ws", "up", upgrades, routes, **extra)])],
                clusters=[H.cluster("up", [server.address])])
        return self.start_proxy(cfg, args=["--file-flush-interval-msec", "100"])

    def echo_big(self, bs, size):
        """Send a <size>-byte binary message while reading its echo (the two directions at once:
        without back-pressure the proxy would buffer it all). Returns seconds taken."""
        payload = os.urandom(size)
        frame = ws_frame(payload)
        err = []

        def send():
            try:
                bs.sock.sendall(frame)
            except OSError as e:
                err.append(e)
        t0 = time.monotonic()
        t = threading.Thread(target=send, daemon=True)
        t.start()
        bs.sock.settimeout(30)
        fin, op, masked, got = ws_read_frame(bs)
        t.join(30)
        self.assertFalse(err)
        self.assertEqual((fin, op, masked), (True, 2, False))
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(payload).digest())
        return time.monotonic() - t0

    def ws_session(self, bs, big=BIG):
        for msg in (b"hello", b"x" * 200, b"y" * 70000):
            bs.sock.sendall(ws_frame(msg, opcode=1))
            self.assertEqual(ws_read_frame(bs), (True, 1, False, msg))
        bs.sock.sendall(ws_frame(b"pp", opcode=9))
        self.assertEqual(ws_read_frame(bs), (True, 10, False, b"pp"))
        secs = self.echo_big(bs, big)
        H.note("%d bytes each way in %.2f s", big, secs)
        bs.sock.sendall(ws_frame(struct.pack("!H", 1000), opcode=8))
        self.assertEqual(ws_read_frame(bs), (True, 8, False, struct.pack("!H", 1000)))
        self.assertEqual(bs.recv_to_eof(), b"")  # the server closed: so does the tunnel


class WebSocketTest(UpgradeTestCase):
    def test_websocket_one_sidecar(self):
        ws = WsServer(self)
        log = os.path.join(self.tmp, "access.log")
        p = self.one_sidecar(ws, access_log=[file_log(
            log, "%RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT% %PROTOCOL% "
                 "%RESPONSE_CODE_DETAILS% %UPSTREAM_HOST%\n")])
        bs, line, hdrs, key = ws_connect(p.listener_port(), extra=[("X-Trace", "t1")])
        self.addCleanup(bs.sock.close)
        self.assertEqual(line.split()[1], "101", line)
        self.assertEqual(hdrs["sec-websocket-accept"], [ws_accept(key)])
        self.assertEqual(hdrs["upgrade"], ["websocket"])
        self.assertEqual(hdrs["connection"], ["upgrade"])
        self.assertNotIn("content-length", hdrs)
        self.assertNotIn("transfer-encoding", hdrs)
        self.assertEqual(hdrs["server"], ["envoy"])
        self.assertEqual(p.stat("http.ws.downstream_cx_upgrades_active"), 1)
        self.ws_session(bs)
        bs.sock.close()  # the server half-closed; the tunnel ends with our close
        self.assertEqual(ws.errors, [])
        # What reached the origin: the upgrade request, its headers kept.
        line0, h0 = ws.requests[0]
        self.assertEqual(line0, "GET /ws HTTP/1.1")
        self.assertEqual(h0["upgrade"], ["websocket"])
        self.assertEqual(h0["connection"], ["upgrade"])
        self.assertEqual(h0["sec-websocket-key"], [key])
        self.assertEqual(h0["sec-websocket-version"], ["13"])
        self.assertEqual(h0["x-trace"], ["t1"])
        p.wait_stat("http.ws.downstream_cx_upgrades_active", lambda v: v == 0)
        s = p.stats()
        self.assertEqual(s["http.ws.downstream_cx_upgrades_total"], 1)
        self.assertEqual(s["http.ws.downstream_rq_1xx"], 1)
        self.assertEqual(s["http.ws.downstream_rq_active"], 0)
        self.assertEqual(s["http.ws.downstream_rq_ws_on_non_ws_route"], 0)
        self.assertEqual(s["cluster.up.upstream_cx_total"], 1)
        H.wait_for(lambda: read_file(log).count("\n") >= 1, what="the access log line")
        time.sleep(0.3)
        lines = read_file(log).splitlines()
        self.assertEqual(len(lines), 1, lines)  # one entry for the whole tunnel, at its end
        code, rx, tx, proto, details, host = lines[0].split()
        self.assertEqual((code, proto, details), ("101", "HTTP/1.1", "via_upstream"))
        self.assertEqual(host, "127.0.0.1:%d" % ws.up.port)
        self.assertGreater(int(rx), BIG)
        self.assertGreater(int(tx), BIG)

    def test_fresh_upstream_connection_per_upgrade(self):
        """An upgrade never rides on a pooled keep-alive connection, and its connection is not
        reused after it: 2 upgrades + 2 plain requests = 2 tunnel connections + 1 pooled."""
        up = P.HttpUpstream()
        self.addCleanup(up.stop)
        ws = WsServer(self)

        def cfg():
            routes = [{"match": {"prefix": "/ws"}, "route": {"cluster": "ws"}},
                      {"match": {"prefix": "/"}, "route": {"cluster": "http"}}]
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()),
                                      [hcm("ws", None, routes=routes)])],
                clusters=[H.cluster("ws", [ws.address]), H.cluster("http", [up.address])])
        p = self.start_proxy(cfg)
        for _ in range(2):
            bs, line, _, _ = ws_connect(p.listener_port())
            self.assertIn(" 101 ", line)
            bs.sock.sendall(ws_frame(b"a"))
            self.assertEqual(ws_read_frame(bs)[3], b"a")
            bs.sock.close()
            s = socket.create_connection(("127.0.0.1", p.listener_port()), timeout=H.IO_TIMEOUT)
            s.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
            head, rest = read_head(s)
            self.assertIn(b" 200 ", head.split(b"\r\n")[0])
            BufSock(s, rest).recv_exact(int(parse_head(head)[1]["content-length"][0]))
            s.close()
        p.wait_stat("cluster.ws.upstream_cx_active", lambda v: v == 0)
        self.assertEqual(p.stat("cluster.ws.upstream_cx_total"), 2)
        self.assertEqual(p.stat("cluster.http.upstream_cx_total"), 1)
        self.assertEqual(up.connections, 1)

    def test_refused_when_not_enabled(self):
        """No upgrade_configs: 403 (upgrade_failed), downstream_rq_ws_on_non_ws_route, the
        connection closes and nothing reaches the upstream. Per-route upgrade_configs override
        the HCM's either way (Envoy's table)."""
        ws = WsServer(self)
        log = os.path.join(self.tmp, "a.log")

        def cfg():
            on = hcm("off", "up", upgrades=(), routes=[
                {"match": {"prefix": "/on"}, "route": {
                    "cluster": "up", "upgrade_configs": [{"upgrade_type": "WebSocket"}]}},
                {"match": {"prefix": "/"}, "route": {"cluster": "up"}}],
                access_log=[file_log(log, "%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n")])
            off = hcm("on", "up", routes=[
                {"match": {"prefix": "/off"}, "route": {
                    "cluster": "up", "upgrade_configs": [{"upgrade_type": "websocket",
                                                          "enabled": False}]}},
                {"match": {"prefix": "/"}, "route": {"cluster": "up"}}])
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()), [on]),
                           H.listener("second", H.sock_addr(H.free_port()), [off])],
                clusters=[H.cluster("up", [ws.address])])
        p = self.start_proxy(cfg, args=["--file-flush-interval-msec", "100"])
        for listener, path, want in (("main", "/ws", "403"), ("main", "/on/x", "101"),
                                     ("second", "/off", "403"), ("second", "/ws", "101")):
            bs, line, hdrs, _ = ws_connect(p.listener_port(listener), path=path)
            self.assertEqual(line.split()[1], want, (listener, path, line))
            if want == "403":
                self.assertEqual(hdrs["connection"], ["close"])
                self.assertEqual(hdrs["content-length"], ["0"])
                self.assertEqual(bs.recv_to_eof(), b"")
            bs.sock.close()
        self.assertEqual(len(ws.requests), 2)
        self.assertEqual(p.stat("http.off.downstream_rq_ws_on_non_ws_route"), 1)
        self.assertEqual(p.stat("http.on.downstream_rq_ws_on_non_ws_route"), 1)
        self.assertEqual(p.stat("http.off.downstream_rq_4xx"), 1)
        self.assertEqual(p.stat("http.off.downstream_cx_upgrades_total"), 1)
        H.wait_for(lambda: "403" in read_file(log), what="log")
        self.assertIn("403 upgrade_failed", read_file(log))
        # Upgrade without "Connection: upgrade" is no upgrade (hop-by-hop, dropped): a plain GET.
        s = socket.create_connection(("127.0.0.1", p.listener_port()), timeout=H.IO_TIMEOUT)
        s.sendall(b"GET /plain HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
        head, _ = read_head(s)
        s.close()
        self.assertEqual(ws.requests[-1][0], "GET /plain HTTP/1.1")
        self.assertNotIn("upgrade", ws.requests[-1][1])
        self.assertIn(b" 400 ", head.split(b"\r\n")[0])  # our WsServer refuses it

    def test_non_101_answer_is_a_plain_response(self):
        body = b"no websocket here"
        ws = WsServer(self, reply=b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n%s"
                      % (len(body), body))
        p = self.one_sidecar(ws)
        bs, line, hdrs, _ = ws_connect(p.listener_port())
        self.addCleanup(bs.sock.close)
        self.assertEqual(line.split()[1], "404")
        self.assertEqual(hdrs["content-length"], [str(len(body))])
        self.assertNotIn("upgrade", hdrs)
        self.assertEqual(bs.recv_exact(len(body)), body)
        self.assertEqual(bs.recv_to_eof(), b"")  # the request never ended: the connection goes
        p.wait_stat("http.ws.downstream_cx_upgrades_active", lambda v: v == 0)
        self.assertEqual(p.stat("http.ws.downstream_rq_4xx"), 1)

    def test_h2c_offer_is_a_plain_request(self):
        up = P.HttpUpstream()
        self.addCleanup(up.stop)
        p = self.one_sidecar(up, upgrades=())
        s = socket.create_connection(("127.0.0.1", p.listener_port()), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                  b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        head, rest = read_head(s)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        n = int(parse_head(head)[1]["content-length"][0])
        d = json.loads(BufSock(s, rest).recv_exact(n))
        for h in ("upgrade", "http2-settings", "connection"):
            self.assertNotIn(h, d["headers"])


def raw_tunnel_server(events):
    """Upstream mode for half-close tests: answers any upgrade with 101, then echoes raw bytes
    until the client's FIN, then sends "BYE" and half-closes; or, when the request's path is
    /server-first, half-closes its own side at once and keeps reading until EOF."""
    def serve(c, up):
        head, rest = read_head(c)
        line, hdrs = parse_head(head)
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: upgrade\r\n\r\n"
                  % hdrs["upgrade"][0].encode())
        got = bytearray(rest)
        if line.split()[1] == "/server-first":
            c.sendall(b"ONLY-THIS")
            c.shutdown(socket.SHUT_WR)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                got += d
            events.append(("server-first got", bytes(got)))
            return
        if got:
            c.sendall(bytes(got))
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        events.append("server saw EOF")
        c.sendall(b"BYE")
        c.shutdown(socket.SHUT_WR)
    return serve


class TunnelTest(UpgradeTestCase):
    def test_half_close_both_ways(self):
        events = []
        up = self.upstream(raw_tunnel_server(events))
        p = self.one_sidecar(up, upgrades=("my-proto",))

        def open_tunnel(path):
            s = socket.create_connection(("127.0.0.1", p.listener_port()), timeout=H.IO_TIMEOUT)
            self.addCleanup(s.close)
            # The first tunnel bytes ride with the request (before any 101).
            s.sendall(b"GET %s HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: My-Proto\r\n"
                      b"\r\nearly" % path.encode())
            head, rest = read_head(s)
            self.assertIn(b" 101 ", head.split(b"\r\n")[0])
            self.assertIn(b"upgrade: My-Proto", head)
            return BufSock(s, rest)
        # Client half-closes first: the server still answers after our FIN.
        bs = open_tunnel("/client-first")
        self.assertEqual(bs.recv_exact(5), b"early")
        bs.sock.sendall(b"more")
        self.assertEqual(bs.recv_exact(4), b"more")
        bs.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(bs.recv_to_eof(), b"BYE")
        self.assertIn("server saw EOF", events)
        # Server half-closes first: we get its FIN and can still send.
        bs = open_tunnel("/server-first")
        self.assertEqual(bs.recv_exact(9), b"ONLY-THIS")
        bs.sock.settimeout(2)
        self.assertEqual(bs.sock.recv(10), b"")  # its FIN came through
        for i in range(3):
            bs.sock.sendall(b"after-fin-%d;" % i)
            time.sleep(0.05)
        bs.sock.shutdown(socket.SHUT_WR)
        H.wait_for(lambda: any(isinstance(e, tuple) for e in events), what="server EOF")
        self.assertEqual(
            [e for e in events if isinstance(e, tuple)][0][1],
            b"early" + b"".join(b"after-fin-%d;" % i for i in range(3)))
        self.assertEqual(bs.recv_to_eof(), b"")
        p.wait_stat("http.ws.downstream_cx_upgrades_active", lambda v: v == 0)
        p.wait_stat("http.ws.downstream_cx_active", lambda v: v == 0)
        self.assertEqual(p.stat("http.ws.downstream_cx_upgrades_total"), 2)
        self.assertEqual(p.stat("http.ws.downstream_rq_tx_reset"), 0)

    def test_idle_timeouts(self):
        """The tunnel's idle timeout is the stream idle timeout, and the route's idle_timeout
        replaces it; traffic keeps it alive."""
        events = []
        up = self.upstream(raw_tunnel_server(events))

        def cfg():
            routes = [{"match": {"prefix": "/route-idle"}, "route": {
                "cluster": "up", "idle_timeout": "0.5s"}},
                {"match": {"prefix": "/"}, "route": {"cluster": "up"}}]
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()), [hcm(
                    "ws", "up", upgrades=("websocket",), routes=routes,
                    stream_idle_timeout="1.5s")])],
                clusters=[H.cluster("up", [up.address])])
        p = self.start_proxy(cfg)
        for path, idle in (("/stream-idle", 1.5), ("/route-idle", 0.5)):
            bs, line, _, _ = ws_connect(p.listener_port(), path=path)
            self.addCleanup(bs.sock.close)
            self.assertIn(" 101 ", line)
            t0 = time.monotonic()
            for i in range(4):  # active for longer than the idle timeout
                time.sleep(idle / 2)
                bs.sock.sendall(b"k%d" % i)
                self.assertEqual(bs.recv_exact(2), b"k%d" % i)
            alive = time.monotonic() - t0
            self.assertGreater(alive, idle)
            t1 = time.monotonic()
            bs.sock.settimeout(10)
            self.assertEqual(bs.recv_to_eof(), b"")
            waited = time.monotonic() - t1
            H.note("%s: closed %.2f s after the last byte (timeout %.1f s)", path, waited, idle)
            self.assertGreater(waited, idle * 0.8)
            self.assertLess(waited, idle + 2.0)
        self.assertEqual(p.stat("http.ws.downstream_rq_idle_timeout"), 2)
        p.wait_stat("cluster.up.upstream_cx_active", lambda v: v == 0)

    def test_back_pressure_slow_reader(self):
        """The origin pushes 48 MB into the tunnel while the client reads nothing: the proxy
        must stop reading the origin (what it accepted stays bounded by socket buffers and
        watermarks), its memory must not grow by the amount pushed, and everything arrives
        once the client reads."""
        total = 48 * 1024 * 1024
        sent = [0]
        done = threading.Event()

        def pusher(c, up):
            read_head(c)
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: upgrade\r\n\r\n")
            chunk = b"z" * 65536
            try:
                while sent[0] < total:
                    c.sendall(chunk)
                    sent[0] += len(chunk)
                c.shutdown(socket.SHUT_WR)
                c.recv(1)
            except OSError:
                pass
            done.set()
        up = self.upstream(pusher)
        p = self.one_sidecar(up)
        rss0 = H.rss_kb(p.proc.pid)
        bs, line, _, _ = ws_connect(p.listener_port())
        self.addCleanup(bs.sock.close)
        self.assertIn(" 101 ", line)
        time.sleep(1.5)
        stalled_at = sent[0]
        rss1 = H.rss_kb(p.proc.pid)
        H.note("pushed %.1f MB while the client was stalled; proxy RSS %+d kB",
               stalled_at / 1048576, rss1 - rss0)
        self.assertLess(stalled_at, total // 2)
        self.assertLess(rss1 - rss0, 24 * 1024)
        got = len(bs.recv_to_eof())
        self.assertEqual(got, total)
        self.assertTrue(done.wait(10))


class MtlsTest(UpgradeTestCase):
    """client --HTTP/1.1--> A (outbound HCM; cluster with TLS, istio.alpn and explicit HTTP/2)
    --mTLS--> B (inbound: TLS requiring a client certificate, HCM codec AUTO, allow_connect)
    --HTTP/1.1--> WebSocket origin. As Envoy, the tunnels are RFC 8441 extended CONNECT streams
    of A's pooled HTTP/2 connection, which the plain request shares."""

    @classmethod
    def setUpClass(cls):
        T.setUpModule()

    @classmethod
    def tearDownClass(cls):
        T.tearDownModule()

    def start_sidecar_b(self, ws, up):
        """The server sidecar: mTLS (ALPN h2, http/1.1), HTTP/2 with allow_connect, /ws to the
        WebSocket server, the rest to the HTTP origin. Returns the proxy and its port."""
        def cfg_b():
            routes = [{"match": {"prefix": "/ws"}, "route": {"cluster": "ws"}},
                      {"match": {"prefix": "/"}, "route": {"cluster": "http"}}]
            return H.bootstrap(listeners=[{
                "name": "inbound", "address": H.sock_addr(H.free_port()),
                "filter_chains": [{"filters": [hcm("inbound_8080", None, routes=routes,
                                                   http2_protocol_options={
                                                       "allow_connect": True})],
                                   "transport_socket": T.tls_socket(T.server_ctx(
                                       alpn=("h2", "http/1.1")))}]}],
                clusters=[H.cluster("ws", [ws.address]), H.cluster("http", [up.address])])
        pb = self.start_proxy(cfg_b)
        return pb, pb.config["static_resources"]["listeners"][0]["address"]["socket_address"][
            "port_value"]

    def test_websocket_two_sidecars_mtls(self):
        ws = WsServer(self)
        up = P.HttpUpstream("origin")
        self.addCleanup(up.stop)

        pb, b_port = self.start_sidecar_b(ws, up)

        def cfg_a():
            cl = H.cluster("outbound|8080||b", [H.sock_addr(b_port)])
            cl["transport_socket"] = T.tls_socket(T.client_ctx(alpn=["istio-peer-exchange",
                                                                     "istio"]))
            cl["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}}
            a = hcm("outbound_8080", "outbound|8080||b")
            a["typed_config"]["http_filters"] = [M.ALPN_FILTER, ROUTER]
            return H.bootstrap(listeners=[H.listener("main", H.sock_addr(H.free_port()), [a])],
                               clusters=[cl])
        pa = self.start_proxy(cfg_a)
        for _ in range(2):
            bs, line, hdrs, key = ws_connect(pa.listener_port())
            self.assertEqual(line.split()[1], "101", line)
            self.assertEqual(hdrs["sec-websocket-accept"], [ws_accept(key)])
            self.ws_session(bs)
            bs.sock.close()
        # Plain requests on the same pair still use the pooled HTTP/2 connection.
        s = socket.create_connection(("127.0.0.1", pa.listener_port()), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"GET /plain HTTP/1.1\r\nHost: h\r\n\r\n")
        head, rest = read_head(s)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        self.assertEqual(ws.errors, [])
        pa.wait_stat("http.outbound_8080.downstream_cx_upgrades_active", lambda v: v == 0)
        pb.wait_stat("http.inbound_8080.downstream_cx_upgrades_active", lambda v: v == 0)
        sa, sb = pa.stats(), pb.stats()
        self.assertEqual(sa["http.outbound_8080.downstream_cx_upgrades_total"], 2)
        self.assertEqual(sb["http.inbound_8080.downstream_cx_upgrades_total"], 2)
        self.assertEqual(sb["http.inbound_8080.downstream_cx_ssl_total"], 1)
        self.assertEqual(sb["http.inbound_8080.downstream_cx_http1_total"], 0)
        self.assertEqual(sb["http.inbound_8080.downstream_cx_http2_total"], 1)
        self.assertEqual(sb["http.inbound_8080.downstream_rq_http2_total"], 3)
        self.assertEqual(sa["cluster.outbound|8080||b.upstream_cx_http2_total"], 1)
        self.assertEqual(sa["cluster.outbound|8080||b.upstream_cx_total"], 1)


    @staticmethod
    def auto_cluster(name, addr, alpn=()):
        """An auto_config cluster (Envoy's ALPN-negotiated mixed pool) with TLS; the client
        context's alpn_protocols empty by default: the pool offers h2,http/1.1 itself."""
        cl = H.cluster(name, [addr])
        cl["transport_socket"] = T.tls_socket(T.client_ctx(alpn=alpn))
        cl["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                         "HttpProtocolOptions",
                "auto_config": {"http2_protocol_options": {}}}}
        return cl

    def test_auto_config_tls_upstream_picking_h2(self):
        """auto_config over TLS to a peer (a second msm-proxy) that selects h2 from the
        h2,http/1.1 the pool offers: HTTP/2, 20 concurrent slow requests on one connection, and
        a WebSocket as an RFC 8441 extended CONNECT stream of that same connection."""
        ws = WsServer(self)
        up = P.HttpUpstream("origin")
        self.addCleanup(up.stop)

        pb, b_port = self.start_sidecar_b(ws, up)

        def cfg_a():
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()),
                                      [hcm("outbound", "b")])],
                clusters=[self.auto_cluster("b", H.sock_addr(b_port))])
        pa = self.start_proxy(cfg_a)
        n = 20
        results = [None] * n

        def get(i):
            try:
                c = socket.create_connection(("127.0.0.1", pa.listener_port()),
                                             timeout=H.IO_TIMEOUT)
                with c:
                    c.sendall(b"GET /sleep/300 HTTP/1.1\r\nHost: h\r\n\r\n")
                    head, _ = read_head(c)
                    results[i] = head.split(b"\r\n")[0]
            except (OSError, EOFError) as e:
                results[i] = repr(e).encode()
        threads = [threading.Thread(target=get, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(H.IO_TIMEOUT)
        self.assertEqual([r.split(b" ")[1] if r else None for r in results], [b"200"] * n,
                         results)
        sa = pa.stats()
        self.assertEqual(sa["cluster.b.upstream_cx_total"], 1)
        self.assertEqual(sa["cluster.b.upstream_cx_http2_total"], 1)
        self.assertEqual(sa["cluster.b.upstream_cx_http1_total"], 0)
        self.assertEqual(pb.stat("http.inbound_8080.downstream_rq_http2_total"), n)
        # The upgrade: an extended CONNECT on the pooled HTTP/2 connection.
        bs, line, hdrs, key = ws_connect(pa.listener_port())
        self.addCleanup(bs.sock.close)
        self.assertEqual(line.split()[1], "101", line)
        self.assertEqual(hdrs["sec-websocket-accept"], [ws_accept(key)])
        self.ws_session(bs, big=256 * 1024)
        bs.sock.close()
        self.assertEqual(ws.errors, [])
        pb.wait_stat("http.inbound_8080.downstream_cx_upgrades_active", lambda v: v == 0)
        sa, sb = pa.stats(), pb.stats()
        self.assertEqual(sb["http.inbound_8080.downstream_cx_upgrades_total"], 1)
        self.assertEqual(sb["http.inbound_8080.downstream_rq_http2_total"], n + 1)
        self.assertEqual(sb["http.inbound_8080.downstream_cx_http2_total"], 1)
        self.assertEqual(sb["http.inbound_8080.downstream_cx_http1_total"], 0)
        self.assertEqual(sa["cluster.b.upstream_cx_total"], 1)

    def test_auto_config_tls_upstream_picking_http11(self):
        """The same kind of cluster to TLS peers that select http/1.1: HTTP/1.1, plain requests
        reuse one connection, a WebSocket goes as an HTTP/1.1 Upgrade on a connection of its
        own (not reused after it)."""
        ws = WsServer(self)
        picked = []
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(T.PKI.server[0], T.PKI.server[1])
        sctx.set_alpn_protocols(["http/1.1"])

        def wrap(c):
            try:
                t = sctx.wrap_socket(c, server_side=True)
            except (ssl.SSLError, OSError) as e:
                picked.append(repr(e))
                return None
            picked.append(t.selected_alpn_protocol())
            return t

        def serve_ws(c, up):
            t = wrap(c)
            if t:
                with t:
                    ws.serve(t, up)

        def serve_plain(c, up):
            t = wrap(c)
            if not t:
                return
            with t:
                try:
                    while True:
                        head, _ = read_head(t, timeout=30)
                        body = head.split(b"\r\n")[0]
                        t.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                                  % (len(body), body))
                except (OSError, EOFError, ssl.SSLError):
                    pass
        tls_ws = self.upstream(serve_ws, name="tlsws")
        tls_plain = self.upstream(serve_plain, name="tlsplain")

        def cfg():
            routes = [{"match": {"prefix": "/ws"}, "route": {"cluster": "ws"}},
                      {"match": {"prefix": "/"}, "route": {"cluster": "plain"}}]
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()),
                                      [hcm("ws", None, routes=routes)])],
                clusters=[self.auto_cluster("ws", tls_ws.address),
                          self.auto_cluster("plain", tls_plain.address)])
        p = self.start_proxy(cfg)
        s = socket.create_connection(("127.0.0.1", p.listener_port()), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        for i in range(3):
            s.sendall(b"GET /plain/%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
            head, rest = read_head(s)
            self.assertIn(b" 200 ", head.split(b"\r\n")[0])
            n = int(parse_head(head)[1]["content-length"][0])
            while len(rest) < n:
                rest += s.recv(n - len(rest))
            self.assertEqual(rest, b"GET /plain/%d HTTP/1.1" % i)
        for _ in range(2):
            bs, line, hdrs, key = ws_connect(p.listener_port())
            self.addCleanup(bs.sock.close)
            self.assertEqual(line.split()[1], "101", line)
            self.assertEqual(hdrs["sec-websocket-accept"], [ws_accept(key)])
            bs.sock.sendall(ws_frame(b"over tls", opcode=1))
            self.assertEqual(ws_read_frame(bs), (True, 1, False, b"over tls"))
            bs.sock.sendall(ws_frame(struct.pack("!H", 1000), opcode=8))
            self.assertEqual(ws_read_frame(bs), (True, 8, False, struct.pack("!H", 1000)))
            self.assertEqual(bs.recv_to_eof(), b"")
            bs.sock.close()
        self.assertEqual(picked, ["http/1.1"] * 3)
        self.assertEqual(ws.errors, [])
        self.assertEqual([r[0] for r in ws.requests], ["GET /ws HTTP/1.1"] * 2)
        st = p.stats()
        self.assertEqual(st["cluster.plain.upstream_cx_total"], 1)
        self.assertEqual(st["cluster.plain.upstream_cx_http1_total"], 1)
        self.assertEqual(st["cluster.plain.upstream_cx_http2_total"], 0)
        self.assertEqual(st["cluster.ws.upstream_cx_total"], 2)  # one each, never reused
        self.assertEqual(st["cluster.ws.upstream_cx_http1_total"], 2)
        p.wait_stat("cluster.ws.upstream_cx_active", lambda v: v == 0)

    def test_auto_config_http11_tunnel_half_close(self):
        """An upgrade on an HTTP/1.1-negotiated connection of the mixed pool takes it as a
        tunnel pool's: the upstream's half-close reaches the client and the client can still
        send (a second msm-proxy selects http/1.1 and relays to a raw tunnel server)."""
        events = []
        raw = self.upstream(raw_tunnel_server(events))

        def cfg_b():
            return H.bootstrap(listeners=[{
                "name": "inbound", "address": H.sock_addr(H.free_port()),
                "filter_chains": [{"filters": [hcm("inbound", "raw", upgrades=("my-proto",))],
                                   "transport_socket": T.tls_socket(T.server_ctx(
                                       alpn=("http/1.1",)))}]}],
                clusters=[H.cluster("raw", [raw.address])])
        pb = self.start_proxy(cfg_b)
        b_port = pb.config["static_resources"]["listeners"][0]["address"]["socket_address"][
            "port_value"]

        def cfg_a():
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()),
                                      [hcm("outbound", "b", upgrades=("my-proto",))])],
                clusters=[self.auto_cluster("b", H.sock_addr(b_port))])
        pa = self.start_proxy(cfg_a)
        s = socket.create_connection(("127.0.0.1", pa.listener_port()), timeout=H.IO_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"GET /server-first HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n"
                  b"Upgrade: my-proto\r\n\r\n")
        head, rest = read_head(s)
        self.assertIn(b" 101 ", head.split(b"\r\n")[0])
        bs = BufSock(s, rest)
        self.assertEqual(bs.recv_exact(9), b"ONLY-THIS")
        s.settimeout(5)
        self.assertEqual(s.recv(10), b"")  # the server's FIN came through
        for i in range(3):
            s.sendall(b"after-fin-%d;" % i)
            time.sleep(0.05)
        s.shutdown(socket.SHUT_WR)
        H.wait_for(lambda: any(isinstance(e, tuple) for e in events), what="server EOF")
        self.assertEqual([e for e in events if isinstance(e, tuple)][0][1],
                         b"".join(b"after-fin-%d;" % i for i in range(3)))
        pa.wait_stat("cluster.b.upstream_cx_active", lambda v: v == 0)
        st = pa.stats()
        self.assertEqual(st["cluster.b.upstream_cx_http1_total"], 1)
        self.assertEqual(st["cluster.b.upstream_cx_http2_total"], 0)
        self.assertEqual(st["http.outbound.downstream_cx_upgrades_total"], 1)

    def test_auto_config_without_tls_is_http11(self):
        """auto_config on a plaintext cluster: HTTP/1.1 (no ALPN to negotiate)."""
        up = P.HttpUpstream("origin")
        self.addCleanup(up.stop)

        def cfg():
            cl = self.auto_cluster("up", up.address)
            del cl["transport_socket"]
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()), [hcm("p", "up")])],
                clusters=[cl])
        p = self.start_proxy(cfg)
        out = P.raw_exchange(p.listener_port(),
                             b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        self.assertEqual(out.split(b" ")[1], b"200", out[:200])
        self.assertEqual(p.stat("cluster.up.upstream_cx_http1_total"), 1)
        self.assertEqual(p.stat("cluster.up.upstream_cx_http2_total"), 0)


# ---- a small HTTP/2 client (frames by hand; HPACK: literal encoding, decoding by libnghttp2
# through ctypes, the library the proxy itself links) -------------------------------------------

class _NV(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("value", ctypes.c_void_p),
                ("namelen", ctypes.c_size_t), ("valuelen", ctypes.c_size_t),
                ("flags", ctypes.c_uint8)]


class Hpack:
    def __init__(self):
        self.lib = ctypes.CDLL(ctypes.util.find_library("nghttp2") or "libnghttp2.so.14")
        self.lib.nghttp2_hd_inflate_hd2.restype = ctypes.c_ssize_t
        self.lib.nghttp2_hd_inflate_hd2.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(_NV), ctypes.POINTER(ctypes.c_int), ctypes.c_void_p,
            ctypes.c_size_t, ctypes.c_int]
        self.lib.nghttp2_hd_inflate_end_headers.argtypes = [ctypes.c_void_p]
        self.lib.nghttp2_hd_inflate_del.argtypes = [ctypes.c_void_p]
        self.inf = ctypes.c_void_p()
        if self.lib.nghttp2_hd_inflate_new(ctypes.byref(self.inf)) != 0:
            raise RuntimeError("nghttp2_hd_inflate_new")

    def close(self):
        self.lib.nghttp2_hd_inflate_del(self.inf)

    @staticmethod
    def encode(headers):
        def integer(v, prefix, first):
            lim = (1 << prefix) - 1
            if v < lim:
                return bytes([first | v])
            out = [first | lim]
            v -= lim
            while v >= 128:
                out.append((v & 127) | 128)
                v >>= 7
            return bytes(out + [v])
        out = b""
        for k, v in headers:
            k, v = k.encode(), v.encode()
            # literal header field without indexing, new name, no Huffman
            out += b"\x00" + integer(len(k), 7, 0) + k + integer(len(v), 7, 0) + v
        return out

    def decode(self, block):
        buf = ctypes.create_string_buffer(block, len(block))
        base = ctypes.addressof(buf)
        off, out = 0, []
        while True:
            nv, flags = _NV(), ctypes.c_int(0)
            rv = self.lib.nghttp2_hd_inflate_hd2(self.inf, ctypes.byref(nv), ctypes.byref(flags),
                                                 base + off, len(block) - off, 1)
            if rv < 0:
                raise ValueError("HPACK error %d" % rv)
            off += rv
            if flags.value & 2:  # NGHTTP2_HD_INFLATE_EMIT
                out.append((ctypes.string_at(nv.name, nv.namelen).decode(),
                            ctypes.string_at(nv.value, nv.valuelen).decode()))
            if flags.value & 1:  # NGHTTP2_HD_INFLATE_FINAL
                self.lib.nghttp2_hd_inflate_end_headers(self.inf)
                return out
            if rv == 0 and not flags.value & 2:
                raise ValueError("HPACK: no progress")


class H2Client:
    """One HTTP/2 connection, one stream at a time; enough for CONNECT tests."""
    DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW, CONT = 0, 1, 3, 4, 6, 7, 8, 9

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
        self.hp = Hpack()
        self.buf = BufSock(self.s)
        self.settings = {}
        self.s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + self.frame(self.SETTINGS, 0, 0, b""))
        while True:  # the server's SETTINGS
            t, f, sid, payload = self.read_frame()
            if t == self.SETTINGS and not f & 1:
                for i in range(0, len(payload), 6):
                    k, v = struct.unpack("!HI", payload[i:i + 6])
                    self.settings[k] = v
                self.s.sendall(self.frame(self.SETTINGS, 1, 0, b""))
                break

    def close(self):
        self.s.close()
        self.hp.close()

    @staticmethod
    def frame(t, flags, sid, payload):
        return struct.pack("!I", len(payload))[1:] + struct.pack("!BBI", t, flags, sid) + payload

    def read_frame(self):
        head = self.buf.recv_exact(9)
        n = struct.unpack("!I", b"\0" + head[:3])[0]
        t, f, sid = struct.unpack("!BBI", head[3:])
        return t, f, sid & 0x7FFFFFFF, self.buf.recv_exact(n)

    def request(self, sid, headers, end=False):
        self.s.sendall(self.frame(self.HEADERS, 4 | (1 if end else 0), sid,
                                  Hpack.encode(headers)))

    def data(self, sid, payload, end=False):
        for i in range(0, max(len(payload), 1), 16384):
            last = i + 16384 >= len(payload)
            self.s.sendall(self.frame(self.DATA, 1 if end and last else 0, sid,
                                      payload[i:i + 16384]))

    def events(self, sid, until):
        """Frames of stream <sid> as ("headers", list) / ("data", bytes) / ("end",) /
        ("rst", code) / ("goaway",), until until(events) is true."""
        ev = []
        while not until(ev):
            t, f, s, payload = self.read_frame()
            if t == self.SETTINGS and not f & 1:
                self.s.sendall(self.frame(self.SETTINGS, 1, 0, b""))
            elif t == self.PING and not f & 1:
                self.s.sendall(self.frame(self.PING, 1, 0, payload))
            elif t == self.GOAWAY:
                ev.append(("goaway",))
            elif s == sid and t == self.HEADERS:
                block = payload
                if f & 8:  # PADDED
                    block = block[1:len(block) - block[0]]
                if f & 0x20:  # PRIORITY
                    block = block[5:]
                ev.append(("headers", self.hp.decode(block)))
                if f & 1:
                    ev.append(("end",))
            elif s == sid and t == self.DATA:
                if payload:
                    ev.append(("data", payload))
                    inc = struct.pack("!I", len(payload))
                    self.s.sendall(self.frame(self.WINDOW, 0, 0, inc) +
                                   self.frame(self.WINDOW, 0, sid, inc))
                if f & 1:
                    ev.append(("end",))
            elif s == sid and t == self.RST:
                ev.append(("rst", struct.unpack("!I", payload)[0]))
        return ev


def ends(ev):
    return any(e[0] in ("end", "rst", "goaway") for e in ev)


def got_headers(ev):
    return any(e[0] in ("headers", "rst", "goaway") for e in ev)


def connect_cfg(test, cluster_addr, terminate=True, hcm_upgrades=("CONNECT",), route_up=None,
                codec=None, extra_routes=(), **extra):
    route = {"cluster": "up"}
    if route_up is not None:
        route["upgrade_configs"] = route_up
    elif terminate:
        route["upgrade_configs"] = [{"upgrade_type": "CONNECT", "connect_config": {}}]
    routes = [{"match": {"connect_matcher": {}}, "route": route}] + list(extra_routes)
    h = hcm("connect", "up", hcm_upgrades, routes, **extra)
    if codec:
        h["typed_config"]["codec_type"] = codec

    def cfg():
        return H.bootstrap(listeners=[H.listener("main", H.sock_addr(H.free_port()), [h])],
                           clusters=[H.cluster("up", [cluster_addr])])
    return test.start_proxy(cfg)


def connect_h1(port, authority=b"origin.example:4242", extra=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
    s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (authority, authority, extra))
    head, rest = read_head(s)
    return BufSock(s, rest), head


class ConnectTest(UpgradeTestCase):
    def test_connect_terminated_raw_tcp(self):
        up = self.upstream("echo")
        p = connect_cfg(self, up.address)
        bs, head = connect_h1(p.listener_port())
        self.addCleanup(bs.sock.close)
        line, hdrs = parse_head(head)
        self.assertEqual(line.split()[1], "200", head)
        self.assertNotIn("content-length", hdrs)
        self.assertNotIn("transfer-encoding", hdrs)
        payload = os.urandom(3 * 1024 * 1024)
        t = threading.Thread(target=bs.sock.sendall, args=(payload,), daemon=True)
        t.start()
        self.assertEqual(bs.recv_exact(len(payload)), payload)
        t.join(10)
        bs.sock.shutdown(socket.SHUT_WR)  # the echo server closes after our FIN
        self.assertEqual(bs.recv_to_eof(), b"")
        p.wait_stat("http.connect.downstream_cx_upgrades_active", lambda v: v == 0)
        s = p.stats()
        self.assertEqual(s["http.connect.downstream_cx_upgrades_total"], 1)
        self.assertEqual(s["http.connect.downstream_rq_2xx"], 1)
        self.assertEqual(s["cluster.up.upstream_cx_total"], 1)
        self.assertEqual(up.bytes_in, len(payload))

    def test_curl_proxytunnel_through_terminated_connect(self):
        origin = P.HttpUpstream("origin")
        self.addCleanup(origin.stop)
        p = connect_cfg(self, origin.address)
        for i in range(2):
            r = subprocess.run(
                ["curl", "-s", "-p", "-x", "http://127.0.0.1:%d" % p.listener_port(),
                 "--max-time", "10", "http://origin.example:8080/through/%d" % i],
                capture_output=True, timeout=20)
            self.assertEqual(r.returncode, 0, r.stderr)
            d = json.loads(r.stdout)
            self.assertEqual((d["server"], d["path"]), ("origin", "/through/%d" % i))
            self.assertEqual(d["headers"]["host"], ["origin.example:8080"])
        p.wait_stat("http.connect.downstream_cx_upgrades_active", lambda v: v == 0)
        self.assertEqual(p.stat("http.connect.downstream_cx_upgrades_total"), 2)
        self.assertEqual(origin.connections, 2)

    def test_connect_forwarded_to_http_proxy(self):
        """No connect_config: the CONNECT goes upstream as a CONNECT (HTTP/1.1); the upstream
        proxy's 200 opens the tunnel, its refusal is relayed as a plain response."""
        seen = []

        def upstream_proxy(c, up):
            head, rest = read_head(c)
            line, hdrs = parse_head(head)
            seen.append((line, hdrs))
            if "deny" in line:
                c.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                          b"content-length: 4\r\n\r\nauth")
                return
            c.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n" + rest)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d.upper())
            c.shutdown(socket.SHUT_WR)
        up = self.upstream(upstream_proxy)
        p = connect_cfg(self, up.address, terminate=False)
        bs, head = connect_h1(p.listener_port(), b"target.example:443")
        self.addCleanup(bs.sock.close)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        bs.sock.sendall(b"hello tunnel")
        self.assertEqual(bs.recv_exact(12), b"HELLO TUNNEL")
        bs.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(bs.recv_to_eof(), b"")
        self.assertEqual(seen[0][0], "CONNECT target.example:443 HTTP/1.1")
        self.assertEqual(seen[0][1]["host"], ["target.example:443"])
        bs, head = connect_h1(p.listener_port(), b"deny.example:443")
        self.addCleanup(bs.sock.close)
        line, hdrs = parse_head(head)
        self.assertEqual(line.split()[1], "407")
        self.assertEqual(bs.recv_exact(4), b"auth")
        self.assertEqual(bs.recv_to_eof(), b"")
        p.wait_stat("http.connect.downstream_cx_upgrades_active", lambda v: v == 0)

    def test_connect_refused_or_unrouted(self):
        up = self.upstream("echo")
        # CONNECT not enabled anywhere: 403; on a route that disables it: 403.
        p = connect_cfg(self, up.address, hcm_upgrades=(), route_up=[])
        bs, head = connect_h1(p.listener_port())
        self.assertIn(b" 403 ", head.split(b"\r\n")[0])
        self.assertEqual(bs.recv_to_eof(), b"")
        bs.sock.close()
        self.assertEqual(p.stat("http.connect.downstream_rq_ws_on_non_ws_route"), 1)
        p2 = connect_cfg(self, up.address, route_up=[{"upgrade_type": "connect",
                                                       "enabled": False}])
        bs, head = connect_h1(p2.listener_port())
        self.assertIn(b" 403 ", head.split(b"\r\n")[0])
        bs.sock.close()
        # Only connect_matcher routes match a CONNECT; a path route does not (404), and a
        # connect_matcher route does not match a GET.
        p3 = self.start_proxy(lambda: H.bootstrap(
            listeners=[H.listener("main", H.sock_addr(H.free_port()), [hcm(
                "c", "up", ("CONNECT",), [{"match": {"prefix": "/"},
                                           "route": {"cluster": "up"}}])])],
            clusters=[H.cluster("up", [up.address])]))
        bs, head = connect_h1(p3.listener_port())
        self.assertIn(b" 404 ", head.split(b"\r\n")[0])
        bs.sock.close()
        s = socket.create_connection(("127.0.0.1", p.listener_port()), timeout=H.IO_TIMEOUT)
        s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIn(b" 404 ", H.recv_line(s))
        s.close()
        self.assertEqual(up.accepted, 0)


def rst_after_hello(c, up):
    """Upstream mode: read the first bytes, answer "hello", then abort the connection (RST)."""
    try:
        c.settimeout(10)
        if c.recv(65536):
            c.sendall(b"hello")
            time.sleep(0.2)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class Http2Test(UpgradeTestCase):
    def test_h2_connect_terminated(self):
        """HTTP/2 CONNECT (no :scheme, no :path) routed by connect_matcher, terminated here:
        200 once the TCP leg is up, DATA both ways, END_STREAM as the half-close."""
        up = self.upstream("echo")
        p = connect_cfg(self, up.address, codec="HTTP2")
        c = H2Client(p.listener_port())
        self.addCleanup(c.close)
        c.request(1, [(":method", "CONNECT"), (":authority", "origin.example:4242")])
        ev = c.events(1, got_headers)
        self.assertEqual(dict(ev[-1][1])[":status"], "200", ev)
        payload = os.urandom(200000)
        c.data(1, payload)
        got = b""
        while len(got) < len(payload):
            ev = c.events(1, lambda e: e)
            self.assertEqual(ev[0][0], "data", ev)
            got += ev[0][1]
        self.assertEqual(got, payload)
        c.data(1, b"", end=True)  # our half-close: the echo server closes, so does the stream
        ev = c.events(1, ends)
        self.assertEqual(ev[-1], ("end",))
        p.wait_stat("http.connect.downstream_cx_upgrades_active", lambda v: v == 0)
        s = p.stats()
        self.assertEqual(s["http.connect.downstream_cx_upgrades_total"], 1)
        self.assertEqual(s["http.connect.downstream_rq_http2_total"], 1)
        self.assertEqual(s["http.connect.downstream_rq_tx_reset"], 0)
        self.assertEqual(up.bytes_in, len(payload))

    def test_h2_connect_upstream_reset_is_connect_error(self):
        """RFC 9113 8.5 as Envoy (doEndStream): the TCP leg of a terminated CONNECT breaks (the
        origin sends RST) after the 200: the HTTP/2 stream is reset with CONNECT_ERROR (0x0a);
        a tunnel that merely idles out is reset with another code."""
        up = self.upstream(rst_after_hello)
        p = connect_cfg(self, up.address, codec="HTTP2", stream_idle_timeout="0.5s")
        c = H2Client(p.listener_port())
        self.addCleanup(c.close)
        c.request(1, [(":method", "CONNECT"), (":authority", "origin.example:4242")])
        ev = c.events(1, got_headers)
        self.assertEqual(dict(ev[-1][1])[":status"], "200", ev)
        c.data(1, b"ping")
        ev = c.events(1, ends)
        self.assertEqual(b"".join(e[1] for e in ev if e[0] == "data"), b"hello")
        self.assertEqual(ev[-1], ("rst", 0x0a), ev)
        hold = self.upstream("hold", name="hold")
        p2 = connect_cfg(self, hold.address, codec="HTTP2", stream_idle_timeout="0.5s")
        c2 = H2Client(p2.listener_port())
        self.addCleanup(c2.close)
        c2.request(1, [(":method", "CONNECT"), (":authority", "origin.example:4242")])
        ev = c2.events(1, ends)
        # A local reset, not a lost upstream: NO_ERROR, as Envoy's codec (reasonToReset).
        self.assertEqual(ev[-1], ("rst", 0), ev)
        self.assertEqual(p.stat("http.connect.downstream_rq_tx_reset"), 1)

    def test_h2_extended_connect_websocket(self):
        """RFC 8441: with http2_protocol_options.allow_connect the server announces
        SETTINGS_ENABLE_CONNECT_PROTOCOL; a CONNECT with :protocol websocket goes upstream as an
        HTTP/1.1 Upgrade, the 101 comes back as 200, frames flow in DATA."""
        ws = WsServer(self)
        p = self.one_sidecar(ws, codec_type="HTTP2",
                             http2_protocol_options={"allow_connect": True})
        c = H2Client(p.listener_port())
        self.addCleanup(c.close)
        self.assertEqual(c.settings.get(8), 1)
        key = base64.b64encode(os.urandom(16)).decode()
        c.request(1, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                      (":path", "/chat"), (":authority", "ws.example"),
                      ("sec-websocket-version", "13"), ("sec-websocket-key", key)])
        ev = c.events(1, got_headers)
        hdrs = dict(ev[-1][1])
        self.assertEqual(hdrs[":status"], "200", ev)
        self.assertNotIn("upgrade", hdrs)
        self.assertNotIn("connection", hdrs)
        for msg in (b"hi", os.urandom(100000)):
            c.data(1, ws_frame(msg))
            want = ws_frame(msg, mask=False)
            got = b""
            while len(got) < len(want):
                ev = c.events(1, lambda e: e)
                self.assertEqual(ev[0][0], "data", ev)
                got += ev[0][1]
            self.assertEqual(got, want)
        c.data(1, ws_frame(struct.pack("!H", 1000), opcode=8))
        ev = c.events(1, ends)
        self.assertEqual(b"".join(e[1] for e in ev if e[0] == "data"),
                         ws_frame(struct.pack("!H", 1000), opcode=8, mask=False))
        self.assertEqual(ev[-1], ("end",))
        c.data(1, b"", end=True)
        line, h0 = ws.requests[0]
        self.assertEqual(line, "GET /chat HTTP/1.1")
        self.assertEqual((h0["upgrade"], h0["connection"], h0["host"]),
                         (["websocket"], ["upgrade"], ["ws.example"]))
        p.wait_stat("http.ws.downstream_cx_upgrades_active", lambda v: v == 0)
        self.assertEqual(p.stat("http.ws.downstream_cx_upgrades_total"), 1)
        self.assertEqual(ws.errors, [])

    def test_h2_extended_connect_needs_allow_connect(self):
        ws = WsServer(self)
        p = self.one_sidecar(ws, codec_type="HTTP2")
        c = H2Client(p.listener_port())
        self.addCleanup(c.close)
        self.assertNotIn(8, c.settings)
        c.request(1, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                      (":path", "/chat"), (":authority", "ws.example")])
        ev = c.events(1, ends)
        self.assertEqual(ev[-1][0], "rst", ev)  # nghttp2: PROTOCOL_ERROR
        self.assertEqual(ws.requests, [])


H2_UPSTREAM = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}


def fault_418():
    return {"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "abort": {"http_status": 418, "percentage": {"numerator": 100}}}}


class SlowSettingsPeer:
    """Upstream mode: a hand-written HTTP/2 server that sends its SETTINGS only <delay> s after
    the client's preface (with SETTINGS_ENABLE_CONNECT_PROTOCOL when <connect>). Records the
    frame types that came before its SETTINGS (read without blocking right before sending
    them) and the header blocks after; answers each request with a 200 and "ready" in DATA."""

    def __init__(self, test, connect, delay=0.7):
        self.connect, self.delay = connect, delay
        self.before, self.requests, self.errors = [], [], []
        self.up = test.upstream(self.serve, name="h2peer")

    @property
    def address(self):
        return self.up.address

    @staticmethod
    def frames(buf):
        out = []
        while len(buf) >= 9:
            n = struct.unpack("!I", b"\0" + bytes(buf[:3]))[0]
            if len(buf) < 9 + n:
                break
            out.append((buf[3], buf[4], struct.unpack("!I", bytes(buf[5:9]))[0] & 0x7FFFFFFF,
                        bytes(buf[9:9 + n])))
            del buf[:9 + n]
        return out

    def serve(self, c, up):
        hp = Hpack()
        try:
            time.sleep(self.delay)
            buf = bytearray()
            c.setblocking(False)
            try:
                while True:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
            except BlockingIOError:
                pass
            c.setblocking(True)
            c.settimeout(10)
            if bytes(buf[:24]) != b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n":
                self.errors.append("no preface")
                return
            del buf[:24]
            self.before += [f[0] for f in self.frames(buf)]
            settings = struct.pack("!HI", 8, 1) if self.connect else b""
            c.sendall(H2Client.frame(H2Client.SETTINGS, 0, 0, settings) +
                      H2Client.frame(H2Client.SETTINGS, 1, 0, b""))
            while True:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
                for t, f, sid, payload in self.frames(buf):
                    if t == H2Client.HEADERS:
                        self.requests.append(hp.decode(payload))
                        c.sendall(H2Client.frame(H2Client.HEADERS, 4, sid,
                                                 Hpack.encode([(":status", "200")])) +
                                  H2Client.frame(H2Client.DATA, 0, sid, b"ready"))
        except (OSError, ValueError) as e:
            self.errors.append(repr(e))
        finally:
            hp.close()


class Http2UpstreamTest(UpgradeTestCase):
    """Upgrades to a cluster that speaks HTTP/2 only (explicit_http_config
    http2_protocol_options, as Istio sets for h2 services): client --HTTP/1.1--> A --HTTP/2--> B
    (codec HTTP2) --HTTP/1.1 or TCP--> origin. A sends a WebSocket upgrade as an RFC 8441
    extended CONNECT on a stream of its pooled HTTP/2 connection and turns B's 200 back into a
    101; B (allow_connect) turns the extended CONNECT back into an HTTP/1.1 upgrade."""

    def pair(self, origin, b_upgrades=("websocket",), b_routes=None, a_upgrades=("websocket",),
             a_routes=None, allow_connect=True, **a_extra):
        pb = self.start_proxy(lambda: H.bootstrap(
            listeners=[H.listener("main", H.sock_addr(H.free_port()), [hcm(
                "b", "origin", b_upgrades, b_routes, codec_type="HTTP2",
                http2_protocol_options={"allow_connect": allow_connect})])],
            clusters=[H.cluster("origin", [origin.address])]))

        def cfg_a():
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()),
                                      [hcm("a", "b", a_upgrades, a_routes, **a_extra)])],
                clusters=[H.cluster("b", [H.sock_addr(pb.listener_port())],
                                    typed_extension_protocol_options=H2_UPSTREAM)])
        return self.start_proxy(cfg_a), pb

    def test_websocket_to_h2_upstream(self):
        ws = WsServer(self)
        pa, pb = self.pair(ws)
        for big in (1024 * 1024, 64 * 1024):
            bs, line, hdrs, key = ws_connect(pa.listener_port())
            self.assertEqual(line.split()[1], "101", line)
            self.assertEqual(hdrs["sec-websocket-accept"], [ws_accept(key)])
            self.assertEqual(hdrs["upgrade"], ["websocket"])
            self.assertEqual(hdrs["connection"], ["upgrade"])
            self.assertNotIn("content-length", hdrs)
            self.ws_session(bs, big=big)
            bs.sock.close()
        self.assertEqual(ws.errors, [])
        line0, h0 = ws.requests[0]
        self.assertEqual(line0, "GET /ws HTTP/1.1")
        self.assertEqual((h0["upgrade"], h0["connection"], h0["host"]),
                         (["websocket"], ["upgrade"], ["ws.example"]))
        pa.wait_stat("http.a.downstream_cx_upgrades_active", lambda v: v == 0)
        pb.wait_stat("http.b.downstream_cx_upgrades_active", lambda v: v == 0)
        sa, sb = pa.stats(), pb.stats()
        self.assertEqual(sa["http.a.downstream_cx_upgrades_total"], 2)
        self.assertEqual(sa["http.a.downstream_rq_1xx"], 2)
        # Both tunnels were streams of one pooled HTTP/2 connection (Envoy), not connections.
        self.assertEqual(sa["cluster.b.upstream_cx_http2_total"], 1)
        self.assertEqual(sa["cluster.b.upstream_cx_total"], 1)
        self.assertEqual(sa["cluster.b.upstream_rq_rx_reset"], 0)
        self.assertEqual(sb["http.b.downstream_rq_http2_total"], 2)
        self.assertEqual(sb["http.b.downstream_cx_upgrades_total"], 2)
        self.assertEqual(sb["http.b.downstream_rq_1xx"], 2)  # counted before the codec: 200s

    def test_h2_extended_connect_to_h2_upstream(self):
        """HTTP/2 both sides: the client's extended CONNECT reaches A as an upgrade and leaves A
        as an extended CONNECT again; B's 200 is a 101 inside A and a 200 to the client."""
        ws = WsServer(self)
        pa, pb = self.pair(ws, codec_type="HTTP2", http2_protocol_options={"allow_connect": True})
        c = H2Client(pa.listener_port())
        self.addCleanup(c.close)
        key = base64.b64encode(os.urandom(16)).decode()
        c.request(1, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                      (":path", "/chat"), (":authority", "ws.example"),
                      ("sec-websocket-version", "13"), ("sec-websocket-key", key)])
        ev = c.events(1, got_headers)
        hdrs = dict(ev[-1][1])
        self.assertEqual(hdrs[":status"], "200", ev)
        self.assertNotIn("upgrade", hdrs)
        c.data(1, ws_frame(b"both ways h2"))
        want = ws_frame(b"both ways h2", mask=False)
        got = b""
        while len(got) < len(want):
            ev = c.events(1, lambda e: e)
            self.assertEqual(ev[0][0], "data", ev)
            got += ev[0][1]
        self.assertEqual(got, want)
        c.data(1, ws_frame(struct.pack("!H", 1000), opcode=8))
        ev = c.events(1, ends)
        self.assertEqual(ev[-1], ("end",))
        c.data(1, b"", end=True)
        line, h0 = ws.requests[0]
        self.assertEqual(line, "GET /chat HTTP/1.1")
        self.assertEqual(h0["sec-websocket-key"], [key])
        pa.wait_stat("http.a.downstream_cx_upgrades_active", lambda v: v == 0)
        pb.wait_stat("http.b.downstream_cx_upgrades_active", lambda v: v == 0)
        self.assertEqual(pa.stat("cluster.b.upstream_cx_http2_total"), 1)
        self.assertEqual(pb.stat("http.b.downstream_cx_upgrades_total"), 1)
        self.assertEqual(ws.errors, [])

    def test_websocket_to_h2_upstream_refused(self):
        """The upstream did not announce SETTINGS_ENABLE_CONNECT_PROTOCOL: the first extended
        CONNECT (maybe sent before B's SETTINGS arrived) is reset by B, the second is not sent
        at all; either way the client gets a 503 at once (no hang), counted."""
        ws = WsServer(self)
        pa, pb = self.pair(ws, allow_connect=False)
        for _ in range(2):
            t0 = time.monotonic()
            bs, line, hdrs, _ = ws_connect(pa.listener_port())
            self.addCleanup(bs.sock.close)
            self.assertEqual(line.split()[1], "503", line)
            self.assertLess(time.monotonic() - t0, 5)
            body = bs.recv_exact(int(hdrs["content-length"][0]))
            self.assertIn(b"reset reason: protocol error", body)
            self.assertEqual(bs.recv_to_eof(), b"")  # the upgrade's connection closes after
        self.assertEqual(ws.requests, [])
        pa.wait_stat("http.a.downstream_cx_upgrades_active", lambda v: v == 0)
        sa = pa.stats()
        self.assertEqual(sa["cluster.b.upstream_rq_rx_reset"], 2)
        self.assertEqual(sa["cluster.b.upstream_cx_total"], 1)
        self.assertEqual(sa["http.a.downstream_rq_5xx"], 2)
        self.assertLessEqual(pb.stat("http.b.downstream_rq_total") or 0, 1)

    def h2_peer_proxy(self, peer):
        return self.start_proxy(lambda: H.bootstrap(
            listeners=[H.listener("main", H.sock_addr(H.free_port()), [hcm("a", "b")])],
            clusters=[H.cluster("b", [peer.address],
                                typed_extension_protocol_options=H2_UPSTREAM)]))

    def test_extended_connect_waits_for_settings(self):
        """RFC 8441 3: on a new HTTP/2 connection the extended CONNECT waits for the peer's
        SETTINGS (a peer that sends them 0.7 s late sees no HEADERS before them), then goes out
        with :protocol since they announced ENABLE_CONNECT_PROTOCOL; the 200 is the client's
        101 and the tunnel carries the peer's bytes."""
        peer = SlowSettingsPeer(self, connect=True)
        pa = self.h2_peer_proxy(peer)
        t0 = time.monotonic()
        bs, line, hdrs, _ = ws_connect(pa.listener_port())
        self.addCleanup(bs.sock.close)
        self.assertEqual(line.split()[1], "101", line)
        self.assertGreaterEqual(time.monotonic() - t0, peer.delay - 0.1)
        self.assertEqual(bs.recv_exact(5), b"ready")
        self.assertNotIn(H2Client.HEADERS, peer.before, peer.before)
        self.assertEqual(peer.errors, [])
        req = dict(peer.requests[0])
        self.assertEqual((req[":method"], req[":protocol"], req[":path"]),
                         ("CONNECT", "websocket", "/ws"))

    def test_extended_connect_not_sent_without_enable_connect_protocol(self):
        """The late SETTINGS lack ENABLE_CONNECT_PROTOCOL: the held extended CONNECT is never
        sent; the client gets the 503 of a refused stream at once (no hang)."""
        peer = SlowSettingsPeer(self, connect=False)
        pa = self.h2_peer_proxy(peer)
        bs, line, hdrs, _ = ws_connect(pa.listener_port())
        self.addCleanup(bs.sock.close)
        self.assertEqual(line.split()[1], "503", line)
        body = bs.recv_exact(int(hdrs["content-length"][0]))
        self.assertIn(b"reset reason: protocol error", body)
        self.assertEqual(bs.recv_to_eof(), b"")
        time.sleep(0.3)
        self.assertNotIn(H2Client.HEADERS, peer.before, peer.before)
        self.assertEqual(peer.requests, [])
        self.assertEqual(peer.errors, [])
        self.assertEqual(pa.stat("cluster.b.upstream_rq_rx_reset"), 1)

    def test_connect_error_from_h2_upstream_closes_h1_client(self):
        """B's TCP leg breaks: B resets the HTTP/2 CONNECT with CONNECT_ERROR; A (Envoy: a
        remote reset, UR) closes its HTTP/1.1 client's connection."""
        up = self.upstream(rst_after_hello)
        a_route = [{"match": {"connect_matcher": {}}, "route": {"cluster": "b"}}]
        b_route = [{"match": {"connect_matcher": {}}, "route": {
            "cluster": "origin",
            "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}]
        pa, pb = self.pair(up, b_upgrades=("CONNECT",), b_routes=b_route,
                           a_upgrades=("CONNECT",), a_routes=a_route)
        bs, head = connect_h1(pa.listener_port())
        self.addCleanup(bs.sock.close)
        self.assertEqual(parse_head(head)[0].split()[1], "200", head)
        bs.sock.sendall(b"ping")
        self.assertEqual(bs.recv_exact(5), b"hello")
        try:
            self.assertEqual(bs.recv_to_eof(), b"")
        except ConnectionResetError:
            pass
        pa.wait_stat("http.a.downstream_cx_upgrades_active", lambda v: v == 0)
        self.assertEqual(pb.stat("http.b.downstream_rq_tx_reset"), 1)
        self.assertEqual(pa.stat("cluster.b.upstream_rq_rx_reset"), 1)

    def test_connect_to_h2_upstream(self):
        """A forwards a CONNECT (no connect_config) to the HTTP/2 cluster as an HTTP/2 CONNECT
        (no :scheme, no :path); B terminates it (connect_config) to a raw TCP echo."""
        up = self.upstream("echo")
        a_route = [{"match": {"connect_matcher": {}}, "route": {"cluster": "b"}}]
        b_route = [{"match": {"connect_matcher": {}}, "route": {
            "cluster": "origin",
            "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}]
        pa, pb = self.pair(up, b_upgrades=("CONNECT",), b_routes=b_route,
                           a_upgrades=("CONNECT",), a_routes=a_route)
        bs, head = connect_h1(pa.listener_port())
        self.addCleanup(bs.sock.close)
        self.assertEqual(parse_head(head)[0].split()[1], "200", head)
        payload = os.urandom(1024 * 1024)
        t = threading.Thread(target=bs.sock.sendall, args=(payload,), daemon=True)
        t.start()
        self.assertEqual(bs.recv_exact(len(payload)), payload)
        t.join(10)
        bs.sock.shutdown(socket.SHUT_WR)  # END_STREAM to B, FIN to the echo, back as EOF
        self.assertEqual(bs.recv_to_eof(), b"")
        pa.wait_stat("http.a.downstream_cx_upgrades_active", lambda v: v == 0)
        pb.wait_stat("http.b.downstream_cx_upgrades_active", lambda v: v == 0)
        sa, sb = pa.stats(), pb.stats()
        self.assertEqual(sa["cluster.b.upstream_cx_http2_total"], 1)
        self.assertEqual(sb["http.b.downstream_rq_http2_total"], 1)
        self.assertEqual(sb["http.b.downstream_cx_upgrades_total"], 1)
        self.assertEqual(up.bytes_in, len(payload))


class UpgradeFiltersTest(UpgradeTestCase):
    def test_upgrade_filter_chain(self):
        """upgrade_configs[].filters: an upgrade of that type runs through its own chain instead
        of http_filters, both ways round; other requests keep http_filters."""
        ws = WsServer(self)
        up = P.HttpUpstream()
        self.addCleanup(up.stop)
        routes = [{"match": {"prefix": "/ws"}, "route": {"cluster": "ws"}},
                  {"match": {"prefix": "/"}, "route": {"cluster": "http"}}]

        def cfg():
            only_upgrade = hcm("u", None, routes=routes)
            only_upgrade["typed_config"]["upgrade_configs"] = [
                {"upgrade_type": "websocket", "filters": [fault_418(), ROUTER]}]
            not_upgrade = hcm("p", None, routes=routes)
            not_upgrade["typed_config"]["http_filters"] = [fault_418(), ROUTER]
            not_upgrade["typed_config"]["upgrade_configs"] = [
                {"upgrade_type": "websocket", "filters": [ROUTER]}]
            return H.bootstrap(
                listeners=[H.listener("main", H.sock_addr(H.free_port()), [only_upgrade]),
                           H.listener("second", H.sock_addr(H.free_port()), [not_upgrade])],
                clusters=[H.cluster("ws", [ws.address]), H.cluster("http", [up.address])])
        p = self.start_proxy(cfg)

        def get(port):
            s = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
            s.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
            head, _ = read_head(s)
            s.close()
            return head.split(b"\r\n")[0].split()[1]
        bs, line, _, _ = ws_connect(p.listener_port("main"))
        bs.sock.close()
        self.assertEqual(line.split()[1], "418", line)
        self.assertEqual(get(p.listener_port("main")), b"200")
        bs, line, _, _ = ws_connect(p.listener_port("second"))
        self.assertEqual(line.split()[1], "101", line)
        bs.sock.sendall(ws_frame(b"through"))
        self.assertEqual(ws_read_frame(bs)[3], b"through")
        bs.sock.close()
        self.assertEqual(get(p.listener_port("second")), b"418")
        self.assertEqual(len(ws.requests), 1)
        self.assertEqual(up.requests, 1)
        self.assertEqual(p.stat("http.u.downstream_cx_upgrades_total"), 1)


if __name__ == "__main__":
    H.main()

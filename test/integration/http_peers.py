"""HTTP peers for the HTTP integration tests (stdlib only).

HttpUpstream: a threaded HTTP/1.1 server on 127.0.0.1:0 whose behaviour is chosen by the
request path, so one server covers every test:

    /status/<code>[/<body>]     answer <code>
    /sleep/<ms>                 wait, then 200
    /flaky/<key>/<n>[/<code>]   the first <n> requests with <key> get <code> (503), then 200
    /slowonce/<key>/<ms>        the first request with <key> waits <ms>; every one gets 200
    /chunked/<n>                a chunked response of <n> chunks
    /close                      200 with Connection: close
    /big/<bytes>                a body of that many bytes
    anything else               200 with a JSON description of the request

The JSON body describes what arrived: {"server", "method", "path", "headers" (lower-case
names, lists), "body_len", "body_sha" (first 16 hex of sha256), "conn" (the server-side
connection number)}. Counters: requests, connections.
"""
import hashlib
import http.server
import json
import socket
import threading
import time

# The connection manager's and the router's type URLs, and the router as an http_filters entry.
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        up = self.server.up
        with up.lock:
            up.connections += 1
            self.conn_no = up.connections

    def _body(self):
        te = self.headers.get("transfer-encoding", "")
        if "chunked" in te.lower():
            data = b""
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("content-length", "0") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code, body, headers=(), close=False):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        if close:
            self.send_header("connection", "close")
            self.close_connection = True
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _describe(self, body):
        hdrs = {}
        for k, v in self.headers.items():
            hdrs.setdefault(k.lower(), []).append(v)
        return json.dumps({"server": self.server.up.name, "method": self.command,
                           "path": self.path, "headers": hdrs, "body_len": len(body),
                           "body_sha": hashlib.sha256(body).hexdigest()[:16],
                           "conn": self.conn_no}).encode()

    def _handle(self):
        up = self.server.up
        body = self._body()
        with up.lock:
            up.requests += 1
            up.paths.append(self.path)
        parts = self.path.split("?")[0].strip("/").split("/")
        kind = parts[0]
        if kind == "status":
            code = int(parts[1])
            text = parts[2].encode() if len(parts) > 2 else b""
            self._send(code, text)
        elif kind == "sleep":
            time.sleep(int(parts[1]) / 1000.0)
            self._send(200, self._describe(body))
        elif kind == "flaky":
            key, n = parts[1], int(parts[2])
            code = int(parts[3]) if len(parts) > 3 else 503
            with up.lock:
                seen = up.flaky.get(key, 0)
                up.flaky[key] = seen + 1
            if seen < n:
                self._send(code, b"flaky")
            else:
                self._send(200, self._describe(body))
        elif kind == "slowonce":
            key, ms = parts[1], int(parts[2])
            with up.lock:
                seen = up.flaky.get(key, 0)
                up.flaky[key] = seen + 1
            if not seen:
                time.sleep(ms / 1000.0)
            self._send(200, self._describe(body))
        elif kind == "chunked":
            n = int(parts[1])
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(n):
                chunk = ("chunk-%d;" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif kind == "close":
            self._send(200, self._describe(body), close=True)
        elif kind == "big":
            self._send(200, b"x" * int(parts[1]))
        else:
            self._send(200, self._describe(body), headers=[("x-upstream", up.name)])

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        pass  # the proxy resetting a connection (timeouts, retries) is expected


class HttpUpstream:
    def __init__(self, name="up", port=0):
        self.name = name
        self.lock = threading.Lock()
        self.requests = 0
        self.connections = 0
        self.paths = []
        self.flaky = {}
        self.srv = _Server(("127.0.0.1", port), _Handler)
        self.srv.up = self
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def address(self):
        return {"socket_address": {"address": "127.0.0.1", "port_value": self.port}}

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(timeout=5)


def raw_exchange(port, data, timeout=5.0, until_close=True):
    """Send raw bytes, return everything read until the peer closes (or <timeout>)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        s.settimeout(timeout)
        while True:
            try:
                b = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not b:
                break
            out += b
            if not until_close and b"\r\n\r\n" in out:
                break
        return out
    finally:
        s.close()

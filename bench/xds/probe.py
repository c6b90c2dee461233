"""Stall probe for bench/xds: a separate process (so the control plane's Python threads and
their GIL never delay a sample) that measures, while the proxy applies a big xDS update,

- the main thread: GET /ready on the admin port every --ready-ms (a fresh connection each time:
  the admin server runs on the proxy's main thread, the one that applies xDS updates, so a long
  apply shows up as a long /ready response), and
- the data path: 64-byte ping-pong on one persistent connection through a static tcp_proxy
  listener to this process's own echo server, every --echo-ms (workers carry it; a stall here
  means the apply blocked the workers, e.g. through a snapshot swap).

Protocol with the driver (xds_bench.py): the probe starts its echo server and prints
"echo <port>" on stdout; the driver then writes "go <admin host:port> <listener port>" on stdin;
the probe samples until stdin reaches EOF, then prints one JSON line
{"ready": [[t, ms], ...], "echo": [[t, ms], ...], "errors": [...]} with t = CLOCK_MONOTONIC
seconds (the same clock as the driver's time.monotonic()). Stdlib only."""
import json
import socket
import sys
import threading
import time

MSG = b"x" * 63 + b"\n"


def echo_server():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve(c):
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                c.sendall(b)
        except OSError:
            pass
        finally:
            c.close()

    def accept():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv.getsockname()[1]


def ready_loop(admin, period, stop, out, errors):
    host, port = admin.rsplit(":", 1)
    req = b"GET /ready HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            s = socket.create_connection((host, int(port)), timeout=30)
            s.sendall(req)
            while s.recv(65536):
                pass
            s.close()
            out.append([t0, (time.monotonic() - t0) * 1000.0])
        except OSError as e:
            errors.append("ready %.3f: %s" % (t0, e))
        left = period - (time.monotonic() - t0)
        if left > 0:
            stop.wait(left)


def echo_loop(port, period, stop, out, errors):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as e:
        errors.append("echo connect: %s" % e)
        return
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            s.sendall(MSG)
            got = b""
            while len(got) < len(MSG):
                b = s.recv(len(MSG) - len(got))
                if not b:
                    raise OSError("EOF")
                got += b
            out.append([t0, (time.monotonic() - t0) * 1000.0])
        except OSError as e:
            errors.append("echo %.3f: %s" % (t0, e))
            return
        left = period - (time.monotonic() - t0)
        if left > 0:
            stop.wait(left)
    s.close()


def main():
    ready_ms, echo_ms = 10.0, 5.0
    for a in sys.argv[1:]:
        if a.startswith("--ready-ms="):
            ready_ms = float(a.split("=", 1)[1])
        elif a.startswith("--echo-ms="):
            echo_ms = float(a.split("=", 1)[1])
    port = echo_server()
    sys.stdout.write("echo %d\n" % port)
    sys.stdout.flush()
    line = sys.stdin.readline().split()
    if len(line) != 3 or line[0] != "go":
        sys.stdout.write(json.dumps({"ready": [], "echo": [], "errors": ["no go line"]}) + "\n")
        return
    stop = threading.Event()
    ready, echo, errors = [], [], []
    th = [threading.Thread(target=ready_loop, args=(line[1], ready_ms / 1000.0, stop, ready,
                                                    errors), daemon=True),
          threading.Thread(target=echo_loop, args=(int(line[2]), echo_ms / 1000.0, stop, echo,
                                                   errors), daemon=True)]
    for t in th:
        t.start()
    sys.stdin.read()  # until the driver closes our stdin
    stop.set()
    for t in th:
        t.join(timeout=35)
    sys.stdout.write(json.dumps({"ready": ready, "echo": echo, "errors": errors}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

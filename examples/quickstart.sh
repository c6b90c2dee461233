#!/bin/sh
# Quick start: build msm-proxy and run the static TCP proxy demo (examples/tcp-proxy.yaml):
# two echo upstreams behind one listener, round robin, then the Envoy-style stats.
# (The RTSP media demo replaces this once the RTSP proxy lands.)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh scripts/deps.sh build
python=/usr/bin/python3
[ -x "$python" ] || sh scripts/deps.sh test
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target msm-proxy >/dev/null
echo "built build/msm-proxy"

pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

$python examples/echo_server.py 10001 upstream-A & pids="$pids $!"
$python examples/echo_server.py 10002 upstream-B & pids="$pids $!"
build/msm-proxy -c examples/tcp-proxy.yaml --concurrency 2 -l info 2>build/quickstart-proxy.log &
pids="$pids $!"

i=0
until curl -sf http://127.0.0.1:15000/ready >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 100 ] || { cat build/quickstart-proxy.log; echo "proxy did not start"; exit 1; }
    sleep 0.1
done
echo "msm-proxy is LIVE on 127.0.0.1:10000 (admin on 127.0.0.1:15000)"
echo
for n in 1 2 3 4; do
    printf 'hello %s\n' "$n" | $python -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", 10000))
s.sendall(sys.stdin.buffer.read()); s.shutdown(socket.SHUT_WR)
print("  reply:", b"".join(iter(lambda: s.recv(4096), b"")).decode().strip())'
done
echo
echo "Envoy-compatible stats (curl http://127.0.0.1:15000/stats):"
curl -s http://127.0.0.1:15000/stats | grep -E '^(tcp\.echo\.downstream_cx_total|cluster\.echo\.upstream_cx_total|listener\.127\.0\.0\.1_10000\.downstream_cx_total|server\.state)'
curl -s -X POST http://127.0.0.1:15000/quitquitquit >/dev/null
echo
echo "done: the proxy balanced 4 connections over 2 upstreams (see replies above)."

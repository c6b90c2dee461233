#!/bin/sh
# Quick start: the RTSP fan-out media demo (examples/rtsp-fanout.yaml).
#   - a synthetic camera: GStreamer's RTSP server with a live H.264 test pattern (rtsp_camera.py)
#   - msm-proxy on a static bootstrap, relaying rtsp://127.0.0.1:8554/cam
#   - several players (ffmpeg decoding to a null sink), UDP and interleaved TCP mixed
#   - a live line every second: subscribers, upstream sessions, packets in/out, loss, jitter
# It stops by itself after ~20 s and cleans up. (The TCP demo: examples/tcp-proxy.yaml.)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh scripts/deps.sh test
python=/usr/bin/python3
b=${MSM_BUILD_DIR:-build}
cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$b" -j"$(nproc)" --target msm-proxy >/dev/null
echo "built $b/msm-proxy"

players=${MSM_DEMO_PLAYERS:-6}
seconds=${MSM_DEMO_SECONDS:-20}
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

$python examples/rtsp_camera.py --port 8555 --path /cam --status "$b"/quickstart-camera.json \
    >"$b"/quickstart-camera.log 2>&1 &
pids="$pids $!"
"$b"/msm-proxy -c examples/rtsp-fanout.yaml --concurrency 1 -l info \
    2>"$b"/quickstart-proxy.log &
pids="$pids $!"
i=0
until curl -sf http://127.0.0.1:15000/ready >/dev/null 2>&1 && \
      grep -q READY "$b"/quickstart-camera.log 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 150 ] || { cat "$b"/quickstart-proxy.log "$b"/quickstart-camera.log; echo "demo did not start"; exit 1; }
    sleep 0.1
done
echo "camera on rtsp://127.0.0.1:8555/cam, msm-proxy relays it on rtsp://127.0.0.1:8554/cam"
echo "starting $players players (ffmpeg -> null sink), half over UDP, half interleaved TCP"
n=0
while [ $n -lt "$players" ]; do
    t=udp; [ $((n % 2)) -eq 1 ] && t=tcp
    ffmpeg -nostdin -loglevel error -rtsp_transport $t -i rtsp://127.0.0.1:8554/cam \
        -t "$seconds" -f null - >/dev/null 2>&1 &
    pids="$pids $!"
    n=$((n + 1))
    sleep 0.3
done

stat() { echo "$stats" | sed -n "s/^rtsp\.cams\.$1: //p"; }
echo
printf '%4s %11s %9s %8s %12s %12s %6s %10s\n' sec subscribers upstream camera rtp_in rtp_out lost jitter_us
s=0
while [ $s -lt "$seconds" ]; do
    sleep 1
    s=$((s + 1))
    stats=$(curl -s http://127.0.0.1:15000/stats)
    cam=$(sed -n 's/.*"sessions": \([0-9]*\).*/\1/p' "$b"/quickstart-camera.json 2>/dev/null)
    printf '%4s %11s %9s %8s %12s %12s %6s %10s\n' "$s" "$(stat subscribers_active)" \
        "$(stat upstream_sessions_active)" "${cam:-?}" "$(stat upstream_rtp_rx_packets)" \
        "$(stat downstream_rtp_tx_packets)" "$(stat upstream_rtp_lost)" \
        "$(stat upstream_rtp_jitter_us)"
done
echo
echo "the camera served ONE session ('camera' column) while msm-proxy fed $players players;"
echo "rtp_out ~ $players x rtp_in is the fan-out. All stats: curl http://127.0.0.1:15000/stats"
curl -s -X POST http://127.0.0.1:15000/quitquitquit >/dev/null || true

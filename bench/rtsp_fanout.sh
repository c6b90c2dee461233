#!/usr/bin/env bash
# RTSP fan-out benchmark (bench/rtsp_fanout.c): builds msm-proxy (Release) and the tool, then
# measures the largest number of UDP subscribers of one 4 Mbit/s H.264-like stream with under
# 0.1 % loss through msm-proxy (one worker) and through an ideal sendmmsg loop, in the same run,
# plus latency and CPU per packet at equal load. A benchmark, not a test.
# Usage: bench/rtsp_fanout.sh [tool options, e.g. --seconds 4 --latency-n 100,400]
# Environment: BUILD_DIR (default build-rtsp-bench). Output: bench/results/rtsp-latest.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-rtsp-bench}
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DMSM_WERROR=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target msm-proxy >/dev/null
cc -O2 -std=gnu11 -Wall -Wextra -o "$BUILD/rtsp_fanout" "$ROOT/bench/rtsp_fanout.c" -lpthread
stamp=$(date -u +%Y%m%d-%H%M%S)
raw=$RESULTS/raw-rtsp-$stamp.log
{
    echo "# $(date -u) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
    echo "# kernel $(uname -r); msm-proxy $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    "$BUILD/rtsp_fanout" --proxy "$BUILD/msm-proxy" "$@"
} | tee "$raw"
grep '^RESULT' "$raw" | sed 's/^RESULT /- /' > "$RESULTS/rtsp-latest.md"
echo "written: $RESULTS/rtsp-latest.md (raw: $raw)"

#!/usr/bin/env bash
# Mesh benchmark: two sidecars in network namespaces with Istio's capture, msm-proxy against
# haproxy doing the same mTLS termination and origination, in the same run (bench/mesh/README
# section in docs/benchmarks.md, "Sidecar mesh (mTLS)").
#
# Figures (medians over repetitions, targets interleaved per repetition): 1 KiB echo RTT p50/p99
# and the latency each sidecar hop adds, new connections (= mTLS handshakes) per second, mTLS
# throughput, and both per core of sidecar CPU; machine busy % and steal % of every run.
# A benchmark, not a test: it fails only when it cannot run. Needs root (ip netns, iptables).
#
# Usage: bench/mesh/run.sh [--reps N] [--duration S] [--warmup S] [--concurrency N]
#                          [--targets direct,msm,haproxy,haproxy-reuse] [--no-build] [--no-deps]
# Environment: BUILD_DIR (default build-mesh-bench, Release).
# Output: bench/results/mesh-latest.md (also printed), raw rows beside it (.jsonl).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-mesh-bench}
RESULTS=$ROOT/bench/results
REPS=3 DUR=5 WARMUP=1 CONC=1 TARGETS=direct,msm,haproxy,haproxy-reuse DO_BUILD=1 DO_DEPS=1

while [ $# -gt 0 ]; do
    case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --no-build) DO_BUILD=0; shift ;;
    --no-deps) DO_DEPS=0; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "mesh/run.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "mesh/run.sh: needs root (ip netns, iptables)" >&2; exit 2; }

if [ "$DO_DEPS" = 1 ]; then
    "$ROOT/scripts/deps.sh" bench
fi
if [ "$DO_BUILD" = 1 ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j2 --target msm-proxy >/dev/null
fi
# The test control plane compiles the Envoy protos of the build tree once (cached there).
cc -std=c11 -O2 -Wall -Wextra -pthread -o "$BUILD/tcp_bench" "$ROOT/bench/tcp_bench.c"

mkdir -p "$RESULTS"
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=$RESULTS/mesh-$STAMP.md
{
    echo "# Sidecar mesh benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "msm-proxy $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
         "($(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo 'dirty tree' || echo clean))," \
         "$(haproxy -v 2>/dev/null | head -1), $(openssl version)"
    echo
} >"$OUT"
/usr/bin/python3 "$ROOT/bench/mesh/mesh_bench.py" --binary "$BUILD/msm-proxy" \
    --tcp-bench "$BUILD/tcp_bench" --reps "$REPS" --duration "$DUR" --warmup "$WARMUP" \
    --concurrency "$CONC" --targets "$TARGETS" --out "$OUT.part" >/dev/null
cat "$OUT.part" >>"$OUT"
mv "$OUT.part.jsonl" "$RESULTS/mesh-raw-$STAMP.jsonl"
rm -f "$OUT.part"
cp "$OUT" "$RESULTS/mesh-latest.md"
cat "$OUT"

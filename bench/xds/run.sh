#!/usr/bin/env bash
# xDS apply benchmark: time, CPU, stalls and peak RSS for msm-proxy to apply N Istio-shaped
# clusters (with their endpoints) and 1k listeners pushed in one response, over Delta and SotW
# ADS, and a 1-resource Delta change on top of 10k. See bench/xds/xds_bench.py for what is
# measured, docs/benchmarks.md ("xDS apply") for the reading. A benchmark, not a test: it fails
# only when it cannot run (or the proxy NACKs / never gets every cluster active).
#
# Usage: bench/xds/run.sh [--sizes 1000,10000,50000] [--reps 3] [--api delta,sotw]
#                         [--listeners 1000] [--endpoints 3] [--change-on 10000]
#                         [--change-reps 5] [--stats-matcher istio|none] [--no-build]
#                         [--perf PREFIX]
# Environment: BUILD_DIR (default build-bench: a Release build, as bench/run.sh).
# Output: bench/results/xds-latest.md (also printed), a dated copy and the raw JSON lines.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
RESULTS=$ROOT/bench/results
DO_BUILD=1
PASS=()

while [ $# -gt 0 ]; do
    case "$1" in
    --no-build) DO_BUILD=0; shift ;;
    --sizes | --reps | --api | --listeners | --endpoints | --change-on | --change-reps | --perf | \
        --stats-matcher)
        PASS+=("$1" "$2"); shift 2 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "xds/run.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

if [ "$DO_BUILD" = 1 ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j2 --target msm-proxy >/dev/null
fi
[ -x "$BUILD/msm-proxy" ] || { echo "xds/run.sh: no $BUILD/msm-proxy (drop --no-build)" >&2; exit 2; }

mkdir -p "$RESULTS"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RAW=$RESULTS/xds-raw-$STAMP.jsonl
OUT=$RESULTS/xds-$STAMP.md
{
    echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)," \
        "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "build: $BUILD ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "+ working tree), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
} >"$OUT"
rc=0
/usr/bin/python3 "$ROOT/bench/xds/xds_bench.py" --binary "$BUILD/msm-proxy" --raw "$RAW" \
    --out "$OUT.table" ${PASS[@]+"${PASS[@]}"} || rc=$?
cat "$OUT.table" >>"$OUT"
rm -f "$OUT.table"
cp "$OUT" "$RESULTS/xds-latest.md"
cat "$OUT"
echo "raw: $RAW" >&2
exit $rc

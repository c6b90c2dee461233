#!/usr/bin/env bash
# HTTP benchmark: msm-proxy against nginx and haproxy (Debian) as HTTP reverse proxies on
# loopback, in the same run (bench/http/README.md; docs/benchmarks.md, "HTTP (issue 8)").
#
# Figures (medians over repetitions, targets interleaved per repetition): HTTP/1.1 (wrk) and
# HTTP/2 (h2load) requests/s and requests/s per proxy core, one worker each on its own CPU;
# latency percentiles at a fixed request rate (h2load --rps); and vCPU per 1000 requests/s of
# two sidecars with mTLS between them (msm-proxy pair, haproxy pair). Optionally a perf profile
# of msm-proxy during the HTTP/1.1 rate scenario. A benchmark, not a test: it fails only when
# it cannot run.
#
# Usage: bench/http/run.sh [--reps N] [--duration S] [--scenarios h1rate,h2rate,h1pair,h2pair,h1lat,h2lat,idlemem,mtls]
#                          [--targets direct,msm,nginx,haproxy] [--lat-rate R]
#                          [--mtls-rates 1000,4000] [--mtls-duration S] [--idle-conns N] [--pin split|none]
#                          [--perf] [--perf-callgraph fp|dwarf] [--no-build] [--no-deps]
# Environment: BUILD_DIR (default build-http-bench, Release).
# Output: bench/results/http-latest.md (also printed), raw rows beside it (.jsonl), and with
# --perf bench/results/http-perf-<stamp>/ (perf.data, top-self.txt, top-dso.txt, callers.txt).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-http-bench}
RESULTS=$ROOT/bench/results
DO_BUILD=1 DO_DEPS=1 PERF=0
PASS=()

while [ $# -gt 0 ]; do
    case "$1" in
    --reps | --duration | --scenarios | --targets | --lat-rate | --mtls-rates | --idle-conns | \
        --mtls-duration | --pin | --perf-callgraph | --warmup)
        PASS+=("$1" "$2"); shift 2 ;;
    --perf) PERF=1; shift ;;
    --no-build) DO_BUILD=0; shift ;;
    --no-deps) DO_DEPS=0; shift ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "http/run.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

if [ "$DO_DEPS" = 1 ]; then
    "$ROOT/scripts/deps.sh" bench
fi
for t in wrk h2load nginx haproxy taskset openssl; do
    command -v "$t" >/dev/null || { echo "http/run.sh: $t is not installed" >&2; exit 1; }
done
if [ "$DO_BUILD" = 1 ]; then
    echo "bench: building msm-proxy (Release) in $BUILD" >&2
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j2 --target msm-proxy >/dev/null
fi
[ -x "$BUILD/msm-proxy" ] || { echo "http/run.sh: $BUILD/msm-proxy is missing" >&2; exit 1; }

mkdir -p "$RESULTS"
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=$RESULTS/http-$STAMP.md
if [ "$PERF" = 1 ]; then
    command -v perf >/dev/null || { echo "http/run.sh: perf is not installed" >&2; exit 1; }
    PASS+=(--perf "$RESULTS/http-perf-$STAMP")
fi
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
TREE=clean
[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] && TREE="dirty tree"
HAP=$(haproxy -v 2>/dev/null | awk 'NR == 1 {print $1, $2, $3}')
WRK=$(wrk -v 2>&1 | awk 'NR == 1 {print $1, $2}' || true)
CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
{
    echo "# HTTP benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "msm-proxy $REV ($TREE, Release), $(nginx -v 2>&1 | sed 's/.*: //'), $HAP, $WRK," \
        "h2load $(h2load --version | awk '{print $2}'), $CPU"
    echo
} >"$OUT"
# The Python driver starts every process itself (own session, own temp dir) and stops them all
# on exit, on an exception and on SIGTERM; the trap forwards an interrupt to it.
/usr/bin/python3 "$ROOT/bench/http/http_bench.py" --binary "$BUILD/msm-proxy" \
    --out "$OUT.part" "${PASS[@]}" >/dev/null &
PY=$!
trap 'kill -TERM $PY 2>/dev/null; wait $PY 2>/dev/null; rm -f "$OUT" "$OUT.part"*; exit 130' INT TERM
wait $PY
cat "$OUT.part" >>"$OUT"
mv "$OUT.part.jsonl" "$RESULTS/http-raw-$STAMP.jsonl"
rm -f "$OUT.part"
if [ "$PERF" = 1 ]; then
    {
        echo
        echo "perf (msm-proxy, one extra HTTP/1.1 rate run; self time, top symbols):"
        echo
        awk '/^ +[0-9.]+%/ && n < 15 {printf "    %s %s %s\n", $1, $2, $3; n++}' \
            "$RESULTS/http-perf-$STAMP/top-self.txt"
    } >>"$OUT"
fi
cp "$OUT" "$RESULTS/http-latest.md"
cat "$OUT"

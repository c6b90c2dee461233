#!/usr/bin/env bash
# TCP proxy benchmark: msm-proxy against haproxy (Debian) on loopback, in the same run.
#
# Figures: throughput with 1 and 100 connections, new connections per second, and p99 RTT of
# 64-byte echoes (1 and 16 connections), each measured direct (no proxy), through haproxy and
# through msm-proxy, interleaved per repetition; the table holds the medians and the
# msm/haproxy ratios. This is a benchmark, not a test: it fails only when it cannot run.
#
# Usage: bench/run.sh [--concurrency N] [--reps N] [--duration S] [--warmup S]
#                     [--scenarios "tput1 tput100 connrate lat1 lat16"] [--pin none|split|one]
#                     [--lat-pin none|split|one]
#                     [--no-build] [--no-deps]
# Environment: BUILD_DIR (default build-bench), BENCH_PORT_BASE (default 20000).
# Output: bench/results/latest.md (also printed), raw log and a dated copy beside it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
RESULTS=$ROOT/bench/results
CONC=1
REPS=3
DUR=5
WARMUP=1
SCENARIOS="tput1 tput100 connrate lat1 lat16"
DO_BUILD=1
DO_DEPS=1
PIN=none
LAT_PIN=one # latency scenarios: see "CPU placement" below
CR_CONNS=64 # concurrent connect/echo/close slots in the connrate scenario

while [ $# -gt 0 ]; do
    case "$1" in
    --concurrency) CONC=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --pin) PIN=$2; shift 2 ;;
    --lat-pin) LAT_PIN=$2; shift 2 ;;
    --no-build) DO_BUILD=0; shift ;;
    --no-deps) DO_DEPS=0; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

# ---- ports: direct servers, msm-proxy listeners (+1000), haproxy frontends (+2000) ----------
BASE=${BENCH_PORT_BASE:-20000}
SINK=$((BASE + 2))  # throughput: tcp_bench's own sink (only listening during a run)
ECHO=$((BASE + 3))  # latency: persistent echo
ECHOC=$((BASE + 4)) # connrate: echo, server closes after 64 bytes
MSM_ADMIN=$((BASE + 1000))
MSM_OFF=1000
HAP_OFF=2000

# ---- CPU placement ----------------------------------------------------------------------------
# none:  the kernel places everything (default). On a VM, waking a thread on another vCPU costs
#        an IPI through the hypervisor (~100 µs on Firecracker), so forcing the proxy and the
#        tools apart measures the hypervisor; letting the scheduler co-locate them does not.
# split: proxy on the last CPU, load tools on the others (bare metal: no CPU stealing).
# one:   everything on CPU 0 (the proxy's cost adds directly to the tools').
# Every run records each proxy's CPU time, whatever the placement.
# The latency scenarios have their own placement (--lat-pin, default one): on a 2-vCPU VM the
# added p99 under "none" is mostly where the scheduler happened to put three processes on two
# vCPUs in that repetition (per-repetition ratios moved 0.6-4.3 for the same binaries); all on
# one CPU, an echo's round trip is the work of the client, the proxy and the echo server plus
# their context switches, so the proxy's added p99 is its own cost, the same way for both.
NCPU=$(nproc)
ALL_CPUS=0-$((NCPU - 1))
# placement MODE: sets P_CPUS (proxies), T_CPUS (tools and servers) and P_TEXT.
placement() {
    case "$1" in
    none) P_CPUS=$ALL_CPUS; T_CPUS=$ALL_CPUS; P_TEXT="none (kernel scheduler, CPUs $ALL_CPUS)" ;;
    split)
        [ "$NCPU" -ge 2 ] || { echo "run.sh: --pin split needs 2 CPUs" >&2; exit 2; }
        P_CPUS=$((NCPU - 1)); T_CPUS=0-$((NCPU - 2))
        P_TEXT="split (proxy on CPU $P_CPUS, load tools on CPUs $T_CPUS)" ;;
    one) P_CPUS=0; T_CPUS=0; P_TEXT="one (proxy and load tools all on CPU 0)" ;;
    *) echo "run.sh: --pin/--lat-pin none|split|one" >&2; exit 2 ;;
    esac
}
placement "$LAT_PIN"
LAT_PINNING=$P_TEXT
placement "$PIN"
PROXY_CPUS=$P_CPUS
TOOL_CPUS=$T_CPUS
PINNING=$P_TEXT

WORK=$(mktemp -d /tmp/msm-bench.XXXXXX)
PIDS=()
MSM_PID=""
HAP_PID=""

cleanup() {
    set +e
    if [ -n "$MSM_PID" ] && kill -0 "$MSM_PID" 2>/dev/null; then
        curl -s -m 2 -X POST "http://127.0.0.1:$MSM_ADMIN/quitquitquit" >/dev/null 2>&1
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$MSM_PID" 2>/dev/null || break
            sleep 0.2
        done
    fi
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }

# ---- build ------------------------------------------------------------------------------------
if [ "$DO_DEPS" -eq 1 ]; then
    "$ROOT/scripts/deps.sh" bench
fi
if [ "$DO_BUILD" -eq 1 ]; then
    log "building msm-proxy (Release) in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$WORK/cmake.log" 2>&1 ||
        { tail -30 "$WORK/cmake.log" >&2; exit 1; }
    cmake --build "$BUILD" -j"$NCPU" --target msm-proxy >"$WORK/build.log" 2>&1 ||
        { tail -30 "$WORK/build.log" >&2; exit 1; }
    mkdir -p "$BUILD"
    cc -std=c11 -O2 -Wall -Wextra -pthread -o "$BUILD/tcp_bench" "$ROOT/bench/tcp_bench.c"
fi
MSM=$BUILD/msm-proxy
TB=$BUILD/tcp_bench
for b in "$MSM" "$TB"; do
    [ -x "$b" ] || { echo "run.sh: $b is missing (run without --no-build)" >&2; exit 1; }
done
command -v haproxy >/dev/null || { echo "run.sh: haproxy not installed" >&2; exit 1; }

for p in $SINK $ECHO $ECHOC $MSM_ADMIN $((SINK + MSM_OFF)) $((ECHO + MSM_OFF)) \
    $((ECHOC + MSM_OFF)) $((SINK + HAP_OFF)) $((ECHO + HAP_OFF)) $((ECHOC + HAP_OFF)); do
    if ss -Htln "sport = :$p" | grep -q .; then
        echo "run.sh: port $p is in use (set BENCH_PORT_BASE)" >&2
        exit 1
    fi
done

# ---- configurations -----------------------------------------------------------------------------
# Equivalent settings: plain TCP forwarding, one listener per upstream, generous timeouts,
# no access logs, no health checks, each proxy's default buffer sizes.
cat >"$WORK/msm.yaml" <<EOF
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $MSM_ADMIN}}}
static_resources:
  listeners:
EOF
for pair in sink:$SINK echo:$ECHO echoclose:$ECHOC; do
    name=${pair%%:*}
    port=${pair#*:}
    cat >>"$WORK/msm.yaml" <<EOF
  - name: $name
    address: {socket_address: {address: 127.0.0.1, port_value: $((port + MSM_OFF))}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: $name
          cluster: $name
EOF
done
echo "  clusters:" >>"$WORK/msm.yaml"
for pair in sink:$SINK echo:$ECHO echoclose:$ECHOC; do
    name=${pair%%:*}
    port=${pair#*:}
    cat >>"$WORK/msm.yaml" <<EOF
  - name: $name
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: $name
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $port}}}}]}]
EOF
done

cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread $CONC
    maxconn 4000

defaults
    mode tcp
    maxconn 4000
    timeout connect 1s
    timeout client 300s
    timeout server 300s
EOF
for pair in sink:$SINK echo:$ECHO echoclose:$ECHOC; do
    name=${pair%%:*}
    port=${pair#*:}
    cat >>"$WORK/haproxy.cfg" <<EOF

frontend fe_$name
    bind 127.0.0.1:$((port + HAP_OFF))
    default_backend be_$name

backend be_$name
    server s1 127.0.0.1:$port
EOF
done

# ---- processes -----------------------------------------------------------------------------------
wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "run.sh: nothing listens on port $1" >&2
    return 1
}

taskset -c "$TOOL_CPUS" "$TB" echo --port "$ECHO" --duration 3600 >"$WORK/echo.out" &
PIDS+=($!)
ECHO_PID=$!
taskset -c "$TOOL_CPUS" "$TB" echo --port "$ECHOC" --close-after 64 --duration 3600 \
    >"$WORK/echoc.out" &
PIDS+=($!)
ECHOC_PID=$!
haproxy -v >"$WORK/haproxy.version.all"
head -1 "$WORK/haproxy.version.all" >"$WORK/haproxy.version"
haproxy -c -q -f "$WORK/haproxy.cfg"
taskset -c "$PROXY_CPUS" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
HAP_PID=$!
taskset -c "$PROXY_CPUS" "$MSM" -c "$WORK/msm.yaml" --concurrency "$CONC" --log-level warn \
    >"$WORK/msm.log" 2>&1 &
PIDS+=($!)
MSM_PID=$!

wait_port "$ECHO"
wait_port "$ECHOC"
wait_port $((ECHO + HAP_OFF))
for _ in $(seq 1 100); do
    curl -sf -m 1 "http://127.0.0.1:$MSM_ADMIN/ready" >/dev/null 2>&1 && break
    kill -0 "$MSM_PID" 2>/dev/null || { cat "$WORK/msm.log" >&2; exit 1; }
    sleep 0.1
done
curl -sf -m 1 "http://127.0.0.1:$MSM_ADMIN/ready" >/dev/null ||
    { echo "run.sh: msm-proxy never became ready" >&2; cat "$WORK/msm.log" >&2; exit 1; }

# ---- runs ------------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Whole machine: busy ticks (user+nice+system+irq+softirq) and steal ticks (vCPU time the host
# gave to someone else), to tell interference apart from the proxies' own behaviour.
sys_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $9}' /proc/stat; }
pct() { awk -v d="$1" -v h="$CLK_TCK" -v w="$2" 'BEGIN {printf "%.0f", d / h * 100000 / w}'; }

target_pid() {
    case "$1" in
    haproxy) echo "$HAP_PID" ;;
    msm) echo "$MSM_PID" ;;
    *) echo "" ;;
    esac
}

target_off() {
    case "$1" in
    haproxy) echo "$HAP_OFF" ;;
    msm) echo "$MSM_OFF" ;;
    *) echo 0 ;;
    esac
}

# run_one REP SCENARIO TARGET: one measured run, appended to the raw log.
run_one() {
    local rep=$1 sc=$2 tg=$3 off pid args c0 c1 e0 e1 s0 s1 t0 t1 out rc=0
    off=$(target_off "$tg")
    pid=$(target_pid "$tg")
    case "$sc" in
    tput1) args="throughput --conns 1 --port $((SINK + off)) --sink-port $SINK" ;;
    tput100) args="throughput --conns 100 --port $((SINK + off)) --sink-port $SINK" ;;
    connrate) args="connrate --conns $CR_CONNS --size 64 --port $((ECHOC + off))" ;;
    lat1) args="latency --conns 1 --size 64 --port $((ECHO + off))" ;;
    lat16) args="latency --conns 16 --size 64 --port $((ECHO + off))" ;;
    *) echo "run.sh: unknown scenario '$sc'" >&2; exit 2 ;;
    esac
    # Latency runs use their own placement; the running servers and proxies move with it.
    case "$sc" in
    lat*) placement "$LAT_PIN" ;;
    *) placement "$PIN" ;;
    esac
    for p in "$HAP_PID" "$MSM_PID"; do
        taskset -a -p -c "$P_CPUS" "$p" >/dev/null
    done
    for p in "$ECHO_PID" "$ECHOC_PID"; do
        taskset -a -p -c "$T_CPUS" "$p" >/dev/null
    done
    c0=0
    [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
    e0=$(($(cpu_ticks "$ECHO_PID") + $(cpu_ticks "$ECHOC_PID")))
    read -r -a s0 <<<"$(sys_ticks)"
    t0=$(date +%s%N)
    # shellcheck disable=SC2086
    out=$(taskset -c "$T_CPUS" "$TB" $args --duration "$DUR" --warmup "$WARMUP") || rc=$?
    t1=$(date +%s%N)
    read -r -a s1 <<<"$(sys_ticks)"
    c1=0
    [ -n "$pid" ] && c1=$(cpu_ticks "$pid")
    e1=$(($(cpu_ticks "$ECHO_PID") + $(cpu_ticks "$ECHOC_PID")))
    local wall_ms=$(((t1 - t0) / 1000000))
    local pcpu="-" ecpu busy steal
    [ -n "$pid" ] && pcpu=$(pct $((c1 - c0)) "$wall_ms")
    ecpu=$(pct $((e1 - e0)) "$wall_ms")
    busy=$(pct $((s1[0] - s0[0])) "$wall_ms")
    steal=$(pct $((s1[1] - s0[1])) "$wall_ms")
    echo "rep=$rep scenario=$sc target=$tg rc=$rc proxy_cpu_pct=$pcpu echo_cpu_pct=$ecpu" \
        "machine_busy_pct=$busy steal_pct=$steal $out" | tee -a "$RAW" >&2
    # Let sockets of the previous run close before the next one starts.
    sleep 0.5
}

mkdir -p "$RESULTS"
STAMP=$(date +%Y%m%d-%H%M%S)
RAW=$RESULTS/raw-$STAMP-c$CONC-$PIN.log
: >"$RAW"
TARGETS=(direct haproxy msm)
log "concurrency $CONC, $REPS repetitions x ${DUR}s (+${WARMUP}s warm-up), pinning: $PINNING; latency runs: $LAT_PINNING"
for rep in $(seq 1 "$REPS"); do
    for sc in $SCENARIOS; do
        # Rotate the order each repetition so no target always runs first.
        for i in 0 1 2; do
            run_one "$rep" "$sc" "${TARGETS[$(((i + rep - 1) % 3))]}"
        done
    done
done

# Sanity evidence: msm-proxy's own counters for the run.
curl -s -m 2 "http://127.0.0.1:$MSM_ADMIN/stats" |
    grep -E '^(listener|cluster)\.' |
    grep -E '(downstream_cx_total|upstream_cx_total|connect_fail|flow_control|none_healthy|overflow)' |
    sed 's/^/# msm stats: /' >>"$RAW" || true

# ---- report ---------------------------------------------------------------------------------------
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -1)" ] && GIT_REV="$GIT_REV (dirty tree)"
cat >"$WORK/header.md" <<EOF
# TCP proxy benchmark: msm-proxy vs haproxy (loopback)

- date: $(date -u '+%Y-%m-%d %H:%M UTC'); msm-proxy $GIT_REV (Release); $(cat "$WORK/haproxy.version")
- machine: $NCPU CPUs, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), kernel $(uname -r)
- proxies: msm-proxy --concurrency $CONC, haproxy nbthread $CONC; pinning: $PINNING; latency runs: $LAT_PINNING
- $REPS repetitions, ${DUR}s measured after ${WARMUP}s warm-up, targets interleaved per repetition
- raw log: bench/results/$(basename "$RAW")
EOF
python3 "$ROOT/bench/report.py" "$RAW" "$WORK/header.md" >"$RESULTS/latest.md"
cp "$RESULTS/latest.md" "$RESULTS/$STAMP-c$CONC-$PIN.md"
cat "$RESULTS/latest.md"

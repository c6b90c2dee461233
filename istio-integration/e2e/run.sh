#!/bin/sh
# The whole-mesh demo in one command (issue 7): installs what is missing (scripts/deps.sh test),
# builds msm-proxy, then runs istio-integration/e2e/mesh_e2e.py — camera pods v1/v2, viewer and
# intruder pods as network namespaces with Istio's iptables rules, msm-proxy as every pod's
# sidecar under the pilot-agent stand-in, config rendered from the sample manifests by istiogen,
# STRICT mTLS, 90/10 split, AuthorizationPolicy, Prometheus — and prints the table of checks.
# Needs root (network namespaces, iptables). Exits 0 only if every check passed.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
[ "$(id -u)" -eq 0 ] || { echo "run as root (network namespaces and iptables)"; exit 1; }
sh scripts/deps.sh test
b=${MSM_BUILD_DIR:-build}
cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$b" -j"$(nproc)" --target msm-proxy >/dev/null
shared=${MSM_SHARED_DIR:-$top/../shared}
exec /usr/bin/python3 istio-integration/e2e/mesh_e2e.py --binary "$b/msm-proxy" --shared "$shared" "$@"

#!/bin/sh
# Install the Debian 12 packages msm-proxy needs to build, test and benchmark.
# Idempotent: packages already present are skipped; apt runs only when something is missing.
# Usage: scripts/deps.sh [build|test|bench|all]   (default: test = build + test peers)
set -eu

set_build="build-essential cmake pkg-config git ca-certificates curl
 protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev protobuf-compiler
 libgrpc-dev libev-dev libnghttp2-dev libssl-dev libhttp-parser-dev libosip2-dev
 libsrtp2-dev libc-ares-dev libjansson-dev libyaml-dev libpcre2-dev libxxhash-dev
 libcmocka-dev clang llvm libclang-rt-14-dev"
# Real RTSP peers: GStreamer's RTSP server (python3-gi) as the camera, ffmpeg/ffprobe and
# GStreamer's rtspsrc as players (x264enc is in -ugly, avdec_h264 in -libav).
set_test="python3 netcat-openbsd iproute2 procps
 python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
 gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
 gstreamer1.0-plugins-ugly gstreamer1.0-libav ffmpeg"
# The xDS tests' control plane (test/controlplane/): gRPC and protobuf for Python; openssl makes
# the TLS test's certificate.
set_test="$set_test python3-grpcio python3-protobuf openssl"
# A real Prometheus scrapes /stats/prometheus in test_prometheus.py (issue 6).
set_test="$set_test prometheus"
# HTTP tests: nghttp / h2load drive HTTP/2 (curl 7.88's prior-knowledge connection reuse is
# broken: curl/curl#10634).
set_test="$set_test nghttp2-client"
# The pilot-agent stand-in (istio-integration/agent) signs workload certificates (its mesh CA).
set_test="$set_test python3-cryptography"
# Sidecar capture (test_capture.py) and the whole-mesh e2e (istio-integration/e2e/): Istio's
# iptables REDIRECT rules inside network namespaces.
set_test="$set_test iptables"
# The sidecar mesh test (test_sidecar_mesh.py) reads the wire between two pods with tshark.
set_test="$set_test tshark"
# istio-integration/ checks (test_istio_manifests.py): PyYAML reads the manifests (and istiogen's
# worlds, test_istiogen.py), patchelf bundles the image's runtime libraries; node/npm run the
# schema validator (npm is checked below).
set_test="$set_test python3-yaml patchelf"
set_bench="haproxy"
# bench/http: wrk (HTTP/1.1 load), nginx (upstream and peer proxy), perf (profile of the proxy);
# h2load comes with nghttp2-client above.
set_bench="$set_bench wrk nginx linux-perf"

what=${1:-test}
case "$what" in
build) want="$set_build" ;;
test) want="$set_build $set_test" ;;
bench) want="$set_build $set_test $set_bench" ;;
all) want="$set_build $set_test $set_bench" ;;
*) echo "usage: $0 [build|test|bench|all]" >&2; exit 2 ;;
esac

missing=""
# npm fetches the pinned Envoy API package. Some machines carry NodeSource's nodejs (which
# bundles npm and conflicts with Debian's npm package): only ask apt when npm is absent.
command -v npm >/dev/null 2>&1 || missing="nodejs npm"
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# tshark's wireshark-common asks whether non-root users may capture: answer no, non-interactively.
case " $missing " in
*" tshark "*) echo "wireshark-common wireshark-common/install-setuid boolean false" |
    $sudo debconf-set-selections ;;
esac
$sudo apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null

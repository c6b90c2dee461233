#!/bin/sh
# Used by the build stage of istio-integration/image/Dockerfile (runs on Debian 12):
#   bundle-runtime.sh <msm-proxy binary> <out dir>
# Lays out <out>/usr/local/bin/msm-proxy and <out>/usr/local/lib/msm-proxy/<every shared library
# the binary resolves, by SONAME, except glibc's own>, and sets an $ORIGIN-relative rpath on the
# binary and on each library, so the dynamic loader finds the bundled copies (for the libraries'
# own dependencies too) before anything the base image has, without LD_LIBRARY_PATH.
set -eu
bin=$1
out=$2
libdir=$out/usr/local/lib/msm-proxy
mkdir -p "$out/usr/local/bin" "$libdir"
# glibc and the loader come from the base image (their versions must match each other).
glibc='^(linux-vdso|libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|ld-linux[-a-z0-9_]*)\.so'
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | while read -r soname path; do
    if printf '%s\n' "$soname" | grep -Eq "$glibc"; then
        continue
    fi
    cp -L "$path" "$libdir/$soname"
    chmod 0644 "$libdir/$soname"
    patchelf --set-rpath '$ORIGIN' "$libdir/$soname"
done
if ldd "$bin" | grep -q 'not found'; then
    echo "bundle-runtime: unresolved libraries:" >&2
    ldd "$bin" | grep 'not found' >&2
    exit 1
fi
cp "$bin" "$out/usr/local/bin/msm-proxy"
chmod 0755 "$out/usr/local/bin/msm-proxy"
patchelf --set-rpath '$ORIGIN/../lib/msm-proxy' "$out/usr/local/bin/msm-proxy"
# Check the result resolves entirely from the bundle (with the system copies out of the way).
n=$(ls "$libdir" | wc -l)
echo "bundle-runtime: $n libraries in /usr/local/lib/msm-proxy" >&2
LD_DEBUG=libs "$out/usr/local/bin/msm-proxy" --version 2>&1 >/dev/null \
    | awk '/calling init:/ { print $NF }' | while read -r lib; do
        case $lib in
        */lib/msm-proxy/*) ;;
        */libc.so*|*/libm.so*|*/libdl.so*|*/libpthread.so*|*/librt.so*|*/libresolv.so*|*/ld-linux*) ;;
        *) echo "bundle-runtime: $lib was not taken from the bundle" >&2; exit 1 ;;
        esac
    done

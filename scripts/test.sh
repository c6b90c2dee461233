#!/bin/sh
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. install missing Debian packages (scripts/deps.sh);
#   2. gcc build with -Werror, every test (unit, integration, fuzz corpora replayed);
#   3. clang build with ASan+UBSan and libFuzzer: every test again under the sanitizers, plus a
#      short libFuzzer run of each fuzz target.
# Ends with the combined "N passed, N failed" line; exits non-zero if anything failed.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=${MSM_JOBS:-2}
fuzz_seconds=${MSM_FUZZ_SECONDS:-20}

sh scripts/deps.sh test || { echo "dependency installation failed"; echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
summary=""

run_stage() { # name build_dir cmake-args...
    name=$1; dir=$2; shift 2
    echo "=== $name: configure and build ($dir)"
    if ! cmake -S . -B "$dir" "$@" >"$dir.configure.log" 2>&1; then
        mkdir -p "$dir"; cat "$dir.configure.log"; failed=$((failed + 1))
        summary="$summary\n$name: configure FAILED"; return
    fi
    if ! cmake --build "$dir" -j"$jobs" >"$dir.build.log" 2>&1; then
        tail -50 "$dir.build.log"; failed=$((failed + 1))
        summary="$summary\n$name: build FAILED"; return
    fi
    echo "=== $name: ctest"
    out=$(cd "$dir" && ctest -j"$jobs" --output-on-failure 2>&1)
    echo "$out"
    line=$(echo "$out" | grep -a -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' | tail -1)
    if [ -z "$line" ]; then
        failed=$((failed + 1)); summary="$summary\n$name: ctest produced no summary"; return
    fi
    total=$(echo "$line" | sed -E 's/.* out of ([0-9]+).*/\1/')
    nfail=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed.*/\1/')
    passed=$((passed + total - nfail))
    failed=$((failed + nfail))
    summary="$summary\n$name: $line"
}

mkdir -p build-ci
run_stage "gcc" build-ci/gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMSM_WERROR=ON
run_stage "clang-asan-ubsan-fuzz" build-ci/asan -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=Debug -DMSM_WERROR=ON -DMSM_SANITIZE=address,undefined -DMSM_FUZZ=ON \
    -DMSM_FUZZ_SECONDS="$fuzz_seconds"

printf "%b\n" "$summary"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/bin/sh
# Build the GGUF fuzzer with clang + libFuzzer and run it for a while.
#
#   runtime/fuzz/run_fuzz.sh [SECONDS] [BUILD_DIR]
#
# SECONDS defaults to 30. New inputs go to a temporary directory, never into the committed
# seed corpus. Exit status: 0 when no crash was found, non-zero otherwise (crash inputs are
# left in BUILD_DIR/artifacts/). Needs clang and libFuzzer (Debian: clang libclang-rt-14-dev).
set -eu

seconds=${1:-30}
here=$(cd "$(dirname "$0")" && pwd)
runtime=$(dirname "$here")
build=${2:-${EMBER_FUZZ_BUILD_DIR:-$runtime/../build/ember-fuzz}}
cc=${CC_FUZZ:-clang}

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "run_fuzz.sh: $cc not found; install clang and libFuzzer (apt-get install clang libclang-rt-14-dev)" >&2
    exit 2
fi

cmake -S "$runtime" -B "$build" -G Ninja -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DEMBER_FUZZ=ON -DEMBER_BUILD_TOOLS=OFF -DEMBER_BUILD_TESTS=OFF -DEMBER_BUILD_SHARED=OFF >/dev/null
cmake --build "$build" --target fuzz_gguf >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$build/artifacts"
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
"$build/fuzz_gguf" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/" "$work" "$here/corpus"

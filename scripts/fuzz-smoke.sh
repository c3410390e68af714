#!/usr/bin/env bash
# Short runs of every cargo-fuzz target (FUZZ_SECONDS each, default 10), so that a
# parser change that crashes on easy inputs is caught by the test command. Needs a
# nightly toolchain (libFuzzer's sanitizer flags); without one this says so and exits
# 0: the test command has already compiled the targets with `cargo check`.
#
# Longer runs: cd fuzz && cargo +nightly fuzz run TARGET -- -max_total_time=600
# (their figures are kept in docs/security.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${FUZZ_SECONDS:-10}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: no nightly toolchain installed; short fuzz runs skipped"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2 --quiet
fi
cd fuzz
# The smoke runs build unoptimised and without AddressSanitizer: the targets are safe
# Rust, ten seconds find the easy crashes either way, and a release build of every
# dependency with one codegen unit costs a quarter of an hour on two cores (a dev build,
# three minutes). The longer runs above use the default, optimised build.
flags=(--dev --sanitizer none)
cargo +nightly fuzz build "${flags[@]}"
for target in $(cargo +nightly fuzz list); do
    echo "fuzz: $target for ${seconds} s"
    # A crash or leak ends the run non-zero; its input is kept in fuzz/artifacts/.
    log="target/fuzz-smoke-$target.log"
    mkdir -p target
    status=0
    cargo +nightly fuzz run "${flags[@]}" "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
    grep -E '^(Done |SUMMARY|==[0-9]+==ERROR)' "$log" || true
    if [ "$status" != 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz: $target failed (exit $status); its input is in fuzz/artifacts/$target/" >&2
        exit "$status"
    fi
done

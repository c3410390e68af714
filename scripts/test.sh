#!/usr/bin/env bash
# The whole test suite, exactly what CI runs. Installs what it needs (system packages,
# a Python venv with boto3 and the AWS CLI), then runs:
#   1. cargo test: unit tests, the storage/retention tests, the aws-sdk-rust end-to-end
#      tests and the SIGKILL crash tests against the real binary; then cargo check of
#      the bench crate and of the fuzz targets;
#   2. a few seconds of every fuzz target where a nightly toolchain is installed
#      (scripts/fuzz-smoke.sh);
#   3. tests/e2e: the boto3 / AWS CLI / raw-protocol conformance suite against the real
#      binary (scripts/e2e.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never
# A test run builds once: incremental-compilation caches would only take disk (GBs
# across the test binaries). Set CARGO_INCREMENTAL=1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

scripts/deps.sh test

# The debug build and its test binaries take about 3 GB, the fuzz build about as much
# again: say so up front rather than fail halfway through a compile.
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_kb=$(df -Pk "$target_dir" | awk 'NR == 2 { print $4 }')
echo "== disk: $((free_kb / 1024 / 1024)) GB free for $target_dir"
if [ "${free_kb:-0}" -lt $((6 * 1024 * 1024)) ]; then
    echo "warning: under 6 GB free; the build may run out of space" >&2
fi

echo "== cargo test"
cargo build --bin freshet
# `cargo install --path .` works (packaging/README.md); the debug profile reuses the build.
install_root="$(mktemp -d)"
cargo install --path . --locked --debug --root "$install_root" --quiet
"$install_root/bin/freshet" --version
rm -rf "$install_root"
cargo test --package freshet --package freshet-sql --all-targets

echo "== cargo check: the bench crate and the fuzz targets (so that they cannot rot)"
cargo check --package freshet-bench --all-targets
cargo check --manifest-path fuzz/Cargo.toml --bins

echo "== short fuzz runs of every target (nightly toolchain)"
scripts/fuzz-smoke.sh

echo "== end-to-end suite (boto3, AWS CLI, raw HTTP)"
FRESHET_BIN="${CARGO_TARGET_DIR:-target}/debug/freshet" scripts/e2e.sh -q -rs -p no:cacheprovider

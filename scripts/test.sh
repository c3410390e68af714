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

scripts/deps.sh test

echo "== cargo test"
cargo build --bin freshet
cargo test --package freshet --package freshet-sql --all-targets

echo "== cargo check: the bench crate and the fuzz targets (so that they cannot rot)"
cargo check --package freshet-bench --all-targets
cargo check --manifest-path fuzz/Cargo.toml --bins

echo "== short fuzz runs of every target (nightly toolchain)"
scripts/fuzz-smoke.sh

echo "== end-to-end suite (boto3, AWS CLI, raw HTTP)"
FRESHET_BIN="${CARGO_TARGET_DIR:-target}/debug/freshet" scripts/e2e.sh -q -p no:cacheprovider

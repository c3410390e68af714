#!/usr/bin/env bash
# Builds Freshet (release) and runs the server on the embedded default: data in
# ./freshet-data, listening on 127.0.0.1:4570. Extra arguments go to `freshet serve`
# (see `freshet serve --help`), e.g. scripts/serve.sh --listen 0.0.0.0:4570
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/deps.sh build
cargo build --release --bin freshet
exec target/release/freshet serve "$@"

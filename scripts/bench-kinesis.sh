#!/usr/bin/env bash
# Side-by-side Kinesis Data Streams benchmark: kinesalite vs freshet.
#
# Installs kinesalite (npm, into a cache dir outside the repository), builds
# `freshet` and `freshet-bench` in release mode, then runs the same
# `freshet-bench kinesis` load against kinesalite (in-memory) and against
# `freshet serve` (fsync durability by default), one after the other, each on
# a free loopback port. Prints both result tables and freshet/kinesalite
# ratios. Results (JSON + server logs) are kept in $BENCH_OUT_DIR.
#
# Environment knobs (defaults in brackets):
#   BENCH_DURATION            put phase seconds for both servers [20]
#   BENCH_KINESALITE_DURATION put phase seconds for kinesalite [$BENCH_DURATION]
#   BENCH_FRESHET_DURATION    put phase seconds for freshet [$BENCH_DURATION]
#   BENCH_CLIENTS             concurrent PutRecords connections [8]
#   BENCH_SHARDS              shards of the benchmark stream [4]
#   BENCH_BATCH               records per PutRecords call [500]
#   BENCH_RECORD_SIZE         bytes per record [1024]
#   BENCH_VIS_SAMPLES         visibility samples (PutRecord every 10 ms) [500]
#   BENCH_EXTRA_ARGS          extra `freshet-bench kinesis` arguments for both runs []
#   BENCH_OUT_DIR             where JSON results and logs go [a new temp dir]
#   BENCH_SKIP_KINESALITE=1   skip the kinesalite run
#   BENCH_SKIP_FRESHET=1      skip the freshet run
#   FRESHET_DURABILITY        freshet --durability: fsync | unsafe-no-fsync [fsync]
#   FRESHET_EXTRA_ARGS        extra `freshet serve` arguments []
#   KINESALITE_VERSION        npm version spec [3]
#   KINESALITE_NODE_OPTIONS   NODE_OPTIONS for kinesalite [--max-old-space-size=8192]
#
# Usage: scripts/bench-kinesis.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${BENCH_DURATION:-20}"
KINESALITE_DURATION="${BENCH_KINESALITE_DURATION:-$DURATION}"
FRESHET_DURATION="${BENCH_FRESHET_DURATION:-$DURATION}"
CLIENTS="${BENCH_CLIENTS:-8}"
SHARDS="${BENCH_SHARDS:-4}"
BATCH="${BENCH_BATCH:-500}"
RECORD_SIZE="${BENCH_RECORD_SIZE:-1024}"
VIS_SAMPLES="${BENCH_VIS_SAMPLES:-500}"
DURABILITY="${FRESHET_DURABILITY:-fsync}"
KINESALITE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/freshet-bench/kinesalite"
OUT="${BENCH_OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/freshet-bench.XXXXXX")}"
mkdir -p "$OUT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

# log, free_port, wait_for_port, stop_server; stops the server and deletes its data
# directory on exit
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-server.sh"

# Runs the load generator against 127.0.0.1:$1; $2 label, $3 put seconds.
run_load() {
    local port=$1 label=$2 duration=$3
    # Other work on the machine skews the figures: record how busy it was.
    echo "load average before the $label run: $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/$label.load"
    # shellcheck disable=SC2086
    "$BENCH_BIN" kinesis \
        --endpoint "http://127.0.0.1:$port" \
        --label "$label" \
        --server-pid "$SERVER_PID" \
        --shards "$SHARDS" --clients "$CLIENTS" --batch "$BATCH" \
        --record-size "$RECORD_SIZE" --duration "$duration" \
        --visibility-samples "$VIS_SAMPLES" \
        --json-file "$OUT/$label.json" \
        ${BENCH_EXTRA_ARGS:-} | tee "$OUT/$label.txt"
    echo "load average after the $label run: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/$label.load"
}

log "building freshet-bench (release)"
(cd "$ROOT" && cargo build --release -p freshet-bench)
BENCH_BIN="$TARGET_DIR/release/freshet-bench"

FRESHET_OK=0
if [[ "${BENCH_SKIP_FRESHET:-0}" != 1 ]]; then
    log "building freshet (release)"
    if (cd "$ROOT" && cargo build --release --bin freshet); then
        FRESHET_OK=1
    else
        echo "WARNING: freshet did not build; only kinesalite will be measured" >&2
    fi
fi

if [[ "${BENCH_SKIP_KINESALITE:-0}" != 1 ]]; then
    if [[ ! -x "$KINESALITE_DIR/node_modules/kinesalite/cli.js" ]]; then
        log "installing kinesalite@${KINESALITE_VERSION:-3} into $KINESALITE_DIR"
        mkdir -p "$KINESALITE_DIR"
        npm install --prefix "$KINESALITE_DIR" --no-audit --no-fund --loglevel=error \
            "kinesalite@${KINESALITE_VERSION:-3}" >&2
    fi
    port=$(free_port)
    log "kinesalite on 127.0.0.1:$port (in-memory), put phase ${KINESALITE_DURATION}s"
    NODE_OPTIONS="${KINESALITE_NODE_OPTIONS:---max-old-space-size=8192}" \
        node "$KINESALITE_DIR/node_modules/kinesalite/cli.js" \
        --port "$port" --createStreamMs 0 --deleteStreamMs 0 --updateStreamMs 0 \
        --shardLimit 1000 >"$OUT/kinesalite.log" 2>&1 &
    SERVER_PID=$!
    if ! wait_for_port "$port" "$SERVER_PID"; then
        echo "kinesalite did not start; log:" >&2
        cat "$OUT/kinesalite.log" >&2
        exit 1
    fi
    run_load "$port" kinesalite "$KINESALITE_DURATION"
    stop_server
fi

if [[ "$FRESHET_OK" == 1 ]]; then
    port=$(free_port)
    DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/freshet-data.XXXXXX")
    log "freshet on 127.0.0.1:$port (--durability $DURABILITY, data in $DATA_DIR), put phase ${FRESHET_DURATION}s"
    # shellcheck disable=SC2086
    "$TARGET_DIR/release/freshet" serve --listen "127.0.0.1:$port" --data-dir "$DATA_DIR" \
        --durability "$DURABILITY" --state-delay-ms 0 ${FRESHET_EXTRA_ARGS:-} \
        >"$OUT/freshet.log" 2>&1 &
    SERVER_PID=$!
    if ! wait_for_port "$port" "$SERVER_PID"; then
        echo "freshet did not start; log:" >&2
        tail -n 50 "$OUT/freshet.log" >&2
        exit 1
    fi
    run_load "$port" freshet "$FRESHET_DURATION"
    stop_server
    rm -rf "$DATA_DIR"
    DATA_DIR=""
fi

log "results (JSON and logs in $OUT)"
for label in kinesalite freshet; do
    if [[ -f "$OUT/$label.txt" ]]; then
        cat "$OUT/$label.txt" "$OUT/$label.load"
        echo
    fi
done
if [[ -f "$OUT/kinesalite.json" && -f "$OUT/freshet.json" ]]; then
    "$BENCH_BIN" compare "$OUT/kinesalite.json" "$OUT/freshet.json"
fi
if [[ "${BENCH_SKIP_FRESHET:-0}" != 1 && "$FRESHET_OK" != 1 ]]; then
    echo "freshet was not measured (build failed)" >&2
    exit 1
fi

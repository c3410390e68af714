#!/usr/bin/env bash
# Kinesis Video playback benchmark: LIVE playlist delay, HLS fMP4 segments served
# to many players, cold segment throughput and GetClip (`freshet-bench playback`).
#
# Builds `freshet` and `freshet-bench` in release mode, starts `freshet serve` on a
# free loopback port with a temporary data directory, runs `freshet-bench playback`
# against it (with --server-pid for CPU and memory figures), stops the server with
# SIGTERM and deletes the data directory. The table, the JSON result, the server log
# and the load average before/after are kept in $BENCH_OUT_DIR.
#
# Environment knobs (defaults in brackets):
#   BENCH_PLAYERS             concurrent LIVE players [100]
#   BENCH_LATENCY_DURATION    seconds of the quiet latency phase [15]
#   BENCH_POLL_INTERVAL_MS    LIVE playlist polling interval of the watcher [2]
#   BENCH_LIVE_DURATION       seconds the LIVE players play [20]
#   BENCH_COLD_PLAYERS        concurrent workers of the cold ON_DEMAND phase [16]
#   BENCH_COLD_DURATION       seconds of the cold phase [20]
#   BENCH_COLD_FRAGMENTS      distinct fragments the cold phase cycles over [6000]
#   BENCH_CLIP_SECONDS        fragments (seconds) covered by GetClip [60]
#   BENCH_CLIP_REPEATS        GetClip calls timed [5]
#   BENCH_EXTRA_ARGS          extra `freshet-bench playback` arguments (e.g. --skip-cold) []
#   BENCH_OUT_DIR             where the table, JSON and logs go [a new temp dir]
#   FRESHET_DURABILITY        freshet --durability: fsync | unsafe-no-fsync [fsync]
#   FRESHET_EXTRA_ARGS        extra `freshet serve` arguments []
#   CARGO_TARGET_DIR          where to build [target/]
#
# Usage: scripts/bench-playback.sh     (about 60 s of load with the defaults, plus the build)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PLAYERS="${BENCH_PLAYERS:-100}"
LATENCY_DURATION="${BENCH_LATENCY_DURATION:-15}"
POLL_INTERVAL_MS="${BENCH_POLL_INTERVAL_MS:-2}"
LIVE_DURATION="${BENCH_LIVE_DURATION:-20}"
COLD_PLAYERS="${BENCH_COLD_PLAYERS:-16}"
COLD_DURATION="${BENCH_COLD_DURATION:-20}"
COLD_FRAGMENTS="${BENCH_COLD_FRAGMENTS:-6000}"
CLIP_SECONDS="${BENCH_CLIP_SECONDS:-60}"
CLIP_REPEATS="${BENCH_CLIP_REPEATS:-5}"
DURABILITY="${FRESHET_DURABILITY:-fsync}"
OUT="${BENCH_OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/freshet-bench-playback.XXXXXX")}"
mkdir -p "$OUT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

# log, free_port, wait_for_port, stop_server; stops the server and deletes its data
# directory on exit
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-server.sh"

log "building freshet and freshet-bench (release)"
(cd "$ROOT" && cargo build --release -p freshet --bin freshet)
(cd "$ROOT" && cargo build --release -p freshet-bench)
BENCH_BIN="$TARGET_DIR/release/freshet-bench"

port=$(free_port)
DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/freshet-data.XXXXXX")
log "freshet on 127.0.0.1:$port (--durability $DURABILITY, data in $DATA_DIR)"
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

log "freshet-bench playback: $PLAYERS players (JSON and logs in $OUT)"
# Other work on the machine skews the figures: record how busy it was.
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/playback.load"
# shellcheck disable=SC2086
(cd "$ROOT" && "$BENCH_BIN" playback \
    --endpoint "http://127.0.0.1:$port" \
    --server-pid "$SERVER_PID" \
    --players "$PLAYERS" \
    --latency-duration "$LATENCY_DURATION" --poll-interval-ms "$POLL_INTERVAL_MS" \
    --live-duration "$LIVE_DURATION" \
    --cold-players "$COLD_PLAYERS" --cold-duration "$COLD_DURATION" \
    --cold-fragments "$COLD_FRAGMENTS" \
    --clip-seconds "$CLIP_SECONDS" --clip-repeats "$CLIP_REPEATS" \
    --json "$OUT/playback.json" \
    ${BENCH_EXTRA_ARGS:-}) | tee "$OUT/playback.txt"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/playback.load"
echo "data directory after the run: $(du -sh "$DATA_DIR" | cut -f1)" >>"$OUT/playback.load"

stop_server
rm -rf "$DATA_DIR"
DATA_DIR=""
cat "$OUT/playback.load"

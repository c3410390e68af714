#!/usr/bin/env bash
# Camera ingest over RTP: N simulated H.264 cameras (~1 Mbit/s each, 25 fps) pushing
# RTP over UDP on loopback, received by Freshet, then the same load received by
# GStreamer pipelines (`freshet-bench rtp`), so both costs are measured in one run.
#
# 1. Builds `freshet` and `freshet-bench` in release mode and generates the camera clip
#    with ffmpeg (10 s, testsrc2 640x360 at 25 fps, libx264 at BENCH_KBPS, GOP 2 s, no
#    B-frames, SPS/PPS before every IDR), kept as $BENCH_OUT_DIR/clip.h264.
# 2. Starts `freshet serve` on a free loopback port with a temporary data directory and
#    runs `freshet-bench rtp --target freshet` against it: the N feeds `rtpcam-<i>`
#    (UDP port BASE + 2i, Codec H264, PayloadType 96) are created through the API,
#    the cameras send for BENCH_DURATION seconds, the feeds' counters are read once
#    they have stored their last fragment, and the feeds are deleted. Freshet does
#    everything: depacketize, cut fragments at key frames (>= 2 s), store them (fsync).
#    Then the server is stopped (SIGTERM) and the data directory deleted.
# 3. Starts gst-launch-1.0 (BENCH_GST_PROCS processes sharing the N branches
#    `udpsrc port=P caps=application/x-rtp,... ! rtpjitterbuffer latency=50 !
#    rtph264depay ! h264parse ! fakesink sync=false`) on the same ports and runs
#    `freshet-bench rtp --target udp-only` with the same sending: what one GStreamer
#    pipeline per feed costs just to depacketize (nothing is stored).
# 4. Prints both results side by side (`freshet-bench rtp --compare`) with a summary
#    line each: loss, CPU per feed, RSS.
#
# Loss on loopback shows up as kernel UDP receive-buffer drops (per socket in
# /proc/net/udp, and RcvbufErrors in /proc/net/snmp), both reported. The kernel's
# socket buffer sizes are left alone unless BENCH_RMEM is set: then, and only when
# running as root, net.core.rmem_max and rmem_default are raised to it for the run
# and restored at exit. The values used are printed either way.
#
# Environment knobs (defaults in brackets):
#   BENCH_CAMERAS         simulated cameras [200]
#   BENCH_KBPS            bitrate of each camera in kbit/s [1000]
#   BENCH_DURATION        seconds each camera sends [30]
#   BENCH_BASE_PORT       RTP port of camera 0; camera i uses BASE + 2i and BASE + 2i + 1 [20000]
#   BENCH_SENDER_THREADS  sending OS threads of freshet-bench [1]
#   BENCH_GST_PROCS       gst-launch-1.0 processes the N branches are split over [1]
#   BENCH_GST_BRANCH      GStreamer elements after each udpsrc
#                         [rtpjitterbuffer latency=50 ! rtph264depay ! h264parse ! fakesink sync=false]
#   BENCH_RMEM            if set and root: net.core.rmem_max/rmem_default for the run []
#   BENCH_SKIP_FRESHET    1: skip the Freshet run []
#   BENCH_SKIP_GSTREAMER  1: skip the GStreamer run []
#   BENCH_EXTRA_ARGS      extra `freshet-bench rtp` arguments (both runs) []
#   BENCH_OUT_DIR         where the tables, JSON and logs go [a new temp dir]
#   FRESHET_DURABILITY    freshet --durability: fsync | unsafe-no-fsync [fsync]
#   FRESHET_EXTRA_ARGS    extra `freshet serve` arguments []
#   CARGO_TARGET_DIR      where to build [target/]
#
# Usage: scripts/bench-rtp.sh     (about 2 x 45 s of load with the defaults, plus the build)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CAMERAS="${BENCH_CAMERAS:-200}"
KBPS="${BENCH_KBPS:-1000}"
DURATION="${BENCH_DURATION:-30}"
BASE_PORT="${BENCH_BASE_PORT:-20000}"
SENDER_THREADS="${BENCH_SENDER_THREADS:-1}"
GST_PROCS="${BENCH_GST_PROCS:-1}"
GST_BRANCH="${BENCH_GST_BRANCH:-rtpjitterbuffer latency=50 ! rtph264depay ! h264parse ! fakesink sync=false}"
RMEM="${BENCH_RMEM:-}"
DURABILITY="${FRESHET_DURABILITY:-fsync}"
OUT="${BENCH_OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/freshet-bench-rtp.XXXXXX")}"
mkdir -p "$OUT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
RMEM_MAX_FILE=/proc/sys/net/core/rmem_max
RMEM_DEFAULT_FILE=/proc/sys/net/core/rmem_default

# log, free_port, wait_for_port, stop_server, cleanup_server
source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-server.sh"

GST_PIDS=()
OLD_RMEM_MAX=""
OLD_RMEM_DEFAULT=""
stop_gst() {
    local p
    for p in "${GST_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${GST_PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    GST_PIDS=()
}
cleanup() {
    cleanup_server
    stop_gst
    if [[ -n "$OLD_RMEM_MAX" ]]; then
        echo "$OLD_RMEM_MAX" >"$RMEM_MAX_FILE" || true
        echo "$OLD_RMEM_DEFAULT" >"$RMEM_DEFAULT_FILE" || true
        echo "restored net.core.rmem_max=$OLD_RMEM_MAX rmem_default=$OLD_RMEM_DEFAULT" >&2
    fi
}
trap cleanup EXIT

command -v ffmpeg >/dev/null || { echo "ffmpeg is needed to generate the camera clip" >&2; exit 1; }
if [[ "${BENCH_SKIP_GSTREAMER:-}" != 1 ]] && ! command -v gst-launch-1.0 >/dev/null; then
    echo "gst-launch-1.0 not found (GStreamer with the good and bad plugin sets); set BENCH_SKIP_GSTREAMER=1 to run Freshet only" >&2
    exit 1
fi

log "building freshet and freshet-bench (release)"
(cd "$ROOT" && cargo build --release -p freshet --bin freshet -p freshet-bench)
BENCH_BIN="$TARGET_DIR/release/freshet-bench"

# Kernel UDP receive buffers.
if [[ -n "$RMEM" ]]; then
    if [[ "$(id -u)" -eq 0 && -w "$RMEM_MAX_FILE" ]]; then
        OLD_RMEM_MAX=$(cat "$RMEM_MAX_FILE")
        OLD_RMEM_DEFAULT=$(cat "$RMEM_DEFAULT_FILE")
        echo "$RMEM" >"$RMEM_MAX_FILE"
        echo "$RMEM" >"$RMEM_DEFAULT_FILE"
        echo "running as root: raised net.core.rmem_max and rmem_default to $RMEM for this run (restored at exit)" | tee "$OUT/rmem.txt" >&2
    else
        echo "BENCH_RMEM=$RMEM ignored: not root (or $RMEM_MAX_FILE not writable); kernel defaults kept" | tee "$OUT/rmem.txt" >&2
    fi
else
    echo "kernel UDP buffer settings left as they are" >"$OUT/rmem.txt"
fi
echo "net.core.rmem_default=$(cat "$RMEM_DEFAULT_FILE" 2>/dev/null || echo '?') net.core.rmem_max=$(cat "$RMEM_MAX_FILE" 2>/dev/null || echo '?')" | tee -a "$OUT/rmem.txt" >&2

# One clip for both runs, so that both receivers get the very same packets.
log "generating the camera clip: 10 s of testsrc2 640x360@25, libx264 at $KBPS kbit/s, GOP 2 s"
ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i testsrc2=size=640x360:rate=25 -t 10 -an \
    -c:v libx264 -g 50 -bf 0 -b:v "${KBPS}k" -maxrate "${KBPS}k" -bufsize "${KBPS}k" \
    -x264-params repeat-headers=1:aud=1 -f h264 "$OUT/clip.h264"

COMMON=(--cameras "$CAMERAS" --kbps "$KBPS" --duration "$DURATION" --base-port "$BASE_PORT"
    --sender-threads "$SENDER_THREADS" --clip "$OUT/clip.h264")
RESULTS=()

if [[ "${BENCH_SKIP_FRESHET:-}" != 1 ]]; then
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
    log "freshet-bench rtp --target freshet: $CAMERAS cameras x $KBPS kbit/s for $DURATION s"
    # shellcheck disable=SC2086
    (cd "$ROOT" && "$BENCH_BIN" rtp --target freshet --label freshet \
        --endpoint "http://127.0.0.1:$port" --server-pid "$SERVER_PID" \
        "${COMMON[@]}" --json "$OUT/freshet.json" ${BENCH_EXTRA_ARGS:-}) | tee "$OUT/freshet.txt"
    echo "data directory after the run: $(du -sh "$DATA_DIR" | cut -f1)" | tee -a "$OUT/freshet.txt"
    stop_server
    rm -rf "$DATA_DIR"
    DATA_DIR=""
    RESULTS+=(--compare "$OUT/freshet.json")
fi

if [[ "${BENCH_SKIP_GSTREAMER:-}" != 1 ]]; then
    procs=$GST_PROCS
    ((procs < 1)) && procs=1
    ((procs > CAMERAS)) && procs=$CAMERAS
    log "gst-launch-1.0: $CAMERAS branches in $procs process(es): udpsrc ! $GST_BRANCH"
    read -r -a branch <<<"$GST_BRANCH"
    caps="caps=application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=96"
    for ((p = 0; p < procs; p++)); do
        args=()
        for ((i = p; i < CAMERAS; i += procs)); do
            args+=(udpsrc "port=$((BASE_PORT + 2 * i))" "$caps" ! "${branch[@]}")
        done
        printf '%q ' gst-launch-1.0 -q "${args[@]}" >"$OUT/gst-$p.cmd"
        gst-launch-1.0 -q "${args[@]}" >"$OUT/gst-$p.log" 2>&1 &
        GST_PIDS+=($!)
    done
    pids=$(
        IFS=,
        echo "${GST_PIDS[*]}"
    )
    log "freshet-bench rtp --target udp-only --server-pid $pids: same load against GStreamer"
    # shellcheck disable=SC2086
    (cd "$ROOT" && "$BENCH_BIN" rtp --target udp-only --label gstreamer --server-pid "$pids" \
        "${COMMON[@]}" --json "$OUT/gstreamer.json" ${BENCH_EXTRA_ARGS:-}) | tee "$OUT/gstreamer.txt"
    for p in "${GST_PIDS[@]}"; do
        if ! kill -0 "$p" 2>/dev/null; then
            echo "warning: gst-launch-1.0 $p exited during the run; see $OUT/gst-*.log" >&2
        fi
    done
    stop_gst
    RESULTS+=(--compare "$OUT/gstreamer.json")
fi

if ((${#RESULTS[@]} > 0)); then
    log "side by side ($CAMERAS cameras; $(tail -n 1 "$OUT/rmem.txt"))"
    "$BENCH_BIN" rtp "${RESULTS[@]}" | tee "$OUT/compare.txt"
fi
echo "results, JSON and logs in $OUT" >&2

#!/usr/bin/env bash
# Generate the small test clips in media-samples/ from ffmpeg's synthetic
# sources (no external media), then verify them (check-samples.sh).
#
#   bash media-samples/make-samples.sh            # regenerate + verify
#   bash media-samples/make-samples.sh --no-check # regenerate only
#
# Every clip: 320x240, 25 fps, exactly 6 s (150 frames), yuv420p, no B-frames,
# fixed GOP (closed, no scene-cut key frames), ~200 kb/s video, encoders run
# single-threaded with +bitexact so a rerun with the same ffmpeg/x264/x265
# build gives the same bytes (a different build may differ slightly).
#
# Matroska clusters: ffmpeg's matroska muxer starts a new Cluster when the
# current one exceeds -cluster_size_limit or -cluster_time_limit, OR on a video
# key frame once the current Cluster holds more than 4 KiB.  We raise both
# limits far above one GOP, so the only cut is "video key frame" and every GOP
# becomes one Cluster (each GOP here is ~25-50 KB, well over 4 KiB).
# The *.kvs.mkv files are re-wrapped by mkvtool.py into the kvssink PutMedia
# layout (unknown-size Segment and Clusters, no Cues/SeekHead/CRC-32).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

check=1
[[ "${1:-}" == "--no-check" ]] && check=0

apt_install() {
    # apt_install PKG...: install Debian packages, updating the lists once if needed.
    if [[ "$(id -u)" != 0 ]]; then
        echo "need root to apt-get install $*" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "$@"; then
        apt-get update
        apt-get install -y --no-install-recommends "$@"
    fi
}

command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || apt_install ffmpeg
command -v python3 >/dev/null || apt_install python3

echo "== $(ffmpeg -hide_banner -version | head -1)"

# Burn a frame counter + timestamp into the picture when drawtext and a font exist.
font=""
for f in /usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf \
         /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf; do
    [[ -r "$f" ]] && { font="$f"; break; }
done
if [[ -z "$font" ]] && command -v fc-match >/dev/null; then
    font="$(fc-match -f '%{file}' monospace 2>/dev/null || true)"
    [[ -r "$font" ]] || font=""
fi
overlay=""
# (capture the lists first: "ffmpeg | grep -q" can die of SIGPIPE under pipefail)
filters="$(ffmpeg -hide_banner -filters 2>/dev/null)"
encoders="$(ffmpeg -hide_banner -encoders 2>/dev/null)"
if [[ -n "$font" ]] && grep -qw drawtext <<<"$filters"; then
    # testsrc2 already draws its own small clock top-left; ours goes bottom-centre.
    overlay=",drawtext=fontfile=${font}:text='%{frame_num} %{pts\\:hms}':x=(w-tw)/2:y=h-th-12:fontsize=22:fontcolor=white:box=1:boxcolor=black@0.7:boxborderw=4"
    echo "== drawtext overlay with $font"
else
    echo "== drawtext or font not available: no frame-counter overlay"
fi

W=320; H=240; FPS=25; DUR=6
vsrc_testsrc="testsrc2=size=${W}x${H}:rate=${FPS}:duration=${DUR}${overlay},format=yuv420p"
vsrc_bars="smptebars=size=${W}x${H}:rate=${FPS}:duration=${DUR}${overlay},format=yuv420p"
asrc="sine=frequency=440:beep_factor=4:sample_rate=48000:duration=${DUR}"

common=(-hide_banner -nostdin -v error -y)
mkv_opts=(-cluster_time_limit 100000 -cluster_size_limit 100000000)
x264_rc=(-b:v 200k -maxrate 250k -bufsize 400k -threads 1 -preset medium -bf 0 -flags:v +bitexact)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The last argument is the output file; -fflags +bitexact must sit among the
# output options (before -i it would only apply to the input) so the muxer
# writes fixed Segment/Track UIDs and no version strings.
run() {
    local out="${*: -1}"
    echo "+ ffmpeg ... $(basename "$out")"
    nice -n 10 ffmpeg "${common[@]}" "${@:1:$#-1}" -fflags +bitexact "$out"
}

# 1. H.264 Baseline only, key frame every 1 s (25 frames) -> 6 clusters.
#    Camera-like: SPS/PPS repeated in-band before every IDR (repeat-headers),
#    besides the avcC CodecPrivate.  (h264-aac.mkv and the MP4 keep them in
#    avcC only, so both cases are covered.)
run -f lavfi -i "$vsrc_testsrc" \
    -c:v libx264 -profile:v baseline -level:v 3.0 "${x264_rc[@]}" \
    -g 25 -keyint_min 25 -sc_threshold 0 -x264-params repeat-headers=1 \
    -disposition:v:0 default "${mkv_opts[@]}" -f matroska "$tmp/h264-1s-gop.mkv"

# 2. H.264 Main (no B-frames) + AAC-LC 48 kHz stereo, key frame every 1 s.
# The AAC is encoded to ADTS first and then stream-copied: encoding it in the
# same command gives its first packet pts -1024 samples (encoder priming) and
# the muxer then shifts every stream by +21 ms, so video would start at 21 ms.
# Via ADTS both tracks start at 0 (the priming stays in the first audio frame).
# 6 s is 281.25 AAC frames of 1024 samples: keep 281 (5.995 s) so the audio
# does not run past the video and the file lasts exactly 6 s.
run -f lavfi -i "$asrc" \
    -c:a aac -profile:a aac_low -b:a 64k -ar 48000 -ac 2 -flags:a +bitexact \
    -f adts "$tmp/audio.aac"
run -f lavfi -i "$vsrc_bars" -i "$tmp/audio.aac" \
    -map 0:v -map 1:a \
    -c:v libx264 -profile:v main -level:v 3.0 "${x264_rc[@]}" \
    -g 25 -keyint_min 25 -sc_threshold 0 \
    -c:a copy -frames:a $(( DUR * 48000 / 1024 )) \
    -disposition:v:0 default -disposition:a:0 default "${mkv_opts[@]}" -f matroska "$tmp/h264-aac.mkv"

# 3. H.265/HEVC Main via libx265, key frame (IDR_N_LP, closed GOP) every 2 s
#    -> 3 clusters; VPS/SPS/PPS repeated in-band at every IDR as well as hvcC.
if grep -qw libx265 <<<"$encoders"; then
    run -f lavfi -i "$vsrc_testsrc" \
        -c:v libx265 -profile:v main -preset fast -b:v 200k \
        -x265-params "keyint=50:min-keyint=50:scenecut=0:open-gop=0:bframes=0:repeat-headers=1:pools=1:frame-threads=1:log-level=error" \
        -flags:v +bitexact -disposition:v:0 default "${mkv_opts[@]}" -f matroska "$tmp/h265-2s-gop.mkv"
else
    echo "== libx265 not in this ffmpeg build: skipping h265-2s-gop.mkv" >&2
fi

# 4. Reference MP4 (H.264 Main, 2 s GOP), moov at the front.
run -f lavfi -i "$vsrc_testsrc" \
    -c:v libx264 -profile:v main -level:v 3.0 "${x264_rc[@]}" \
    -g 50 -keyint_min 50 -sc_threshold 0 \
    -movflags +faststart -f mp4 "$tmp/h264-2s-gop.mp4"

# 5. kvssink-style PutMedia bodies (one unknown-size Cluster per GOP).
for base in h264-1s-gop h264-aac h265-2s-gop; do
    [[ -f "$tmp/$base.mkv" ]] || continue
    python3 "$here/mkvtool.py" kvs-layout "$tmp/$base.mkv" "$tmp/$base.kvs.mkv"
done

mv -f "$tmp"/*.mkv "$tmp"/*.mp4 "$here/"
ls -l "$here"/*.mkv "$here"/*.mp4

if (( check )); then
    bash "$here/check-samples.sh"
fi

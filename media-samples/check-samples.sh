#!/usr/bin/env bash
# Verify and measure the clips in media-samples/: decode check, ffprobe
# numbers, Matroska Cluster count and key-frame-at-cluster-start check.
# Prints the Markdown table used in README.md; exits 1 on any failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

apt_install() {
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
command -v mkvinfo >/dev/null || apt_install mkvtoolnix
command -v python3 >/dev/null || apt_install python3

exec python3 "$here/check-samples.py"

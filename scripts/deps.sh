#!/usr/bin/env bash
# Installs the system packages Freshet's build, server and test suite need on a
# Debian machine, skipping what is already there. Safe to run repeatedly.
#
#   scripts/deps.sh [build|test]     (default: build)
set -euo pipefail

what="${1:-build}"
need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }

have_cmd cc || need+=(gcc)
have_cmd pkg-config || need+=(pkg-config)
have_cmd curl || need+=(curl)
# GStreamer: headers to build against, and the decoders GetImages uses at run time.
pkg-config --exists gstreamer-1.0 gstreamer-app-1.0 2>/dev/null || need+=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev)
{ gst-inspect-1.0 avdec_h264 && gst-inspect-1.0 videoscale; } >/dev/null 2>&1 || need+=(gstreamer1.0-libav gstreamer1.0-plugins-base)
if [ "$what" = test ]; then
    # RTSP: rtspclientsink (push tests) and the RTSP server library (a test camera).
    gst-inspect-1.0 rtspclientsink >/dev/null 2>&1 || need+=(gstreamer1.0-rtsp)
    /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' >/dev/null 2>&1 || need+=(python3-gi gir1.2-gst-rtsp-server-1.0)
    have_cmd python3 || need+=(python3)
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
    have_cmd ffprobe || need+=(ffmpeg)
    # TLS tests (tests/e2e/test_tls.py): a test CA and server certificates.
    have_cmd openssl || need+=(openssl)
    { gst-inspect-1.0 h264parse && gst-inspect-1.0 x264enc && gst-inspect-1.0 matroskamux; } >/dev/null 2>&1 || need+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly)
    # The cluster tests (tests/cluster.rs): a throwaway PostgreSQL server (initdb, pg_ctl).
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
    # The container image test (tests/e2e/test_docker_image.py): a Docker engine with
    # BuildKit (Debian's docker.io) and debootstrap for its Debian base image.
    have_cmd dockerd || need+=(docker.io)
    have_cmd debootstrap || need+=(debootstrap)
    # The systemd unit's checks (tests/e2e/test_packaging.py): systemd-analyze.
    have_cmd systemd-analyze || need+=(systemd)
    # The console's browser tests (tests/browser): headless Chromium driven from Node.
    [ -x /usr/bin/chromium ] || need+=(chromium)
    if ! have_cmd node || ! have_cmd npm; then
        # NodeSource's nodejs (where that repository is set up) bundles npm and
        # conflicts with Debian's npm package.
        if apt-cache show nodejs 2>/dev/null | grep -q '^Provides:.*\bnpm\b'; then
            need+=(nodejs)
        else
            need+=(nodejs npm)
        fi
    fi
fi

if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! have_cmd apt-get; then
        echo "missing system packages: ${need[*]} (install them with your package manager)" >&2
        exit 1
    fi
    echo "installing: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

if ! have_cmd cargo; then
    echo "Rust (cargo) is required: install it with rustup (https://rustup.rs) and re-run." >&2
    exit 1
fi

"""Camera ingest over RTP: ffmpeg and GStreamer push RTP to a UDP port configured as a
feed (`freshet video ingest add`); the result is read back with GetMedia and HLS and
decoded with ffmpeg (frame counts, 40 ms timestamps). Loss and reordering are injected
by a UDP relay; garbage datagrams and bad configurations get clear errors."""
import json
import os
import random
import re
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import free_port, freshet_bin, unique_name, wait_for

pytestmark = pytest.mark.freshet_only


def freshet(endpoint, *args, check=True, timeout=60):
    p = subprocess.run([str(freshet_bin()), *args, "--endpoint", endpoint],
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"freshet {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p


def udp_port_pair() -> int:
    """An even port whose successor is free too (RTP, RTCP)."""
    for _ in range(50):
        p = free_port() & ~1
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no free UDP port pair")


VIDEO = {
    "h264": ["-c:v", "libx264", "-g", "25", "-bf", "0", "-tune", "zerolatency"],
    "hevc": ["-c:v", "libx265", "-x265-params", "keyint=25:min-keyint=25:bframes=0:log-level=error"],
}


def ffmpeg_rtp(codec, port, sdp_path, seconds=6, audio_port=None):
    """Writes the SDP (without sending) or sends `seconds` of test pattern at real time."""
    cmd = ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}"]
    if audio_port:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    cmd += ["-map", "0:v", *VIDEO[codec], "-f", "rtp", f"rtp://127.0.0.1:{port}"]
    if audio_port:
        cmd += ["-map", "1:a", "-c:a", "aac", "-b:a", "64k", "-f", "rtp", f"rtp://127.0.0.1:{audio_port}"]
    cmd += ["-sdp_file", str(sdp_path)]
    return cmd


def feed_status(endpoint, stream):
    return requests.get(f"{endpoint}/v1/video/feeds/{stream}", timeout=10).json()


def wait_state(endpoint, stream, state, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = feed_status(endpoint, stream)
        if st.get("Status", {}).get("State") == state:
            return st
        time.sleep(0.1)
    raise AssertionError(f"feed {stream} never reached {state}: {feed_status(endpoint, stream)}")


def stop_feed(endpoint, stream):
    """Removing the feed stores its last fragment."""
    freshet(endpoint, "video", "ingest", "remove", "--stream", stream)


def get_media(endpoint, stream, tmp_path):
    out = tmp_path / f"{stream}.mkv"
    with open(out, "wb") as f:
        subprocess.run([str(freshet_bin()), "video", "get", "--stream", stream, "--seconds", "2",
                        "--endpoint", endpoint], stdout=f, check=True, timeout=60)
    return out


def probe_frames(path) -> dict:
    p = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                        "stream=codec_name,nb_read_frames,width,height", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return {s["codec_name"]: s for s in json.loads(p.stdout)["streams"]}


def decodes_cleanly(path):
    p = subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(path), "-map", "0", "-f", "null", "-"],
                       capture_output=True, text=True, timeout=120)
    errors = [l for l in p.stderr.splitlines() if "unknown-length element" not in l]
    assert p.returncode == 0 and not errors, p.stderr


def video_steps(path) -> set:
    p = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                        "packet=pts_time", "-of", "csv=p=0", str(path)],
                       capture_output=True, text=True, timeout=60)
    pts = sorted(float(x.split(",")[0]) for x in p.stdout.split() if x.split(",")[0])
    return {round(b - a, 3) for a, b in zip(pts, pts[1:])}


def hls_on_demand(endpoint, stream):
    now = time.time()
    r = requests.post(f"{endpoint}/getHLSStreamingSessionURL", timeout=10, json={
        "StreamName": stream, "PlaybackMode": "ON_DEMAND",
        "HLSFragmentSelector": {"FragmentSelectorType": "SERVER_TIMESTAMP",
                                "TimestampRange": {"StartTimestamp": now - 600, "EndTimestamp": now + 60}}})
    assert r.status_code == 200, r.text
    return r.json()["HLSStreamingSessionURL"]


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_ffmpeg_rtp_with_sdp(endpoint, codec, tmp_path):
    stream = unique_name(f"rtp-{codec}")
    port = udp_port_pair()
    sdp = tmp_path / "feed.sdp"
    # ffmpeg writes the SDP before it sends anything: make it with a zero-length run.
    subprocess.run(ffmpeg_rtp(codec, port, sdp, seconds=0.04), check=True, timeout=60)
    freshet(endpoint, "video", "ingest", "add", "--stream", stream, "--rtp-port", str(port), "--sdp", str(sdp))
    wait_state(endpoint, stream, "CONNECTING")
    subprocess.run(ffmpeg_rtp(codec, port, tmp_path / "again.sdp"), check=True, timeout=60)
    wait_state(endpoint, stream, "RECEIVING")
    stop_feed(endpoint, stream)
    mkv = get_media(endpoint, stream, tmp_path)
    streams = probe_frames(mkv)
    assert int(streams[codec]["nb_read_frames"]) == 150
    assert (streams[codec]["width"], streams[codec]["height"]) == (320, 240)
    decodes_cleanly(mkv)
    assert video_steps(mkv) == {0.04}
    url = hls_on_demand(endpoint, stream)
    assert int(probe_frames(url)[codec]["nb_read_frames"]) == 150
    decodes_cleanly(url)


def test_ffmpeg_rtp_video_and_aac_audio(endpoint, tmp_path):
    stream = unique_name("rtp-av")
    port, audio = udp_port_pair(), udp_port_pair()
    sdp = tmp_path / "av.sdp"
    subprocess.run(ffmpeg_rtp("h264", port, sdp, seconds=0.04, audio_port=audio), check=True, timeout=60)
    assert "MPEG4-GENERIC" in sdp.read_text()
    freshet(endpoint, "video", "ingest", "add", "--stream", stream, "--rtp-port", str(port), "--sdp", str(sdp))
    wait_state(endpoint, stream, "CONNECTING")
    subprocess.run(ffmpeg_rtp("h264", port, tmp_path / "again.sdp", audio_port=audio), check=True, timeout=60)
    stop_feed(endpoint, stream)
    url = hls_on_demand(endpoint, stream)
    streams = probe_frames(url)
    assert int(streams["h264"]["nb_read_frames"]) == 150
    # 6 s of 48 kHz AAC is 281 frames; those before the first video key frame are not
    # stored (a fragment starts with a key frame).
    assert 250 <= int(streams["aac"]["nb_read_frames"]) <= 282
    decodes_cleanly(url)


def test_gstreamer_rtp_without_sdp(endpoint, tmp_path):
    stream = unique_name("rtp-gst")
    port = udp_port_pair()
    freshet(endpoint, "video", "ingest", "add", "--stream", stream, "--rtp-port", str(port),
            "--codec", "H264", "--payload-type", "96")
    wait_state(endpoint, stream, "CONNECTING")
    subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=150", "is-live=true", "!",
                    "video/x-raw,width=320,height=240,framerate=25/1", "!",
                    "x264enc", "key-int-max=25", "tune=zerolatency", "bframes=0", "!",
                    "rtph264pay", "config-interval=-1", "pt=96", "!",
                    "udpsink", "host=127.0.0.1", f"port={port}"], check=True, timeout=60)
    stop_feed(endpoint, stream)
    mkv = get_media(endpoint, stream, tmp_path)
    assert int(probe_frames(mkv)["h264"]["nb_read_frames"]) == 150
    decodes_cleanly(mkv)
    assert video_steps(mkv) == {0.04}
    url = hls_on_demand(endpoint, stream)
    assert int(probe_frames(url)["h264"]["nb_read_frames"]) == 150
    decodes_cleanly(url)


def test_feeds_from_the_config_file(start_server, tmp_path):
    port = udp_port_pair()
    config = tmp_path / "freshet.toml"
    config.write_text(f'''
[[feeds]]
stream = "from-config"
rtp_port = {port}
codec = "H264"
payload_type = 97
fragment_ms = 4000

[[feeds]]
stream = "door"
rtsp_url = "rtsp://viewer:door-secret@127.0.0.1:9/cam"
''')
    server = start_server(state_delay_ms=0, extra_args=["--config", str(config)])
    feeds = {f["StreamName"]: f for f in requests.get(f"{server.endpoint}/v1/video/feeds", timeout=10).json()["Feeds"]}
    assert feeds["from-config"]["Source"] == {"Type": "RTP_UDP", "Port": port, "Codec": "H264", "PayloadType": 97}
    assert feeds["from-config"]["FragmentMs"] == 4000
    assert feeds["door"]["Source"]["Url"] == "rtsp://viewer:***@127.0.0.1:9/cam"
    assert "door-secret" not in server.log_text()
    # A bad feed in the file stops the server from starting, with a message naming it.
    config.write_text('[[feeds]]\nstream = "bad"\nrtp_port = 5000\n')
    p = subprocess.run([str(freshet_bin()), "serve", "--listen", f"127.0.0.1:{free_port()}",
                        "--data-dir", str(tmp_path / "d2"), "--config", str(config)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "bad" in p.stderr and "Codec" in p.stderr


class LossyRelay:
    """Forwards UDP datagrams from `listen` to `target`, dropping and swapping some."""

    def __init__(self, listen: int, target: int, drop_every: int, swap_every: int, seed: int = 7):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", listen))
        self.sock.settimeout(0.5)
        self.target = ("127.0.0.1", target)
        self.drop_every, self.swap_every = drop_every, swap_every
        self.rng = random.Random(seed)
        self.forwarded = self.dropped = self.swapped = 0
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        held = None
        n = 0
        while self.running:
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            n += 1
            if n % self.drop_every == 0:
                self.dropped += 1
                continue
            if held is None and n % self.swap_every == 0:
                held = data
                continue
            self.sock.sendto(data, self.target)
            self.forwarded += 1
            if held is not None:
                self.sock.sendto(held, self.target)
                held = None
                self.swapped += 1

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


def test_loss_and_reordering_never_store_a_broken_fragment(endpoint, tmp_path):
    stream = unique_name("rtp-loss")
    port = udp_port_pair()
    relay_port = udp_port_pair()
    sdp = tmp_path / "feed.sdp"
    subprocess.run(ffmpeg_rtp("h264", relay_port, sdp, seconds=0.04), check=True, timeout=60)
    freshet(endpoint, "video", "ingest", "add", "--stream", stream, "--rtp-port", str(port), "--sdp", str(sdp))
    wait_state(endpoint, stream, "CONNECTING")
    relay = LossyRelay(relay_port, port, drop_every=97, swap_every=13)
    try:
        subprocess.run(ffmpeg_rtp("h264", relay_port, tmp_path / "again.sdp", seconds=8), check=True, timeout=60)
        time.sleep(0.5)
    finally:
        relay.close()
    assert relay.dropped > 0 and relay.swapped > 0
    st = feed_status(endpoint, stream)["Status"]
    assert st["PacketsLost"] >= relay.dropped // 2, st
    assert st["Discontinuities"] > 0
    stop_feed(endpoint, stream)
    mkv = get_media(endpoint, stream, tmp_path)
    frames = int(probe_frames(mkv)["h264"]["nb_read_frames"])
    # Some frames are gone (each loss costs the rest of its GOP), the rest decodes
    # without a single error: no broken frame was stored.
    assert 25 <= frames < 200, frames
    decodes_cleanly(mkv)
    # Every stored fragment starts with a key frame.
    listed = requests.post(f"{endpoint}/listFragments", json={"StreamName": stream}, timeout=10).json()
    assert listed["Fragments"]


def test_garbage_datagrams_and_bad_configurations(endpoint, tmp_path):
    stream = unique_name("rtp-junk")
    port = udp_port_pair()
    r = requests.put(f"{endpoint}/v1/video/feeds/{stream}", timeout=10,
                     json={"RtpPort": port, "Sdp": "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"})
    assert (r.status_code, r.json()["error"]) == (400, "InvalidArgumentException")
    assert "H.264" in r.json()["message"]
    r = requests.put(f"{endpoint}/v1/video/feeds/{stream}", timeout=10, json={"RtpPort": port})
    assert r.status_code == 400
    r = requests.put(f"{endpoint}/v1/video/feeds/{stream}", timeout=10, json={"RtspUrl": "http://x/"})
    assert r.status_code == 400
    r = requests.put(f"{endpoint}/v1/video/feeds/{stream}", timeout=10, data=b"{not json")
    assert (r.status_code, r.json()["error"]) == (400, "SerializationException")
    freshet(endpoint, "video", "ingest", "add", "--stream", stream, "--rtp-port", str(port), "--codec", "H264")
    other = unique_name("rtp-clash")
    r = requests.put(f"{endpoint}/v1/video/feeds/{other}", timeout=10, json={"RtpPort": port, "Codec": "H264"})
    assert r.status_code == 409
    wait_state(endpoint, stream, "CONNECTING")
    rng = random.Random(3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(500):
            junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 1500)))
            if i % 3 == 0 and len(junk) > 12:
                junk = bytes([0x80, 96]) + junk[2:]  # looks like RTP with our payload type
            s.sendto(junk, ("127.0.0.1", port))
            s.sendto(junk, ("127.0.0.1", port + 1))
    time.sleep(1)
    assert requests.get(f"{endpoint}/health", timeout=5).status_code == 200
    st = feed_status(endpoint, stream)["Status"]
    assert st["Packets"] > 0 and st["FragmentsStored"] == 0
    stop_feed(endpoint, stream)
    r = requests.get(f"{endpoint}/v1/video/feeds/{stream}", timeout=10)
    assert (r.status_code, r.json()["error"]) == (404, "ResourceNotFoundException")


def test_feeds_survive_restart_and_hide_passwords(start_server):
    server = start_server(state_delay_ms=0)
    ep = server.endpoint
    port = udp_port_pair()
    freshet(ep, "video", "ingest", "add", "--stream", "kept", "--rtp-port", str(port), "--codec", "H265")
    freshet(ep, "video", "ingest", "add", "--stream", "cam", "--rtsp-url",
            "rtsp://admin:hunter2@127.0.0.1:9/live")
    server.stop()
    server.start()
    ep = server.endpoint  # a new port
    listed = freshet(ep, "video", "ingest", "list").stdout
    assert "kept" in listed and f"port {port}" in listed
    assert "rtsp://admin:***@127.0.0.1:9/live" in listed
    assert "hunter2" not in listed
    assert "hunter2" not in json.dumps(requests.get(f"{ep}/v1/video/feeds", timeout=10).json())
    assert "hunter2" not in server.log_text()


# --------------------------------------------------------------------------
# RTSP: publishers pushing to --rtsp-listen, and Freshet pulling from a camera
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rtsp_server():
    from conftest import FreshetServer
    rtsp_port = free_port()
    server = FreshetServer(state_delay_ms=0, extra_args=["--rtsp-listen", f"127.0.0.1:{rtsp_port}"]).start()
    server.rtsp = f"rtsp://127.0.0.1:{rtsp_port}"
    yield server
    server.cleanup()


def ffmpeg_rtsp(url, transport, seconds=6):
    return ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=sample_rate=48000:duration={seconds}",
            "-map", "0:v", *VIDEO["h264"], "-map", "1:a", "-c:a", "aac", "-b:a", "64k",
            "-f", "rtsp", "-rtsp_transport", transport, url]


def gst_rtsp(url, transport, frames=150):
    return ["gst-launch-1.0", "-q", "-e", "videotestsrc", f"num-buffers={frames}", "is-live=true", "!",
            "video/x-raw,width=320,height=240,framerate=25/1", "!",
            "x264enc", "key-int-max=25", "tune=zerolatency", "bframes=0", "!", "h264parse", "!",
            "rtspclientsink", f"location={url}", f"protocols={transport}"]


@pytest.mark.parametrize("client,transport", [("ffmpeg", "tcp"), ("ffmpeg", "udp"),
                                              ("gstreamer", "tcp"), ("gstreamer", "udp")])
def test_rtsp_publish(rtsp_server, client, transport, tmp_path):
    stream = unique_name(f"rtsp-{client}-{transport}")
    url = f"{rtsp_server.rtsp}/{stream}"
    cmd = ffmpeg_rtsp(url, transport) if client == "ffmpeg" else gst_rtsp(url, transport)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # rtspclientsink now and then never posts EOS on a loaded machine (it has sent
        # everything; see the frame count below): interrupt it like Ctrl-C, which makes
        # gst-launch -e send EOS and the sink TEARDOWN.
        proc.send_signal(__import__("signal").SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            # Still stuck inside the sink: the publisher goes away as a crashed camera
            # would; what it sent must be stored all the same.
            proc.kill()
            out, err = proc.communicate(timeout=10)
            time.sleep(0.5)
    assert proc.returncode in (0, -9), err
    ep = rtsp_server.endpoint
    mkv = get_media(ep, stream, tmp_path)
    streams = probe_frames(mkv)
    assert int(streams["h264"]["nb_read_frames"]) == 150
    if client == "ffmpeg":
        assert 250 <= int(streams["aac"]["nb_read_frames"]) <= 282
    decodes_cleanly(mkv)
    assert video_steps(mkv) == {0.04}
    url = hls_on_demand(ep, stream)
    assert int(probe_frames(url)["h264"]["nb_read_frames"]) == 150
    decodes_cleanly(url)


def rtsp_exchange(rtsp_url, *messages: bytes) -> list[bytes]:
    host, port = rtsp_url.split("://")[1].split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=10) as s:
        for m in messages:
            s.sendall(m)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            answers.append(data)
    return answers


def test_rtsp_bad_requests_get_rtsp_errors(rtsp_server):
    base = rtsp_server.rtsp
    good_sdp = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n")
    vp8_sdp = good_sdp.replace(b"H264", b"VP8")

    def announce(path, sdp, cseq=2):
        return (f"ANNOUNCE {base}/{path} RTSP/1.0\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(sdp)}\r\n\r\n").encode() + sdp

    opts, setup_first = rtsp_exchange(
        base, f"OPTIONS {base}/x RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode(),
        f"SETUP {base}/x/streamid=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;interleaved=0-1;mode=record\r\n\r\n".encode())
    assert opts.startswith(b"RTSP/1.0 200") and b"ANNOUNCE" in opts and b"CSeq: 1" in opts
    assert setup_first.startswith(b"RTSP/1.0 455")
    [vp8] = rtsp_exchange(base, announce(unique_name("vp8"), vp8_sdp))
    assert vp8.startswith(b"RTSP/1.0 415")
    [bad_name] = rtsp_exchange(base, announce("bad%20name", good_sdp))
    assert bad_name.startswith(b"RTSP/1.0 400")
    [garbage] = rtsp_exchange(base, b"\x00\xffNOT RTSP AT ALL\r\n\r\n")
    assert garbage.startswith(b"RTSP/1.0 400")
    [huge] = rtsp_exchange(base, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Pad: " + b"a" * 100_000 + b"\r\n\r\n")
    assert huge.startswith(b"RTSP/1.0 4")
    # A publisher that announces and sets up over TCP but asks for multicast is refused.
    ann, mc = rtsp_exchange(
        base, announce(unique_name("mc"), good_sdp),
        f"SETUP {base}/mc/streamid=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP;multicast;mode=record\r\n\r\n".encode())
    assert ann.startswith(b"RTSP/1.0 200")
    assert mc.startswith(b"RTSP/1.0 461") or mc.startswith(b"RTSP/1.0 404")
    assert requests.get(f"{rtsp_server.endpoint}/health", timeout=5).status_code == 200


def test_rtsp_publish_to_a_missing_stream_can_be_forbidden(start_server):
    rtsp_port = free_port()
    server = start_server(state_delay_ms=0, extra_args=["--rtsp-listen", f"127.0.0.1:{rtsp_port}",
                                                        "--ingest-no-auto-create"])
    p = subprocess.run(gst_rtsp(f"rtsp://127.0.0.1:{rtsp_port}/nobody-made-me", "tcp", frames=25),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "404" in p.stdout + p.stderr or "Not Found" in p.stdout + p.stderr
    r = requests.post(f"{server.endpoint}/describeStream", json={"StreamName": "nobody-made-me"}, timeout=10)
    assert r.status_code == 404


class Camera:
    """tests/e2e/tools/rtsp_camera.py: GStreamer's RTSP server as an IP camera."""

    def __init__(self, port, user=None, password=None, method="digest"):
        self.port, self.args = port, [str(port)] + ([user, password, method] if user else [])
        self.proc = None

    def start(self):
        script = __import__("pathlib").Path(__file__).parent / "tools" / "rtsp_camera.py"
        self.proc = subprocess.Popen(["/usr/bin/python3", str(script), *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", line + self.proc.stdout.read()
        return self

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def test_rtsp_pull_with_digest_auth_survives_the_camera_going_away(endpoint, tmp_path):
    stream = unique_name("pull")
    port = free_port()
    camera = Camera(port, "admin", "s3cret-pw").start()
    try:
        freshet(endpoint, "video", "ingest", "add", "--stream", stream,
                "--rtsp-url", f"rtsp://admin:s3cret-pw@127.0.0.1:{port}/live")
        status = lambda: feed_status(endpoint, stream)["Status"]  # noqa: E731
        wait_for(lambda: status()["FragmentsStored"] >= 2, 30, "two fragments from the camera")
        assert status()["State"] == "RECEIVING"
        camera.stop()
        st = wait_for(lambda: (s := status())["State"] == "RECONNECTING" and s, 20, "RECONNECTING")
        assert st["LastError"]
        stored_before = st["FragmentsStored"]
        camera.start()
        wait_for(lambda: status()["State"] == "RECEIVING" and status()["Connections"] == 2, 30,
                 "the feed to reconnect")
        wait_for(lambda: status()["FragmentsStored"] >= stored_before + 2, 30, "fragments after reconnecting")
    finally:
        camera.stop()
    stop_feed(endpoint, stream)
    mkv = get_media(endpoint, stream, tmp_path)
    frames = int(probe_frames(mkv)["h264"]["nb_read_frames"])
    assert frames >= 100
    decodes_cleanly(mkv)
    # Wrong credentials: a clear error, and the password is never shown.
    bad = unique_name("pull-bad")
    camera = Camera(port, "admin", "s3cret-pw").start()
    try:
        freshet(endpoint, "video", "ingest", "add", "--stream", bad,
                "--rtsp-url", f"rtsp://admin:wrong-pw@127.0.0.1:{port}/live")
        st = wait_for(lambda: (s := feed_status(endpoint, bad)["Status"]).get("LastError") and s, 20, "an error")
        assert "401" in st["LastError"]
        assert "wrong-pw" not in json.dumps(feed_status(endpoint, bad))
    finally:
        camera.stop()
        stop_feed(endpoint, bad)


def udp_sockets_of(pid: int) -> list[str]:
    """Local addresses (ip:port, hex as in /proc/net/udp) of a process's UDP sockets."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    found.append(cols[1])
    return found


def test_rtsp_setups_bind_few_sockets_and_only_on_the_listener_address(start_server):
    rtsp_port = free_port()
    server = start_server(state_delay_ms=0, extra_args=["--rtsp-listen", f"127.0.0.1:{rtsp_port}"])
    base = f"rtsp://127.0.0.1:{rtsp_port}"
    name = unique_name("setups")
    sdp = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n")
    before = len(udp_sockets_of(server.proc.pid))
    messages = [(f"ANNOUNCE {base}/{name} RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\n"
                 f"Content-Length: {len(sdp)}\r\n\r\n").encode() + sdp]
    # 300 SETUPs of the one media over UDP on one connection.
    messages += [(f"SETUP {base}/{name}/streamid=0 RTSP/1.0\r\nCSeq: {2 + i}\r\n"
                  f"Transport: RTP/AVP;unicast;client_port={20000 + 2 * i}-{20001 + 2 * i};mode=record\r\n\r\n").encode()
                 for i in range(300)]
    host, port = "127.0.0.1", rtsp_port
    with socket.create_connection((host, port), timeout=10) as s:
        answers = []
        for m in messages:
            s.sendall(m)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                assert chunk, f"closed after {len(answers)} answers"
                data += chunk
            answers.append(data)
        assert all(a.startswith(b"RTSP/1.0 200") for a in answers), {a[:20] for a in answers}
        # While the session is open: one RTP/RTCP pair, on the listener's address.
        sockets = udp_sockets_of(server.proc.pid)
    assert len(sockets) - before == 2, sockets
    # Bound on 127.0.0.1 (0100007F), as the RTSP listener is, not on 0.0.0.0.
    assert all(addr.startswith("0100007F:") for addr in sockets), sockets

"""Fragment durations agree everywhere and add up to the media: ListFragments'
FragmentLengthInMilliseconds, the HLS #EXTINF, the DASH MPD, GetClip's MP4 and the
GetMediaForFragmentList document all last as long as the pushed media (ffprobe of the
source: from the first video frame to the end of the last), within one frame. Checked
for the sample clips in media-samples/ (PutMedia bodies pushed with `freshet video
push`) and for live GStreamer producers: matroskamux piped into `freshet video push -`
(30 fps, so 33/34 ms frame steps, with and without a one-frame last fragment) and
rtspclientsink publishing over RTSP (fragments cut by the server's fragmenter)."""
import json
import re
import shlex
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config

from conftest import REGION, free_port, freshet_bin, unique_name, wait_for

pytestmark = pytest.mark.freshet_only

SAMPLES = Path(__file__).resolve().parents[2] / "media-samples"
CLIPS = ["h264-1s-gop.kvs.mkv", "h264-aac.kvs.mkv", "h265-2s-gop.kvs.mkv"]


def client(endpoint, service):
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return boto3.session.Session().client(
        service, endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="test", aws_secret_access_key="test", config=cfg)


def create_stream(endpoint, name):
    kv = client(endpoint, "kinesisvideo")
    kv.create_stream(StreamName=name, DataRetentionInHours=1)
    wait_for(lambda: kv.describe_stream(StreamName=name)["StreamInfo"]["Status"] == "ACTIVE",
             10, f"{name} to become ACTIVE")


# ---- the source: ffprobe ----------------------------------------------------------

def video_packets(path) -> list[dict]:
    p = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                        "packet=pts_time,duration_time,flags", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["packets"]


class Media:
    """What ffprobe says of a source: its length (first video frame to the end of the
    last) and its frame interval (the tolerance: one frame)."""

    def __init__(self, path):
        packets = video_packets(path)
        pts = sorted(float(p["pts_time"]) for p in packets)
        steps = sorted(b - a for a, b in zip(pts, pts[1:]))
        self.frames = len(pts)
        self.frame = steps[len(steps) // 2]
        last = max(packets, key=lambda p: float(p["pts_time"]))
        last_duration = float(last.get("duration_time") or 0) or self.frame
        self.duration = pts[-1] + last_duration - pts[0]
        self.keyframes = sum("K" in p["flags"] for p in packets)

    def assert_lasts(self, seconds, what):
        assert abs(seconds - self.duration) <= self.frame + 1e-6, (
            f"{what} lasts {seconds:.3f} s, the media {self.duration:.3f} s "
            f"(one frame: {self.frame:.3f} s)")


# ---- what the server says ---------------------------------------------------------

def list_fragments(archived, name) -> list[dict]:
    fragments = []
    for page in archived.get_paginator("list_fragments").paginate(StreamName=name):
        fragments += page["Fragments"]
    return sorted(fragments, key=lambda f: int(f["FragmentNumber"]))


def around_now():
    now = time.time()
    return {"StartTimestamp": now - 3600, "EndTimestamp": now + 60}


def hls_extinfs(archived, name) -> list[float]:
    url = archived.get_hls_streaming_session_url(
        StreamName=name, PlaybackMode="ON_DEMAND",
        HLSFragmentSelector={"FragmentSelectorType": "SERVER_TIMESTAMP",
                             "TimestampRange": around_now()})["HLSStreamingSessionURL"]
    media = requests.get(url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist"), timeout=10).text
    return [float(x) for x in re.findall(r"#EXTINF:([0-9.]+),", media)]


def dash_durations(archived, name) -> tuple[float, list[float]]:
    """The MPD's mediaPresentationDuration, and the video segment durations."""
    url = archived.get_dash_streaming_session_url(
        StreamName=name, PlaybackMode="ON_DEMAND",
        DASHFragmentSelector={"FragmentSelectorType": "SERVER_TIMESTAMP",
                              "TimestampRange": around_now()})["DASHStreamingSessionURL"]
    mpd = ET.fromstring(requests.get(url, timeout=10).content)
    ns = {"m": "urn:mpeg:dash:schema:mpd:2011"}
    total = re.fullmatch(r"PT([0-9.]+)S", mpd.get("mediaPresentationDuration"))
    video = [a for a in mpd.iterfind(".//m:AdaptationSet", ns) if a.get("contentType") == "video"]
    assert len(video) == 1
    segments = video[0].find(".//m:SegmentList", ns)
    scale = int(segments.get("timescale"))
    durations = [int(s.get("d")) / scale for s in segments.iterfind(".//m:S", ns)]
    return float(total.group(1)), durations


def probe_duration(path) -> float:
    p = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                        "-of", "json", str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return float(json.loads(p.stdout)["format"]["duration"])


def check_durations(endpoint, name, media: Media, fragment_count: int, tmp_path) -> list[int]:
    """Every read path lasts as long as `media`; returns the stored lengths (ms)."""
    archived = client(endpoint, "kinesis-video-archived-media")
    fragments = list_fragments(archived, name)
    assert len(fragments) == fragment_count, fragments
    lengths = [f["FragmentLengthInMilliseconds"] for f in fragments]
    assert all(length > 0 for length in lengths), lengths
    media.assert_lasts(sum(lengths) / 1000, f"ListFragments {lengths}")
    # Consecutive fragments tile: each lasts up to the next one's start.
    starts = [f["ProducerTimestamp"].timestamp() * 1000 for f in fragments]
    for length, start, following in zip(lengths, starts, starts[1:]):
        assert abs(start + length - following) <= 1, (lengths, starts)

    # Segments last what ListFragments says, or up to the next fragment's start (a live
    # producer's clock jitters by a millisecond).
    extinfs = hls_extinfs(archived, name)
    assert len(extinfs) == len(lengths)
    for extinf, length in zip(extinfs, lengths):
        assert abs(extinf * 1000 - length) <= 1, (extinfs, lengths)
    media.assert_lasts(sum(extinfs), f"HLS #EXTINF {extinfs}")

    total, segments = dash_durations(archived, name)
    assert total == pytest.approx(sum(extinfs), abs=1e-3)
    assert segments == pytest.approx(extinfs, abs=1e-3)
    media.assert_lasts(total, "DASH mediaPresentationDuration")

    clip = tmp_path / f"{name}.mp4"
    clip.write_bytes(archived.get_clip(StreamName=name, ClipFragmentSelector={
        "FragmentSelectorType": "SERVER_TIMESTAMP", "TimestampRange": around_now()})["Payload"].read())
    clip_duration = probe_duration(clip)
    media.assert_lasts(clip_duration, "GetClip MP4")
    assert clip_duration == pytest.approx(sum(lengths) / 1000, abs=0.002)

    doc = tmp_path / f"{name}.mkv"
    doc.write_bytes(archived.get_media_for_fragment_list(
        StreamName=name, Fragments=[f["FragmentNumber"] for f in fragments])["Payload"].read())
    got = Media(doc)
    assert got.frames == media.frames
    media.assert_lasts(got.duration, "GetMediaForFragmentList")
    return lengths


# ---- the sample clips -------------------------------------------------------------

@pytest.mark.parametrize("clip", CLIPS)
def test_sample_clip_durations_add_up_to_the_clip(endpoint, clip, tmp_path):
    media = Media(SAMPLES / clip)
    # The ffmpeg-made original of the PutMedia body says the same.
    assert media.duration == pytest.approx(probe_duration(SAMPLES / clip.replace(".kvs", "")), abs=1e-3)
    name = unique_name("durations")
    p = subprocess.run([str(freshet_bin()), "video", "push", str(SAMPLES / clip), "--stream", name,
                        "--endpoint", endpoint], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lengths = check_durations(endpoint, name, media, media.keyframes, tmp_path)
    # 25 fps with a key frame every 1 s or 2 s: whole seconds, the last frame included.
    assert set(lengths) == {1000 * 150 // 25 // media.keyframes}, lengths


# ---- live GStreamer producers -----------------------------------------------------

def gst_h264(frames, fps, key_every):
    return (f"gst-launch-1.0 -q videotestsrc is-live=true num-buffers={frames} ! "
            f"video/x-raw,width=320,height=240,framerate={fps}/1 ! "
            f"x264enc key-int-max={key_every} bframes=0 tune=zerolatency ! h264parse ! "
            "video/x-h264,stream-format=avc")


@pytest.mark.parametrize("frames", [90, 91])
def test_gstreamer_live_push_durations_add_up(endpoint, frames, tmp_path):
    """30 fps with millisecond timecodes (33/34 ms steps), a key frame every 30 frames;
    91 frames end with a one-frame fragment (its length must be one frame, not 0)."""
    name = unique_name("gst-durations")
    create_stream(endpoint, name)
    source = tmp_path / "source.mkv"
    pipeline = (f"{gst_h264(frames, 30, 30)} ! matroskamux streamable=true ! fdsink | "
                f"tee {shlex.quote(str(source))} | {shlex.quote(str(freshet_bin()))} video push - "
                f"--stream {name} --endpoint {endpoint}")
    p = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    media = Media(source)
    assert media.frames == frames
    assert p.stdout.count('"PERSISTED"') == media.keyframes, p.stdout
    lengths = check_durations(endpoint, name, media, media.keyframes, tmp_path)
    if frames == 91:
        assert lengths[-1] == round(media.frame * 1000), lengths


def test_rtsp_publish_durations_add_up(start_server, tmp_path):
    """6 s at 25 fps with a key frame every second (encoded by GStreamer to a file, the
    reference), published in real time over RTSP by ffmpeg: the server cuts 2 s
    fragments at key frames."""
    rtsp_port = free_port()
    server = start_server(state_delay_ms=0, extra_args=["--rtsp-listen", f"127.0.0.1:{rtsp_port}"])
    name = unique_name("rtsp-durations")
    source = tmp_path / "source.mkv"
    encode = (f"gst-launch-1.0 -q -e videotestsrc num-buffers=150 ! "
              "video/x-raw,format=I420,width=320,height=240,framerate=25/1 ! "
              "x264enc key-int-max=25 bframes=0 tune=zerolatency ! "
              "video/x-h264,profile=constrained-baseline ! h264parse ! "
              f"matroskamux ! filesink location={shlex.quote(str(source))}")
    p = subprocess.run(shlex.split(encode), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # ffmpeg publishes reliably (rtspclientsink now and then never posts EOS on a
    # loaded machine, see test_video_ingest.py).
    publish = ["ffmpeg", "-v", "error", "-re", "-i", str(source), "-c", "copy", "-f", "rtsp",
               "-rtsp_transport", "tcp", f"rtsp://127.0.0.1:{rtsp_port}/{name}"]
    p = subprocess.run(publish, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    media = Media(source)
    assert media.frames == 150
    # Fragments start at the first key frame 2 s or more after the previous start.
    keys = sorted(float(p["pts_time"]) for p in video_packets(source) if "K" in p["flags"])
    starts = [keys[0]]
    for k in keys[1:]:
        if k - starts[-1] >= 2.0 - 1e-6:
            starts.append(k)
    archived = client(server.endpoint, "kinesis-video-archived-media")
    wait_for(lambda: len(list_fragments(archived, name)) == len(starts), 20,
             f"{len(starts)} fragments of {name}")
    lengths = check_durations(server.endpoint, name, media, len(starts), tmp_path)
    # Up to the key frame that started the next fragment.
    for length, a, b in zip(lengths, starts, starts[1:]):
        assert abs(length - (b - a) * 1000) <= 1, (lengths, starts)

"""Playback by timestamp (archived-media API) with boto3's kinesis-video-archived-media
client: HLS (fragmented MP4 and MPEG-TS), DASH and GetClip of the clips in
media-samples/, checked by decoding with ffprobe/ffmpeg (frame counts, durations,
timestamps), LIVE playlists that grow while a producer pushes, and the documented errors."""
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, freshet_bin, unique_name

pytestmark = pytest.mark.freshet_only

SAMPLES = Path(__file__).resolve().parents[2] / "media-samples"
CLIPS = {
    # clip: (fragments, {codec: frames})
    "h264-1s-gop.kvs.mkv": (6, {"h264": 150}),
    "h264-aac.kvs.mkv": (6, {"h264": 150, "aac": 281}),
    "h265-2s-gop.kvs.mkv": (3, {"hevc": 150}),
}


def client(endpoint, service):
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return boto3.session.Session().client(
        service, endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="test", aws_secret_access_key="test", config=cfg)


@pytest.fixture(scope="module")
def kv(endpoint):
    return client(endpoint, "kinesisvideo")


@pytest.fixture(scope="module")
def archived(endpoint, kv):
    # Clients find the data endpoint as the SDKs do.
    data = kv.get_data_endpoint(StreamName=pushed_stream(endpoint, "h264-1s-gop.kvs.mkv"),
                                APIName="GET_HLS_STREAMING_SESSION_URL")["DataEndpoint"]
    return client(data, "kinesis-video-archived-media")


_pushed: dict = {}


def push(endpoint, clip, name, *extra):
    p = subprocess.run([str(freshet_bin()), "video", "push", str(SAMPLES / clip), "--stream", name,
                        "--endpoint", endpoint, *extra], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def pushed_stream(endpoint, clip) -> str:
    """A stream holding exactly one push of `clip` (made once per module)."""
    if clip not in _pushed:
        name = unique_name("play")
        acks = push(endpoint, clip, name)
        assert sum(a["EventType"] == "PERSISTED" for a in acks) == CLIPS[clip][0]
        _pushed[clip] = name
    return _pushed[clip]


def around_now():
    now = time.time()
    return {"StartTimestamp": now - 3600, "EndTimestamp": now + 60}


def probe(url_or_path, *entries):
    p = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                        ",".join(entries), "-of", "json", str(url_or_path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def frames_by_codec(url_or_path) -> dict:
    info = probe(url_or_path, "stream=codec_name,nb_read_frames")
    return {s["codec_name"]: int(s["nb_read_frames"]) for s in info["streams"]}


def decodes_cleanly(url_or_path):
    p = subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(url_or_path), "-map", "0",
                        "-f", "null", "-"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr


def video_pts(url_or_path) -> list[float]:
    p = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                        "packet=pts_time", "-of", "csv=p=0", str(url_or_path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    # (some demuxers append an empty side-data column: "0.000000,")
    return sorted(float(x.split(",")[0]) for x in p.stdout.split() if x.split(",")[0])


def assert_timeline(pts: list[float]):
    """150 frames, 40 ms apart, 5.96 s from first to last: as pushed."""
    assert len(pts) == 150
    steps = {round(b - a, 3) for a, b in zip(pts, pts[1:])}
    assert steps == {0.04}, steps
    assert abs((pts[-1] - pts[0]) - 5.96) < 0.002


@pytest.mark.parametrize("container", ["FRAGMENTED_MP4", "MPEG_TS"])
@pytest.mark.parametrize("clip", list(CLIPS))
def test_hls_on_demand_decodes_with_every_frame(endpoint, archived, clip, container):
    name = pushed_stream(endpoint, clip)
    url = archived.get_hls_streaming_session_url(
        StreamName=name, PlaybackMode="ON_DEMAND", ContainerFormat=container,
        HLSFragmentSelector={"FragmentSelectorType": "SERVER_TIMESTAMP",
                             "TimestampRange": around_now()})["HLSStreamingSessionURL"]
    master = requests.get(url, timeout=10)
    assert master.status_code == 200
    assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert master.text.startswith("#EXTM3U")
    media_url = url.rsplit("/", 1)[0] + "/" + master.text.strip().splitlines()[-1]
    media = requests.get(media_url, timeout=10).text
    assert media.count("#EXTINF") == CLIPS[clip][0]
    assert "#EXT-X-ENDLIST" in media and "#EXT-X-PLAYLIST-TYPE:VOD" in media
    assert ("#EXT-X-MAP" in media) == (container == "FRAGMENTED_MP4")
    assert frames_by_codec(url) == CLIPS[clip][1]
    decodes_cleanly(url)
    assert_timeline(video_pts(url))


@pytest.mark.parametrize("clip", list(CLIPS))
def test_dash_on_demand_decodes_with_every_frame(endpoint, archived, clip):
    name = pushed_stream(endpoint, clip)
    url = archived.get_dash_streaming_session_url(
        StreamName=name, PlaybackMode="ON_DEMAND",
        DASHFragmentSelector={"FragmentSelectorType": "SERVER_TIMESTAMP",
                              "TimestampRange": around_now()})["DASHStreamingSessionURL"]
    mpd = requests.get(url, timeout=10)
    assert mpd.headers["content-type"] == "application/dash+xml"
    assert 'type="static"' in mpd.text
    assert mpd.text.count("<AdaptationSet") == len(CLIPS[clip][1])
    assert frames_by_codec(url) == CLIPS[clip][1]
    decodes_cleanly(url)
    assert_timeline(video_pts(url))


@pytest.mark.parametrize("clip", list(CLIPS))
def test_get_clip_is_one_faststart_mp4(endpoint, archived, clip, tmp_path):
    name = pushed_stream(endpoint, clip)
    resp = archived.get_clip(StreamName=name, ClipFragmentSelector={
        "FragmentSelectorType": "SERVER_TIMESTAMP", "TimestampRange": around_now()})
    assert resp["ContentType"] == "video/mp4"
    data = resp["Payload"].read()
    out = tmp_path / "clip.mp4"
    out.write_bytes(data)
    assert data[4:8] == b"ftyp"
    assert 0 < data.find(b"moov") < data.find(b"mdat"), "moov must come first (faststart)"
    assert b"moof" not in data
    assert frames_by_codec(out) == CLIPS[clip][1]
    decodes_cleanly(out)
    pts = video_pts(out)
    assert_timeline(pts)
    assert pts[0] == 0.0
    duration = float(probe(out, "format=duration")["format"]["duration"])
    assert abs(duration - 6.0) < 0.05, duration


def test_clip_of_part_of_the_range_has_whole_fragments(endpoint, archived, tmp_path):
    """Producer timestamps of this clip are 0..5 s (pushed with ABSOLUTE timecodes from 0)."""
    name = pushed_stream(endpoint, "h264-1s-gop.kvs.mkv")
    resp = archived.get_clip(StreamName=name, ClipFragmentSelector={
        "FragmentSelectorType": "PRODUCER_TIMESTAMP",
        "TimestampRange": {"StartTimestamp": 1.0, "EndTimestamp": 3.5}})
    out = tmp_path / "part.mp4"
    out.write_bytes(resp["Payload"].read())
    # Fragments starting at 1, 2 and 3 s: 75 frames.
    assert frames_by_codec(out) == {"h264": 75}
    decodes_cleanly(out)


def test_live_playlist_grows_while_a_producer_pushes(endpoint, kv, archived, tmp_path):
    name = unique_name("live")
    kv.create_stream(StreamName=name, DataRetentionInHours=1)
    for _ in range(100):
        if kv.describe_stream(StreamName=name)["StreamInfo"]["Status"] == "ACTIVE":
            break
        time.sleep(0.05)
    # Nothing pushed yet: LIVE has nothing to play.
    with pytest.raises(ClientError) as e:
        archived.get_hls_streaming_session_url(StreamName=name, PlaybackMode="LIVE")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"

    producer = threading.Thread(target=push, args=(endpoint, "h264-1s-gop.kvs.mkv", name, "--realtime"))
    producer.start()
    try:
        url = None
        deadline = time.monotonic() + 10
        while url is None and time.monotonic() < deadline:
            try:
                url = archived.get_hls_streaming_session_url(
                    StreamName=name, PlaybackMode="LIVE")["HLSStreamingSessionURL"]
            except ClientError:
                time.sleep(0.1)
        assert url, "no LIVE session while the producer pushes"
        media_url = url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist")
        seen = []
        while producer.is_alive():
            text = requests.get(media_url, timeout=5).text
            assert "#EXT-X-ENDLIST" not in text
            seen.append(re.findall(r"FragmentNumber=(\d+)", text)[-1])
            time.sleep(0.3)
        producer.join()
        text = requests.get(media_url, timeout=5).text
        seen.append(re.findall(r"FragmentNumber=(\d+)", text)[-1])
        newest = sorted(set(seen), key=int)
        assert len(newest) >= 4, f"the playlist's newest fragment changed only {len(newest)} times"
        assert text.count("#EXTINF") == 5  # the default MaxMediaPlaylistFragmentResults
        # The live window decodes: its init segment and fragments, fetched as a player
        # does (ffmpeg itself would keep reloading a live playlist without end).
        base = media_url.rsplit("/", 1)[0] + "/"
        init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text).group(1)
        parts = [init] + [l for l in text.splitlines() if l and not l.startswith("#")]
        window = tmp_path / "live.mp4"
        window.write_bytes(b"".join(requests.get(base + p, timeout=10).content for p in parts))
        assert frames_by_codec(window) == {"h264": 125}
        decodes_cleanly(window)
    finally:
        producer.join()


def error_code(fn, **kw):
    with pytest.raises(ClientError) as e:
        fn(**kw)
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_documented_errors(endpoint, kv, archived, tmp_path):
    name = pushed_stream(endpoint, "h264-1s-gop.kvs.mkv")
    hls = archived.get_hls_streaming_session_url
    assert error_code(hls, StreamName="no-such-stream") == ("ResourceNotFoundException", 404)
    assert error_code(hls, StreamName=name, PlaybackMode="ON_DEMAND")[0] == "InvalidArgumentException"
    assert error_code(hls, StreamName=name, PlaybackMode="LIVE", HLSFragmentSelector={
        "FragmentSelectorType": "SERVER_TIMESTAMP",
        "TimestampRange": around_now()})[0] == "InvalidArgumentException"
    assert error_code(hls, StreamName=name, PlaybackMode="ON_DEMAND", HLSFragmentSelector={
        "FragmentSelectorType": "SERVER_TIMESTAMP",
        "TimestampRange": {"StartTimestamp": 1000, "EndTimestamp": 2000}}) == ("ResourceNotFoundException", 404)
    # boto3 checks Expires' range itself; send it raw to see the server's answer.
    r = requests.post(f"{endpoint}/getHLSStreamingSessionURL", timeout=10,
                      json={"StreamName": name, "Expires": 10})
    assert (r.status_code, r.headers["x-amzn-ErrorType"]) == (400, "InvalidArgumentException")
    clip = archived.get_clip
    assert error_code(clip, StreamName=name, ClipFragmentSelector={
        "FragmentSelectorType": "SERVER_TIMESTAMP",
        "TimestampRange": {"StartTimestamp": 1000, "EndTimestamp": 2000}}) == ("ResourceNotFoundException", 404)

    # Forged and foreign tokens.
    url = hls(StreamName=name, PlaybackMode="ON_DEMAND", HLSFragmentSelector={
        "FragmentSelectorType": "SERVER_TIMESTAMP", "TimestampRange": around_now()})["HLSStreamingSessionURL"]
    body, mac = url.split("SessionToken=")[1].split(".")
    for bad in [body + "." + mac[::-1], body[:-4] + "AAAA." + mac, "garbage", ""]:
        r = requests.get(url.split("SessionToken=")[0] + "SessionToken=" + bad, timeout=10)
        assert (r.status_code, r.headers["x-amzn-ErrorType"]) == (401, "NotAuthorizedException"), bad
    r = requests.get(url.replace("getHLSMasterPlaylist.m3u8", "getTSFragment.ts") + "&FragmentNumber=1", timeout=10)
    assert r.headers["x-amzn-ErrorType"] == "InvalidArgumentException"

    # A stream that keeps nothing.
    none = unique_name("nodata")
    kv.create_stream(StreamName=none, DataRetentionInHours=0)
    time.sleep(0.3)
    assert error_code(hls, StreamName=none, PlaybackMode="LIVE")[0] == "NoDataRetentionException"
    assert error_code(clip, StreamName=none, ClipFragmentSelector={
        "FragmentSelectorType": "SERVER_TIMESTAMP",
        "TimestampRange": around_now()})[0] == "NoDataRetentionException"

    # A codec HLS cannot carry (Motion JPEG in Matroska).
    mjpeg = tmp_path / "mjpeg.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=5:duration=2",
                    "-c:v", "mjpeg", "-cluster_time_limit", "1000", str(mjpeg)], check=True, timeout=60)
    odd = unique_name("mjpeg")
    subprocess.run([str(freshet_bin()), "video", "push", str(mjpeg), "--stream", odd, "--endpoint", endpoint],
                   check=True, capture_output=True, timeout=60)
    assert error_code(hls, StreamName=odd, PlaybackMode="ON_DEMAND", HLSFragmentSelector={
        "FragmentSelectorType": "SERVER_TIMESTAMP",
        "TimestampRange": around_now()})[0] == "UnsupportedStreamMediaTypeException"
    assert error_code(clip, StreamName=odd, ClipFragmentSelector={
        "FragmentSelectorType": "SERVER_TIMESTAMP",
        "TimestampRange": around_now()})[0] == "UnsupportedStreamMediaTypeException"


def ffmpeg_frame(clip: str, seconds: float, width: int, height: int) -> bytes:
    """The frame ffmpeg shows at `seconds` of a sample, as raw RGB at width x height."""
    p = subprocess.run(["ffmpeg", "-v", "error", "-i", str(SAMPLES / clip), "-ss", f"{seconds:.3f}",
                        "-frames:v", "1", "-s", f"{width}x{height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def decode_image(data: bytes, tmp_path, width: int, height: int) -> bytes:
    src = tmp_path / "image"
    src.write_bytes(data)
    p = subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout) == width * height * 3, "image is not the requested size"
    return p.stdout


def mean_abs_diff(a: bytes, b: bytes) -> float:
    assert len(a) == len(b)
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


@pytest.mark.parametrize("clip,fmt", [("h264-1s-gop.kvs.mkv", "PNG"), ("h265-2s-gop.kvs.mkv", "JPEG")])
def test_get_images_are_the_frames_at_the_sampled_times(endpoint, archived, clip, fmt, tmp_path):
    """The clips show the frame number and time; each image must be the frame ffmpeg
    shows at that time of the source clip (producer timestamps start at 0 s)."""
    name = pushed_stream(endpoint, clip)
    resp = archived.get_images(StreamName=name, ImageSelectorType="PRODUCER_TIMESTAMP",
                               StartTimestamp=0.52, EndTimestamp=5.6, SamplingInterval=1000,
                               Format=fmt, FormatConfig={"JPEGQuality": "90"},
                               WidthPixels=160, HeightPixels=120)
    images = resp["Images"]
    assert [round(i["TimeStamp"].timestamp(), 2) for i in images] == [0.52, 1.52, 2.52, 3.52, 4.52, 5.52]
    assert "NextToken" not in resp
    magic = b"\x89PNG" if fmt == "PNG" else b"\xff\xd8"
    for image in images:
        assert "Error" not in image, image
        data = image["ImageContent"]
        data = data if isinstance(data, bytes) else __import__("base64").b64decode(data)
        assert data.startswith(magic)
        t = image["TimeStamp"].timestamp()
        got = decode_image(data, tmp_path, 160, 120)
        same = mean_abs_diff(got, ffmpeg_frame(clip, t, 160, 120))
        # The frame before and after differ (moving pattern, frame counter).
        other = mean_abs_diff(got, ffmpeg_frame(clip, t + 0.2, 160, 120))
        assert same < 6, f"image at {t} differs from the source frame by {same:.1f}"
        assert other > same, (t, same, other)


def test_get_images_sizes_pages_and_gaps(endpoint, archived, tmp_path):
    name = pushed_stream(endpoint, "h264-aac.kvs.mkv")
    # Original size when no size is asked for; height alone keeps the aspect ratio.
    full = archived.get_images(StreamName=name, ImageSelectorType="PRODUCER_TIMESTAMP",
                               StartTimestamp=1, EndTimestamp=1, Format="PNG")["Images"]
    decode_image(__import__("base64").b64decode(full[0]["ImageContent"]), tmp_path, 320, 240)
    half = archived.get_images(StreamName=name, ImageSelectorType="PRODUCER_TIMESTAMP",
                               StartTimestamp=1, EndTimestamp=1, Format="PNG", HeightPixels=60)["Images"]
    img = decode_image(__import__("base64").b64decode(half[0]["ImageContent"]), tmp_path, 80, 60)
    # SMPTE bars: the second bar from the left (of seven) is yellow at the top.
    x, y = int(80 * 1.5 / 7), 10
    r, g, b = img[(y * 80 + x) * 3:(y * 80 + x) * 3 + 3]
    assert r > 150 and g > 150 and b < 60, (r, g, b)
    # Pages of two, 200 ms apart; times past the end of the media are NO_MEDIA.
    pages = list(archived.get_paginator("get_images").paginate(
        StreamName=name, ImageSelectorType="PRODUCER_TIMESTAMP", StartTimestamp=5.5,
        EndTimestamp=6.7, SamplingInterval=200, Format="JPEG", PaginationConfig={"PageSize": 2}))
    images = [i for p in pages for i in p["Images"]]
    assert len(pages) == 4 and len(images) == 7
    assert [("Error" in i) for i in images] == [False, False, False, True, True, True, True]
    assert {i.get("Error") for i in images[3:]} == {"NO_MEDIA"}


def test_get_images_errors(endpoint, kv, archived):
    name = pushed_stream(endpoint, "h264-1s-gop.kvs.mkv")
    images = archived.get_images
    base = dict(StreamName=name, ImageSelectorType="PRODUCER_TIMESTAMP", Format="JPEG")
    assert error_code(images, **base, StartTimestamp=0, EndTimestamp=301)[0] == "InvalidArgumentException"
    assert error_code(images, **base, StartTimestamp=0, EndTimestamp=5,
                      SamplingInterval=100)[0] == "InvalidArgumentException"
    assert error_code(images, **base, StartTimestamp=0, EndTimestamp=5,
                      WidthPixels=100)[0] == "InvalidArgumentException"
    assert error_code(images, **base, StartTimestamp=0, EndTimestamp=5,
                      FormatConfig={"JPEGQuality": "101"})[0] == "InvalidArgumentException"
    assert error_code(images, **{**base, "StreamName": "no-such"}, StartTimestamp=0,
                      EndTimestamp=5) == ("ResourceNotFoundException", 404)
    none = unique_name("noimg")
    kv.create_stream(StreamName=none, DataRetentionInHours=0)
    time.sleep(0.3)
    assert error_code(images, **{**base, "StreamName": none}, StartTimestamp=0,
                      EndTimestamp=5)[0] == "NoDataRetentionException"


def test_live_replay_window_starts_at_the_start_timestamp(endpoint, archived):
    """LIVE_REPLAY lists fragments from StartTimestamp up to a position that moves on in
    real time (plus a lookahead), the newest MaxMediaPlaylistFragmentResults of them."""
    name = pushed_stream(endpoint, "h264-1s-gop.kvs.mkv")  # producer times 0..5 s
    url = archived.get_hls_streaming_session_url(
        StreamName=name, PlaybackMode="LIVE_REPLAY", MaxMediaPlaylistFragmentResults=2,
        HLSFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                             "TimestampRange": {"StartTimestamp": 1.0}})["HLSStreamingSessionURL"]
    media = requests.get(url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist"), timeout=10).text
    numbers = re.findall(r"getMP4MediaFragment.mp4\?.*FragmentNumber=(\d+)", media)
    stored = [f["FragmentNumber"] for f in archived.list_fragments(StreamName=name)["Fragments"]]
    assert numbers == sorted(stored, key=int)[-2:]
    assert "#EXT-X-ENDLIST" not in media
    assert "#EXT-X-PLAYLIST-TYPE" not in media


def playlist_segments(text: str) -> list[tuple[int, bool, str]]:
    """(media sequence number, discontinuity before it, URI) of each segment."""
    seq = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
    out, disc = [], False
    for line in text.splitlines():
        if line == "#EXT-X-DISCONTINUITY":
            disc = True
        elif line and not line.startswith("#"):
            out.append((seq, disc, line))
            seq, disc = seq + 1, False
    return out


def discontinuity_sequence(text: str) -> int:
    m = re.search(r"#EXT-X-DISCONTINUITY-SEQUENCE:(\d+)", text)
    assert m, text
    return int(m.group(1))


def test_live_hls_and_dash_survive_a_producer_gap(endpoint, kv, archived, tmp_path):
    """A producer pushes, stops for longer than a fragment, and resumes on a new PutMedia
    connection. One LIVE session keeps working across the gap: the media sequence
    numbers carry on, the first fragment after the gap is marked EXT-X-DISCONTINUITY,
    EXT-X-DISCONTINUITY-SEQUENCE counts the marked fragments as they slide out of the
    window, the segments after the gap decode, and DASH starts a new Period."""
    name = unique_name("gap")
    # Producer times as a live camera's: the clip's six 1 s fragments, recorded over
    # the last 6 s.
    acks = push(endpoint, "h264-1s-gop.kvs.mkv", name, "--relative-start",
                f"{time.time() - 6:.3f}")
    assert sum(a["EventType"] == "PERSISTED" for a in acks) == 6
    hls = archived.get_hls_streaming_session_url(
        StreamName=name, PlaybackMode="LIVE", DiscontinuityMode="ON_DISCONTINUITY",
        MaxMediaPlaylistFragmentResults=8)["HLSStreamingSessionURL"]
    media_url = hls.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist")
    dash = archived.get_dash_streaming_session_url(
        StreamName=name, PlaybackMode="LIVE",
        MaxManifestFragmentResults=8)["DASHStreamingSessionURL"]
    before = requests.get(media_url, timeout=10)
    assert before.status_code == 200, before.text
    segs_before = playlist_segments(before.text)
    assert len(segs_before) == 6
    assert not any(d for _, d, _ in segs_before), before.text
    assert discontinuity_sequence(before.text) == 0
    mpd_before = requests.get(dash, timeout=10).text
    assert mpd_before.count("<Period ") == 1, mpd_before
    small_url = archived.get_hls_streaming_session_url(
        StreamName=name, PlaybackMode="LIVE", DiscontinuityMode="ON_DISCONTINUITY",
        MaxMediaPlaylistFragmentResults=3)["HLSStreamingSessionURL"].replace(
            "getHLSMasterPlaylist", "getHLSMediaPlaylist")
    assert discontinuity_sequence(requests.get(small_url, timeout=10).text) == 0

    # The gap: 3 s without fragments (more than 1.5 fragment durations of producer
    # time), then a new connection whose producer timestamps start from "now". During the gap
    # the session still answers with what it had.
    gap_until = time.time() + 3
    while time.time() < gap_until:
        during = requests.get(media_url, timeout=10)
        assert during.status_code == 200 and playlist_segments(during.text) == segs_before
        time.sleep(0.5)
    acks = push(endpoint, "h264-1s-gop.kvs.mkv", name, "--relative-start", f"{time.time():.3f}")
    assert sum(a["EventType"] == "PERSISTED" for a in acks) == 6

    after = requests.get(media_url, timeout=10)
    assert after.status_code == 200, after.text
    segs_after = playlist_segments(after.text)
    assert len(segs_after) == 8
    # Numbering carries on: the segments both playlists list keep their numbers.
    by_uri_before = {u: s for s, _, u in segs_before}
    common = [(s, u) for s, _, u in segs_after if u in by_uri_before]
    assert common and all(by_uri_before[u] == s for s, u in common), (before.text, after.text)
    numbers = [s for s, _, _ in segs_after]
    assert numbers == list(range(numbers[0], numbers[0] + 8))
    # One discontinuity, on the first fragment after the gap (the 7th of 12 pushed,
    # the 3rd of this window of the newest 8), with the same init segment (the same
    # stream header: one EXT-X-MAP).
    marked = [i for i, (_, d, _) in enumerate(segs_after) if d]
    assert marked == [2], after.text
    assert after.text.count("#EXT-X-MAP:") == 1
    assert discontinuity_sequence(after.text) == 0

    # The segments after the gap decode, fetched as a player does.
    base = media_url.rsplit("/", 1)[0] + "/"
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', after.text).group(1)
    resumed = tmp_path / "resumed.mp4"
    resumed.write_bytes(b"".join(requests.get(base + p, timeout=10).content
                                 for p in [init] + [u for _, _, u in segs_after[2:]]))
    assert frames_by_codec(resumed) == {"h264": 150}
    decodes_cleanly(resumed)

    # DASH: a new Period after the gap; the first keeps its id and start.
    mpd_after = requests.get(dash, timeout=10).text
    periods = re.findall(r'<Period id="([^"]+)" start="([^"]+)"', mpd_after)
    assert len(periods) == 2, mpd_after
    assert periods[0] == re.findall(r'<Period id="([^"]+)" start="([^"]+)"', mpd_before)[0]

    # A session of 3 begun before the gap, read after it: the marked fragment has slid
    # out of its window, so its discontinuity sequence counts it, and its numbering
    # carries on from where it was.
    small_text = requests.get(small_url, timeout=10).text
    small_after = playlist_segments(small_text)
    assert [s for s, _, _ in small_after] == [numbers[-3], numbers[-2], numbers[-1]]
    assert not any(d for _, d, _ in small_after), small_text
    assert discontinuity_sequence(small_text) == 1, small_text

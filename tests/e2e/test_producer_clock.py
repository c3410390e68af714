"""A producer clock that jumps, and fragments that overlap in producer time.

Three PutMedia connections (`freshet video push`, absolute Cluster timecodes) send:
- A: 10 one-second fragments starting at T (T = now - 2 h, whole seconds), then one
  more whose timecode went back to T: within one connection, as on AWS, that is ERROR
  4004 (timecode not increasing) and ends the connection, with A kept;
- a new connection after the producer clock went back 10 s: B, 5 fragments at T .. T+4
  s, exactly where A0 .. A4 started (overlapping them entirely), then C, 5 fragments
  after the clock jumped forward by 1 h: T+1 h .. T+1 h+4 s;
- a third connection: D, 3 fragments starting 500 ms into A7, A8 and A9 (partly
  overlapping them).

Each fragment is 25 frames 40 ms apart (one key frame, then delta frames of random
bytes) so that its duration is 1 s whatever the demuxer assumes about the last frame.

The documented rules (docs/video.md, "The time rules") are checked against what
ListFragments, GetMedia by producer time and the HLS playlist answer: every fragment is
kept and listed; producer-time listings are ordered by producer start, then by arrival
for equal starts; a TimestampRange selects by start (both ends inclusive); GetMedia
PRODUCER_TIMESTAMP starts at the earliest start at or after the asked time (ties: the
first to arrive) and then follows arrival order; playback takes the fragments
overlapping [start, end) in producer order.
"""
import json
import os
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config

from conftest import REGION, freshet_bin, unique_name

pytestmark = pytest.mark.freshet_only

SAMPLES = Path(__file__).resolve().parents[2] / "media-samples"
CLUSTER_ID = b"\x1f\x43\xb6\x75"
FRAMES = 25
FRAME_MS = 40


def sized(eid: bytes, payload: bytes) -> bytes:
    """An element with an 8-byte size."""
    return eid + b"\x01" + len(payload).to_bytes(7, "big") + payload


def cluster(start_ms: int) -> bytes:
    """One fragment: a Cluster at absolute timecode `start_ms` (timecode scale 1 ms) of
    FRAMES SimpleBlocks on track 1, the first a key frame (AVC NAL units of random
    bytes: well-formed frames, not decodable pictures)."""
    body = b"\xe7\x88" + start_ms.to_bytes(8, "big")
    for k in range(FRAMES):
        flags = b"\x80" if k == 0 else b"\x00"
        # One length-prefixed NAL unit: an IDR slice, then non-IDR slices.
        nal = (b"\x65" if k == 0 else b"\x41") + os.urandom(200)
        block = b"\x81" + (k * FRAME_MS).to_bytes(2, "big") + flags + len(nal).to_bytes(4, "big") + nal
        body += sized(b"\xa3", block)
    return sized(CLUSTER_ID, body)


def write_mkv(path: Path, starts: list[int]):
    sample = (SAMPLES / "h264-1s-gop.kvs.mkv").read_bytes()
    header = sample[:sample.index(CLUSTER_ID)]
    path.write_bytes(header + b"".join(cluster(s) for s in starts))


def client(endpoint, service):
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60)
    return boto3.session.Session().client(
        service, endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="test", aws_secret_access_key="test", config=cfg)


def ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def ms_of(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def list_all(archived, name, selector_type, start_ms, end_ms) -> list[dict]:
    """Every page of ListFragments for the range, in the order the pages give."""
    out, token = [], None
    while True:
        kw = {"NextToken": token} if token else {
            "FragmentSelector": {"FragmentSelectorType": selector_type,
                                 "TimestampRange": {"StartTimestamp": ts(start_ms),
                                                    "EndTimestamp": ts(end_ms)}}}
        # Small pages: the order must hold across page boundaries too.
        page = archived.list_fragments(StreamName=name, MaxResults=4, **kw)
        out += page["Fragments"]
        token = page.get("NextToken")
        if not token:
            return out


def fragment_numbers_in_media(payload: bytes) -> list[str]:
    """The AWS_KINESISVIDEO_FRAGMENT_NUMBER tag values of a GetMedia document, in order."""
    out = []
    marker = b"AWS_KINESISVIDEO_FRAGMENT_NUMBER"
    at = payload.find(marker)
    while at >= 0:
        # TagString (0x4487) follows the TagName: its id, an EBML size, the digits.
        s = payload.index(b"\x44\x87", at) + 2
        first = payload[s]
        n = 9 - first.bit_length()
        size = first & (0xFF >> n)
        for byte in payload[s + 1:s + n]:
            size = size << 8 | byte
        out.append(payload[s + n:s + n + size].decode())
        at = payload.find(marker, s)
    return out


@pytest.mark.timeout(240)
def test_producer_clock_jumps_and_overlaps_follow_the_documented_rules(start_server, tmp_path):
    server = start_server()
    t = (int(time.time()) - 7200) * 1000
    hour = 3600 * 1000
    groups = {
        "A": [t + 1000 * k for k in range(10)],
        "B": [t + 1000 * k for k in range(5)],
        "C": [t + hour + 1000 * k for k in range(5)],
        "D": [t + 7500 + 1000 * k for k in range(3)],
    }
    sent = [(g, k, s) for g in "ABCD" for k, s in enumerate(groups[g])]
    name = unique_name("clock")

    def push(starts: list[int], part: str) -> list[dict]:
        clip = tmp_path / f"clock-{part}.mkv"
        write_mkv(clip, starts)
        run = subprocess.run([str(freshet_bin()), "video", "push", str(clip), "--stream",
                              name, "--endpoint", server.endpoint], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "RUST_BACKTRACE": "0"})
        acks = [json.loads(l) for l in run.stdout.splitlines() if l.startswith("{")]
        return run.returncode, acks

    code, acks = push(groups["A"] + [t], "a")
    assert code != 0, "a timecode going back within one connection ends it"
    assert sum(a["EventType"] == "PERSISTED" for a in acks) == 10, acks
    assert acks[-1] == {"EventType": "ERROR", "ErrorId": 4004}, acks[-1]
    for part, starts in (("bc", groups["B"] + groups["C"]), ("d", groups["D"])):
        code, acks = push(starts, part)
        assert code == 0, acks
        assert sum(a["EventType"] == "PERSISTED" for a in acks) == len(starts), acks
        assert not [a for a in acks if a["EventType"] == "ERROR"], acks

    am = client(server.endpoint, "kinesis-video-archived-media")

    # Every fragment is kept; in arrival order by server time, each with its producer
    # timestamp exactly as sent and its 1 s duration.
    by_server = list_all(am, name, "SERVER_TIMESTAMP", t - hour, int(time.time() * 1000) + 60_000)
    assert len(by_server) == len(sent)
    numbers = [int(f["FragmentNumber"]) for f in by_server]
    assert numbers == sorted(numbers), "server-time order is arrival order"
    assert [ms_of(f["ProducerTimestamp"]) for f in by_server] == [s for _, _, s in sent]
    assert all(f["FragmentLengthInMilliseconds"] == FRAMES * FRAME_MS for f in by_server), \
        [f["FragmentLengthInMilliseconds"] for f in by_server]
    label = {f["FragmentNumber"]: f"{g}{k}" for f, (g, k, _) in zip(by_server, sent)}
    start_of = {f["FragmentNumber"]: ms_of(f["ProducerTimestamp"]) for f in by_server}
    arrival = {f["FragmentNumber"]: i for i, f in enumerate(by_server)}

    def producer_order(frags):
        return sorted(frags, key=lambda n: (start_of[n], arrival[n]))

    # By producer time: by start, then by arrival; all 23 across pages.
    whole = list_all(am, name, "PRODUCER_TIMESTAMP", t - hour, t + 2 * hour)
    got = [f["FragmentNumber"] for f in whole]
    assert got == producer_order(list(label)), " ".join(label[n] for n in got)
    assert [label[n] for n in got][:4] == ["A0", "B0", "A1", "B1"]
    assert [label[n] for n in got][-5:] == ["C0", "C1", "C2", "C3", "C4"]

    # A range selects by start, both ends inclusive: [T+1 s, T+8 s] holds A1..A8, B1..B4
    # and D0 (T+7.5 s), not D1 (T+8.5 s) nor A0/B0.
    window = [label[f["FragmentNumber"]] for f in
              list_all(am, name, "PRODUCER_TIMESTAMP", t + 1000, t + 8000)]
    assert window == ["A1", "B1", "A2", "B2", "A3", "B3", "A4", "B4", "A5", "A6", "A7",
                      "D0", "A8"], window

    # The clock jump leaves a gap: nothing starts between T+10 s and T+1 h.
    assert list_all(am, name, "PRODUCER_TIMESTAMP", t + 10_000, t + hour - 1) == []

    # GetMedia PRODUCER_TIMESTAMP at T+2 s starts at the earliest start at or after it
    # (A2 and B2 tie: A2 arrived first), then follows arrival order.
    endpoint_url = client(server.endpoint, "kinesisvideo").get_data_endpoint(
        StreamName=name, APIName="GET_MEDIA")["DataEndpoint"]
    # Read as the chunks arrive: the response follows the live edge and does not end
    # by itself, so read until the last stored fragment is in.
    response = requests.post(f"{endpoint_url}/getMedia", stream=True, timeout=60, json={
        "StreamName": name, "StartSelector": {"StartSelectorType": "PRODUCER_TIMESTAMP",
                                              "StartTimestamp": (t + 2000) / 1000}})
    assert response.status_code == 200, response.text
    body = b""
    deadline = time.monotonic() + 60
    last = by_server[-1]["FragmentNumber"]
    chunks = response.iter_content(chunk_size=None)
    while last not in fragment_numbers_in_media(body):
        assert time.monotonic() < deadline, "GetMedia did not reach the last fragment"
        body += next(chunks)
    response.close()
    sent_labels = [label[n] for n in fragment_numbers_in_media(body)]
    assert sent_labels == [f"{g}{k}" for g, k, _ in sent][2:], sent_labels

    # HLS ON_DEMAND by producer time over [T+1.5 s, T+3 s): the fragments overlapping
    # it (A1 and B1 still play at T+1.5 s; A3/B3 start at the end) in producer order.
    url = am.get_hls_streaming_session_url(
        StreamName=name, PlaybackMode="ON_DEMAND",
        HLSFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                             "TimestampRange": {"StartTimestamp": ts(t + 1500),
                                                "EndTimestamp": ts(t + 3000)}},
    )["HLSStreamingSessionURL"]
    playlist = requests.get(url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist"),
                            timeout=30)
    assert playlist.status_code == 200, playlist.text
    segments = re.findall(r"^[^#].*[?&]FragmentNumber=([0-9]+)", playlist.text, re.M)
    assert [label[n] for n in segments] == ["A1", "B1", "A2", "B2"], playlist.text
    extinfs = [float(x) for x in re.findall(r"#EXTINF:([0-9.]+),", playlist.text)]
    assert len(extinfs) == 4 and all(abs(x - 1.0) < 0.002 for x in extinfs), extinfs

    # After a restart (the index loaded, not rebuilt), the same answers.
    server.stop()
    server.start()  # on a new port
    am = client(server.endpoint, "kinesis-video-archived-media")
    again = list_all(am, name, "PRODUCER_TIMESTAMP", t - hour, t + 2 * hour)
    assert [f["FragmentNumber"] for f in again] == got
    health = requests.get(f"{server.endpoint}/health", timeout=10).json()
    assert health.get("fragment_index_rebuilds") == 0, health

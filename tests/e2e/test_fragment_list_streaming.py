"""GetMediaForFragmentList streams with bounded memory.

A stream of 32 fragments of 4 MiB each (a generated MKV: the stream header of a sample
clip, then one Cluster per second, each one key frame of random bytes) is pushed with
`freshet video push`. One GetMediaForFragmentList for all of them (128 MiB) is read
slowly over a raw socket while the server's resident memory is sampled: it must stay
well under the response size, and the bytes must be exactly those of the fragments
fetched one by one (boto3), in the order listed.
"""
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from conftest import REGION, freshet_bin, rss_kib, unique_name

pytestmark = pytest.mark.freshet_only

SAMPLES = Path(__file__).resolve().parents[2] / "media-samples"
FRAGMENTS = 32
FRAME_BYTES = 4 * 1024 * 1024
CLUSTER_ID = b"\x1f\x43\xb6\x75"


def sized(eid: bytes, payload: bytes) -> bytes:
    """An element with an 8-byte size."""
    return eid + b"\x01" + len(payload).to_bytes(7, "big") + payload


def big_fragment_mkv(path: Path):
    """The sample's header (EBML, Segment, Info, Tracks), then FRAGMENTS one-second
    Clusters of one FRAME_BYTES key frame each (timecode scale 1 ms)."""
    sample = (SAMPLES / "h264-1s-gop.kvs.mkv").read_bytes()
    header = sample[:sample.index(CLUSTER_ID)]
    with open(path, "wb") as out:
        out.write(header)
        for k in range(FRAGMENTS):
            timecode = b"\xe7\x88" + (1000 * k).to_bytes(8, "big")
            block = b"\x81\x00\x00\x80" + os.urandom(FRAME_BYTES)
            out.write(sized(CLUSTER_ID, timecode + sized(b"\xa3", block)))


def vint(buf: bytes, pos: int, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at `pos`: (value, next position)."""
    first = buf[pos]
    n = 8 - first.bit_length() + 1
    assert 1 <= n <= 8, f"bad vint at {pos}"
    value = first if keep_marker else first & (0xFF >> n)
    for b in buf[pos + 1:pos + n]:
        value = value << 8 | b
    return value, pos + n


SEGMENT = 0x18538067
TAGS = 0x1254C367


def elements(buf: bytes) -> list[tuple[int, bytes]]:
    """The top-level elements of GetMedia documents, with each unknown-size Segment's
    children in its place. The Tags carrying MillisBehindNow (it depends on when the
    fragment was read) are replaced by a marker; everything else is kept as is."""
    out = []
    pos = 0
    while pos < len(buf):
        eid, at = vint(buf, pos, keep_marker=True)
        size, at = vint(buf, at, keep_marker=False)
        if eid == SEGMENT:
            out.append((eid, buf[pos:at]))
            pos = at
            continue
        body = buf[at:at + size]
        assert len(body) == size, f"element {eid:x} at {pos} is cut short"
        if eid == TAGS and b"MILLIS_BEHIND_NOW" in body:
            out.append((eid, b"millis-behind-now"))
        else:
            out.append((eid, buf[pos:at + size]))
        pos = at + size
    return out


def archived(endpoint):
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60)
    return boto3.session.Session().client(
        "kinesis-video-archived-media", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="test", aws_secret_access_key="test", config=cfg)


def read_http_response(sock: socket.socket, on_chunk) -> tuple[bytes, bytes]:
    """Reads an HTTP/1.1 response (chunked or with a length) in 64 KiB reads, calling
    `on_chunk` after each; returns (head, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        got = sock.recv(65536)
        assert got, "connection closed before the response head"
        buf += got
    head, rest = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    body = bytearray()
    pending = bytearray(rest)

    def need(n):
        while len(pending) < n:
            got = sock.recv(65536)
            assert got, "connection closed mid-body"
            pending.extend(got)
            on_chunk()

    lines = head.lower().split(b"\r\n")
    length = [l.split(b":", 1)[1] for l in lines if l.startswith(b"content-length:")]
    if length:
        need(int(length[0]))
        return head, bytes(pending)
    assert b"transfer-encoding: chunked" in lines, head

    while True:
        need(2)
        while b"\r\n" not in pending:
            need(len(pending) + 1)
        line_end = pending.index(b"\r\n")
        size = int(pending[:line_end].split(b";")[0], 16)
        del pending[:line_end + 2]
        need(size + 2)
        body.extend(pending[:size])
        del pending[:size + 2]
        if size == 0:
            return head, bytes(body)


@pytest.mark.timeout(300)
def test_fragment_list_streams_in_bounded_memory_and_exact_bytes(start_server, tmp_path):
    server = start_server()
    clip = tmp_path / "big.mkv"
    big_fragment_mkv(clip)
    name = unique_name("bigfrag")
    push = subprocess.run([str(freshet_bin()), "video", "push", str(clip), "--stream", name,
                           "--endpoint", server.endpoint], capture_output=True, text=True,
                          timeout=240)
    assert push.returncode == 0, push.stderr
    acks = [json.loads(l) for l in push.stdout.splitlines() if l.startswith("{")]
    assert sum(a["EventType"] == "PERSISTED" for a in acks) == FRAGMENTS

    am = archived(server.endpoint)
    listed = am.list_fragments(StreamName=name, MaxResults=1000)["Fragments"]
    assert len(listed) == FRAGMENTS
    assert all(f["FragmentSizeInBytes"] > FRAME_BYTES for f in listed)
    numbers = [f["FragmentNumber"] for f in sorted(listed, key=lambda f: int(f["FragmentNumber"]))]
    # Ask in a shuffled order: the response follows the request's order.
    order = numbers[1::2] + numbers[0::2]
    expected = b"".join(
        am.get_media_for_fragment_list(StreamName=name, Fragments=[n])["Payload"].read()
        for n in order)
    assert len(expected) > FRAGMENTS * FRAME_BYTES

    body = json.dumps({"StreamName": name, "Fragments": order}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    # A small receive buffer: the server meets backpressure soon.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    rss_before = rss_kib(server.proc.pid)
    peak = [rss_before]
    reads = [0]

    def slow_reader():
        reads[0] += 1
        if reads[0] % 16 == 0:
            peak[0] = max(peak[0], rss_kib(server.proc.pid))
            # About 20 MiB/s: the server sends far faster unless it is held back.
            time.sleep(0.05)

    started = time.monotonic()
    sock.sendall(b"POST /getMediaForFragmentList HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nConnection: close\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    _, got = read_http_response(sock, slow_reader)
    sock.close()
    elapsed = time.monotonic() - started

    # Exactly the documents of the fragments one by one, in the order asked for, but
    # for MillisBehindNow.
    assert elements(got) == elements(expected)
    assert sum(eid == 0x1F43B675 for eid, _ in elements(got)) == FRAGMENTS
    grown_mib = (peak[0] - rss_before) / 1024
    response_mib = len(got) / 2**20
    print(f"response {response_mib:.0f} MiB in {elapsed:.1f} s; server RSS grew {grown_mib:.1f} MiB")
    # The response was read slowly (it did not all fit in socket buffers at once) ...
    assert elapsed > 2.0, elapsed
    # ... and the server held a small part of it at any time.
    assert grown_mib < response_mib / 4, (grown_mib, response_mib)

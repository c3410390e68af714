"""The Kinesis Video producer SDK's (kvssink, producer-c) flow exactly as it is on the
wire, against a server on a non-default port, directly and behind a hop that rewrites
the Host header.

What the SDK does, and what these tests reproduce byte for byte where it matters:
- its SigV4 signer cuts the Host header at ':', so every request says
  `host: 127.0.0.1` whatever port it was sent to;
- DescribeStream (404) -> CreateStream -> GetDataEndpoint -> PutMedia within a few
  milliseconds, without waiting for the stream to become ACTIVE;
- PutMedia is a chunked POST with `Expect: 100-continue` (curl waits for the
  100 Continue), the body a live MKV ending with the AWS_KINESISVIDEO_END_OF_FRAGMENT
  Tags element; the connection stays open until the last PERSISTED ack arrives.

The body is the real capture of a kvssink upload (tests/fixtures/kvs/putmedia_body.mkv).
"""
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from conftest import CREDENTIALS, REGION, unique_name

pytestmark = pytest.mark.freshet_only

ROOT = Path(__file__).resolve().parents[2]
BODY = (ROOT / "tests" / "fixtures" / "kvs" / "putmedia_body.mkv").read_bytes()
sys.path.insert(0, str(ROOT / "media-samples"))
import mkvtool  # noqa: E402

_, _, _, _, _, CLUSTERS = mkvtool.parse_file(BODY)
FRAGMENTS = len(CLUSTERS)
FRAMES = sum(len(c["blocks"]) for c in CLUSTERS)
USER_AGENT = "AWS-SDK-KVS-CPP-CLIENT/3.4.2/1.5.3 GCC/12.2.0 Linux/6.1.0 x86_64"
# Longer than the flow takes, so PutMedia certainly starts while the stream is CREATING.
STATE_DELAY_MS = 3000


def recv_until(sock: socket.socket, buf: bytearray, marker: bytes, deadline: float) -> int:
    """Reads into `buf` until `marker` is in it; returns the index just past it."""
    while marker not in buf:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before {marker!r}; got {bytes(buf[:300])!r}")
        buf += chunk
    return buf.index(marker) + len(marker)


def signed_head(method: str, path: str, host: str, body: bytes, headers: dict,
                credentials=None) -> dict:
    """SigV4 as the SDK signs: over the Host header it sends (no port), for
    PutMedia over an empty body (producer-c signs the headers only)."""
    req = AWSRequest(method=method, url=f"http://{host}{path}", data=body,
                     headers={"host": host, **headers})
    creds = CREDENTIALS if credentials is None else Credentials(*credentials)
    SigV4Auth(creds, "kinesisvideo", REGION).add_auth(req)
    return dict(req.headers.items())


def control_call(base: str, op: str, body: str, host: str = "127.0.0.1",
                 credentials=None) -> tuple[int, str, dict]:
    """One control-plane call as producer-c makes it (its JSON templates, its headers).
    Returns (status, x-amzn-ErrorType, body)."""
    addr = base.removeprefix("http://").rstrip("/")
    h, _, p = addr.rpartition(":")
    data = body.encode()
    headers = signed_head("POST", f"/{op}", host, data, {
        "user-agent": USER_AGENT, "content-type": "application/json", "accept": "*/*",
        "content-length": str(len(data))}, credentials)
    head = f"POST /{op} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((h, int(p)), timeout=10) as s:
        s.sendall(head.encode() + data)
        buf = bytearray()
        deadline = time.monotonic() + 10
        end = recv_until(s, buf, b"\r\n\r\n", deadline)
        status = int(buf[:end].split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", bytes(buf[:end])).group(1))
        while len(buf) < end + length:
            chunk = s.recv(65536)
            assert chunk, "connection closed inside the response body"
            buf += chunk
    error_type = re.search(rb"(?im)^x-amzn-errortype:\s*([^\r\n]*)", bytes(buf[:end]))
    return (status, error_type.group(1).decode() if error_type else "",
            json.loads(bytes(buf[end:end + length]) or b"{}"))


class PutMediaUpload:
    """A PutMedia upload as curl sends it for producer-c, reading acks as they come."""

    def __init__(self, endpoint: str, stream: str, host: str = "127.0.0.1"):
        addr = endpoint.removeprefix("http://").rstrip("/")
        h, _, p = addr.rpartition(":")
        self.sock = socket.create_connection((h, int(p)), timeout=10)
        headers = signed_head("POST", "/putMedia", host, b"", {
            "user-agent": USER_AGENT, "x-amzn-stream-name": stream,
            "x-amzn-producer-start-timestamp": f"{time.time():.3f}",
            "x-amzn-fragment-acknowledgment-required": "1",
            "x-amzn-fragment-timecode-type": "ABSOLUTE",
            "transfer-encoding": "chunked", "connection": "keep-alive",
            "accept": "*/*", "expect": "100-continue"})
        # Chunked bodies are not signed by their hash.
        headers.pop("X-Amz-Content-SHA256", None)
        head = "POST /putMedia HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.sock.sendall((head + "\r\n").encode())
        self.buf = bytearray()
        self.acks: list[dict] = []

    def expect_continue(self):
        end = recv_until(self.sock, self.buf, b"\r\n\r\n", time.monotonic() + 5)
        line = bytes(self.buf[:end]).split(b"\r\n", 1)[0]
        assert line == b"HTTP/1.1 100 Continue", line
        del self.buf[:end]

    def send_body(self, body: bytes, chunk: int = 16 * 1024):
        for at in range(0, len(body), chunk):
            part = body[at:at + chunk]
            self.sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")

    def read_head(self) -> bytes:
        end = recv_until(self.sock, self.buf, b"\r\n\r\n", time.monotonic() + 10)
        head = bytes(self.buf[:end])
        del self.buf[:end]
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"transfer-encoding: chunked" in head.lower(), head
        return head

    def read_acks(self, until, timeout: float = 30) -> list[dict]:
        """Reads chunked ack lines until `until(acks)` holds or the response ends."""
        deadline = time.monotonic() + timeout
        text = b""
        while not until(self.acks):
            if time.monotonic() > deadline:
                raise AssertionError(f"acks so far: {self.acks}")
            end = recv_until(self.sock, self.buf, b"\r\n", deadline)
            size = int(bytes(self.buf[:end - 2]), 16)
            if size == 0:
                break
            while len(self.buf) < end + size + 2:
                self.sock.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
                assert chunk, "connection closed inside an ack chunk"
                self.buf += chunk
            text += bytes(self.buf[end:end + size])
            del self.buf[:end + size + 2]
            *lines, text = text.split(b"\n")
            self.acks += [json.loads(l) for l in lines if l.strip()]
        return self.acks

    def finish(self):
        self.sock.sendall(b"0\r\n\r\n")

    def close(self):
        self.sock.close()


class HostRewritingHop(threading.Thread):
    """A proxy in front of Freshet that rewrites each request's Host header to a name
    without a port (as some proxies do) and relays the bytes both ways."""

    def __init__(self, new_host: str = "freshet-upstream"):
        super().__init__(daemon=True)
        self.new_host = new_host
        self.target_port: int | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests_seen = 0
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self):
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket):
        try:
            buf = bytearray()
            end = recv_until(client, buf, b"\r\n\r\n", time.monotonic() + 10)
            head = re.sub(rb"(?im)^host:[^\r\n]*", b"host: " + self.new_host.encode(), bytes(buf[:end]))
            self.requests_seen += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
            upstream.sendall(head + bytes(buf[end:]))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
        except (OSError, AssertionError):
            client.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket):
        src.settimeout(60)
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self._stop.set()
        self.listener.close()


def client(endpoint, service):
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return boto3.session.Session().client(
        service, endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="test", aws_secret_access_key="test", config=cfg)


def sdk_session(control_url: str, name: str) -> tuple[str, list[dict], float]:
    """The SDK's sequence; returns (DataEndpoint, acks, seconds from DescribeStream to
    the PutMedia request head)."""
    t0 = time.monotonic()
    status, kind, err = control_call(control_url, "describeStream",
                                     '{\n\t"StreamName": "%s"\n}' % name)
    assert status == 404 and kind.startswith("ResourceNotFoundException"), (status, kind, err)
    status, _, created = control_call(
        control_url, "createStream",
        '{\n\t"DeviceName": "Kinesis_Video_Device",\n\t"StreamName": "%s",\n\t'
        '"MediaType": "video/h264",\n\t"DataRetentionInHours": 2\n}' % name)
    assert status == 200 and f":stream/{name}/" in created["StreamARN"], (status, created)
    status, _, ep = control_call(control_url, "getDataEndpoint",
                              '{\n\t"StreamName": "%s",\n\t"APIName": "PUT_MEDIA"\n}' % name)
    assert status == 200, ep
    data_endpoint = ep["DataEndpoint"]
    upload = PutMediaUpload(data_endpoint, name)
    elapsed = time.monotonic() - t0
    return data_endpoint, upload_body(upload), elapsed


def upload_body(upload: "PutMediaUpload") -> list[dict]:
    """Send BODY on an open PutMedia request; the acks, read to the end."""
    try:
        upload.expect_continue()
        upload.send_body(BODY)
        upload.read_head()
        acks = upload.read_acks(lambda a: sum(x["EventType"] == "PERSISTED" for x in a) >= FRAGMENTS
                                or any(x["EventType"] == "ERROR" for x in a))
        upload.finish()
        upload.read_acks(lambda a: False, timeout=10)  # to the end of the response
    finally:
        upload.close()
    return acks


def check_stored(endpoint: str, name: str, acks: list[dict], tmp_path: Path):
    persisted = [a for a in acks if a["EventType"] == "PERSISTED"]
    assert [a["EventType"] for a in acks if a["EventType"] not in ("BUFFERING", "RECEIVED",
                                                                    "PERSISTED", "IDLE")] == []
    assert len(persisted) == FRAGMENTS, acks
    assert [a["FragmentTimecode"] for a in persisted] == [c["timecode"] for c in CLUSTERS]
    archived = client(endpoint, "kinesis-video-archived-media")
    listed = archived.list_fragments(StreamName=name)["Fragments"]
    numbers = sorted(f["FragmentNumber"] for f in listed)
    assert numbers == sorted(a["FragmentNumber"] for a in persisted)
    media = archived.get_media_for_fragment_list(StreamName=name, Fragments=numbers)["Payload"].read()
    out = tmp_path / f"{name}.mkv"
    out.write_bytes(media)
    frames, notices = probe_documents(out)
    assert frames == FRAMES
    assert notices == FRAGMENTS - 1


# ffmpeg's note on each Matroska document after the first in a GetMedia response (one
# EBML header + unknown-size Segment per fragment, as AWS sends it). It says the same of
# AWS's own response (tests/fixtures/kvs/output_get_media.mkv): see
# test_get_media_documents_have_the_layout_aws_sends.
CHAINED_SEGMENT = re.compile(r"Found unknown-length element with ID 0x18538067 at pos\. 0x[0-9a-f]+ "
                             r"for which no syntax for parsing is available\.$")


def probe_documents(path) -> tuple[int, int]:
    """(video frames ffprobe decodes, chained-document notices); fails on any other
    message from ffprobe."""
    p = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                        "-show_entries", "stream=nb_read_frames", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    others = [l for l in lines if not CHAINED_SEGMENT.search(l)]
    assert others == [], others
    return int(json.loads(p.stdout)["streams"][0]["nb_read_frames"]), len(lines)


def layout(buf: bytes) -> list[tuple[str, object, int]]:
    """Top-level and Segment-child elements: (name, size or 'unknown', size width)."""
    names = {0x1A45DFA3: "EBML", 0x18538067: "Segment", 0x1549A966: "Info", 0x1654AE6B: "Tracks",
             0x1254C367: "Tags", 0x1F43B675: "Cluster", 0x114D9B74: "SeekHead", 0xEC: "Void"}
    out, pos = [], 0
    while pos < len(buf):
        try:
            eid, p2 = mkvtool.read_id(buf, pos)
            size, p3 = mkvtool.read_size(buf, p2)
        except (IndexError, ValueError):
            break  # a partly received element header
        unknown = size is mkvtool.UNKNOWN
        out.append((names.get(eid, hex(eid)), "unknown" if unknown else size, p3 - p2))
        pos = p3 if eid == 0x18538067 or unknown else p3 + size
    return out


def test_get_media_documents_have_the_layout_aws_sends(start_server, tmp_path):
    """Segment and Cluster sizes as in a real AWS GetMedia response."""
    aws = (ROOT / "tests" / "fixtures" / "kvs" / "output_get_media.mkv").read_bytes()
    server = start_server()
    name = unique_name("layout")
    client(server.endpoint, "kinesisvideo").create_stream(StreamName=name, DataRetentionInHours=1)
    up = PutMediaUpload(server.endpoint, name)
    try:
        up.expect_continue()
        up.send_body(BODY)
        up.read_head()
        up.read_acks(lambda a: sum(x["EventType"] == "PERSISTED" for x in a) >= FRAGMENTS)
        up.finish()
    finally:
        up.close()
    ours = get_media_documents(server.port, name, FRAGMENTS)
    mine = layout(ours)
    theirs = layout(aws)
    for doc in (mine, theirs):
        segments = [e for e in doc if e[0] == "Segment"]
        clusters = [e for e in doc if e[0] == "Cluster"]
        assert segments and all(e[1:] == ("unknown", 8) for e in segments), doc
        assert clusters and all(e[1] != "unknown" and e[2] == 8 for e in clusters), doc
        # Per document: Tags (fragment number, timestamps) before the Cluster and Tags
        # (millis behind now, continuation token) after it, both with 4-byte sizes.
        kinds = [e[0] for e in doc if e[0] in ("EBML", "Cluster", "Tags") and (e[0] != "Tags" or e[2] == 4)]
        assert kinds == ["EBML", "Tags", "Cluster", "Tags"] * len(clusters), kinds
    path = tmp_path / "ours.mkv"
    path.write_bytes(ours)
    assert probe_documents(path) == (FRAMES, FRAGMENTS - 1)
    aws_path = tmp_path / "aws.mkv"
    aws_path.write_bytes(aws)
    aws_frames, aws_notices = probe_documents(aws_path)
    assert aws_notices == len([e for e in theirs if e[0] == "EBML"]) - 1 and aws_frames > 0


def get_media_documents(port: int, name: str, documents: int) -> bytes:
    """GetMedia from EARLIEST (which then follows the live edge, so never ends), read
    until `documents` whole documents have arrived."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/getMedia", body=json.dumps(
        {"StreamName": name, "StartSelector": {"StartSelectorType": "EARLIEST"}}),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    buf = b""
    deadline = time.monotonic() + 20
    try:
        while True:
            doc = layout(buf)
            clusters = [i for i, e in enumerate(doc) if e[0] == "Cluster"]
            # Complete once the trailing Tags (continuation token) after the last
            # wanted Cluster is all here.
            if len(clusters) >= documents and len(doc) > clusters[documents - 1] + 1:
                tail = clusters[documents - 1] + 1
                end = sum_sizes(buf, tail + 1)
                if doc[tail][0] == "Tags" and end <= len(buf):
                    return buf[:end]
            assert time.monotonic() < deadline, f"only {len(buf)} bytes of GetMedia"
            chunk = resp.read1(65536)
            assert chunk, "GetMedia ended early"
            buf += chunk
    finally:
        conn.close()


def sum_sizes(buf: bytes, index: int) -> int:
    """The byte offset of element `index` of layout(buf)."""
    pos = 0
    for _ in range(index):
        eid, p2 = mkvtool.read_id(buf, pos)
        size, p3 = mkvtool.read_size(buf, p2)
        pos = p3 if eid == 0x18538067 or size is mkvtool.UNKNOWN else p3 + size
    return pos


def test_the_sdk_flow_on_a_non_default_port(start_server, tmp_path):
    server = start_server(state_delay_ms=STATE_DELAY_MS)
    assert server.port != 4570
    name = unique_name("sdkcam")
    data_endpoint, acks, elapsed = sdk_session(server.endpoint, name)
    # The Host header said 127.0.0.1: the endpoint is the address the request reached.
    assert data_endpoint == server.endpoint
    assert elapsed < STATE_DELAY_MS / 1000
    check_stored(server.endpoint, name, acks, tmp_path)


def test_the_sdk_flow_behind_a_host_rewriting_hop(start_server, tmp_path):
    hop = HostRewritingHop()
    hop.start()
    try:
        server = start_server(state_delay_ms=STATE_DELAY_MS)
        hop.target_port = server.port
        name = unique_name("sdkhop")
        data_endpoint, acks, _ = sdk_session(hop.url, name)
        # Freshet saw `host: freshet-upstream`: it names the address the hop reached.
        assert data_endpoint == server.endpoint
        assert hop.requests_seen == 3
        check_stored(server.endpoint, name, acks, tmp_path)
    finally:
        hop.close()


def test_an_advertised_url_is_handed_out_through_the_hop(start_server, tmp_path):
    hop = HostRewritingHop()
    hop.start()
    try:
        server = start_server(state_delay_ms=STATE_DELAY_MS,
                              extra_args=["--advertise-url", hop.url + "/"])
        hop.target_port = server.port
        name = unique_name("sdkadv")
        data_endpoint, acks, _ = sdk_session(hop.url, name)
        assert data_endpoint == hop.url
        assert hop.requests_seen == 4  # PutMedia went through the hop too
        check_stored(hop.url, name, acks, tmp_path)
        # Playback URLs come from the same place, and play through the hop.
        archived = client(hop.url, "kinesis-video-archived-media")
        url = archived.get_hls_streaming_session_url(
            StreamName=name, PlaybackMode="ON_DEMAND",
            HLSFragmentSelector={"FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {
                "StartTimestamp": CLUSTERS[0]["timecode"] / 1000 - 1,
                "EndTimestamp": CLUSTERS[-1]["timecode"] / 1000 + 5}})["HLSStreamingSessionURL"]
        assert url.startswith(hop.url + "/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=")
        p = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                            "stream=nb_read_frames", "-of", "json", url],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert int(json.loads(p.stdout)["streams"][0]["nb_read_frames"]) == FRAMES
    finally:
        hop.close()


def test_bad_advertise_urls_stop_the_server_with_a_clear_error(tmp_path):
    from conftest import freshet_bin
    p = subprocess.run([str(freshet_bin()), "serve", "--listen", "127.0.0.1:0",
                        "--data-dir", str(tmp_path), "--advertise-url", "freshet.lan:4570"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "must start with http:// or https://" in p.stderr + p.stdout


def wait_log(server, pattern: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, server.log_text())
        if m:
            return m.group(0)
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matches {pattern!r}:\n{server.log_text()[-3000:]}")
        time.sleep(0.05)


def test_error_acks_are_logged_and_only_deleting_streams_refuse_media(start_server):
    server = start_server(state_delay_ms=STATE_DELAY_MS)
    kv = client(server.endpoint, "kinesisvideo")

    # A body that is not Matroska: ERROR with the reader's ErrorId, logged at warn.
    name = unique_name("badbody")
    kv.create_stream(StreamName=name, DataRetentionInHours=1)
    up = PutMediaUpload(server.endpoint, name)
    try:
        up.expect_continue()
        up.send_body(b"\x00" * 64)
        up.read_head()
        acks = up.read_acks(lambda a: any(x["EventType"] == "ERROR" for x in a))
    finally:
        up.close()
    error_id = [a for a in acks if a["EventType"] == "ERROR"][0]["ErrorId"]
    line = wait_log(server, rf"WARN.*PutMedia ERROR ack.*stream=\"?{name}\"?.*error_id={error_id}.*")
    assert "reason=" in line

    # A stream being deleted refuses media with 4008, also logged.
    name = unique_name("deleting")
    arn = kv.create_stream(StreamName=name, DataRetentionInHours=1)["StreamARN"]
    kv.delete_stream(StreamARN=arn)
    assert kv.describe_stream(StreamName=name)["StreamInfo"]["Status"] == "DELETING"
    up = PutMediaUpload(server.endpoint, name)
    try:
        up.expect_continue()
        up.send_body(BODY[:4096])
        up.read_head()
        acks = up.read_acks(lambda a: any(x["EventType"] == "ERROR" for x in a))
    finally:
        up.close()
    assert [a.get("ErrorId") for a in acks if a["EventType"] == "ERROR"] == [4008]
    wait_log(server, rf"WARN.*PutMedia ERROR ack.*stream=\"?{name}\"?.*error_id=4008.*DELETING")

"""Signed chunked payloads (`X-Amz-Content-SHA256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD`):
the headers carry a seed signature and every chunk of the body its own, chained from
it. PutMedia checks each chunk as it arrives and stores only what was verified; a body
already read (the JSON APIs) is checked whole.

The chunk signer here follows AWS's published description and is itself checked
against AWS's published example before it is used."""
import datetime
import hashlib
import hmac
import json
import re

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import REGION, TARGET_PREFIX, unique_name
from test_auth import ADMIN, CONFIG, client, make_stream
from test_producer_sdk import BODY, CLUSTERS, FRAGMENTS

pytestmark = pytest.mark.freshet_only

MARKER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    return _hmac(_hmac(_hmac(k, region), service), "aws4_request")


def chunked_body(payload: bytes, chunk: int, key: bytes, amz_date: str, scope: str, seed: str,
                 corrupt_chunk: int | None = None) -> bytes:
    """`payload` in signed chunks of `chunk` bytes and the final empty one."""
    out, previous = bytearray(), seed
    pieces = [payload[i:i + chunk] for i in range(0, len(payload), chunk)] + [b""]
    for n, data in enumerate(pieces):
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256,
                             hashlib.sha256(data).hexdigest()])
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if n == corrupt_chunk:
            data = bytes([data[0] ^ 1]) + data[1:]
        out += f"{len(data):x};chunk-signature={signature}\r\n".encode() + data + b"\r\n"
        previous = signature
    return bytes(out)


def test_the_chunk_signer_reproduces_aws_published_example():
    key = signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1", "s3")
    body = chunked_body(b"a" * 66560, 65536, key, "20130524T000000Z",
                        "20130524/us-east-1/s3/aws4_request",
                        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")
    assert re.findall(rb"chunk-signature=([0-9a-f]{64})", body) == [
        b"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        b"0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        b"b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ]


def signed_streaming(url: str, service: str, headers: dict, payload: bytes, chunk: int,
                     corrupt_chunk: int | None = None) -> tuple[dict, bytes]:
    """Headers signed by botocore over the streaming marker, and the chunked body."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    framed_len = len(chunked_body(payload, chunk, b"k" * 32, amz_date, "s", "0" * 64))
    req = AWSRequest(method="POST", url=url, data=b"", headers={
        **headers, "X-Amz-Content-SHA256": MARKER, "X-Amz-Date": amz_date,
        "x-amz-decoded-content-length": str(len(payload)), "Content-Length": str(framed_len)})
    SigV4Auth(Credentials(*ADMIN), service, REGION).add_auth(req)
    seed = req.headers["Authorization"].rsplit("Signature=", 1)[1]
    scope = f"{amz_date[:8]}/{REGION}/{service}/aws4_request"
    key = signing_key(ADMIN[1], amz_date[:8], REGION, service)
    body = chunked_body(payload, chunk, key, amz_date, scope, seed, corrupt_chunk)
    assert len(body) == framed_len
    return dict(req.headers.items()), body


@pytest.fixture
def server(start_server, tmp_path):
    cfg = tmp_path / "freshet.toml"
    cfg.write_text(CONFIG)
    return start_server(extra_args=["--config", str(cfg)])


def put_media(endpoint: str, name: str, corrupt_chunk: int | None = None) -> list[dict]:
    headers, body = signed_streaming(
        endpoint + "/putMedia", "kinesisvideo",
        {"x-amzn-stream-name": name, "x-amzn-fragment-timecode-type": "ABSOLUTE",
         "x-amzn-producer-start-timestamp": "0", "Content-Type": "application/octet-stream"},
        BODY, 64 * 1024, corrupt_chunk)
    r = requests.post(endpoint + "/putMedia", data=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


def test_put_media_with_signed_chunks_stores_every_fragment(server):
    kv = client(server.endpoint, "kinesisvideo", ADMIN)
    name = unique_name("cam-chunked")
    kv.create_stream(StreamName=name, DataRetentionInHours=1)
    acks = put_media(server.endpoint, name)
    persisted = [a for a in acks if a["EventType"] == "PERSISTED"]
    assert [a for a in acks if a["EventType"] == "ERROR"] == []
    assert [a["FragmentTimecode"] for a in persisted] == [c["timecode"] for c in CLUSTERS]
    listed = client(server.endpoint, "kinesis-video-archived-media", ADMIN).list_fragments(
        StreamName=name)["Fragments"]
    assert len(listed) == FRAGMENTS


def test_a_bad_chunk_ends_put_media_and_nothing_after_it_is_stored(server):
    kv = client(server.endpoint, "kinesisvideo", ADMIN)
    name = unique_name("cam-badchunk")
    kv.create_stream(StreamName=name, DataRetentionInHours=1)
    bad = len(BODY) // (64 * 1024) // 2  # a chunk in the middle
    acks = put_media(server.endpoint, name, corrupt_chunk=bad)
    errors = [a for a in acks if a["EventType"] == "ERROR"]
    assert len(errors) == 1 and errors[0]["ErrorId"] == 4000, acks
    stored = client(server.endpoint, "kinesis-video-archived-media", ADMIN).list_fragments(
        StreamName=name)["Fragments"]
    # Only fragments wholly inside the verified chunks before the bad one, in order.
    verified_bytes = bad * 64 * 1024
    ends = [c["offset"] for c in CLUSTERS[1:]] + [len(BODY)]
    complete = [c for c, end in zip(CLUSTERS, ends) if end <= verified_bytes]
    persisted = [a["FragmentTimecode"] for a in acks if a["EventType"] == "PERSISTED"]
    assert 0 < len(stored) == len(persisted) <= len(complete) < FRAGMENTS, \
        (len(stored), len(persisted), len(complete))
    assert persisted == [c["timecode"] for c in CLUSTERS[:len(persisted)]]


def test_json_api_bodies_in_signed_chunks(server):
    k = client(server.endpoint, "kinesis", ADMIN)
    name = unique_name("chunked")
    make_stream(k, name)
    payload = json.dumps({"StreamName": name, "PartitionKey": "p", "Data": "aGVsbG8="}).encode()
    api = {"X-Amz-Target": TARGET_PREFIX + "PutRecord", "Content-Type": "application/x-amz-json-1.1"}
    headers, body = signed_streaming(server.endpoint + "/", "kinesis", api, payload, 16)
    r = requests.post(server.endpoint + "/", data=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["ShardId"] == "shardId-000000000000"
    headers, body = signed_streaming(server.endpoint + "/", "kinesis", api, payload, 16,
                                     corrupt_chunk=2)
    r = requests.post(server.endpoint + "/", data=body, headers=headers, timeout=10)
    assert (r.status_code, r.json()["__type"]) == (400, "InvalidSignatureException"), r.text
    it = k.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert [rec["Data"] for rec in k.get_records(ShardIterator=it)["Records"]] == [b"hello"]

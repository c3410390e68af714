"""Raw wire-protocol tests: CBOR, oversized bodies, and junk input."""

import base64
import json
import random
import re
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import cbor2
import pytest
import requests

from conftest import (AMZ_CBOR, AMZ_JSON, IS_KINESALITE, TARGET_PREFIX, UUID_RE, decode_body,
                      error_message, shard_id, unique_name)


@pytest.fixture
def cbor_stream(make_stream):
    return make_stream(shards=1, prefix="cbor")


class TestCbor:
    def test_put_record_cbor(self, raw, cbor_stream):
        r = raw.cbor_call("PutRecord", {"StreamName": cbor_stream, "Data": bytes(range(256)),
                                        "PartitionKey": "k"})
        assert r.status_code == 200, r.content
        assert r.headers["Content-Type"].startswith(AMZ_CBOR)
        body = cbor2.loads(r.content)
        assert body["ShardId"] == shard_id(0)
        assert body["SequenceNumber"].isdigit()

    def test_put_records_cbor(self, raw, cbor_stream):
        r = raw.cbor_call("PutRecords", {"StreamName": cbor_stream, "Records": [
            {"Data": d, "PartitionKey": f"k{i}"} for i, d in enumerate([b"", b"\x00\xff", b"x" * 1000])]})
        assert r.status_code == 200, r.content
        assert r.headers["Content-Type"].startswith(AMZ_CBOR)
        body = cbor2.loads(r.content)
        assert body["FailedRecordCount"] == 0
        assert len(body["Records"]) == 3
        seqs = [int(x["SequenceNumber"]) for x in body["Records"]]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        assert all(x["ShardId"] == shard_id(0) for x in body["Records"])

    # kinesalite keeps CBOR-written Data as a Node Buffer object and hands it
    # back as {"type": "Buffer", "data": [...]}; AWS returns the bytes.
    @pytest.mark.freshet_only
    def test_cbor_written_records_read_back_over_json(self, raw, kinesis, cbor_stream):
        payloads = [bytes(range(256)), b"", b"\x00\xff", bytes(range(256)) * 4]
        r = raw.cbor_call("PutRecord", {"StreamName": cbor_stream, "Data": payloads[0], "PartitionKey": "k"})
        assert r.status_code == 200, r.content
        seqs = [cbor2.loads(r.content)["SequenceNumber"]]
        r = raw.cbor_call("PutRecords", {"StreamName": cbor_stream, "Records": [
            {"Data": d, "PartitionKey": f"k{i}"} for i, d in enumerate(payloads[1:])]})
        assert r.status_code == 200, r.content
        seqs += [x["SequenceNumber"] for x in cbor2.loads(r.content)["Records"]]
        it = kinesis.get_shard_iterator(StreamName=cbor_stream, ShardId=shard_id(0),
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        recs = kinesis.get_records(ShardIterator=it)["Records"]
        assert [(x["SequenceNumber"], x["Data"]) for x in recs] == list(zip(seqs, payloads))

    # kinesalite answers CBOR GetRecords with Data as a JSON-serialised Node
    # Buffer and timestamps in seconds; AWS (and the Java SDK/KCL that expect
    # it) use CBOR byte strings and epoch milliseconds.
    @pytest.mark.freshet_only
    def test_get_records_cbor(self, raw, kinesis, cbor_stream):
        data = bytes(range(255, -1, -1))
        before = datetime.now(timezone.utc) - timedelta(seconds=5)
        kinesis.put_record(StreamName=cbor_stream, Data=data, PartitionKey="k")
        after = datetime.now(timezone.utc) + timedelta(seconds=5)
        r = raw.cbor_call("GetShardIterator", {"StreamName": cbor_stream, "ShardId": shard_id(0),
                                               "ShardIteratorType": "TRIM_HORIZON"})
        assert r.status_code == 200, r.content
        it = cbor2.loads(r.content)["ShardIterator"]
        r = raw.cbor_call("GetRecords", {"ShardIterator": it, "Limit": 10})
        assert r.status_code == 200, r.content
        assert r.headers["Content-Type"].startswith(AMZ_CBOR)
        body = cbor2.loads(r.content)
        assert isinstance(body["NextShardIterator"], str)
        assert isinstance(body["MillisBehindLatest"], int)
        (rec,) = body["Records"]
        assert isinstance(rec["Data"], bytes), f"Data must be a CBOR byte string, got {type(rec['Data'])}"
        assert rec["Data"] == data
        assert rec["PartitionKey"] == "k"
        ts = rec["ApproximateArrivalTimestamp"]
        if isinstance(ts, datetime):  # CBOR tag 1
            when = ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
        else:
            assert isinstance(ts, (int, float)), type(ts)
            when = datetime.fromtimestamp(ts / 1000, timezone.utc)  # epoch milliseconds
        assert before <= when <= after, f"ApproximateArrivalTimestamp {ts!r} is not epoch millis of now"

    def test_cbor_error_response(self, raw):
        name = unique_name("missing")
        r = raw.cbor_call("DescribeStreamSummary", {"StreamName": name})
        assert r.status_code == 400
        body = decode_body(r)
        assert body["__type"] == "ResourceNotFoundException"
        assert error_message(body) == f"Stream {name} under account 000000000000 not found."

    @pytest.mark.parametrize("blob", [
        b"\xff\xfe\x01",
        cbor2.dumps({"StreamName": "abc", "Limit": 5})[:-3],  # truncated map
        b"\x1c",  # reserved additional-information value
        b"\x5f\x41",  # unterminated indefinite-length byte string
    ])
    def test_broken_cbor(self, raw, blob):
        r = raw.cbor_call("ListStreams", blob)
        assert r.status_code == 400
        assert decode_body(r)["__type"] == "SerializationException"


def _split_endpoint(endpoint):
    hostport = endpoint.split("://", 1)[1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def read_http_response(sock, deadline):
    """Minimal HTTP/1.1 response reader: (status, headers, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full response; got {buf[:200]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = rest
    if "content-length" in headers:
        want = int(headers["content-length"])
        while len(body) < want:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        body = body[:want]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            body += chunk
        out, data = b"", body
        while data:
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, data = out + data[:size], data[size + 2:]
        body = out
    return status, headers, body


def oversized_request(endpoint, chunked, total=20 * 1024 * 1024, wait=20.0):
    """Start a 20 MiB PutRecord and stop before the end of the body.
    Returns the server's response (which must come without the rest)."""
    host, port = _split_endpoint(endpoint)
    sock = socket.create_connection((host, port), timeout=10)
    head = [
        "POST / HTTP/1.1",
        f"Host: {host}:{port}",
        f"Content-Type: {AMZ_JSON}",
        f"X-Amz-Target: {TARGET_PREFIX}PutRecord",
        "X-Amz-Date: 20250101T000000Z",
        "Authorization: AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/kinesis/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "0" * 64,
    ]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    prefix = b'{"StreamName":"big","PartitionKey":"k","Data":"'
    mib = b"A" * (1024 * 1024)
    stop = threading.Event()

    def sender():
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            if chunked:
                sent = 0
                first = prefix + mib
                sock.sendall(b"%x\r\n%s\r\n" % (len(first), first))
                sent += len(first)
                while sent < total and not stop.is_set():
                    sock.sendall(b"%x\r\n%s\r\n" % (len(mib), mib))
                    sent += len(mib)
                # Deliberately no terminating zero-size chunk.
            else:
                sock.sendall(prefix + mib)  # 1 MiB of the 20 MiB announced
        except OSError:
            pass  # the server may close the connection once it has refused the body

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        return read_http_response(sock, time.monotonic() + wait)
    finally:
        stop.set()
        try:
            sock.close()
        except OSError:
            pass
        t.join(timeout=10)


@pytest.mark.freshet_only
class TestBodyLimit:
    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    def test_oversized_body_refused_early(self, endpoint, kinesis, chunked):
        try:
            status, headers, body = oversized_request(endpoint, chunked)
        except socket.timeout:
            pytest.fail("no response to an oversized body before it was complete: "
                        "the server waits for (or buffers) the whole body")
        assert status == 413, (status, body[:300])
        assert re.match(UUID_RE, headers.get("x-amzn-requestid", "")), headers
        assert headers.get("x-amz-id-2"), headers
        assert headers.get("content-type", "").startswith(("application/x-amz-json-1.1", "application/json"))
        err = json.loads(body)
        assert err["__type"] == "ValidationException"
        assert error_message(err)
        # The server is still fine.
        assert requests.get(endpoint + "/health", timeout=5).status_code == 200
        assert "StreamNames" in kinesis.list_streams(Limit=1)

    def test_body_just_under_limit_accepted(self, raw, make_stream, kinesis):
        # A 1 MiB record (about 1.4 MB of JSON) is far below any sane body limit.
        name = make_stream(shards=1)
        data = random.Random(5).randbytes(1024 * 1024)
        r = raw.json_call("PutRecord", {"StreamName": name, "PartitionKey": "k",
                                        "Data": base64.b64encode(data).decode()})
        assert r.status_code == 200, r.content[:300]


def junk_requests():
    """~200 malformed requests: (body, content_type, target)."""
    rng = random.Random(20240601)
    put = TARGET_PREFIX + "PutRecords"
    valid = json.dumps({"StreamName": "junk", "Records": [
        {"Data": "aGVsbG8=", "PartitionKey": f"k{i}"} for i in range(20)]}).encode()
    reqs = []
    for _ in range(90):  # random bytes
        reqs.append((rng.randbytes(rng.randint(0, 3000)), rng.choice([AMZ_JSON, AMZ_CBOR]),
                     rng.choice([put, TARGET_PREFIX + "ListStreams", TARGET_PREFIX + "GetRecords"])))
    for _ in range(60):  # truncated JSON
        reqs.append((valid[:rng.randint(1, len(valid) - 1)], AMZ_JSON, put))
    deep = 10000
    reqs += [
        (b"[" * deep + b"]" * deep, AMZ_JSON, put),
        (b'{"StreamName":' + b"[" * deep + b"]" * deep + b"}", AMZ_JSON, put),
        (b'{"Limit":' + b'{"a":' * deep + b"1" + b"}" * deep + b"}", AMZ_JSON, TARGET_PREFIX + "ListStreams"),
        (b'{"Tags":' + b'{"a":' * deep + b"1" + b"}" * deep + b"}", AMZ_JSON, TARGET_PREFIX + "AddTagsToStream"),
        (b"\x81" * deep + b"\x00", AMZ_CBOR, put),          # deeply nested CBOR arrays
        (b"\xa1\x65Limit" + b"\xa1\x61a" * deep + b"\x00", AMZ_CBOR, TARGET_PREFIX + "ListStreams"),
        (b"[" * 200000, AMZ_JSON, put),
    ]
    for num in (b"1e400", b"-1e400", b"123456789012345678901234567890123456789", b"-0",
                b"99999999999999999999999999999999999999999999999999999999999999999999e99999", b"NaN",
                b"Infinity"):
        reqs.append((b'{"Limit": ' + num + b"}", AMZ_JSON, TARGET_PREFIX + "ListStreams"))
        reqs.append((b'{"StreamName": "' + unique_name("junk").encode() + b'", "ShardCount": ' + num + b"}",
                     AMZ_JSON, TARGET_PREFIX + "CreateStream"))
    for ctype in ("text/plain", "application/json", "application/x-amz-json-1.0", "application/xml",
                  "multipart/form-data; boundary=x", "application/x-amz-json-1.1asdf", "", "*/*",
                  "application/x-amz-cbor-1.1"):
        reqs.append((b'{"StreamName": "' + unique_name("ct").encode() + b'"}', ctype or None,
                     TARGET_PREFIX + "DescribeStreamSummary"))
    for target in (None, "", "Kinesis_20131202", "Kinesis_20131202.", ".ListStreams",
                   "kinesis_20131202.liststreams",
                   "Kinesis_20131202.Liststreams", "Firehose_20150804.NoSuchOperation",
                   "DynamoDB_20120810.NoSuchOperation", "DynamoDBStreams_20120810.ListStreams",
                   "Kinesis_20131202." + "A" * 5000, "Kinesis_20131202.ListStreams\u00e9"):
        reqs.append((b"{}", AMZ_JSON, target))
    for body in (b"null", b"[]", b"123", b'"str"', b"true", b"", b"{}{}", b"\x00", b'{"StreamName": "\xff\xfe"}',
                 b'{"StreamName": "a\\ud800"}', b"\xef\xbb\xbf{}", b'{"Records": [null]}',
                 b'{"StreamName": "a", "Records": [{"Data": null, "PartitionKey": null}]}',
                 b'{"StreamName": "a", "StreamName": "b"}', b" " * 10000):
        reqs.append((body, AMZ_JSON, put))
    return reqs


def _error_type(resp, allow_cbor):
    """The error type from a JSON error body (or a CBOR one, answering a CBOR
    request), or None."""
    ctype = resp.headers.get("Content-Type", "")
    try:
        if ctype.startswith(AMZ_CBOR):
            if not allow_cbor:
                return None
            body = cbor2.loads(resp.content)
        else:
            body = json.loads(resp.content.decode("utf-8"))
    except Exception:
        return None
    if isinstance(body, dict) and isinstance(body.get("__type"), str):
        return body["__type"]
    # AWS answers plain application/json in the old
    # {"Output": {"__type": ...}, "Version": "1.0"} envelope.
    if isinstance(body, dict) and isinstance(body.get("Output"), dict):
        return body["Output"].get("__type")
    return None


def test_junk_requests_get_4xx_and_server_survives(raw, endpoint, kinesis):
    reqs = junk_requests()
    assert len(reqs) >= 190
    problems = []
    for i, (body, ctype, target) in enumerate(reqs):
        try:
            r = raw.post(body, target=target, content_type=ctype, timeout=20)
        except requests.RequestException as e:
            problems.append(f"#{i} ({ctype}, {target!r:.60}, body {body[:40]!r}): no response: {e}")
            continue
        if not 400 <= r.status_code < 500:
            problems.append(f"#{i} ({ctype}, {target!r:.60}, body {body[:40]!r}): status {r.status_code}")
            continue
        if not re.match(UUID_RE, r.headers.get("x-amzn-RequestId", "")) or not r.headers.get("x-amz-id-2"):
            problems.append(f"#{i} ({ctype}, {target!r:.60}, body {body[:40]!r}): missing x-amzn-RequestId "
                            f"or x-amz-id-2 header")
            continue
        # AWS answers empty bodies in CBOR unless the request was JSON 1.1.
        if _error_type(r, allow_cbor=(ctype != AMZ_JSON)) is None:
            # AWS answers an unsupported Content-Type with an XML error document.
            if (ctype or "").split(";")[0] not in (AMZ_JSON, AMZ_CBOR, "application/json") \
                    and r.content.startswith(b"<"):
                continue
            problems.append(f"#{i} ({ctype}, {target!r:.60}, body {body[:40]!r}): no error body decodable "
                            f"as its Content-Type {r.headers.get('Content-Type')!r}: "
                            f"{r.status_code} {r.content[:120]!r}")
    assert not problems, f"{len(problems)} of {len(reqs)} junk requests misbehaved:\n" + "\n".join(problems[:40])
    # Still alive and well.
    if not IS_KINESALITE:
        assert requests.get(endpoint + "/health", timeout=5).status_code == 200
    assert isinstance(kinesis.list_streams(Limit=1)["StreamNames"], list)

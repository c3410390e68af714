"""Enhanced fan-out with boto3: stream consumers (Register/Deregister/Describe/
ListStreamConsumers) and SubscribeToShard's event stream, over HTTP/1.1 (boto3) and
HTTP/2 with prior knowledge (curl), in JSON and CBOR."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from conftest import (ACCOUNT, AMZ_CBOR, AMZ_JSON, REGION, TARGET_PREFIX, RawClient,
                      make_client, stream_arn, unique_name, wait_active, wait_for)

pytestmark = pytest.mark.freshet_only

SHARD0 = "shardId-000000000000"
CONSUMER_ARN_RE = (rf"^arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/[a-zA-Z0-9_.-]+"
                   r"/consumer/[a-zA-Z0-9_.-]+:[0-9]+$")


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def consumer_status(kinesis, arn: str) -> str | None:
    try:
        return kinesis.describe_stream_consumer(ConsumerARN=arn)[
            "ConsumerDescription"]["ConsumerStatus"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise


def active_consumer(kinesis, stream: str, name: str = "app") -> str:
    arn = kinesis.register_stream_consumer(
        StreamARN=stream_arn(stream), ConsumerName=name)["Consumer"]["ConsumerARN"]
    wait_for(lambda: consumer_status(kinesis, arn) == "ACTIVE", 20, "consumer ACTIVE")
    return arn


def subscribe(kinesis, arn: str, shard: str = SHARD0, **position):
    position.setdefault("Type", "TRIM_HORIZON")
    return kinesis.subscribe_to_shard(ConsumerARN=arn, ShardId=shard,
                                      StartingPosition=position)["EventStream"]


def read_records(events, count: int) -> tuple[list[dict], dict]:
    """Reads events until `count` records have come; returns them and the last event."""
    records: list[dict] = []
    last = None
    for event in events:
        last = event["SubscribeToShardEvent"]
        records.extend(last["Records"])
        if len(records) >= count:
            return records, last
    raise AssertionError(f"stream ended after {len(records)} of {count} records")


def put(kinesis, stream: str, data: bytes, **kw) -> str:
    return kinesis.put_record(StreamName=stream, Data=data, PartitionKey="k",
                              **kw)["SequenceNumber"]


def test_consumer_lifecycle(kinesis, make_stream):
    stream = make_stream(1)
    reply = kinesis.register_stream_consumer(StreamARN=stream_arn(stream),
                                             ConsumerName="app")["Consumer"]
    arn = reply["ConsumerARN"]
    assert re.match(CONSUMER_ARN_RE, arn), arn
    assert arn.startswith(f"{stream_arn(stream)}/consumer/app:")
    created = int(arn.rsplit(":", 1)[1])
    assert abs(created - time.time()) < 60
    assert reply["ConsumerStatus"] == "CREATING"
    wait_for(lambda: consumer_status(kinesis, arn) == "ACTIVE", 20, "consumer ACTIVE")

    by_name = kinesis.describe_stream_consumer(StreamARN=stream_arn(stream),
                                               ConsumerName="app")["ConsumerDescription"]
    assert by_name["ConsumerARN"] == arn
    assert by_name["StreamARN"] == stream_arn(stream)
    assert kinesis.describe_stream_summary(StreamName=stream)[
        "StreamDescriptionSummary"]["ConsumerCount"] == 1

    with pytest.raises(ClientError) as e:
        kinesis.register_stream_consumer(StreamARN=stream_arn(stream), ConsumerName="app")
    assert error_code(e) == "ResourceInUseException"

    kinesis.register_stream_consumer(StreamARN=stream_arn(stream), ConsumerName="app2")
    page = kinesis.list_stream_consumers(StreamARN=stream_arn(stream), MaxResults=1)
    assert [c["ConsumerName"] for c in page["Consumers"]] == ["app"]
    page2 = kinesis.list_stream_consumers(StreamARN=stream_arn(stream),
                                          NextToken=page["NextToken"])
    assert [c["ConsumerName"] for c in page2["Consumers"]] == ["app2"]
    assert "NextToken" not in page2

    kinesis.deregister_stream_consumer(ConsumerARN=arn)
    assert consumer_status(kinesis, arn) in ("DELETING", None)
    wait_for(lambda: consumer_status(kinesis, arn) is None, 20, "consumer gone")
    with pytest.raises(ClientError) as e:
        kinesis.deregister_stream_consumer(ConsumerARN=arn)
    assert error_code(e) == "ResourceNotFoundException"


def test_consumer_errors(kinesis, make_stream):
    stream = make_stream(1)
    with pytest.raises(ClientError) as e:
        kinesis.describe_stream_consumer(ConsumerARN="not-an-arn")
    assert error_code(e) == "ValidationException"
    unknown = f"{stream_arn(stream)}/consumer/nobody:1700000000"
    with pytest.raises(ClientError) as e:
        kinesis.describe_stream_consumer(ConsumerARN=unknown)
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        subscribe(kinesis, unknown)
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        kinesis.register_stream_consumer(StreamARN=stream_arn(unique_name("none")),
                                         ConsumerName="app")
    assert error_code(e) == "ResourceNotFoundException"


def test_twenty_consumers_per_stream(kinesis, make_stream):
    stream = make_stream(1)
    for i in range(20):
        kinesis.register_stream_consumer(StreamARN=stream_arn(stream), ConsumerName=f"c{i}")
    with pytest.raises(ClientError) as e:
        kinesis.register_stream_consumer(StreamARN=stream_arn(stream), ConsumerName="c20")
    assert error_code(e) == "LimitExceededException"


def test_subscribe_reads_in_order_byte_exact_and_resumes(kinesis, make_stream):
    stream = make_stream(1)
    arn = active_consumer(kinesis, stream)
    payloads = [os.urandom(n) for n in (1, 100, 5000)] + [bytes(range(256))]
    seqs = [put(kinesis, stream, p) for p in payloads]
    events = subscribe(kinesis, arn)
    records, last = read_records(events, len(payloads))
    assert [r["Data"] for r in records] == payloads
    assert [r["SequenceNumber"] for r in records] == seqs
    assert last["ContinuationSequenceNumber"] == seqs[-1]
    assert last["MillisBehindLatest"] >= 0
    # Pushed while the subscription is open.
    live = put(kinesis, stream, b"live")
    records, last = read_records(events, 1)
    assert records[0]["Data"] == b"live" and records[0]["SequenceNumber"] == live
    events.close()

    after = put(kinesis, stream, b"after")

    def resume():
        try:
            return subscribe(kinesis, arn, Type="AFTER_SEQUENCE_NUMBER",
                             SequenceNumber=last["ContinuationSequenceNumber"])
        except ClientError as e:
            # The closed subscription is let go when the server sees the close.
            if e.response["Error"]["Code"] == "ResourceInUseException":
                return None
            raise
    events = wait_for(resume, 20, "resubscribed")
    records, _ = read_records(events, 1)
    assert records[0]["Data"] == b"after" and records[0]["SequenceNumber"] == after
    events.close()


def test_two_subscriptions_refused_and_deregister_ends(kinesis, make_stream):
    stream = make_stream(1)
    arn = active_consumer(kinesis, stream)
    events = subscribe(kinesis, arn, Type="LATEST")
    with pytest.raises(ClientError) as e:
        subscribe(kinesis, arn, Type="LATEST")
    assert error_code(e) == "ResourceInUseException"
    assert "Another active subscription exists" in e.value.response["Error"]["Message"]
    # Another shard or another consumer is fine.
    other = active_consumer(kinesis, stream, "other")
    subscribe(kinesis, other, Type="LATEST").close()

    kinesis.deregister_stream_consumer(ConsumerARN=arn)
    started = time.monotonic()
    with pytest.raises(EventStreamError) as e:
        for _ in events:
            pass
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert time.monotonic() - started < 10


def test_bad_starting_positions(kinesis, make_stream):
    stream = make_stream(1)
    arn = active_consumer(kinesis, stream)
    seq = put(kinesis, stream, b"x")
    cases = [
        ({"Type": "AT_SEQUENCE_NUMBER"}, "InvalidArgumentException"),
        ({"Type": "TRIM_HORIZON", "SequenceNumber": seq}, "InvalidArgumentException"),
        ({"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": "12"}, "InvalidArgumentException"),
        ({"Type": "AT_TIMESTAMP"}, "InvalidArgumentException"),
        ({"Type": "AT_TIMESTAMP", "Timestamp": time.time() + 3600}, "InvalidArgumentException"),
        ({"Type": "SOMEWHERE"}, "ValidationException"),
    ]
    for position, code in cases:
        with pytest.raises(ClientError) as e:
            kinesis.subscribe_to_shard(ConsumerARN=arn, ShardId=SHARD0,
                                       StartingPosition=position)
        assert error_code(e) == code, position
    with pytest.raises(ClientError) as e:
        subscribe(kinesis, arn, shard="shardId-000000000009")
    assert error_code(e) == "ResourceNotFoundException"
    # AT_SEQUENCE_NUMBER and AT_TIMESTAMP in the past both find the record.
    for position in ({"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": seq},
                     {"Type": "AT_TIMESTAMP", "Timestamp": time.time() - 3600}):
        events = wait_for(lambda: _try_subscribe(kinesis, arn, position), 20, "subscribed")
        records, _ = read_records(events, 1)
        assert records[0]["SequenceNumber"] == seq
        events.close()


def _try_subscribe(kinesis, arn, position):
    try:
        return subscribe(kinesis, arn, **position)
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceInUseException":
            return None
        raise


def test_reshard_children_then_their_records(kinesis, make_stream):
    stream = make_stream(1)
    arn = active_consumer(kinesis, stream)
    before = put(kinesis, stream, b"before")
    kinesis.split_shard(StreamName=stream, ShardToSplit=SHARD0,
                        NewStartingHashKey=str(2**127))
    wait_active(kinesis, stream)
    events = subscribe(kinesis, arn)
    records: list[dict] = []
    children = None
    for event in events:
        e = event["SubscribeToShardEvent"]
        records.extend(e["Records"])
        if e.get("ChildShards"):
            children = e["ChildShards"]
            assert "ContinuationSequenceNumber" not in e
            break
    assert [r["SequenceNumber"] for r in records] == [before]
    assert sorted(c["ShardId"] for c in children) == ["shardId-000000000001",
                                                       "shardId-000000000002"]
    assert all(c["ParentShards"] == [SHARD0] for c in children)
    # The subscription ends after the children.
    assert list(events) == []

    child = put(kinesis, stream, b"child", ExplicitHashKey="0")
    events = subscribe(kinesis, arn, shard="shardId-000000000001")
    records, _ = read_records(events, 1)
    assert records[0]["Data"] == b"child" and records[0]["SequenceNumber"] == child
    events.close()


def short_lived_subscriptions(start_server):
    """A server whose subscriptions last 1 s, a one-shard stream and an ACTIVE
    consumer of it: (server, client, stream, consumer ARN)."""
    server = start_server(extra_args=["--subscription-lifetime-secs", "1"])
    kinesis = make_client(server.endpoint)
    stream = unique_name("efo")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    wait_active(kinesis, stream)
    return server, kinesis, stream, active_consumer(kinesis, stream)


def test_subscription_ends_after_its_lifetime(start_server):
    server, kinesis, stream, arn = short_lived_subscriptions(start_server)
    put(kinesis, stream, b"one")
    started = time.monotonic()
    seen = [r["Data"] for e in subscribe(kinesis, arn)
            for r in e["SubscribeToShardEvent"]["Records"]]
    assert seen == [b"one"]
    assert time.monotonic() - started < 10
    # Ended, so the same consumer and shard can subscribe again at once.
    subscribe(kinesis, arn).close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("encoding", [AMZ_JSON, AMZ_CBOR])
def test_http2_prior_knowledge_event_stream(start_server, encoding):
    server, kinesis, stream, arn = short_lived_subscriptions(start_server)
    seq = put(kinesis, stream, b"\x00h2\xff")
    request = {"ConsumerARN": arn, "ShardId": SHARD0,
               "StartingPosition": {"Type": "TRIM_HORIZON"}}
    if encoding == AMZ_CBOR:
        import cbor2
        body = cbor2.dumps(request)
    else:
        import json
        body = json.dumps(request).encode()
    headers = RawClient(server.endpoint).signed_headers(
        body, {"Content-Type": encoding, "X-Amz-Target": TARGET_PREFIX + "SubscribeToShard"})
    cmd = ["curl", "-sS", "--http2-prior-knowledge", "--max-time", "20",
           "-o", "-", "-D", "/dev/stderr", "--data-binary", "@-"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(server.endpoint + "/")
    out = subprocess.run(cmd, input=body, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    head = out.stderr.decode(errors="replace").lower()
    assert head.startswith("http/2 200"), head
    assert "content-type: application/vnd.amazon.eventstream" in head
    buf = EventStreamBuffer()
    buf.add_data(out.stdout)
    messages = list(buf)  # checks both CRCs of every frame
    kinds = [m.headers[":event-type"] for m in messages]
    assert kinds[0] == "initial-response" and messages[0].payload == b"{}"
    assert set(kinds[1:]) == {"SubscribeToShardEvent"}
    import json
    first = json.loads(messages[1].payload)
    assert first["Records"][0]["SequenceNumber"] == seq
    import base64
    assert base64.b64decode(first["Records"][0]["Data"]) == b"\x00h2\xff"
    assert all(m.headers[":content-type"] == "application/json" for m in messages)


def test_consumers_survive_restart_and_go_with_their_stream(start_server, tmp_path):
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    server = start_server(data_dir=data_dir)
    kinesis = make_client(server.endpoint)
    stream = unique_name("efo")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    wait_active(kinesis, stream)
    arn = active_consumer(kinesis, stream)
    kinesis.register_stream_consumer(StreamARN=stream_arn(stream), ConsumerName="second")
    events = subscribe(kinesis, arn, Type="LATEST")
    next(iter(events))
    # An open subscription does not hold up shutdown.
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 4

    server2 = start_server(data_dir=data_dir)
    kinesis = make_client(server2.endpoint)
    names = {c["ConsumerName"]: c for c in
             kinesis.list_stream_consumers(StreamARN=stream_arn(stream))["Consumers"]}
    assert sorted(names) == ["app", "second"]
    assert names["app"]["ConsumerARN"] == arn
    assert consumer_status(kinesis, arn) == "ACTIVE"

    with pytest.raises(ClientError) as e:
        kinesis.delete_stream(StreamName=stream)
    assert error_code(e) == "ResourceInUseException"
    kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)
    wait_for(lambda: _gone(kinesis, stream), 20, "stream gone")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    wait_active(kinesis, stream)
    assert kinesis.list_stream_consumers(StreamARN=stream_arn(stream))["Consumers"] == []
    assert consumer_status(kinesis, arn) is None


def _gone(kinesis, stream: str) -> bool:
    try:
        kinesis.describe_stream_summary(StreamName=stream)
        return False
    except ClientError as e:
        return e.response["Error"]["Code"] == "ResourceNotFoundException"

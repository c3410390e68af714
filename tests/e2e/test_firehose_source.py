"""Delivery streams with a Kinesis data stream as the source (KinesisStreamAsSource),
with boto3: records put into a 2-shard data stream arrive in the local bucket's objects,
exactly and in order within each shard; a split and a merge are followed (every parent's
records delivered before its children's); a SIGKILL loop loses and duplicates nothing; a
deleted data stream is reported; Direct PUT and unknown streams are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, unique_name, wait_for
from test_firehose import ROLE, err, firehose, objects, s3_config, wait_active

import boto3
from botocore.config import Config

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]


def kinesis(endpoint):
    return boto3.client("kinesis", endpoint_url=endpoint, region_name=REGION,
                        config=Config(retries={"max_attempts": 3, "mode": "standard"}))


def delivered_lines(data_dir, bucket):
    bodies = objects(data_dir, bucket)
    return b"".join(bodies[k] for k in sorted(bodies)).splitlines(keepends=True)


def make_source(kin, shards):
    name = unique_name("src")
    kin.create_stream(StreamName=name, ShardCount=shards)
    wait_for(lambda: kin.describe_stream_summary(StreamName=name)
             ["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", 10, "stream ACTIVE")
    return name, kin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]


def create_from_source(fh, arn, bucket, prefix):
    """A delivery stream reading the data stream `arn` into `bucket` (1 MB / 1 s), ACTIVE."""
    name = unique_name(prefix)
    fh.create_delivery_stream(
        DeliveryStreamName=name, DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={"KinesisStreamARN": arn, "RoleARN": ROLE},
        ExtendedS3DestinationConfiguration=s3_config(bucket, 1, 1))
    wait_active(fh, name)
    return name


def test_records_of_a_data_stream_are_delivered(start_server):
    srv = start_server()
    fh, kin = firehose(srv.endpoint), kinesis(srv.endpoint)
    stream, arn = make_source(kin, 2)
    # Put before the delivery stream exists: read from TRIM_HORIZON.
    early = [f"early-{i:03}\n".encode() for i in range(20)]
    kin.put_records(StreamName=stream, Records=[{"Data": r, "PartitionKey": f"k{i}"}
                                                for i, r in enumerate(early)])
    name = create_from_source(fh, arn, "source-bucket", "fhsrc")
    d = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert d["DeliveryStreamType"] == "KinesisStreamAsSource"
    src = d["Source"]["KinesisStreamSourceDescription"]
    assert src["KinesisStreamARN"] == arn and src["RoleARN"] == ROLE
    assert "DeliveryStartTimestamp" in src
    assert name in fh.list_delivery_streams(DeliveryStreamType="KinesisStreamAsSource")["DeliveryStreamNames"]
    assert name not in fh.list_delivery_streams(DeliveryStreamType="DirectPut")["DeliveryStreamNames"]

    with pytest.raises(ClientError) as e:
        fh.put_record(DeliveryStreamName=name, Record={"Data": b"x"})
    assert err(e) == ("InvalidArgumentException",
                      "This operation is not permitted on KinesisStreamAsSource type DeliveryStream.")
    with pytest.raises(ClientError) as e:
        fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": b"x"}])
    assert err(e)[0] == "InvalidArgumentException"

    later = [f"later-{i:03}\n".encode() for i in range(200)]
    shard_of = {}
    for i, r in enumerate(later):
        out = kin.put_record(StreamName=stream, Data=r, PartitionKey=f"key-{i % 7}")
        shard_of[r] = out["ShardId"]
    assert len(set(shard_of.values())) == 2
    everything = sorted(early + later)
    wait_for(lambda: sorted(delivered_lines(srv.data_dir, "source-bucket")) == everything, 30,
             "every record of the data stream delivered")
    # Within each object (one shard's batch) the shard's order is kept.
    for body in objects(srv.data_dir, "source-bucket").values():
        lines = [l for l in body.splitlines(keepends=True) if l.startswith(b"later")]
        shards = {shard_of[l] for l in lines}
        assert len(shards) <= 1
        assert lines == sorted(lines)

    # A restart resumes from the checkpoints: nothing delivered again.
    before = objects(srv.data_dir, "source-bucket")
    assert srv.stop() == 0
    srv.start()
    kin = kinesis(srv.endpoint)
    kin.put_record(StreamName=stream, Data=b"after-restart\n", PartitionKey="k")
    wait_for(lambda: b"after-restart\n" in delivered_lines(srv.data_dir, "source-bucket"), 20,
             "the record put after the restart")
    after = objects(srv.data_dir, "source-bucket")
    assert sorted(delivered_lines(srv.data_dir, "source-bucket")) == sorted(everything + [b"after-restart\n"])
    assert {k: v for k, v in after.items() if k in before} == before


def test_split_is_followed_parents_before_children(start_server):
    srv = start_server()
    fh, kin = firehose(srv.endpoint), kinesis(srv.endpoint)
    stream, arn = make_source(kin, 1)
    parent = [f"parent-{i:03}\n".encode() for i in range(100)]
    for r in parent:
        kin.put_record(StreamName=stream, Data=r, PartitionKey="p")
    shard = kin.list_shards(StreamName=stream)["Shards"][0]
    kin.split_shard(StreamName=stream, ShardToSplit=shard["ShardId"],
                    NewStartingHashKey=str(2 ** 127))
    wait_for(lambda: kin.describe_stream_summary(StreamName=stream)
             ["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", 10, "stream ACTIVE")
    children = [f"child-{i:03}\n".encode() for i in range(100)]
    for i, r in enumerate(children):
        kin.put_record(StreamName=stream, Data=r, PartitionKey=f"c{i}")
    # Created after the reshard: parent and child records are there from the start,
    # so only the lineage rule orders them.
    name = create_from_source(fh, arn, "split-bucket", "fhsplit")
    wait_for(lambda: sorted(delivered_lines(srv.data_dir, "split-bucket")) == sorted(parent + children),
             30, "every record delivered")
    bodies = objects(srv.data_dir, "split-bucket")
    # Each object holds one shard's batch; every parent object is written before any
    # child object.
    for body in bodies.values():
        kinds = {l.split(b"-")[0] for l in body.splitlines()}
        assert len(kinds) == 1, kinds
    mtimes = {k: (Path(srv.data_dir) / "buckets" / "split-bucket" / k).stat().st_mtime_ns
              for k in objects(srv.data_dir, "split-bucket")}
    kind = {k: objects(srv.data_dir, "split-bucket")[k].split(b"-")[0] for k in mtimes}
    last_parent = max(t for k, t in mtimes.items() if kind[k] == b"parent")
    first_child = min(t for k, t in mtimes.items() if kind[k] == b"child")
    assert last_parent <= first_child, "a child's object was written before its parent's"


def test_bad_input(start_server):
    srv = start_server()
    fh = firehose(srv.endpoint)
    missing = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/no-such-stream"
    with pytest.raises(ClientError) as e:
        fh.create_delivery_stream(
            DeliveryStreamName=unique_name("bad"), DeliveryStreamType="KinesisStreamAsSource",
            KinesisStreamSourceConfiguration={"KinesisStreamARN": missing, "RoleARN": ROLE},
            ExtendedS3DestinationConfiguration=s3_config("b-bucket"))
    assert err(e)[0] == "InvalidArgumentException" and missing in err(e)[1]
    with pytest.raises(ClientError) as e:
        fh.create_delivery_stream(
            DeliveryStreamName=unique_name("bad"), DeliveryStreamType="KinesisStreamAsSource",
            ExtendedS3DestinationConfiguration=s3_config("b-bucket"))
    assert err(e)[0] == "InvalidArgumentException"
    with pytest.raises(ClientError) as e:
        fh.create_delivery_stream(
            DeliveryStreamName=unique_name("bad"),
            KinesisStreamSourceConfiguration={"KinesisStreamARN": missing, "RoleARN": ROLE},
            ExtendedS3DestinationConfiguration=s3_config("b-bucket"))
    assert err(e)[0] == "InvalidArgumentException"


def test_sigkill_loop_delivers_every_acknowledged_record_once(start_server):
    import signal
    import threading
    import time
    import uuid

    srv = start_server()
    kin = kinesis(srv.endpoint)
    stream, arn = make_source(kin, 2)
    name = create_from_source(firehose(srv.endpoint), arn, "kill-bucket", "fhkill")
    acked: set[bytes] = set()
    stop = threading.Event()
    endpoint = {"url": srv.endpoint}

    def producer():
        while not stop.is_set():
            client = boto3.client("kinesis", endpoint_url=endpoint["url"], region_name=REGION,
                                  config=Config(retries={"max_attempts": 1}, read_timeout=10))
            recs = [f"{uuid.uuid4().hex}\n".encode() for _ in range(100)]
            try:
                out = client.put_records(StreamName=stream, Records=[
                    {"Data": r, "PartitionKey": r[:8].decode()} for r in recs])
                acked.update(r for r, res in zip(recs, out["Records"]) if "SequenceNumber" in res)
            except Exception:
                time.sleep(0.05)

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    for round_ in range(3):
        wait_for(lambda: len(objects(srv.data_dir, "kill-bucket")) > round_, 30, "deliveries")
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.start()
        endpoint["url"] = srv.endpoint
    puts_before = len(acked)
    wait_for(lambda: len(acked) > puts_before + 100, 20, "puts to the restarted server")
    stop.set()
    t.join(30)
    assert len(acked) > 500
    wait_for(lambda: acked <= set(delivered_lines(srv.data_dir, "kill-bucket")), 30,
             "every acknowledged record delivered")
    seen: dict[bytes, str] = {}
    for key, body in objects(srv.data_dir, "kill-bucket").items():
        for line in body.splitlines(keepends=True):
            assert line not in seen, f"record in {seen[line]} and {key}: a batch under two names"
            seen[line] = key


def test_deleted_data_stream_is_reported(start_server):
    srv = start_server()
    fh, kin = firehose(srv.endpoint), kinesis(srv.endpoint)
    stream, arn = make_source(kin, 1)
    name = create_from_source(fh, arn, "gone-bucket", "fhgone")
    kin.put_record(StreamName=stream, Data=b"one\n", PartitionKey="k")
    wait_for(lambda: delivered_lines(srv.data_dir, "gone-bucket") == [b"one\n"], 15, "delivered")
    kin.delete_stream(StreamName=stream)

    def failure():
        d = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
        return d.get("FailureDescription", {}).get("Details", "")
    details = wait_for(failure, 20, "the failure reported")
    assert "cannot be read" in details or "Cannot read shard" in details, details
    assert srv.proc.poll() is None
    assert fh.describe_delivery_stream(DeliveryStreamName=name)[
        "DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE"


def test_merge_is_followed_parents_before_child(start_server):
    srv = start_server()
    fh, kin = firehose(srv.endpoint), kinesis(srv.endpoint)
    stream, arn = make_source(kin, 2)
    parents = [f"parent-{i:03}\n".encode() for i in range(100)]
    for i, r in enumerate(parents):
        kin.put_record(StreamName=stream, Data=r, PartitionKey=f"p{i}")
    a, b = sorted(kin.list_shards(StreamName=stream)["Shards"],
                  key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
    kin.merge_shards(StreamName=stream, ShardToMerge=a["ShardId"],
                     AdjacentShardToMerge=b["ShardId"])
    wait_for(lambda: kin.describe_stream_summary(StreamName=stream)
             ["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", 10, "stream ACTIVE")
    child = [f"child-{i:03}\n".encode() for i in range(100)]
    for i, r in enumerate(child):
        kin.put_record(StreamName=stream, Data=r, PartitionKey=f"c{i}")
    # Created after the reshard: parent and child records are there from the start,
    # so only the lineage rule orders them.
    name = create_from_source(fh, arn, "merge-bucket", "fhmerge")
    wait_for(lambda: sorted(delivered_lines(srv.data_dir, "merge-bucket")) == sorted(parents + child),
             30, "every record delivered")
    for body in objects(srv.data_dir, "merge-bucket").values():
        kinds = {l.split(b"-")[0] for l in body.splitlines()}
        assert len(kinds) == 1, kinds
    mtimes = {k: (Path(srv.data_dir) / "buckets" / "merge-bucket" / k).stat().st_mtime_ns
              for k in objects(srv.data_dir, "merge-bucket")}
    kind = {k: objects(srv.data_dir, "merge-bucket")[k].split(b"-")[0] for k in mtimes}
    last_parent = max(t for k, t in mtimes.items() if kind[k] == b"parent")
    first_child = min(t for k, t in mtimes.items() if kind[k] == b"child")
    assert last_parent <= first_child, "a child's object was written before its parent's"


def kpl_aggregate(records: list[tuple[str, bytes]]) -> bytes:
    """A KPL aggregated record (awslabs/amazon-kinesis-producer aggregation-format.md),
    written here by hand: magic, protobuf AggregatedRecord, MD5 of the protobuf."""
    import hashlib

    def varint(n):
        out = bytearray()
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    def field(number, payload):
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    keys = list(dict.fromkeys(k for k, _ in records))
    body = b"".join(field(1, k.encode()) for k in keys)
    for k, data in records:
        body += field(3, varint(1 << 3) + varint(keys.index(k)) + field(3, data))
    return b"\xf3\x89\x9a\xc2" + body + hashlib.md5(body).digest()


def test_kpl_aggregates_are_delivered_as_their_user_records(start_server):
    srv = start_server()
    fh, kin = firehose(srv.endpoint), kinesis(srv.endpoint)
    stream, arn = make_source(kin, 1)
    agg = kpl_aggregate([("a", b"user-1\n"), ("b", b"user-2\n"), ("a", b"user-3\n")])
    damaged = agg[:-1] + bytes([agg[-1] ^ 1])  # wrong digest: delivered as it is
    for data in [agg, b"plain\n", damaged]:
        kin.put_record(StreamName=stream, Data=data, PartitionKey="p")
    name = create_from_source(fh, arn, "source-kpl", "fhkpl")
    want = b"user-1\nuser-2\nuser-3\nplain\n" + damaged
    wait_for(lambda: b"".join(v for _, v in sorted(objects(srv.data_dir, "source-kpl").items()))
             == want, 20, "the user records delivered")

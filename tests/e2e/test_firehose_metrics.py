"""Delivery streams on `GET /metrics`: per delivery stream, the incoming, delivered (by
destination: the local directory `file`, an HTTP endpoint `http`, S3 `s3`), failed and
processing-failed counters match exactly what boto3 put and what arrived; the backlog
gauge counts what is buffered and returns to 0 once it is delivered; the data
freshness grows while records wait; a deleted stream's series are gone. Parsed with the
Prometheus project's own Python parser."""

from __future__ import annotations

import gzip
import uuid

import pytest

from conftest import unique_name, wait_for
from test_firehose import ROLE, firehose, objects, s3_config, wait_active
# The module's own server and its boto3 client, as test_firehose.py makes them.
from test_firehose import fh, server  # noqa: F401 (pytest fixtures)
from test_firehose_http import Receiver, http_config
from test_firehose_processing import processor
from test_firehose_s3 import keys, moto, s3_client, s3_env  # noqa: F401 (moto: a fixture)
from test_firehose_source import kinesis, make_source
from test_metrics import scrape, value

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]

# Records of known, different sizes (the empty record is refused by the model).
SIZES = [1, 7, 100, 999, 4096, 25_000]


def records(tag: str, sizes=SIZES) -> list[bytes]:
    return [(tag.encode() + b"-" + b"x" * n)[:n] for n in sizes]


def figures(ep: str, name: str, destination: str) -> dict:
    m = scrape(ep)
    d = {"delivery_stream": name}
    return {
        "incoming_records": value(m, "freshet_delivery_incoming_records_total", **d),
        "incoming_bytes": value(m, "freshet_delivery_incoming_bytes_total", **d),
        "delivered_records": value(m, "freshet_delivery_delivered_records_total",
                                   destination=destination, **d),
        "delivered_bytes": value(m, "freshet_delivery_delivered_bytes_total",
                                 destination=destination, **d),
        "failures": value(m, "freshet_delivery_failures_total", **d),
        "processing_failed": value(m, "freshet_delivery_processing_failed_total", **d),
        "backlog": value(m, "freshet_delivery_backlog_records", **d),
        "freshness": value(m, "freshet_delivery_data_freshness_seconds", **d),
        "latency_count": value(m, "freshet_delivery_latency_seconds_count", **d),
        "latency_sum": value(m, "freshet_delivery_latency_seconds_sum", **d),
        "all": m,
    }


def series_of(samples: dict, name: str) -> list:
    return [k for k in samples if ("delivery_stream", name) in k[1]]


def test_counters_match_what_was_put_and_delivered_to_files(fh, server):
    ep = server.endpoint
    bucket = f"metrics-{uuid.uuid4().hex[:8]}"
    name = unique_name("fhm")
    fh.create_delivery_stream(DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                              ExtendedS3DestinationConfiguration=s3_config(bucket, 1, 1))
    wait_active(fh, name)
    before = figures(ep, name, "file")
    assert before["incoming_records"] == 0 and before["delivered_records"] == 0
    assert before["backlog"] == 0 and before["freshness"] == 0

    batch = records("batch")
    out = fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": r} for r in batch])
    assert out["FailedPutCount"] == 0
    single = b"one more record"
    fh.put_record(DeliveryStreamName=name, Record={"Data": single})
    n, total = len(batch) + 1, sum(map(len, batch)) + len(single)

    # Everything put reaches the bucket, and the counters say so exactly.
    wait_for(lambda: sum(map(len, objects(server.data_dir, bucket).values())) == total
             and figures(ep, name, "file")["backlog"] == 0,
             20, "every record delivered and the backlog back to 0")
    f = figures(ep, name, "file")
    assert f["incoming_records"] == n and f["incoming_bytes"] == total
    assert f["delivered_records"] == n and f["delivered_bytes"] == total
    assert f["failures"] == 0 and f["processing_failed"] == 0
    assert f["backlog"] == 0 and f["freshness"] == 0
    assert f["latency_count"] == n
    # The interval is 1 s: every record waited for it, and for less than a minute.
    assert n * 0.9 <= f["latency_sum"] <= n * 60
    # No series for destinations this stream does not have.
    assert value(f["all"], "freshet_delivery_delivered_records_total",
                 delivery_stream=name, destination="s3") is None
    assert value(f["all"], "freshet_delivery_delivered_records_total",
                 delivery_stream=name, destination="http") is None


def test_backlog_and_freshness_while_records_wait_and_deleted_streams_are_forgotten(
        fh, server):
    ep = server.endpoint
    name = unique_name("fhm-wait")
    # Buffered for 900 s or 128 MB: nothing is delivered during the test.
    fh.create_delivery_stream(DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                              ExtendedS3DestinationConfiguration=s3_config(
                                  f"wait-{uuid.uuid4().hex[:8]}", 128, 900))
    wait_active(fh, name)
    batch = records("wait")
    fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": r} for r in batch])
    f = figures(ep, name, "file")
    assert f["incoming_records"] == len(batch) and f["backlog"] == len(batch)
    assert f["delivered_records"] == 0
    wait_for(lambda: figures(ep, name, "file")["freshness"] >= 1.0, 10,
             "the waiting records at least 1 s old")
    f = figures(ep, name, "file")
    assert f["backlog"] == len(batch) and f["freshness"] < 60

    fh.delete_delivery_stream(DeliveryStreamName=name)
    wait_for(lambda: not series_of(scrape(ep), name), 10, "the deleted stream's series gone")


def test_processing_failures_are_counted_apart_from_deliveries(fh, server):
    ep = server.endpoint
    bucket = f"metrics-p-{uuid.uuid4().hex[:8]}"
    name = unique_name("fhm-proc")
    fh.create_delivery_stream(
        DeliveryStreamName=name, DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration=s3_config(
            bucket, 1, 1, ProcessingConfiguration={
                "Enabled": True,
                "Processors": [processor("Decompression", CompressionFormat="GZIP")]}))
    wait_active(fh, name)
    good = records("gz", [10, 300, 5000])
    bad = [b"not gzip at all", b"neither"]
    put = [gzip.compress(r) for r in good] + bad
    fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": r} for r in put])
    wait_for(lambda: figures(ep, name, "file")["backlog"] == 0
             and figures(ep, name, "file")["processing_failed"] == len(bad), 20,
             "the batch processed and delivered")
    f = figures(ep, name, "file")
    assert f["incoming_records"] == len(put) and f["incoming_bytes"] == sum(map(len, put))
    # Delivered: the records as processed (gunzipped), not as put.
    assert f["delivered_records"] == len(good) and f["delivered_bytes"] == sum(map(len, good))
    assert f["processing_failed"] == len(bad) and f["failures"] == 0
    objs = objects(server.data_dir, bucket)
    assert any(k.startswith("processing-failed/") for k in objs), sorted(objs)


def test_failed_endpoint_attempts_are_counted_and_deliveries_labelled_http(fh, server):
    ep = server.endpoint
    receiver = Receiver()
    try:
        # The first two attempts fail; the third is taken.
        receiver.script = [Receiver.fail(500, "busy"), Receiver.fail(503, "still busy")]
        name = unique_name("fhm-http")
        fh.create_delivery_stream(
            DeliveryStreamName=name, DeliveryStreamType="DirectPut",
            HttpEndpointDestinationConfiguration=http_config(
                receiver.url, f"http-backup-{uuid.uuid4().hex[:8]}", retry=60))
        wait_active(fh, name)
        # One call: one append, one batch, so its two failures are counted once each.
        batch = records("http")
        fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": r} for r in batch])
        wait_for(lambda: len(receiver.delivered()) == 1
                 and figures(ep, name, "http")["backlog"] == 0, 30,
                 "the batch taken by the endpoint")
        f = figures(ep, name, "http")
        total = sum(map(len, batch))
        assert f["incoming_records"] == len(batch) and f["incoming_bytes"] == total
        assert f["delivered_records"] == len(batch) and f["delivered_bytes"] == total
        assert f["failures"] == 2
        assert f["latency_count"] == len(batch)
        # Nothing went to the backup bucket.
        assert value(f["all"], "freshet_delivery_delivered_records_total",
                     delivery_stream=name, destination="file") == 0
    finally:
        receiver.close()


def test_records_of_a_source_data_stream_count_as_incoming(fh, server):
    ep = server.endpoint
    kin = kinesis(ep)
    stream, arn = make_source(kin, 2)
    bucket = f"metrics-src-{uuid.uuid4().hex[:8]}"
    name = unique_name("fhm-src")
    fh.create_delivery_stream(
        DeliveryStreamName=name, DeliveryStreamType="KinesisStreamAsSource",
        KinesisStreamSourceConfiguration={"KinesisStreamARN": arn, "RoleARN": ROLE},
        ExtendedS3DestinationConfiguration=s3_config(bucket, 1, 1))
    wait_active(fh, name)
    data = records("src")
    out = kin.put_records(StreamName=stream, Records=[
        {"Data": r, "PartitionKey": f"k{i}"} for i, r in enumerate(data)])
    assert out["FailedRecordCount"] == 0
    total = sum(map(len, data))
    wait_for(lambda: figures(ep, name, "file")["delivered_records"] == len(data)
             and figures(ep, name, "file")["backlog"] == 0, 20, "the source's records delivered")
    f = figures(ep, name, "file")
    assert f["incoming_records"] == len(data) and f["incoming_bytes"] == total
    assert f["delivered_bytes"] == total and f["freshness"] == 0
    assert sum(map(len, objects(server.data_dir, bucket).values())) == total


def test_deliveries_to_s3_are_labelled_s3(moto, start_server):  # noqa: F811 (fixture)
    srv = start_server(extra_args=["--delivery-s3", "s3"], env=s3_env(moto))
    s3 = s3_client(moto)
    bucket = f"metrics-s3-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    client = firehose(srv.endpoint)
    name = unique_name("fhm-s3")
    client.create_delivery_stream(DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                              ExtendedS3DestinationConfiguration=s3_config(bucket, 1, 1))
    wait_active(client, name)
    batch = records("s3")
    client.put_record_batch(DeliveryStreamName=name, Records=[{"Data": r} for r in batch])
    wait_for(lambda: keys(s3, bucket) and figures(srv.endpoint, name, "s3")["backlog"] == 0,
             30, "the batch in S3")
    f = figures(srv.endpoint, name, "s3")
    total = sum(map(len, batch))
    assert f["incoming_records"] == len(batch) and f["delivered_records"] == len(batch)
    assert f["delivered_bytes"] == total and f["failures"] == 0
    assert value(f["all"], "freshet_delivery_delivered_records_total",
                 delivery_stream=name, destination="file") is None

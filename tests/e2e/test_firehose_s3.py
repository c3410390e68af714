"""Delivery streams with `--delivery-s3 s3` against a real S3-compatible server that the
test starts on loopback (moto_server): object keys as AWS forms them, contents, GZIP
read back, a multipart object (a batch over the 8 MiB part size), SIGKILLs in mid
delivery (every acknowledged record delivered at least once, no batch under two
names), and start-up refused without credentials."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config

from conftest import REGION, free_port, wait_for
from test_firehose import (NAME_RE, crash_loop_delivers_everything_once, firehose,
                           s3_config, wait_active)

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]


@pytest.fixture(scope="module")
def moto():
    binary = shutil.which("moto_server") or str(Path(__import__("sys").executable).parent / "moto_server")
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            assert proc.poll() is None, "moto_server exited"
            return False

    wait_for(up, 30, "moto_server answering")
    yield url
    proc.terminate()
    proc.wait(10)


def s3_env(moto_url):
    return {"AWS_ENDPOINT_URL_S3": moto_url, "AWS_ENDPOINT_URL": None,
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_SESSION_TOKEN": None, "AWS_REGION": REGION}


def s3_client(moto_url):
    return boto3.client("s3", endpoint_url=moto_url, region_name=REGION,
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(s3={"addressing_style": "path"}))


def objects(s3, bucket):
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def keys(s3, bucket):
    return [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in p.get("Contents", [])]


@pytest.fixture
def s3_server(moto, start_server):
    return start_server(extra_args=["--delivery-s3", "s3"], env=s3_env(moto))


def test_objects_land_in_s3_with_aws_names_and_gzip(moto, s3_server):
    s3 = s3_client(moto)
    bucket = f"fh-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    fh = firehose(s3_server.endpoint)
    plain, zipped = f"plain-{uuid.uuid4().hex[:6]}", f"gz-{uuid.uuid4().hex[:6]}"
    fh.create_delivery_stream(DeliveryStreamName=plain,
                              ExtendedS3DestinationConfiguration=s3_config(bucket, 1, 1, Prefix="raw/"))
    fh.create_delivery_stream(DeliveryStreamName=zipped,
                              ExtendedS3DestinationConfiguration=s3_config(
                                  bucket, 1, 1, Prefix="zipped/", CompressionFormat="GZIP"))
    wait_active(fh, plain)
    wait_active(fh, zipped)
    fh.put_record_batch(DeliveryStreamName=plain, Records=[{"Data": b"a\n"}, {"Data": b"b\n"}])
    fh.put_record(DeliveryStreamName=zipped, Record={"Data": b"zipped record\n"})
    wait_for(lambda: len(keys(s3, bucket)) == 2, 20, "two objects in S3")
    got = objects(s3, bucket)
    (raw_key,) = [k for k in got if k.startswith("raw/")]
    (gz_key,) = [k for k in got if k.startswith("zipped/")]
    # A prefix without expressions is followed by the default YYYY/MM/dd/HH/ (AWS's rule).
    hour = r"\d{4}/\d{2}/\d{2}/\d{2}/"
    assert re.fullmatch(r"raw/" + hour + NAME_RE, raw_key), raw_key
    assert re.fullmatch(r"zipped/" + hour + NAME_RE + r"\.gz", gz_key), gz_key
    assert re.fullmatch(r"raw/" + hour + NAME_RE, raw_key)["stream"] == plain
    assert got[raw_key] == b"a\nb\n"
    assert gzip.decompress(got[gz_key]) == b"zipped record\n"
    desc = fh.describe_delivery_stream(DeliveryStreamName=plain)["DeliveryStreamDescription"]
    assert "FailureDescription" not in desc


def test_a_batch_over_the_part_size_is_a_multipart_object(moto, s3_server):
    s3 = s3_client(moto)
    bucket = f"fh-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    fh = firehose(s3_server.endpoint)
    name = f"big-{uuid.uuid4().hex[:6]}"
    # One batch of at least 9 MiB: the size hint, not the (long) interval, closes it.
    fh.create_delivery_stream(DeliveryStreamName=name,
                              ExtendedS3DestinationConfiguration=s3_config(bucket, 9, 300))
    wait_active(fh, name)
    sent = []
    total = 0
    while total < 9 * 1024 * 1024 + 4096:
        recs = [f"{uuid.uuid4().hex}{'m' * 1000}\n".encode() for _ in range(500)]
        out = fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": r} for r in recs])
        assert out["FailedPutCount"] == 0
        sent.extend(recs)
        total += sum(map(len, recs))
    (key,) = wait_for(lambda: keys(s3, bucket), 60, "the large object")
    head = s3.head_object(Bucket=bucket, Key=key)
    # A multipart object's ETag is "<md5 of the part md5s>-<number of parts>".
    assert re.fullmatch(r'"[0-9a-f]{32}-[2-9]"', head["ETag"]), head["ETag"]
    assert head["ContentLength"] > 8 * 1024 * 1024
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    lines = body.splitlines(keepends=True)
    assert lines == sent[:len(lines)]  # in order, whole, nothing torn at part edges


def test_sigkill_in_mid_delivery_to_s3_loses_and_duplicates_nothing(moto, s3_server):
    srv = s3_server
    s3 = s3_client(moto)
    bucket = f"crash-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    name = "crashy-s3"
    firehose(srv.endpoint).create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_config(bucket, 1, 1, CompressionFormat="GZIP"))
    wait_active(firehose(srv.endpoint), name)
    crash_loop_delivers_everything_once(srv, name, lambda: objects(s3, bucket), wait=30)


def test_partitions_are_written_together_and_retried_until_the_bucket_exists(moto, s3_server):
    """A batch split into more partitions than are written at once (8): while the bucket
    does not exist every object fails and the error is shown; once it exists, each
    partition lands as exactly one object holding exactly its records, in order, and the
    error clears."""
    from test_firehose_processing import processor
    s3 = s3_client(moto)
    bucket = f"parts-{uuid.uuid4().hex[:12]}"
    fh = firehose(s3_server.endpoint)
    name = f"parts-{uuid.uuid4().hex[:6]}"
    fh.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=s3_config(
        bucket, 1, 1, CompressionFormat="GZIP", Prefix="k=!{partitionKeyFromQuery:k}/",
        ErrorOutputPrefix="errors/", DynamicPartitioningConfiguration={"Enabled": True},
        ProcessingConfiguration={"Enabled": True, "Processors": [
            processor("MetadataExtraction", MetadataExtractionQuery="{k: .k}", JsonParsingEngine="JQ-1.6"),
            processor("AppendDelimiterToRecord")]}))
    wait_active(fh, name)
    keys_ = [f"p{i}" for i in range(20)]
    sent = {k: [] for k in keys_}
    records = []
    for n in range(200):
        k = keys_[n % len(keys_)]
        rec = f'{{"k":"{k}","n":{n}}}'.encode()
        sent[k].append(rec + b"\n")
        records.append({"Data": rec})
    assert fh.put_record_batch(DeliveryStreamName=name, Records=records)["FailedPutCount"] == 0
    failure = wait_for(lambda: fh.describe_delivery_stream(DeliveryStreamName=name)
                       ["DeliveryStreamDescription"].get("FailureDescription"), 30, "the delivery error")
    assert "NoSuchBucket" in failure["Details"] or "bucket" in failure["Details"].lower(), failure
    s3.create_bucket(Bucket=bucket)
    wait_for(lambda: len(keys(s3, bucket)) >= len(keys_), 60, "an object per partition")
    got = objects(s3, bucket)
    assert len(got) == len(keys_), sorted(got)
    for key, body in got.items():
        part = key.split("/")[0]
        assert part.startswith("k=") and key.endswith(".gz"), key
        assert gzip.decompress(body).splitlines(keepends=True) == sent[part[2:]], key
    wait_for(lambda: "FailureDescription" not in fh.describe_delivery_stream(
        DeliveryStreamName=name)["DeliveryStreamDescription"], 20, "the error to clear")


def test_s3_mode_without_credentials_refuses_to_start(moto):
    from conftest import FreshetServer
    srv = FreshetServer(extra_args=["--delivery-s3", "s3"],
                        env={**s3_env(moto), "AWS_ACCESS_KEY_ID": None,
                             "AWS_SECRET_ACCESS_KEY": None})
    with pytest.raises(RuntimeError):
        srv.start(ready_timeout=10)
    assert "AWS_ACCESS_KEY_ID" in srv.log_text(), srv.log_text()
    srv.cleanup()

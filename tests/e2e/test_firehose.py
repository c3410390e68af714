"""Delivery streams (the Amazon Data Firehose API) with boto3 `firehose` and the AWS CLI:
the control plane and its errors, Direct PUT records delivered as objects under
<data-dir>/buckets/<bucket>/<key> with AWS's names, buffering by size and interval,
GZIP, and at-least-once delivery without duplicate names across SIGKILLs."""

from __future__ import annotations

import gzip
import json
import re
import signal
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, ACCOUNT, run_aws, unique_name, wait_for

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]

ROLE = f"arn:aws:iam::{ACCOUNT}:role/firehose"
NAME_RE = r"(?P<stream>[\w.-]+)-1-(?P<ts>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})-(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"


@pytest.fixture(scope="module")
def server():
    from conftest import FreshetServer, can_start_dedicated
    ok, why = can_start_dedicated()
    if not ok:
        pytest.skip(why)
    srv = FreshetServer().start()
    yield srv
    srv.cleanup()


def firehose(endpoint, retries=3):
    return boto3.client(
        "firehose", endpoint_url=endpoint, region_name=REGION,
        config=Config(retries={"max_attempts": retries, "mode": "standard"},
                      connect_timeout=5, read_timeout=20))


@pytest.fixture
def fh(server):
    return firehose(server.endpoint)


def s3_config(bucket, size=1, interval=1, **extra):
    cfg = {"RoleARN": ROLE, "BucketARN": f"arn:aws:s3:::{bucket}",
           "BufferingHints": {"SizeInMBs": size, "IntervalInSeconds": interval}}
    cfg.update(extra)
    return cfg


def wait_active(fh, name, timeout=10):
    return wait_for(lambda: fh.describe_delivery_stream(DeliveryStreamName=name)
                    ["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE",
                    timeout, f"{name} ACTIVE")


def objects(data_dir, bucket):
    root = Path(data_dir) / "buckets" / bucket
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def err(exc):
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def test_control_plane(fh, server):
    name = unique_name("fh")
    arn = fh.create_delivery_stream(
        DeliveryStreamName=name, DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration=s3_config("ctl-bucket", 2, 60, Prefix="p/",
                                                     CompressionFormat="GZIP"),
        Tags=[{"Key": "team", "Value": "a"}])["DeliveryStreamARN"]
    assert arn == f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/{name}"
    first = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert first["DeliveryStreamStatus"] in ("CREATING", "ACTIVE")
    wait_active(fh, name)
    d = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert d["VersionId"] == "1" and d["DeliveryStreamType"] == "DirectPut"
    assert d["HasMoreDestinations"] is False
    dest = d["Destinations"][0]
    assert dest["DestinationId"] == "destinationId-000000000001"
    ext = dest["ExtendedS3DestinationDescription"]
    assert ext["BucketARN"] == "arn:aws:s3:::ctl-bucket" and ext["Prefix"] == "p/"
    assert ext["BufferingHints"] == {"SizeInMBs": 2, "IntervalInSeconds": 60}
    assert ext["CompressionFormat"] == "GZIP"
    assert dest["S3DestinationDescription"]["RoleARN"] == ROLE

    with pytest.raises(ClientError) as e:
        fh.create_delivery_stream(DeliveryStreamName=name,
                                  S3DestinationConfiguration=s3_config("ctl-bucket"))
    assert err(e) == ("ResourceInUseException",
                      f"Firehose {name} under accountId {ACCOUNT} already exists")

    assert name in fh.list_delivery_streams(Limit=10000)["DeliveryStreamNames"]
    fh.tag_delivery_stream(DeliveryStreamName=name, Tags=[{"Key": "env", "Value": "dev"}])
    tags = fh.list_tags_for_delivery_stream(DeliveryStreamName=name)
    assert tags["Tags"] == [{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "a"}]
    assert tags["HasMoreTags"] is False
    fh.untag_delivery_stream(DeliveryStreamName=name, TagKeys=["team"])
    assert fh.list_tags_for_delivery_stream(DeliveryStreamName=name)["Tags"] == [
        {"Key": "env", "Value": "dev"}]
    with pytest.raises(ClientError) as e:
        fh.tag_delivery_stream(DeliveryStreamName=name,
                               Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
    assert err(e)[0] == "LimitExceededException"

    fh.delete_delivery_stream(DeliveryStreamName=name)
    wait_for(lambda: name not in fh.list_delivery_streams(Limit=10000)["DeliveryStreamNames"],
             10, "deleted stream gone")
    for call in (lambda: fh.describe_delivery_stream(DeliveryStreamName=name),
                 lambda: fh.put_record(DeliveryStreamName=name, Record={"Data": b"x"}),
                 lambda: fh.delete_delivery_stream(DeliveryStreamName=name)):
        with pytest.raises(ClientError) as e:
            call()
        assert err(e) == ("ResourceNotFoundException",
                          f"Firehose {name} under account {ACCOUNT} not found.")


def test_validation_and_unsupported(fh):
    name = unique_name("fh")
    with pytest.raises(ClientError) as e:
        fh.create_delivery_stream(DeliveryStreamName=name,
                                  ExtendedS3DestinationConfiguration=s3_config("b-bucket", 200))
    code, msg = err(e)
    assert code == "ValidationException"
    assert msg == ("1 validation error detected: Value '200' at "
                   "'extendedS3DestinationConfiguration.bufferingHints.sizeInMBs' failed to "
                   "satisfy constraint: Member must have value less than or equal to 128")
    with pytest.raises(ClientError) as e:
        fh.create_delivery_stream(DeliveryStreamName="bad name!",
                                  ExtendedS3DestinationConfiguration=s3_config("b-bucket"))
    assert err(e)[0] == "ValidationException"
    assert "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+" in err(e)[1]
    for kwargs, what in [
        ({"DeliveryStreamType": "MSKAsSource"}, "DeliveryStreamType MSKAsSource"),
        ({"ExtendedS3DestinationConfiguration": s3_config(
            "b-bucket", DataFormatConversionConfiguration={"Enabled": True})},
         "DataFormatConversionConfiguration"),
        ({"HttpEndpointDestinationConfiguration": {
            "EndpointConfiguration": {"Url": "https://example.com"},
            "SecretsManagerConfiguration": {"Enabled": True},
            "S3Configuration": s3_config("b-bucket")}},
         "HttpEndpointDestinationConfiguration.SecretsManagerConfiguration"),
    ]:
        kwargs.setdefault("ExtendedS3DestinationConfiguration", s3_config("b-bucket"))
        if "HttpEndpointDestinationConfiguration" in kwargs:
            kwargs.pop("ExtendedS3DestinationConfiguration")
        with pytest.raises(ClientError) as e:
            fh.create_delivery_stream(DeliveryStreamName=name, **kwargs)
        code, msg = err(e)
        assert code == "InvalidArgumentException", msg
        assert what in msg and "not supported" in msg, msg
    with pytest.raises(ClientError) as e:
        fh.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=s3_config(
            "b-bucket", DynamicPartitioningConfiguration={"Enabled": True}))
    assert err(e)[0] == "InvalidArgumentException"
    assert "Dynamic partitioning is enabled, but the Prefix has no" in err(e)[1]
    with pytest.raises(ClientError) as e:
        fh.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=s3_config(
            "b-bucket", Prefix="!{timestamp:yyyy}/"))
    assert err(e) == ("InvalidArgumentException",
                      "ErrorOutputPrefix cannot be null or empty when Prefix contains expressions.")
    with pytest.raises(ClientError) as e:
        fh.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=s3_config(
            "b-bucket", Prefix="!{nope:x}/", ErrorOutputPrefix="e/"))
    assert err(e)[0] == "InvalidArgumentException" and "!{nope:x}" in err(e)[1]
    assert name not in fh.list_delivery_streams(Limit=10000)["DeliveryStreamNames"]


def test_put_limits(fh):
    name = unique_name("fh")
    fh.create_delivery_stream(DeliveryStreamName=name,
                              ExtendedS3DestinationConfiguration=s3_config("lim-bucket", 128, 900))
    wait_active(fh, name)
    with pytest.raises(ClientError) as e:
        fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": b"x"}] * 501)
    assert err(e)[0] == "ValidationException"
    assert ("at 'records' failed to satisfy constraint: Member must have length less than or "
            "equal to 500") in err(e)[1]
    with pytest.raises(ClientError) as e:
        fh.put_record(DeliveryStreamName=name, Record={"Data": b"x" * 1_024_001})
    assert err(e)[0] == "ValidationException"
    assert ("at 'record.data' failed to satisfy constraint: Member must have length less than "
            "or equal to 1024000") in err(e)[1]
    with pytest.raises(ClientError) as e:
        fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": b"x" * 1_000_000}] * 5)
    assert err(e)[0] == "InvalidArgumentException" and "4194304" in err(e)[1]
    out = fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": b"x" * 1_024_000}] * 4)
    assert out["FailedPutCount"] == 0 and len(out["RequestResponses"]) == 4
    assert len({r["RecordId"] for r in out["RequestResponses"]}) == 4


def test_records_land_as_objects_with_aws_names(fh, server):
    name = unique_name("fh")
    bucket = "plain-bucket"
    fh.create_delivery_stream(DeliveryStreamName=name,
                              ExtendedS3DestinationConfiguration=s3_config(bucket, 1, 1, Prefix="raw/"))
    wait_active(fh, name)
    before = time.time()
    fh.put_record(DeliveryStreamName=name, Record={"Data": b"one\n"})
    fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": b"two\n"}, {"Data": b"three"}])
    found = wait_for(lambda: objects(server.data_dir, bucket), 15, "an object")
    (key, body), = found.items()
    assert body == b"one\ntwo\nthree"
    t = time.gmtime(before)
    m = re.fullmatch(r"raw/(\d{4})/(\d{2})/(\d{2})/(\d{2})/" + NAME_RE, key)
    assert m, key
    assert m["stream"] == name
    ts = time.strptime(m["ts"], "%Y-%m-%d-%H-%M-%S")
    assert abs(time.mktime(ts) - time.mktime(t)) < 5
    assert (m[1], m[2], m[3], m[4]) == tuple(m["ts"].split("-")[:4])


def test_gzip_size_buffering_and_cli(server):
    name = unique_name("fh")
    bucket = "gz-bucket"
    cfg = json.dumps(s3_config(bucket, 1, 900, CompressionFormat="GZIP",
                               Prefix="y=!{timestamp:yyyy}/!{firehose:random-string}/",
                               ErrorOutputPrefix="err/!{firehose:error-output-type}/"))
    run_aws(server.endpoint, "firehose", "create-delivery-stream", "--delivery-stream-name", name,
            "--extended-s3-destination-configuration", cfg)
    fh = firehose(server.endpoint)
    wait_active(fh, name)
    d = json.loads(run_aws(server.endpoint, "firehose", "describe-delivery-stream",
                           "--delivery-stream-name", name).stdout)
    assert d["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE"
    assert name in json.loads(run_aws(server.endpoint, "firehose", "list-delivery-streams").stdout)[
        "DeliveryStreamNames"]
    # 1.5 MB with a 1 MB size hint and a 900 s interval: one object by size, no more.
    chunk = [(f"{i:07d}," + "x" * 1000 + "\n").encode() for i in range(1500)]
    for i in range(0, len(chunk), 500):
        fh.put_record_batch(DeliveryStreamName=name,
                            Records=[{"Data": r} for r in chunk[i:i + 500]])
    p = run_aws(server.endpoint, "firehose", "put-record", "--delivery-stream-name", name,
                # awscli v1 sends a blob argument's text as the bytes (base64 on the wire).
                "--record", json.dumps({"Data": "cli\n"}))
    assert json.loads(p.stdout)["RecordId"]
    found = wait_for(lambda: objects(server.data_dir, bucket), 15, "a size-triggered object")
    (key, body), = found.items()
    assert re.fullmatch(r"y=\d{4}/[a-z0-9]{11}/" + NAME_RE + r"\.gz", key), key
    data = gzip.decompress(body)
    assert len(data) >= 1024 * 1024
    assert data == b"".join(chunk)[:len(data)]
    # The rest waits for the interval or a flush: a clean stop delivers it.
    assert server.stop() == 0
    delivered = objects(server.data_dir, bucket)
    lines = [line for body in delivered.values()
             for line in gzip.decompress(body).splitlines(keepends=True)]
    assert len(delivered) == 2, list(delivered)
    assert len(lines) == len(chunk) + 1, (len(lines), [k for k in delivered])
    assert sorted(lines) == sorted(chunk + [b"cli\n"])
    server.start()


def test_interval_buffering(fh, server):
    name = unique_name("fh")
    bucket = "interval-bucket"
    fh.create_delivery_stream(DeliveryStreamName=name,
                              ExtendedS3DestinationConfiguration=s3_config(bucket, 128, 1))
    wait_active(fh, name)
    put_at = time.monotonic()
    fh.put_record(DeliveryStreamName=name, Record={"Data": b"tick"})
    wait_for(lambda: objects(server.data_dir, bucket), 10, "an interval-triggered object")
    assert time.monotonic() - put_at < 5
    assert list(objects(server.data_dir, bucket).values()) == [b"tick"]


def test_sigkill_in_mid_delivery_loses_and_duplicates_nothing(start_server):
    srv = start_server()
    name = "crashy"
    bucket = "crash-bucket"
    firehose(srv.endpoint).create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_config(bucket, 1, 1, CompressionFormat="GZIP"))
    wait_active(firehose(srv.endpoint), name)
    crash_loop_delivers_everything_once(srv, name, lambda: objects(srv.data_dir, bucket))
    # A restart resumes from the checkpoint: nothing is delivered again.
    before = objects(srv.data_dir, bucket)
    srv.start()
    firehose(srv.endpoint).put_record(DeliveryStreamName=name, Record={"Data": b"after\n"})
    wait_for(lambda: len(objects(srv.data_dir, bucket)) == len(before) + 1, 15, "the new object")
    after = objects(srv.data_dir, bucket)
    assert {k: v for k, v in after.items() if k in before} == before
    (new,) = [v for k, v in after.items() if k not in before]
    assert gzip.decompress(new) == b"after\n"


def put_while_killing(srv, name, progressed, rounds, wait):
    """Puts batches of unique records from a thread while SIGKILLing and restarting
    `srv` `rounds` times, each once `progressed(round, acked)` holds; returns the
    records acknowledged and those sent."""
    acked: set[bytes] = set()
    sent: set[bytes] = set()
    stop = threading.Event()
    endpoint = {"url": srv.endpoint}

    def producer():
        while not stop.is_set():
            # No SDK retries: a retried batch would be put twice, legitimately.
            client = firehose(endpoint["url"], retries=1)
            recs = [f"{uuid.uuid4().hex},{'y' * 2000}\n".encode() for _ in range(200)]
            sent.update(recs)
            try:
                out = client.put_record_batch(DeliveryStreamName=name,
                                              Records=[{"Data": r} for r in recs])
                if out["FailedPutCount"] == 0:
                    acked.update(recs)
            except Exception:
                time.sleep(0.05)  # the server is down: back off before the next try

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    for round_ in range(rounds):
        wait_for(lambda: progressed(round_, acked), wait, "deliveries under way")
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.start()
        endpoint["url"] = srv.endpoint
    stop.set()
    t.join(30)
    return acked, sent


def crash_loop_delivers_everything_once(srv, name, bodies, rounds=4, wait=20):
    """Puts records from a thread while SIGKILLing `srv` `rounds` times, each after one
    more object has appeared in `bodies()` (key -> GZIP body), then stops it cleanly and
    checks: every acknowledged record delivered, none in two objects, AWS's names."""
    acked, sent = put_while_killing(srv, name, lambda round_, _acked: len(bodies()) > round_,
                                    rounds, wait)
    assert len(acked) > 1000
    assert srv.stop() == 0  # clean: flushes every partial batch
    seen: dict[bytes, str] = {}
    for key, body in bodies().items():
        assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\d{2}/" + NAME_RE + r"\.gz", key), key
        for line in gzip.decompress(body).splitlines(keepends=True):
            assert line in sent
            assert line not in seen, f"record in {seen[line]} and {key}: a batch under two names"
            seen[line] = key
    missing = acked - seen.keys()
    assert not missing, f"{len(missing)} acknowledged records never delivered"


def test_cli_tail_follows_delivery_until_the_stream_is_deleted(fh, server):
    """`freshet delivery tail NAME --json` prints a line whenever the stream's figures
    change: the records put arrive as incoming, then as delivered with the backlog back
    at 0; deleting the stream ends the tail. A missing stream is AWS's error."""
    import subprocess
    from conftest import freshet_bin
    name = unique_name("fh-tail")
    fh.create_delivery_stream(DeliveryStreamName=name,
                              ExtendedS3DestinationConfiguration=s3_config("tail-bucket", 1, 1))
    wait_active(fh, name)
    tail = subprocess.Popen([str(freshet_bin()), "delivery", "tail", name, "--json", "--interval-ms", "100",
                             "--endpoint", server.endpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[dict] = []
    reader = threading.Thread(target=lambda: [lines.append(json.loads(line)) for line in tail.stdout],
                              daemon=True)
    reader.start()
    try:
        wait_for(lambda: lines, 20, "the first tail line")
        for batch in range(3):
            fh.put_record_batch(DeliveryStreamName=name,
                                Records=[{"Data": f"{batch}-{i}\n".encode()} for i in range(10)])
        def settled_line():
            last = lines[-1] if lines else None
            return last and last["delivered_records"] == 30 and last["incoming_records"] == 30 \
                and last["backlog_records"] == 0 and last["oldest_undelivered_seconds"] == 0
        wait_for(settled_line, 30, "the tail showing all 30 records delivered, nothing waiting")
        assert any(line["incoming_records"] == 30 for line in lines), lines
        delivered = [line["delivered_records"] for line in lines]
        assert delivered == sorted(delivered), delivered
        assert all(line["status"] == "ACTIVE" and line["last_error"] is None for line in lines), lines
        # One line per change, not per look: with everything delivered nothing changes,
        # so ten more looks (1 s) print nothing.
        settled = len(lines)
        time.sleep(1.0)
        assert len(lines) == settled, lines[settled:]
        fh.delete_delivery_stream(DeliveryStreamName=name)
        assert tail.wait(timeout=30) == 0
        assert f"{name} was deleted" in tail.stderr.read()
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    missing = subprocess.run([str(freshet_bin()), "delivery", "tail", unique_name("nope"),
                              "--endpoint", server.endpoint], capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr, missing.stderr

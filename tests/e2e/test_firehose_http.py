"""Delivery streams to an HTTP endpoint (HttpEndpointDestinationConfiguration) with boto3
against the real binary and a real receiver (http.server on loopback, started here):
batching by the buffering hints, the request's headers and body as AWS specifies them
(gzip, access key, common attributes), one request id across retries, the backup bucket
for batches the endpoint never takes (or answers with the wrong request id), AllData
backups, at-least-once across SIGKILLs, and AWS's errors for bad configurations."""

from __future__ import annotations

import base64
import gzip
import json
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, unique_name, wait_for
from test_firehose import (NAME_RE, ROLE, err, firehose, objects, put_while_killing,
                           s3_config, wait_active)
from test_tls import Pki
# The module's own server and its boto3 client, as test_firehose.py makes them.
from test_firehose import fh, server  # noqa: F401 (pytest fixtures)

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
MIB = 1024 * 1024


class Receiver:
    """An HTTP endpoint on a free loopback port. Each request is recorded (headers with
    lowercase names, the body after gzip decoding, its JSON, the status answered);
    `script` holds the answers of the next requests (callables of the request id), and
    `default` answers the rest."""

    def __init__(self, tls: tuple[Path, Path] | None = None):
        self.requests: list[dict] = []
        self.script: list = []
        self.default = self.ok
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                rid = headers.get("x-amz-firehose-request-id", "")
                with receiver.lock:
                    answer = receiver.script.pop(0) if receiver.script else receiver.default
                status, payload = answer(rid)
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": headers,
                                              "raw": raw, "body": body, "json": doc,
                                              "status": status, "answer": payload})
                out = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:  # (certificate chain, key) files
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}/ingest?source=freshet"

    @staticmethod
    def ok(rid):
        return 200, {"requestId": rid, "timestamp": int(time.time() * 1000)}

    @staticmethod
    def fail(status, message):
        return lambda rid: (status, {"requestId": rid, "timestamp": int(time.time() * 1000),
                                     "errorMessage": message})

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.requests)

    def delivered(self) -> list[dict]:
        """The requests answered with a delivery (200 and the same request id)."""
        return [r for r in self.snapshot() if r["status"] == 200
                and r["answer"].get("requestId") == r["headers"].get("x-amz-firehose-request-id")]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def http_config(url, bucket, size=1, interval=1, retry=300, **extra):
    cfg = {"EndpointConfiguration": {"Url": url, "Name": "receiver"},
           "BufferingHints": {"SizeInMBs": size, "IntervalInSeconds": interval},
           "RetryOptions": {"DurationInSeconds": retry},
           "RoleARN": ROLE,
           "S3Configuration": s3_config(bucket)}
    cfg.update(extra)
    return cfg


def create(fh, url, bucket, **kwargs):
    name = unique_name("fhh")
    fh.create_delivery_stream(DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                              HttpEndpointDestinationConfiguration=http_config(url, bucket, **kwargs))
    wait_active(fh, name)
    return name


def records_of(req) -> list[bytes]:
    return [base64.b64decode(r["data"]) for r in req["json"]["records"]]


def test_batches_headers_and_body_follow_the_protocol(fh, receiver):
    name = create(fh, receiver.url, "http-backup", size=1, interval=60,
                  RequestConfiguration={
                      "ContentEncoding": "GZIP",
                      "CommonAttributes": [{"AttributeName": "team", "AttributeValue": "ingest"},
                                           {"AttributeName": "env", "AttributeValue": "ci \"1\""}]},
                  EndpointConfiguration={"Url": receiver.url, "Name": "receiver",
                                         "AccessKey": "s3cr3t-key"})
    # Three 400 KB records pass the 1 MiB size hint: one request, long before 60 s.
    sent = [bytes([65 + i]) * (400 * 1024) for i in range(3)]
    put_at = time.monotonic()
    for r in sent:
        fh.put_record(DeliveryStreamName=name, Record={"Data": r})
    wait_for(lambda: receiver.snapshot(), 20, "the size-full batch")
    assert time.monotonic() - put_at < 30
    (req,) = receiver.snapshot()
    h = req["headers"]
    assert req["path"] == "/ingest?source=freshet"
    assert h["content-type"] == "application/json"
    assert h["content-encoding"] == "gzip"
    assert h["x-amz-firehose-protocol-version"] == "1.0"
    assert re.fullmatch(UUID_RE, h["x-amz-firehose-request-id"])
    assert h["x-amz-firehose-access-key"] == "s3cr3t-key"
    assert h["x-amz-firehose-source-arn"].endswith(f":deliverystream/{name}")
    assert json.loads(h["x-amz-firehose-common-attributes"]) == {
        "commonAttributes": {"team": "ingest", "env": "ci \"1\""}}
    assert int(h["content-length"]) == len(req["raw"]) < len(req["body"])
    doc = req["json"]
    assert set(doc) == {"requestId", "timestamp", "records"}
    assert doc["requestId"] == h["x-amz-firehose-request-id"]
    assert abs(doc["timestamp"] - time.time() * 1000) < 120_000
    assert records_of(req) == sent
    assert all(set(r) == {"data"} for r in doc["records"])

    desc = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    (dest,) = desc["Destinations"]
    http = dest["HttpEndpointDestinationDescription"]
    assert http["EndpointConfiguration"] == {"Url": receiver.url, "Name": "receiver"}
    assert "AccessKey" not in json.dumps(desc, default=str)
    assert "s3cr3t-key" not in json.dumps(desc, default=str)
    assert http["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 60}
    assert http["RequestConfiguration"]["ContentEncoding"] == "GZIP"
    assert http["RetryOptions"] == {"DurationInSeconds": 300}
    assert http["S3BackupMode"] == "FailedDataOnly"
    assert http["S3DestinationDescription"]["BucketARN"] == "arn:aws:s3:::http-backup"
    assert "FailureDescription" not in desc


def test_interval_buffering_and_defaults(fh, receiver):
    name = unique_name("fhh")
    fh.create_delivery_stream(
        DeliveryStreamName=name,
        HttpEndpointDestinationConfiguration={
            "EndpointConfiguration": {"Url": receiver.url},
            "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": 1},
            "S3Configuration": s3_config("http-backup")})
    wait_active(fh, name)
    fh.put_record_batch(DeliveryStreamName=name,
                        Records=[{"Data": b"one\n"}, {"Data": b"two\n"}])
    wait_for(lambda: receiver.snapshot(), 20, "the interval batch")
    (req,) = receiver.snapshot()
    assert records_of(req) == [b"one\n", b"two\n"]
    for absent in ("content-encoding", "x-amz-firehose-access-key",
                   "x-amz-firehose-common-attributes"):
        assert absent not in req["headers"], absent
    http = fh.describe_delivery_stream(DeliveryStreamName=name)[
        "DeliveryStreamDescription"]["Destinations"][0]["HttpEndpointDestinationDescription"]
    assert http["RetryOptions"] == {"DurationInSeconds": 300}
    assert http["RequestConfiguration"]["ContentEncoding"] == "NONE"
    assert http["S3BackupMode"] == "FailedDataOnly"


def test_one_request_id_across_retries(fh, receiver):
    receiver.script = [Receiver.fail(500, "warming up"), Receiver.fail(500, "still warming")]
    name = create(fh, receiver.url, "http-backup", interval=0)
    fh.put_record(DeliveryStreamName=name, Record={"Data": b"retried\n"})
    wait_for(lambda: receiver.delivered(), 30, "the third attempt")
    reqs = receiver.snapshot()
    assert [r["status"] for r in reqs] == [500, 500, 200]
    ids = {r["headers"]["x-amz-firehose-request-id"] for r in reqs}
    assert len(ids) == 1, ids
    assert all(records_of(r) == [b"retried\n"] for r in reqs)
    # The delivered batch is never sent again: the next request is the next batch.
    fh.put_record(DeliveryStreamName=name, Record={"Data": b"next\n"})
    wait_for(lambda: len(receiver.snapshot()) == 4, 30, "the next batch")
    last = receiver.snapshot()[3]
    assert records_of(last) == [b"next\n"]
    assert last["headers"]["x-amz-firehose-request-id"] not in ids
    assert "FailureDescription" not in fh.describe_delivery_stream(
        DeliveryStreamName=name)["DeliveryStreamDescription"]


def backup_objects(server, bucket, name):
    return {k: v for k, v in objects(server.data_dir, bucket).items() if f"/{name}-1-" in k}


def test_a_batch_the_endpoint_never_takes_goes_to_the_backup_bucket(fh, server, receiver):
    receiver.default = Receiver.fail(503, "receiver is down for maintenance")
    bucket = "http-failed-bucket"
    name = create(fh, receiver.url, bucket, interval=0, retry=2)
    sent = [b"first\n", b"second\n"]
    fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": r} for r in sent])
    found = wait_for(lambda: backup_objects(server, bucket, name), 30, "the failed-data object")
    ((key, body),) = found.items()
    assert re.fullmatch(r"http-endpoint-failed/\d{4}/\d{2}/\d{2}/\d{2}/" + NAME_RE, key), key
    lines = [json.loads(line) for line in body.splitlines()]
    assert [base64.b64decode(x["rawData"]) for x in lines] == sent
    reqs = receiver.snapshot()
    assert len(reqs) >= 2, "retried within the 2 s"
    assert len({r["headers"]["x-amz-firehose-request-id"] for r in reqs}) == 1
    for x in lines:
        assert x["errorCode"] == "HttpEndpoint.DestinationException"
        assert "receiver is down for maintenance" in x["errorMessage"]
        assert x["attemptsMade"] == len(reqs)
        assert x["attemptEndingTimestamp"] >= x["arrivalTimestamp"] > 0
    desc = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    assert "receiver is down for maintenance" in desc["FailureDescription"]["Details"]
    # The stream goes on: the next batch is tried (and backed up) too.
    fh.put_record(DeliveryStreamName=name, Record={"Data": b"third\n"})
    wait_for(lambda: len(backup_objects(server, bucket, name)) == 2, 30, "the second failed batch")


def test_a_200_with_the_wrong_request_id_is_a_failure(fh, server, receiver):
    receiver.default = lambda rid: (200, {"requestId": "not-" + rid, "timestamp": 1})
    bucket = "http-wrongid-bucket"
    name = create(fh, receiver.url, bucket, interval=0, retry=0,
                  S3Configuration=s3_config(bucket, ErrorOutputPrefix="bad/!{firehose:error-output-type}/"))
    fh.put_record(DeliveryStreamName=name, Record={"Data": b"lost?\n"})
    found = wait_for(lambda: objects(server.data_dir, bucket), 30, "the failed-data object")
    ((key, body),) = found.items()
    assert re.fullmatch(r"bad/http-endpoint-failed/" + NAME_RE, key), key
    (line,) = [json.loads(x) for x in body.splitlines()]
    assert base64.b64decode(line["rawData"]) == b"lost?\n"
    assert line["errorCode"] == "HttpEndpoint.InvalidResponseFromDestination"
    assert "not-" in line["errorMessage"]
    # Retry duration 0: one attempt only.
    assert len(receiver.snapshot()) == 1


def test_all_data_backs_up_delivered_batches(fh, server, receiver):
    bucket = "http-alldata-bucket"
    name = create(fh, receiver.url, bucket, interval=0, S3BackupMode="AllData",
                  S3Configuration=s3_config(bucket, Prefix="all/", CompressionFormat="GZIP"))
    fh.put_record(DeliveryStreamName=name, Record={"Data": b"kept twice\n"})
    found = wait_for(lambda: objects(server.data_dir, bucket), 30, "the AllData object")
    ((key, body),) = found.items()
    assert re.fullmatch(r"all/\d{4}/\d{2}/\d{2}/\d{2}/" + NAME_RE + r"\.gz", key), key
    assert gzip.decompress(body) == b"kept twice\n"
    assert [records_of(r) for r in receiver.delivered()] == [[b"kept twice\n"]]
    http = fh.describe_delivery_stream(DeliveryStreamName=name)[
        "DeliveryStreamDescription"]["Destinations"][0]["HttpEndpointDestinationDescription"]
    assert http["S3BackupMode"] == "AllData"


def test_bad_configurations_get_aws_errors(server):
    # No client-side validation: the server's own errors are under test.
    fh = boto3.client("firehose", endpoint_url=server.endpoint, region_name=REGION,
                      config=Config(parameter_validation=False, retries={"max_attempts": 1}))
    name = unique_name("fhh")
    url = "https://example.com/ingest"

    def refused(cfg):
        with pytest.raises(ClientError) as e:
            fh.create_delivery_stream(DeliveryStreamName=name,
                                      HttpEndpointDestinationConfiguration=cfg)
        return err(e)

    cfg = http_config(url, "b-bucket")
    cfg["EndpointConfiguration"] = {"Name": "x"}
    assert refused(cfg) == ("ValidationException",
                            "1 validation error detected: Value null at "
                            "'httpEndpointDestinationConfiguration.endpointConfiguration.url' "
                            "failed to satisfy constraint: Member must not be null")
    assert refused(http_config(url, "b-bucket", size=65)) == (
        "ValidationException",
        "1 validation error detected: Value '65' at "
        "'httpEndpointDestinationConfiguration.bufferingHints.sizeInMBs' failed to satisfy "
        "constraint: Member must have value less than or equal to 64")
    code, msg = refused(http_config(url, "b-bucket", interval=901))
    assert code == "ValidationException" and "less than or equal to 900" in msg, msg
    assert refused(http_config(url, "b-bucket", retry=7201)) == (
        "ValidationException",
        "1 validation error detected: Value '7201' at "
        "'httpEndpointDestinationConfiguration.retryOptions.durationInSeconds' failed to "
        "satisfy constraint: Member must have value less than or equal to 7200")
    code, msg = refused(http_config(url, "b-bucket", retry=-1))
    assert code == "ValidationException" and "greater than or equal to 0" in msg, msg
    code, msg = refused(http_config("ftp://example.com/", "b-bucket"))
    assert code == "ValidationException"
    assert "Member must satisfy regular expression pattern: https://.*" in msg, msg
    cfg = http_config(url, "b-bucket")
    del cfg["S3Configuration"]
    code, msg = refused(cfg)
    assert code == "ValidationException" and "s3Configuration" in msg, msg
    code, msg = refused(http_config(url, "b-bucket", S3BackupMode="Sometimes"))
    assert code == "ValidationException" and "[FailedDataOnly, AllData]" in msg, msg
    code, msg = refused(http_config("http://", "b-bucket"))
    assert code == "InvalidArgumentException" and "Url" in msg, msg
    code, msg = refused(http_config(url, "b-bucket", ProcessingConfiguration={
        "Enabled": True, "Processors": [{"Type": "AppendDelimiterToRecord", "Parameters": [
            {"ParameterName": "LambdaArn", "ParameterValue": "x"}]}]}))
    assert code == "InvalidArgumentException" and "AppendDelimiterToRecord" in msg, msg
    code, msg = refused(http_config(url, "Bad_Bucket"))
    assert code == "InvalidArgumentException" and "BucketARN" in msg, msg
    assert name not in fh.list_delivery_streams(Limit=10000)["DeliveryStreamNames"]
    # Accepted as configured: a disabled processor, CloudWatch options, https://.
    fh.create_delivery_stream(DeliveryStreamName=name, HttpEndpointDestinationConfiguration=http_config(
        url, "b-bucket", ProcessingConfiguration={"Enabled": False},
        CloudWatchLoggingOptions={"Enabled": True, "LogGroupName": "g", "LogStreamName": "s"}))
    http = fh.describe_delivery_stream(DeliveryStreamName=name)[
        "DeliveryStreamDescription"]["Destinations"][0]["HttpEndpointDestinationDescription"]
    assert http["CloudWatchLoggingOptions"] == {"Enabled": True, "LogGroupName": "g",
                                                "LogStreamName": "s"}
    assert http["EndpointConfiguration"]["Url"] == url
    fh.delete_delivery_stream(DeliveryStreamName=name)


def test_sigkill_mid_delivery_delivers_every_acknowledged_record(start_server, receiver):
    srv = start_server()
    # A slow receiver keeps requests in flight when the server is killed.
    def slow_ok(rid):
        time.sleep(0.05)
        return Receiver.ok(rid)
    receiver.default = slow_ok
    name = "http-crashy"
    firehose(srv.endpoint).create_delivery_stream(
        DeliveryStreamName=name,
        HttpEndpointDestinationConfiguration=http_config(receiver.url, "crash-backup",
                                                         size=1, interval=1))
    wait_active(firehose(srv.endpoint), name)
    delivered_at_round: dict[int, int] = {}

    def progressed(round_, acked):
        # Puts acknowledged, and one more delivery since the last kill.
        before = delivered_at_round.setdefault(round_, len(receiver.delivered()))
        return len(acked) >= 600 * (round_ + 1) and len(receiver.delivered()) > before

    acked, _sent = put_while_killing(srv, name, progressed, rounds=3, wait=60)
    assert len(acked) > 1000
    assert srv.stop() == 0  # clean: flushes every partial batch
    ids_of: dict[bytes, set[str]] = {}
    for req in receiver.delivered():
        for rec in records_of(req):
            ids_of.setdefault(rec, set()).add(req["headers"]["x-amz-firehose-request-id"])
    missing = acked - ids_of.keys()
    assert not missing, f"{len(missing)} acknowledged records never delivered"
    # A record sent twice was re-sent as the same batch, under the same request id.
    assert all(len(ids) == 1 for ids in ids_of.values())
    assert not objects(srv.data_dir, "crash-backup")


def test_https_endpoints_are_verified_against_the_configured_roots(start_server, tmp_path):
    pki = Pki(tmp_path)
    chain, key = pki.issue("receiver")
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "leaf.key").write_bytes(key)
    trusted = Receiver(tls=(tmp_path / "chain.pem", tmp_path / "leaf.key"))
    # A second CA the server does not trust.
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = Pki(other_dir)
    chain, key = other.issue("stranger")
    (other_dir / "chain.pem").write_bytes(chain)
    (other_dir / "leaf.key").write_bytes(key)
    untrusted = Receiver(tls=(other_dir / "chain.pem", other_dir / "leaf.key"))
    try:
        srv = start_server(env={"SSL_CERT_FILE": str(pki.ca)})
        fh = firehose(srv.endpoint)
        good = create(fh, trusted.url, "tls-backup", interval=0)
        bad = create(fh, untrusted.url, "tls-backup", interval=0, retry=0)
        fh.put_record(DeliveryStreamName=good, Record={"Data": b"over tls\n"})
        fh.put_record(DeliveryStreamName=bad, Record={"Data": b"not to strangers\n"})
        wait_for(lambda: trusted.delivered(), 30, "delivery over https")
        assert [records_of(r) for r in trusted.delivered()] == [[b"over tls\n"]]
        found = wait_for(lambda: backup_objects(srv, "tls-backup", bad), 30, "the refused batch")
        (body,) = found.values()
        (line,) = [json.loads(x) for x in body.splitlines()]
        assert base64.b64decode(line["rawData"]) == b"not to strangers\n"
        assert line["errorCode"] == "HttpEndpoint.ConnectionFailed"
        assert "certificate" in line["errorMessage"].lower(), line["errorMessage"]
        assert untrusted.snapshot() == []  # no request got past the handshake
    finally:
        trusted.close()
        untrusted.close()

"""Delivery-stream record processing with boto3 `firehose`: RecordDeAggregation,
MetadataExtraction (jq) with dynamic partitioning, AppendDelimiterToRecord, and the
Lambda transformation contract against a function served over HTTP (Freshet maps the
Lambda ARN to its URL with --delivery-lambda): Ok / Dropped / ProcessingFailed results,
partitionKeyFromLambda, a function that fails, answers garbage, loses record ids or
drops the connection, and the error prefix where AWS puts the records that failed."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, unique_name, wait_for
from test_firehose import ROLE, err, firehose, objects, s3_config, wait_active

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]

FN_OK = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:upper"
FN_500 = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:broken"
FN_GARBAGE = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:garbage"
FN_MISSING = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:forgetful"
FN_HANGUP = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:hangup"


class Function:
    """Transformation functions on one loopback port, one path each. Each call's Lambda
    event is recorded by path."""

    def __init__(self):
        self.calls: dict[str, list[dict]] = {}
        self.lock = threading.Lock()
        fn = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fn.lock:
                    fn.calls.setdefault(self.path, []).append(event)
                if self.path == "/hangup":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                status, body = fn.answer(self.path, event)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    @staticmethod
    def answer(path, event):
        if path == "/broken":
            return 500, b'{"errorMessage":"boom"}'
        if path == "/garbage":
            return 200, b"this is not json"
        out = []
        for r in event["records"]:
            text = base64.b64decode(r["data"]).decode()
            result = {"drop": "Dropped", "fail": "ProcessingFailed"}.get(text, "Ok")
            out.append({"recordId": r["recordId"], "result": result,
                        "data": base64.b64encode(text.upper().encode() + b"\n").decode(),
                        "metadata": {"partitionKeys": {"first": text[:1] or "_"}}})
        if path == "/forgetful":
            out = out[:-1]
        return 200, json.dumps({"records": out}).encode()

    def events(self, path):
        with self.lock:
            return list(self.calls.get(path, []))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def function():
    f = Function()
    yield f
    f.close()


@pytest.fixture(scope="module")
def server(function):
    from conftest import FreshetServer, can_start_dedicated
    ok, why = can_start_dedicated()
    if not ok:
        pytest.skip(why)
    lambdas = ",".join(f"{arn}={function.url('/' + arn.rsplit(':', 1)[1])}"
                       for arn in [FN_OK, FN_500, FN_GARBAGE, FN_MISSING, FN_HANGUP])
    srv = FreshetServer(extra_args=["--delivery-lambda", lambdas]).start()
    yield srv
    srv.cleanup()


@pytest.fixture
def fh(server):
    return firehose(server.endpoint)


def processor(kind, **params):
    return {"Type": kind, "Parameters": [{"ParameterName": k, "ParameterValue": v}
                                         for k, v in params.items()]}


def create(fh, bucket, processors, prefix="", error_prefix=None, dynamic=False):
    name = unique_name("fhp")
    extra = {"ProcessingConfiguration": {"Enabled": True, "Processors": processors}}
    if prefix:
        extra["Prefix"] = prefix
    if error_prefix:
        extra["ErrorOutputPrefix"] = error_prefix
    if dynamic:
        extra["DynamicPartitioningConfiguration"] = {"Enabled": True}
    fh.create_delivery_stream(DeliveryStreamName=name, DeliveryStreamType="DirectPut",
                              ExtendedS3DestinationConfiguration=s3_config(bucket, **extra))
    wait_active(fh, name)
    return name


def put(fh, name, records):
    out = fh.put_record_batch(DeliveryStreamName=name,
                              Records=[{"Data": r} for r in records])
    assert out["FailedPutCount"] == 0


def by_dir(objs):
    """Objects grouped by the directory part of their keys (the evaluated prefix)."""
    out: dict[str, list[bytes]] = {}
    for key in sorted(objs):
        out.setdefault(key.rsplit("/", 1)[0], []).append(objs[key])
    return out


def error_lines(objs, top):
    lines = []
    for key, body in sorted(objs.items()):
        if key.startswith(top):
            lines += [json.loads(line) for line in body.splitlines() if line.strip()]
    return lines


def test_jq_partitioning_of_deaggregated_records(fh, server):
    bucket = "processing-jq"
    name = create(fh, bucket, [
        processor("MetadataExtraction", MetadataExtractionQuery="{customer:.customer}",
                  JsonParsingEngine="JQ-1.6"),
        processor("RecordDeAggregation", SubRecordType="JSON"),
        processor("AppendDelimiterToRecord"),
    ], prefix="customer=!{partitionKeyFromQuery:customer}/",
        error_prefix="errors/!{firehose:error-output-type}/", dynamic=True)
    put(fh, name, [b'{"customer":"a","n":1}{"customer":"b","n":2}',
                   b'{"customer":"a","n":3}',
                   b'[{"customer":"a"}]',
                   b'{"n":4}',
                   b'{"customer":"../..","n":5}'])
    wait_for(lambda: len(objects(server.data_dir, bucket)) >= 3, 20, "three objects")
    objs = objects(server.data_dir, bucket)
    groups = by_dir(objs)
    assert groups["customer=a"] == [b'{"customer":"a","n":1}\n{"customer":"a","n":3}\n']
    assert groups["customer=b"] == [b'{"customer":"b","n":2}\n']
    names = [k for k in objs if k.startswith("customer=a/")]
    assert names[0].split("/")[-1].startswith(f"{name}-1-")
    failed = error_lines(objs, "errors/processing-failed/")
    assert sorted(base64.b64decode(f["rawData"]) for f in failed) == [
        b'[{"customer":"a"}]', b'{"customer":"../..","n":5}', b'{"n":4}']
    codes = {base64.b64decode(f["rawData"]): f["errorCode"] for f in failed}
    assert codes[b'[{"customer":"a"}]'] == "RecordDeAggregation.Failed"
    assert codes[b'{"n":4}'] == "DynamicPartitioning.MetadataExtractionFailed"
    assert codes[b'{"customer":"../..","n":5}'] == "DynamicPartitioning.MetadataExtractionFailed"
    assert all(f["attemptsMade"] == 1 and f["arrivalTimestamp"] > 0 for f in failed)
    desc = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    ext = desc["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert ext["DynamicPartitioningConfiguration"]["Enabled"] is True
    assert [p["Type"] for p in ext["ProcessingConfiguration"]["Processors"]] == [
        "MetadataExtraction", "RecordDeAggregation", "AppendDelimiterToRecord"]


def test_delimited_deaggregation(fh, server):
    bucket = "processing-delim"
    name = create(fh, bucket, [
        processor("RecordDeAggregation", SubRecordType="DELIMITED",
                  Delimiter=base64.b64encode(b"####").decode()),
        processor("AppendDelimiterToRecord", Delimiter="|"),
    ])
    put(fh, name, [b"one####two####", b"three"])
    wait_for(lambda: objects(server.data_dir, bucket), 20, "an object")
    (body,) = objects(server.data_dir, bucket).values()
    assert body == b"one|two|three|"


def test_lambda_results_and_lambda_partition_keys(fh, server, function):
    bucket = "processing-lambda"
    name = create(fh, bucket, [processor("Lambda", LambdaArn=FN_OK, NumberOfRetries="1")],
                  prefix="first=!{partitionKeyFromLambda:first}/",
                  error_prefix="err/!{firehose:error-output-type}/", dynamic=True)
    put(fh, name, [b"apple", b"drop", b"avocado", b"fail", b"banana"])
    wait_for(lambda: len(objects(server.data_dir, bucket)) >= 3, 20, "three objects")
    objs = objects(server.data_dir, bucket)
    groups = by_dir(objs)
    assert groups["first=a"] == [b"APPLE\nAVOCADO\n"]
    assert groups["first=b"] == [b"BANANA\n"]
    (failed,) = error_lines(objs, "err/processing-failed/")
    assert base64.b64decode(failed["rawData"]) == b"fail"
    assert failed["errorCode"] == "Lambda.ProcessingFailedStatus"
    assert failed["errorMessage"] == "ProcessingFailed status set for record"
    assert failed["lambdaARN"] == FN_OK
    (event,) = [e for e in function.events("/upper") if e["deliveryStreamArn"].endswith(name)]
    assert event["region"] == "us-east-1"
    assert event["deliveryStreamArn"] == f"arn:aws:firehose:us-east-1:{ACCOUNT}:deliverystream/{name}"
    assert [base64.b64decode(r["data"]) for r in event["records"]] == [
        b"apple", b"drop", b"avocado", b"fail", b"banana"]
    assert len({r["recordId"] for r in event["records"]}) == 5
    assert all(r["approximateArrivalTimestamp"] > 0 for r in event["records"])


@pytest.mark.parametrize("arn, path, code, attempts", [
    (FN_500, "/broken", "Lambda.FunctionError", 3),
    (FN_GARBAGE, "/garbage", "Lambda.JsonProcessingException", 1),
    (FN_MISSING, "/forgetful", "Lambda.MissingRecordId", 1),
    (FN_HANGUP, "/hangup", "Lambda.ServiceUnavailable", 3),
])
def test_failing_functions_send_records_to_the_error_prefix(fh, server, function, arn, path,
                                                            code, attempts):
    bucket = f"processing-fail-{path[1:]}"
    name = create(fh, bucket, [processor("Lambda", LambdaArn=arn, NumberOfRetries="2")])
    put(fh, name, [b"x", b"y"])
    wait_for(lambda: objects(server.data_dir, bucket), 30, "an error object")
    objs = objects(server.data_dir, bucket)
    assert all(k.startswith("processing-failed/") for k in objs), list(objs)
    failed = error_lines(objs, "processing-failed/")
    assert sorted(base64.b64decode(f["rawData"]) for f in failed) == [b"x", b"y"]
    assert {f["errorCode"] for f in failed} == {code}
    assert {f["attemptsMade"] for f in failed} == {attempts}
    assert {f["lambdaARN"] for f in failed} == {arn}
    mine = [e for e in function.events(path) if e["deliveryStreamArn"].endswith(name)]
    assert len(mine) == attempts
    # The same invocation, unchanged, on every attempt.
    assert len({json.dumps(e, sort_keys=True) for e in mine}) == 1


def test_bad_processing_configurations_are_refused(fh):
    def refused(extra):
        name = unique_name("fhp")
        with pytest.raises(ClientError) as e:
            fh.create_delivery_stream(
                DeliveryStreamName=name,
                ExtendedS3DestinationConfiguration=s3_config("processing-bad", **extra))
        code, message = err(e)
        assert code == "InvalidArgumentException", message
        return message

    def procs(*ps):
        return {"ProcessingConfiguration": {"Enabled": True, "Processors": list(ps)}}

    jq = processor("MetadataExtraction", MetadataExtractionQuery="{id:.id",
                   JsonParsingEngine="JQ-1.6")
    assert "not a valid jq expression" in refused(procs(jq))
    unknown = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:nowhere"
    assert "--delivery-lambda" in refused(procs(processor("Lambda", LambdaArn=unknown)))
    good_jq = processor("MetadataExtraction", MetadataExtractionQuery="{id:.id}",
                        JsonParsingEngine="JQ-1.6")
    assert "needs dynamic partitioning" in refused(procs(good_jq))
    dyn = {"DynamicPartitioningConfiguration": {"Enabled": True}}
    assert "ErrorOutputPrefix" in refused({**procs(good_jq), **dyn,
                                            "Prefix": "id=!{partitionKeyFromQuery:id}/"})
    assert "no !{partitionKeyFromQuery" in refused({**procs(good_jq), **dyn, "Prefix": "x/",
                                                     "ErrorOutputPrefix": "e/"})
    assert "needs a Lambda processor" in refused({
        **procs(good_jq), **dyn, "Prefix": "id=!{partitionKeyFromLambda:id}/",
        "ErrorOutputPrefix": "e/"})
    assert "needs dynamic partitioning" in refused({"Prefix": "id=!{partitionKeyFromQuery:id}/",
                                                     "ErrorOutputPrefix": "e/"})
    assert "base64" in refused(procs(processor("RecordDeAggregation", SubRecordType="DELIMITED",
                                                Delimiter="!!")))
    assert "more than once" in refused(procs(processor("AppendDelimiterToRecord"),
                                             processor("AppendDelimiterToRecord")))


def test_http_endpoint_destinations_process_records_too(fh, server):
    from test_firehose_http import Receiver, http_config, records_of
    receiver = Receiver()
    try:
        bucket = "processing-http-backup"
        name = unique_name("fhp")
        fh.create_delivery_stream(
            DeliveryStreamName=name, DeliveryStreamType="DirectPut",
            HttpEndpointDestinationConfiguration=http_config(
                receiver.url, bucket,
                ProcessingConfiguration={"Enabled": True, "Processors": [
                    processor("Lambda", LambdaArn=FN_OK)]}))
        wait_active(fh, name)
        put(fh, name, [b"ab", b"drop", b"fail", b"cd"])
        wait_for(lambda: receiver.delivered(), 20, "a delivered request")
        (req,) = receiver.delivered()
        assert records_of(req) == [b"AB\n", b"CD\n"]
        wait_for(lambda: objects(server.data_dir, bucket), 20, "the failed record's object")
        failed = error_lines(objects(server.data_dir, bucket), "processing-failed/")
        assert [base64.b64decode(f["rawData"]) for f in failed] == [b"fail"]
        assert failed[0]["errorCode"] == "Lambda.ProcessingFailedStatus"
        desc = fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
        http = desc["Destinations"][0]["HttpEndpointDestinationDescription"]
        assert http["ProcessingConfiguration"]["Processors"][0]["Type"] == "Lambda"
    finally:
        receiver.close()

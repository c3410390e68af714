"""Traces: with `--otlp-endpoint`, every API request becomes a span exported over
OTLP/HTTP (JSON) to a receiver, here a small one the test runs on loopback that checks
what an OpenTelemetry collector's OTLP/HTTP receiver requires (POST /v1/traces,
`application/json`, an ExportTraceServiceRequest). Its first answer is 503, as a
collector's under memory pressure: the exporter retries, and no span is lost."""
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import TARGET_PREFIX, freshet_bin, make_client, unique_name, wait_active, wait_for

pytestmark = pytest.mark.freshet_only


class Receiver:
    """An OTLP/HTTP receiver on loopback that keeps every span it accepts."""

    def __init__(self, refuse_first: int = 1):
        self.spans, self.resources, self.answers, self.problems = [], [], [], []
        self.refuse = refuse_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/json":
                    receiver.problems.append((self.path, self.headers.get("Content-Type")))
                    return self.answer(415)
                if receiver.refuse > 0:
                    receiver.refuse -= 1
                    return self.answer(503)
                doc = json.loads(body)
                for rs in doc["resourceSpans"]:
                    receiver.resources.append(rs["resource"])
                    for ss in rs["scopeSpans"]:
                        receiver.spans.extend(ss["spans"])
                self.answer(200, b"{}")

            def answer(self, code, body=b""):
                receiver.answers.append(code)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def by_request_id(self, request_id: str):
        for span in self.spans:
            attrs = attributes(span)
            if attrs.get("aws.request_id") == request_id:
                return span
        return None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def attributes(span) -> dict:
    out = {}
    for a in span["attributes"]:
        (kind, value), = a["value"].items()
        out[a["key"]] = int(value) if kind == "intValue" else value
    return out


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_every_request_is_a_span_in_the_collector(start_server, receiver):
    server = start_server(extra_args=["--otlp-endpoint", receiver.url,
                                      "--otlp-service-name", "freshet-e2e"])
    k = make_client(server.endpoint)
    name = unique_name("traced")
    k.create_stream(StreamName=name, ShardCount=1)
    wait_active(k, name)
    put = k.put_record(StreamName=name, Data=b"x", PartitionKey="k")
    put_id = put["ResponseMetadata"]["RequestId"]
    with pytest.raises(ClientError) as missing:
        k.describe_stream_summary(StreamName=unique_name("no-such"))
    missing_id = missing.value.response["ResponseMetadata"]["RequestId"]
    # A caller's trace (W3C Trace Context) is continued.
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = requests.post(server.endpoint + "/", data=json.dumps({"StreamName": name}), timeout=10, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET_PREFIX + "DescribeStreamSummary",
        "traceparent": f"00-{trace}-{parent}-01"})
    assert r.status_code == 200
    traced_id = r.headers["x-amzn-RequestId"]
    m = requests.get(server.endpoint + "/v1/streams", timeout=10)
    assert m.status_code == 200
    rest_id = m.headers["x-amzn-RequestId"]

    ids = [put_id, missing_id, traced_id, rest_id]
    wait_for(lambda: all(receiver.by_request_id(i) for i in ids), 20, "the requests' spans")
    assert receiver.problems == []
    # The first batch was refused with 503 and sent again.
    assert receiver.answers[0] == 503 and 200 in receiver.answers, receiver.answers
    (service,) = {a["value"]["stringValue"] for res in receiver.resources for a in res["attributes"]
                  if a["key"] == "service.name"}
    assert service == "freshet-e2e"

    span = receiver.by_request_id(put_id)
    assert span["name"] == "Kinesis_20131202/PutRecord"
    assert span["kind"] == 2
    assert span["traceId"] == put_id.replace("-", "")
    assert len(span["spanId"]) == 16 and "parentSpanId" not in span
    assert int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"])
    attrs = attributes(span)
    assert attrs["rpc.system"] == "aws-api" and attrs["rpc.service"] == "Kinesis_20131202"
    assert attrs["rpc.method"] == "PutRecord"
    assert attrs["http.request.method"] == "POST" and attrs["http.response.status_code"] == 200
    assert "error.type" not in attrs and span["status"] == {}

    refused = attributes(receiver.by_request_id(missing_id))
    assert refused["http.response.status_code"] == 400
    assert refused["error.type"] == "ResourceNotFoundException"
    # A client error is not the server's: the span's status stays unset.
    assert receiver.by_request_id(missing_id)["status"] == {}

    continued = receiver.by_request_id(traced_id)
    assert continued["traceId"] == trace and continued["parentSpanId"] == parent

    rest = receiver.by_request_id(rest_id)
    assert rest["name"] == "GET /v1/streams"
    assert attributes(rest)["http.route"] == "/v1/streams"
    # No attribute carries a body, a header or a credential.
    for span in receiver.spans:
        for key in attributes(span):
            assert key in {"http.request.method", "http.response.status_code", "aws.request_id",
                           "http.route", "rpc.system", "rpc.service", "rpc.method", "error.type"}, key

    text = requests.get(server.endpoint + "/metrics", timeout=10).text
    exported = [float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("freshet_otlp_spans_exported_total")]
    assert exported and exported[0] >= len(ids), exported


def test_an_endpoint_that_is_not_http_is_refused_at_start(tmp_path):
    p = subprocess.run([str(freshet_bin()), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
                        "--otlp-endpoint", "grpc://127.0.0.1:4317"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "only http:// and https:// (OTLP/HTTP) are supported" in p.stderr, p.stderr

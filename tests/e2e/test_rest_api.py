"""The plain REST API (/v1/streams and /v1/streams/{name}/records), checked against docs/openapi.json:
every response body must validate against the schema the spec gives for its status."""
import base64
import copy
import json
import threading
import time
from pathlib import Path

import pytest
import requests
from jsonschema import Draft7Validator

from conftest import all_shards, read_all, shard_id, unique_name, wait_active

pytestmark = pytest.mark.freshet_only

SPEC = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())


def _nullable_to_jsonschema(node):
    """OpenAPI 3.0 `nullable: true` -> JSON Schema `type: [T, "null"]`."""
    if isinstance(node, dict):
        node = {k: _nullable_to_jsonschema(v) for k, v in node.items()}
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        node.pop("format", None)
        return node
    if isinstance(node, list):
        return [_nullable_to_jsonschema(v) for v in node]
    return node


COMPONENTS = _nullable_to_jsonschema(copy.deepcopy(SPEC["components"]))
PATH = SPEC["paths"]["/v1/streams/{name}/records"]


def response_schema(method: str, status: int, content_type: str, path: dict = PATH) -> dict:
    responses = path[method]["responses"]
    assert str(status) in responses, f"{method.upper()} answered {status}, which the spec does not document"
    resp = responses[str(status)]
    if "$ref" in resp:
        resp = SPEC["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
    media = content_type.split(";")[0].strip()
    assert media in resp["content"], f"{media} is not a documented content type for {status}"
    return {**_nullable_to_jsonschema(resp["content"][media]["schema"]), "components": COMPONENTS}


def check(method: str, resp: requests.Response, path: dict = PATH):
    """Validates a response against the spec; returns the decoded body (list for ndjson)."""
    ctype = resp.headers.get("content-type", "")
    schema = response_schema(method, resp.status_code, ctype, path)
    validator = Draft7Validator(schema)
    if ctype.startswith("application/x-ndjson"):
        items = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
        for item in items:
            errors = sorted(validator.iter_errors(item), key=str)
            assert not errors, f"line {item} violates the spec: {errors[0].message}"
        return items
    body = resp.json()
    errors = sorted(validator.iter_errors(body), key=str)
    assert not errors, f"{body} violates the spec: {errors[0].message}"
    return body


@pytest.fixture
def url(endpoint):
    return lambda name: f"{endpoint}/v1/streams/{name}/records"


def test_list_streams(kinesis, make_stream, endpoint):
    two = make_stream(2, prefix="rest-list")
    one = make_stream(1, prefix="rest-list")
    kinesis.increase_stream_retention_period(StreamName=one, RetentionPeriodHours=48)
    wait_active(kinesis, one)
    resp = requests.get(f"{endpoint}/v1/streams", timeout=10)
    assert resp.status_code == 200
    body = check("get", resp, SPEC["paths"]["/v1/streams"])
    names = [s["name"] for s in body["streams"]]
    assert names == sorted(names)
    mine = {s["name"]: s for s in body["streams"] if s["name"] in (one, two)}
    assert set(mine) == {one, two}
    described = kinesis.describe_stream_summary(StreamName=two)["StreamDescriptionSummary"]
    assert mine[two]["arn"] == described["StreamARN"]
    assert (mine[two]["openShards"], mine[two]["retentionHours"]) == (2, 24)
    assert (mine[one]["openShards"], mine[one]["retentionHours"]) == (1, 48)
    assert mine[two]["status"] == "ACTIVE"
    created = described["StreamCreationTimestamp"].timestamp() * 1000
    assert abs(mine[two]["createdAt"] - created) < 1000


def test_spec_request_examples_match_schema():
    record_schema = {"$ref": "#/components/schemas/RecordIn", "components": COMPONENTS}
    v = Draft7Validator(record_schema)
    assert not list(v.iter_errors({"partitionKey": "k", "data": {"a": 1}}))
    assert list(v.iter_errors({"partitionKey": "k", "bogus": 1}))


def test_put_one_and_many_then_read_back(kinesis, make_stream, url):
    name = make_stream(shards=2)
    one = requests.post(url(name), json={"partitionKey": "user-1", "data": {"page": "/", "n": 1}})
    assert one.status_code == 200, one.text
    body = check("post", one)
    assert body["failedRecordCount"] == 0
    (rec,) = body["records"]
    assert rec["shardId"] in (shard_id(0), shard_id(1))

    blob = bytes(range(256))
    many = requests.post(url(name), json=[
        {"partitionKey": "user-2", "text": "plain text é"},
        {"partitionKey": "user-3", "base64": base64.b64encode(blob).decode()},
        {"text": "no key given"},
    ])
    body = check("post", many)
    assert body["failedRecordCount"] == 0 and len(body["records"]) == 3

    # The Kinesis API sees exactly these bytes.
    seen = {}
    for s in all_shards(kinesis, name):
        for r in read_all(kinesis, name, s["ShardId"])[0]:
            seen[r["SequenceNumber"]] = r["Data"]
    assert json.loads(seen[rec["sequenceNumber"]]) == {"page": "/", "n": 1}
    assert seen[body["records"][0]["sequenceNumber"]] == "plain text é".encode()
    assert seen[body["records"][1]["sequenceNumber"]] == blob

    # And the REST read returns them all, as JSON lines that match the spec.
    got = check("get", requests.get(url(name), params={"limit": 100}))
    assert len(got) == 4
    by_seq = {g["sequenceNumber"]: g for g in got}
    assert base64.b64decode(by_seq[body["records"][1]["sequenceNumber"]]["data"]) == blob
    assert by_seq[body["records"][1]["sequenceNumber"]]["text"] is None
    assert by_seq[body["records"][0]["sequenceNumber"]]["text"] == "plain text é"
    assert by_seq[body["records"][0]["sequenceNumber"]]["partitionKey"] == "user-2"


def test_read_one_shard_from_positions(make_stream, url):
    name = make_stream(shards=1)
    put = check("post", requests.post(url(name), json=[{"text": f"r{i}", "partitionKey": "k"} for i in range(5)]))
    seqs = [r["sequenceNumber"] for r in put["records"]]
    after = check("get", requests.get(url(name), params={
        "shard": shard_id(0), "start": "AFTER_SEQUENCE_NUMBER", "sequenceNumber": seqs[1]}))
    assert [g["text"] for g in after] == ["r2", "r3", "r4"]
    at = check("get", requests.get(url(name), params={
        "shard": shard_id(0), "start": "AT_SEQUENCE_NUMBER", "sequenceNumber": seqs[3], "limit": 1}))
    assert [g["text"] for g in at] == ["r3"]
    latest = check("get", requests.get(url(name), params={"start": "LATEST"}))
    assert latest == []
    ts = after[0]["approximateArrivalTimestamp"]
    by_time = check("get", requests.get(url(name), params={"start": "AT_TIMESTAMP", "timestamp": ts}))
    assert [g["text"] for g in by_time] == ["r0", "r1", "r2", "r3", "r4"]


def test_follow_streams_new_records(make_stream, url):
    name = make_stream(shards=1)
    lines = []

    def reader():
        with requests.get(url(name), params={"start": "LATEST", "follow": "true", "limit": 3,
                                             "idleTimeout": 20}, stream=True, timeout=30) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line:
                    lines.append(json.loads(line))

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.5)
    for i in range(3):
        requests.post(url(name), json={"text": f"live-{i}"})
        time.sleep(0.1)
    t.join(timeout=30)
    assert not t.is_alive()
    assert [l["text"] for l in lines] == ["live-0", "live-1", "live-2"]


def test_follow_crosses_reshard(kinesis, make_stream, url):
    name = make_stream(shards=1)
    requests.post(url(name), json={"text": "before", "partitionKey": "k"})
    kinesis.split_shard(StreamName=name, ShardToSplit=shard_id(0), NewStartingHashKey=str(2 ** 127))
    from conftest import wait_active
    wait_active(kinesis, name)
    requests.post(url(name), json=[{"text": f"after-{i}", "partitionKey": f"k{i}"} for i in range(6)])
    got = check("get", requests.get(url(name), params={"limit": 100}))
    texts = [g["text"] for g in got]
    assert texts[0] == "before"
    assert sorted(texts[1:]) == [f"after-{i}" for i in range(6)]


@pytest.mark.parametrize("body,fragment", [
    ({"partitionKey": "k"}, "exactly one of"),
    ({"text": "a", "base64": "YQ=="}, "exactly one of"),
    ({"text": 5}, "text must be a string"),
    ({"base64": "***"}, "base64"),
    ({"text": "a", "what": 1}, "unknown record field"),
    ({"text": "a", "partitionKey": ""}, "partitionKey"),
    ([], "between 1 and 500"),
    ([{"text": "x"}] * 501, "between 1 and 500"),
    ("just a string", "JSON object"),
])
def test_bad_puts_are_400(make_stream, url, body, fragment):
    name = make_stream(shards=1)
    r = requests.post(url(name), json=body)
    assert r.status_code == 400, r.text
    err = check("post", r)
    assert err["error"] == "InvalidArgumentException"
    assert fragment in err["message"]


def test_not_json_is_400(make_stream, url):
    name = make_stream(shards=1)
    r = requests.post(url(name), data=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "not valid JSON" in check("post", r)["message"]


def test_missing_stream_is_404(url):
    name = unique_name("missing")
    r = requests.post(url(name), json={"text": "x"})
    assert r.status_code == 404
    assert check("post", r)["error"] == "ResourceNotFoundException"
    r = requests.get(url(name))
    assert r.status_code == 404
    assert check("get", r)["message"].startswith(f"Stream {name} under account")


def test_oversized_body_is_413(make_stream, url):
    name = make_stream(shards=1)
    r = requests.post(url(name), data=b"x" * (9 * 1024 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert check("post", r)["error"] == "ValidationException"

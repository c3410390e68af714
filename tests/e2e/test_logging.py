"""Logs for machines: `--log-format json` writes one JSON object a line, and every line
logged while a request is handled carries the request id the client got in
`x-amzn-RequestId`."""
import json

import pytest
import requests

from conftest import TARGET_PREFIX, make_client, unique_name, wait_for

pytestmark = pytest.mark.freshet_only


def test_json_logs_carry_the_request_id(start_server):
    server = start_server(extra_args=["--log-format", "json"])
    k = make_client(server.endpoint)
    missing = unique_name("no-such")
    r = requests.post(server.endpoint + "/", data=json.dumps({"StreamName": missing}), timeout=10,
                      headers={"Content-Type": "application/x-amz-json-1.1",
                               "X-Amz-Target": TARGET_PREFIX + "DescribeStreamSummary"})
    assert r.status_code == 400
    request_id = r.headers["x-amzn-RequestId"]
    assert k.list_streams()["StreamNames"] is not None

    def lines():
        return [json.loads(line) for line in server.log_text().splitlines() if line.strip()]

    def refused():
        return [x for x in lines() if x.get("request_id") == request_id]
    wait_for(lambda: refused(), 10, "the refused request's log line")
    (line,) = refused()
    assert line["level"] == "INFO"
    assert line["status"] == 400
    assert line["error_type"] == "ResourceNotFoundException"
    assert line["path"] == "/" and line["method"] == "POST"
    assert "timestamp" in line and "message" in line
    # Every line is JSON (json.loads above would have failed), start-up lines too.
    assert any("listening" in x.get("message", "") for x in lines())
    # Each request its own line and id.
    other = requests.post(server.endpoint + "/", data="{}", timeout=10, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET_PREFIX + "Nope"})
    assert other.status_code == 400
    other_id = other.headers["x-amzn-RequestId"]
    wait_for(lambda: any(x.get("request_id") == other_id for x in lines()), 10, "the second line")

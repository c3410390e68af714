"""One error mapping: statuses per protocol family as docs/errors.md lists them, and a
real storage failure (the data directory on a full tmpfs the test mounts) answered as
a 500 InternalFailure whose text stays in the log, under the request id the client got.
"""
import json
import os
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import TARGET_PREFIX, make_client, unique_name, wait_active

pytestmark = pytest.mark.freshet_only

AMZ_JSON = "application/x-amz-json-1.1"


def kinesis_call(endpoint: str, op: str, body: dict) -> requests.Response:
    return requests.post(endpoint + "/", data=json.dumps(body), timeout=30,
                         headers={"Content-Type": AMZ_JSON, "X-Amz-Target": TARGET_PREFIX + op})


@pytest.fixture
def full_disk():
    """A 6 MiB tmpfs for the server's data directory (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (the test command runs as root in CI)")
    path = tempfile.mkdtemp(prefix="freshet-full-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)
        os.rmdir(path)


def test_a_storage_failure_is_a_500_with_its_text_only_in_the_log(start_server, full_disk):
    server = start_server(data_dir=full_disk, extra_args=["--segment-mb", "1"])
    ep = server.endpoint
    k = make_client(ep)
    name = unique_name("full")
    k.create_stream(StreamName=name, ShardCount=1)
    wait_active(k, name)
    # 256 KiB records until the file system is full (6 MiB: a few dozen at most).
    data = "QUFB" * 87381  # base64 of 262,143 bytes
    failed = None
    for i in range(200):
        r = kinesis_call(ep, "PutRecord", {"StreamName": name, "PartitionKey": str(i), "Data": data})
        if r.status_code != 200:
            failed = r
            break
    assert failed is not None, "the 6 MiB file system never filled"
    assert failed.status_code == 500, failed.text
    body = failed.json()
    assert body == {"__type": "InternalFailure", "message": "Internal service failure."}
    assert failed.headers["x-amzn-ErrorType"] == "InternalFailure"
    request_id = failed.headers["x-amzn-RequestId"]
    deadline = time.monotonic() + 10
    while True:
        lines = [l for l in server.log_text().splitlines() if "internal failure" in l and request_id in l]
        if lines:
            break
        assert time.monotonic() < deadline, server.log_text()[-3000:]
        time.sleep(0.05)
    assert "No space left" in lines[0] or "os error 28" in lines[0], lines[0]
    # Reads keep working: everything acknowledged is there.
    it = k.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    got = 0
    for _ in range(100):
        out = k.get_records(ShardIterator=it, Limit=10)
        got += len(out["Records"])
        if not out["Records"] and out.get("MillisBehindLatest", 0) == 0:
            break
        it = out["NextShardIterator"]
    assert got == i


def test_statuses_follow_the_protocol_family(endpoint):
    missing = unique_name("missing")
    # Kinesis (JSON 1.1): every client error is a 400.
    r = kinesis_call(endpoint, "DescribeStream", {"StreamName": missing})
    assert (r.status_code, r.json()["__type"]) == (400, "ResourceNotFoundException")
    # Kinesis Video (REST-JSON): statuses from the API model.
    r = requests.post(endpoint + "/describeStream", json={"StreamName": missing}, timeout=10)
    assert (r.status_code, r.headers["x-amzn-ErrorType"]) == (404, "ResourceNotFoundException")
    assert set(r.json()) == {"Message"}
    r = requests.post(endpoint + "/putMedia", headers={"x-amzn-stream-name": missing}, data=b"x",
                      timeout=10)
    assert (r.status_code, r.headers["x-amzn-ErrorType"]) == (404, "ResourceNotFoundException")
    r = requests.post(endpoint + "/putMedia", data=b"x", timeout=10)
    assert (r.status_code, r.headers["x-amzn-ErrorType"]) == (400, "InvalidArgumentException")
    r = requests.get(endpoint + "/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=forged", timeout=10)
    assert (r.status_code, r.headers["x-amzn-ErrorType"]) == (401, "NotAuthorizedException")
    # The REST API: plain HTTP statuses.
    r = requests.get(endpoint + f"/v1/streams/{missing}/records", timeout=10)
    assert (r.status_code, r.json()["error"]) == (404, "ResourceNotFoundException")
    r = requests.get(endpoint + "/no/such/path", timeout=10)
    assert (r.status_code, r.headers["x-amzn-ErrorType"]) == (404, "ResourceNotFoundException")

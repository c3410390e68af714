"""One error mapping: statuses per protocol family as docs/errors.md lists them; a full
disk (the data directory on a small tmpfs the test mounts) refuses writes with 503
ServiceUnavailable, keeps every acknowledged record readable, and takes writes again
once space is freed; a real storage failure (a shard's files deleted under the running
server) is a 500 InternalFailure whose text stays in the log, under the request id the
client got.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import TARGET_PREFIX, make_client, unique_name, wait_active, wait_for

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


def put_until_refused(ep: str, name: str, limit: int = 200) -> tuple[int, requests.Response]:
    """PutRecord of 256 KiB records until one is refused: (records stored, refusal)."""
    data = "QUFB" * 87381  # base64 of 262,143 bytes
    for i in range(limit):
        r = kinesis_call(ep, "PutRecord", {"StreamName": name, "PartitionKey": str(i), "Data": data})
        if r.status_code != 200:
            return i, r
    raise AssertionError(f"{limit} records of 256 KiB were all stored")


def read_all(k, name: str) -> int:
    it = k.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    got = 0
    for _ in range(200):
        out = k.get_records(ShardIterator=it, Limit=10)
        got += len(out["Records"])
        if not out["Records"] and out.get("MillisBehindLatest", 0) == 0:
            return got
        it = out["NextShardIterator"]
    raise AssertionError("GetRecords never reached the end")


def test_a_full_disk_refuses_writes_with_503_and_they_resume_once_space_is_freed(start_server, full_disk):
    # Most of the 6 MiB taken by a file of someone else's.
    filler = os.path.join(full_disk, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * (3 * 1024 * 1024))
    server = start_server(data_dir=full_disk, extra_args=["--segment-mb", "1"])
    ep = server.endpoint
    k = make_client(ep)
    name = unique_name("full")
    k.create_stream(StreamName=name, ShardCount=1)
    wait_active(k, name)
    stored, refused = put_until_refused(ep, name)
    assert stored > 0
    assert refused.status_code == 503, refused.text
    assert refused.json()["__type"] == "ServiceUnavailable"
    assert "storage is full" in refused.json()["message"]
    # PutRecords answers per record, with the same words.
    r = kinesis_call(ep, "PutRecords", {"StreamName": name, "Records": [
        {"PartitionKey": "p", "Data": "QUFB" * 87381}]})
    assert r.status_code == 200 and r.json()["FailedRecordCount"] == 1, r.text
    assert "storage is full" in r.json()["Records"][0]["ErrorMessage"]
    # Reads go on: everything acknowledged is there.
    assert read_all(k, name) == stored
    # Space comes back: writes resume without a restart, and nothing was lost.
    os.unlink(filler)
    for i in range(3):
        r = kinesis_call(ep, "PutRecord", {"StreamName": name, "PartitionKey": f"after{i}", "Data": "QUFB"})
        assert r.status_code == 200, r.text
    assert read_all(k, name) == stored + 3


def test_a_storage_failure_is_a_500_with_its_text_only_in_the_log(start_server):
    server = start_server(extra_args=["--segment-mb", "1"])
    ep = server.endpoint
    k = make_client(ep)
    name = unique_name("broken")
    k.create_stream(StreamName=name, ShardCount=1)
    wait_active(k, name)
    assert kinesis_call(ep, "PutRecord", {"StreamName": name, "PartitionKey": "a", "Data": "QUFB"}).status_code == 200
    # Someone deletes the shard's files under the running server: the next segment
    # cannot be created.
    logs = [os.path.join(root, d) for root, dirs, _ in os.walk(os.path.join(server.data_dir, "logs"))
            for d in dirs if name in d]
    assert logs, os.listdir(os.path.join(server.data_dir, "logs"))
    for d in logs:
        shutil.rmtree(d)
    _, failed = put_until_refused(ep, name, limit=20)
    assert failed.status_code == 500, failed.text
    assert failed.json() == {"__type": "InternalFailure", "message": "Internal service failure."}
    assert failed.headers["x-amzn-ErrorType"] == "InternalFailure"
    request_id = failed.headers["x-amzn-RequestId"]
    line = wait_for(lambda: next((l for l in server.log_text().splitlines()
                                  if "internal failure" in l and request_id in l), None),
                    10, f"the log line of request {request_id}")
    assert "No such file" in line or "os error 2" in line, line


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

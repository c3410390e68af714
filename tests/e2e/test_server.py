"""The server process itself: readiness, logging, shutdown and persistence."""

import os
import time

import pytest
import requests

from conftest import (all_shards, make_client, shard_id, stream_arn, unique_name, wait_active,
                      wait_gone)


@pytest.mark.freshet_only
def test_health(endpoint):
    r = requests.get(endpoint + "/health", timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    # Said loudly while requests are not authenticated.
    assert body["authentication"] == "none" and "not authenticated" in body["warning"]


def test_logs_listening_line(session_server):
    if session_server is None:
        pytest.skip("the suite did not start the server (FRESHET_ENDPOINT is set)")
    assert f"listening on 127.0.0.1:{session_server.port}" in session_server.log_text()


@pytest.mark.dedicated_server
@pytest.mark.parametrize("durability", ["fsync", "unsafe-no-fsync"])
def test_restart_keeps_streams_and_records(start_server, tmp_path, durability):
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    server = start_server(data_dir=data_dir, extra_args=["--durability", durability])
    client = make_client(server.endpoint)
    name = unique_name("persist")
    client.create_stream(StreamName=name, ShardCount=3)
    wait_active(client, name)
    client.add_tags_to_stream(StreamName=name, Tags={"keep": "me"})
    client.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=72)
    wait_active(client, name)
    sent = []
    for i in range(30):
        data = bytes([i]) * (i * 37)
        r = client.put_record(StreamName=name, Data=data, PartitionKey=f"key-{i}")
        sent.append((r["ShardId"], r["SequenceNumber"], f"key-{i}", data))
    shards_before = all_shards(client, name)

    started = time.monotonic()
    code = server.stop()
    assert time.monotonic() - started < 10, "server did not exit within 10 s of SIGTERM"
    assert code == 0, f"server should shut down cleanly on SIGTERM, exit code {code}"

    server2 = start_server(data_dir=data_dir, extra_args=["--durability", durability])
    client2 = make_client(server2.endpoint)
    s = wait_active(client2, name)
    assert s["RetentionPeriodHours"] == 72
    assert s["StreamARN"] == stream_arn(name)
    assert all_shards(client2, name) == shards_before
    assert client2.list_tags_for_stream(StreamName=name)["Tags"] == [{"Key": "keep", "Value": "me"}]
    got = []
    for i in range(3):
        it = client2.get_shard_iterator(StreamName=name, ShardId=shard_id(i),
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for rec in client2.get_records(ShardIterator=it)["Records"]:
            got.append((shard_id(i), rec["SequenceNumber"], rec["PartitionKey"], rec["Data"]))
    assert sorted(got) == sorted(sent)
    # New writes continue the sequence.
    r = client2.put_record(StreamName=name, Data=b"after", PartitionKey="key-0")
    last = max(int(seq) for sh, seq, _, _ in sent if sh == r["ShardId"])
    assert int(r["SequenceNumber"]) > last


@pytest.mark.dedicated_server
def test_deleted_stream_stays_deleted_after_restart(start_server, tmp_path):
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    server = start_server(data_dir=data_dir)
    client = make_client(server.endpoint)
    keep, drop = unique_name("keep"), unique_name("drop")
    for n in (keep, drop):
        client.create_stream(StreamName=n, ShardCount=1)
    for n in (keep, drop):
        wait_active(client, n)
    client.delete_stream(StreamName=drop)
    wait_gone(client, drop)
    server.stop()
    server2 = start_server(data_dir=data_dir)
    client2 = make_client(server2.endpoint)
    names = client2.list_streams()["StreamNames"]
    assert keep in names and drop not in names

"""Behaviour of the data-streams API that a conformance suite run against AWS pinned
down: resharding keeps the old topology while UPDATING, a stream deleted while
CREATING has no shards, shard ids are read as `<prefix>-N`, and requests in other
content types get AWS's answers."""

import json

import pytest
import requests

from conftest import (ACCOUNT, all_shards, assert_client_error, expect_error, make_client,
                      not_found_msg, open_shards, shard_id, unique_name, wait_active,
                      wait_for)

# Long enough that every check between the call and the switch fits comfortably.
SLOW_STATE_MS = 4000


@pytest.fixture
def slow(start_server):
    """A dedicated server whose state changes take SLOW_STATE_MS."""
    server = start_server(state_delay_ms=SLOW_STATE_MS)
    return server, make_client(server.endpoint)


def create_active(client, name, shards=1):
    client.create_stream(StreamName=name, ShardCount=shards)
    wait_active(client, name, timeout=SLOW_STATE_MS / 1000 + 20)


def kill_and_restart(server):
    """SIGKILL the server, start it again on the same data; a client for it."""
    server.proc.kill()
    server.proc.wait(timeout=10)
    server.proc = None
    server.start()
    return make_client(server.endpoint)


class TestTopologyWhileUpdating:
    def test_split_keeps_parent_until_active(self, slow):
        _, k = slow
        name = unique_name("upd-split")
        create_active(k, name)
        k.split_shard(StreamName=name, ShardToSplit="shardId-000000000000",
                      NewStartingHashKey=str(2**127))
        desc = k.describe_stream(StreamName=name)["StreamDescription"]
        assert desc["StreamStatus"] == "UPDATING"
        assert [s["ShardId"] for s in desc["Shards"]] == [shard_id(0)]
        assert "EndingSequenceNumber" not in desc["Shards"][0]["SequenceNumberRange"]
        # Writes during UPDATING go to the parent.
        put = k.put_record(StreamName=name, Data=b"during", PartitionKey="p",
                           ExplicitHashKey=str(2**127 + 5))
        assert put["ShardId"] == shard_id(0)
        # A second reshard is refused while the first is pending.
        err = expect_error(k.split_shard, StreamName=name, ShardToSplit="shardId-000000000000",
                           NewStartingHashKey=str(2**126))
        assert_client_error(err, "ResourceInUseException")

        wait_active(k, name, timeout=SLOW_STATE_MS / 1000 + 20)
        shards = all_shards(k, name)
        assert [s["ShardId"] for s in shards] == [shard_id(0), shard_id(1), shard_id(2)]
        parent = shards[0]
        ending = int(parent["SequenceNumberRange"]["EndingSequenceNumber"])
        assert ending >= int(put["SequenceNumber"]), "the record written while UPDATING is in the parent"
        assert [s["ParentShardId"] for s in shards[1:]] == [shard_id(0)] * 2
        # After the switch, the same key goes to the upper child.
        after = k.put_record(StreamName=name, Data=b"after", PartitionKey="p",
                             ExplicitHashKey=str(2**127 + 5))
        assert after["ShardId"] == shard_id(2)
        it = k.get_shard_iterator(StreamName=name, ShardId=shard_id(0),
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        got = k.get_records(ShardIterator=it)
        assert [r["Data"] for r in got["Records"]] == [b"during"]

    def test_update_shard_count_switches_at_the_end(self, slow):
        _, k = slow
        name = unique_name("upd-count")
        create_active(k, name, shards=2)
        out = k.update_shard_count(StreamName=name, TargetShardCount=4,
                                   ScalingType="UNIFORM_SCALING")
        assert (out["CurrentShardCount"], out["TargetShardCount"]) == (2, 4)
        summary = k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        assert summary["StreamStatus"] == "UPDATING"
        assert summary["OpenShardCount"] == 2
        assert len(open_shards(all_shards(k, name))) == 2
        wait_active(k, name, timeout=SLOW_STATE_MS / 1000 + 20)
        assert len(open_shards(all_shards(k, name))) == 4

    def test_merge_refusals_are_answered_at_once(self, slow):
        _, k = slow
        name = unique_name("upd-merge")
        create_active(k, name, shards=3)
        err = expect_error(k.merge_shards, StreamName=name, ShardToMerge="shardId-000000000000",
                           AdjacentShardToMerge="shardId-000000000002")
        assert_client_error(err, "InvalidArgumentException")
        assert k.describe_stream_summary(StreamName=name)[
            "StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"

    def test_pending_reshard_survives_a_kill(self, start_server):
        server = start_server(state_delay_ms=60_000)
        k = make_client(server.endpoint)
        name = unique_name("upd-kill")
        k.create_stream(StreamName=name, ShardCount=1)
        # The stream becomes ACTIVE on restart; restart now, then reshard.
        k = kill_and_restart(server)
        wait_active(k, name)
        put = k.put_record(StreamName=name, Data=b"before", PartitionKey="p")
        k.split_shard(StreamName=name, ShardToSplit="shard-0", NewStartingHashKey=str(2**127))
        assert k.describe_stream_summary(StreamName=name)[
            "StreamDescriptionSummary"]["StreamStatus"] == "UPDATING"
        k = kill_and_restart(server)
        # The restart finishes the reshard on the recovered logs.
        wait_active(k, name)
        shards = all_shards(k, name)
        assert [s["ShardId"] for s in shards] == [shard_id(0), shard_id(1), shard_id(2)]
        assert int(shards[0]["SequenceNumberRange"]["EndingSequenceNumber"]) >= int(
            put["SequenceNumber"])
        it = k.get_shard_iterator(StreamName=name, ShardId=shard_id(0),
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        assert [r["Data"] for r in k.get_records(ShardIterator=it)["Records"]] == [b"before"]


def test_stream_deleted_while_creating_shows_no_shards(slow):
    _, k = slow
    name = unique_name("del-creating")
    k.create_stream(StreamName=name, ShardCount=3)
    k.delete_stream(StreamName=name)
    desc = k.describe_stream(StreamName=name)["StreamDescription"]
    assert desc["StreamStatus"] == "DELETING"
    assert desc["Shards"] == []

    def gone():
        try:
            k.describe_stream(StreamName=name)
            return False
        except k.exceptions.ResourceNotFoundException:
            return True
    wait_for(gone, SLOW_STATE_MS / 1000 + 20, "the stream to be deleted")


class TestShardIds:
    @pytest.mark.parametrize("op", ["split", "merge"])
    @pytest.mark.parametrize("bad", ["2147483648", "shardId-002147483648", "ABKLFD8", "2.14E4"])
    def test_unreadable_shard_checked_before_the_stream(self, kinesis, op, bad):
        missing = unique_name("no-such")
        if op == "split":
            err = expect_error(kinesis.split_shard, StreamName=missing, ShardToSplit=bad,
                               NewStartingHashKey="0")
        else:
            err = expect_error(kinesis.merge_shards, StreamName=missing, ShardToMerge=bad,
                               AdjacentShardToMerge="shardId-000000000001")
        assert_client_error(err, "ResourceNotFoundException",
                            f"Could not find shard {bad} in stream {missing} under account {ACCOUNT}.")

    @pytest.mark.parametrize("good", ["2147483647", "x-2147483647", "a-00002147483647",
                                      "-00002147483647"])
    def test_readable_shard_on_unknown_stream(self, kinesis, good):
        missing = unique_name("no-such")
        err = expect_error(kinesis.split_shard, StreamName=missing, ShardToSplit=good,
                           NewStartingHashKey="0")
        assert_client_error(err, "ResourceNotFoundException", not_found_msg(missing))

    def test_prefixed_ids_name_shards_and_messages_are_normalised(self, kinesis, make_stream):
        name = make_stream(shards=2)
        err = expect_error(kinesis.split_shard, StreamName=name, ShardToSplit="shardId-5",
                           NewStartingHashKey="0")
        assert_client_error(err, "ResourceNotFoundException",
                            f"Could not find shard {shard_id(5)} in stream {name} under account {ACCOUNT}.")
        # 'shard-0' is shard 0: the hash-key check names it by its real id.
        err = expect_error(kinesis.split_shard, StreamName=name, ShardToSplit="shard-0",
                           NewStartingHashKey="0")
        assert_client_error(err, "InvalidArgumentException")
        assert f"on shard {shard_id(0)} in stream {name}" in err.response["Error"]["Message"]
        kinesis.merge_shards(StreamName=name, ShardToMerge="any-0", AdjacentShardToMerge="1")
        wait_active(kinesis, name)
        shards = all_shards(kinesis, name)
        merged = [s for s in shards if s.get("AdjacentParentShardId")]
        assert [(s["ParentShardId"], s["AdjacentParentShardId"]) for s in merged] == [
            (shard_id(0), shard_id(1))]


class TestContentTypes:
    """What AWS answers for bodies in content types other than JSON 1.1 and CBOR."""

    def post(self, endpoint, content_type, body, target="Kinesis_20131202.ListStreams"):
        headers = {"X-Amz-Target": target} if target else {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return requests.post(endpoint + "/", data=body, headers=headers, timeout=10)

    def test_other_content_type_is_an_unknown_operation(self, endpoint):
        r = self.post(endpoint, "text/plain", b"{}")
        assert r.status_code == 404
        assert r.text == "<UnknownOperationException/>\n"

    def test_other_content_type_without_target_is_access_denied(self, endpoint):
        r = self.post(endpoint, "text/plain", b"{}", target=None)
        assert r.status_code == 403
        assert "<AccessDeniedException>" in r.text
        assert "Unable to determine service/operation name to be authorized" in r.text

    def test_empty_body_is_answered_in_cbor_unless_json(self, endpoint):
        import cbor2
        r = self.post(endpoint, "text/plain", b"")
        assert r.status_code == 400
        assert r.headers["Content-Type"] == "application/x-amz-cbor-1.1"
        assert cbor2.loads(r.content) == {"__type": "SerializationException"}
        r = self.post(endpoint, "application/x-amz-json-1.1", b"")
        assert r.status_code == 400
        assert r.headers["Content-Type"] == "application/x-amz-json-1.1"
        assert r.json() == {"__type": "SerializationException"}
        r = self.post(endpoint, "text/plain", b"", target="Kinesis_20131202.Nope")
        assert cbor2.loads(r.content) == {"__type": "UnknownOperationException"}

    def test_application_json_gets_the_json_1_0_envelope(self, endpoint):
        r = self.post(endpoint, "application/json", b"{}")
        assert r.status_code == 404
        assert r.json() == {"Output": {"__type": "com.amazon.coral.service#UnknownOperationException"},
                            "Version": "1.0"}
        r = self.post(endpoint, "application/json", b"{not json")
        assert r.status_code == 400
        assert r.json() == {"Output": {"__type": "com.amazon.coral.service#SerializationException"},
                            "Version": "1.0"}

    def test_json_1_1_with_parameters_still_works(self, endpoint):
        r = self.post(endpoint, "application/x-amz-json-1.1; charset=utf-8", json.dumps({}))
        assert r.status_code == 200, r.text
        assert "StreamNames" in r.json()

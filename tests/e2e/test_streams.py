"""Stream lifecycle and metadata through boto3: create, describe, list, delete."""

import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import (ACCOUNT, HASH_SPACE, MAX_HASH, all_shards, assert_client_error,
                      expect_error, hash_range, make_client, not_found_msg, shard_id,
                      stream_arn, unique_name, wait_active, wait_gone)


def assert_contiguous(shards):
    """Open shards must tile 0 .. 2^128-1 exactly, in shard order."""
    ranges = sorted(hash_range(s) for s in shards)
    assert ranges[0][0] == 0
    assert ranges[-1][1] == MAX_HASH
    for (s1, e1), (s2, e2) in zip(ranges, ranges[1:]):
        assert s2 == e1 + 1, f"gap or overlap between {e1} and {s2}"
    for s, e in ranges:
        assert s <= e


@pytest.fixture(scope="module")
def slow_state(request):
    """A client whose server keeps streams CREATING / UPDATING / DELETING long
    enough to observe on a loaded machine: a dedicated Freshet with
    --state-delay-ms 1500 when possible; otherwise the shared server."""
    from conftest import FreshetServer, can_start_dedicated
    ok, _ = can_start_dedicated()
    if not ok:
        yield make_client(request.getfixturevalue("endpoint"))
        return
    server = FreshetServer(state_delay_ms=1500).start()
    yield make_client(server.endpoint)
    server.cleanup()


class TestCreateDescribe:
    def test_create_provisioned_stream_describe(self, kinesis, make_stream):
        before = datetime.now(timezone.utc) - timedelta(seconds=5)
        name = make_stream(shards=3)
        d = kinesis.describe_stream(StreamName=name)["StreamDescription"]
        assert d["StreamName"] == name
        assert d["StreamARN"] == stream_arn(name)
        assert d["StreamStatus"] == "ACTIVE"
        assert d["RetentionPeriodHours"] == 24
        assert d["HasMoreShards"] is False
        assert d["EncryptionType"] == "NONE"
        assert d["EnhancedMonitoring"] == [{"ShardLevelMetrics": []}]
        ts = d["StreamCreationTimestamp"]
        assert before <= ts <= datetime.now(timezone.utc) + timedelta(seconds=5)
        shards = d["Shards"]
        assert [s["ShardId"] for s in shards] == [shard_id(i) for i in range(3)]
        for s in shards:
            start = s["SequenceNumberRange"]["StartingSequenceNumber"]
            assert start.isdigit()
            assert "EndingSequenceNumber" not in s["SequenceNumberRange"]
            assert "ParentShardId" not in s
        # The exact split AWS makes for 3 shards (pinned by kinesalite's tests).
        assert [s["HashKeyRange"] for s in shards] == [
            {"StartingHashKey": "0", "EndingHashKey": "113427455640312821154458202477256070484"},
            {"StartingHashKey": "113427455640312821154458202477256070485",
             "EndingHashKey": "226854911280625642308916404954512140969"},
            {"StartingHashKey": "226854911280625642308916404954512140970",
             "EndingHashKey": "340282366920938463463374607431768211455"},
        ]

    @pytest.mark.parametrize("n", [1, 2, 7])
    def test_hash_key_ranges_are_contiguous(self, kinesis, make_stream, n):
        name = make_stream(shards=n)
        shards = all_shards(kinesis, name)
        assert len(shards) == n
        assert_contiguous(shards)
        # Even split: each range is 2^128/n wide, give or take rounding.
        width = HASH_SPACE // n
        for s in shards:
            lo, hi = hash_range(s)
            assert abs((hi - lo + 1) - width) <= n

    def test_describe_stream_summary(self, kinesis, make_stream):
        name = make_stream(shards=2)
        s = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        assert s["StreamName"] == name
        assert s["StreamARN"] == stream_arn(name)
        assert s["StreamStatus"] == "ACTIVE"
        assert s["OpenShardCount"] == 2
        assert s["RetentionPeriodHours"] == 24
        assert s["EncryptionType"] == "NONE"
        assert s["EnhancedMonitoring"] == [{"ShardLevelMetrics": []}]
        assert s["ConsumerCount"] == 0

    @pytest.mark.freshet_only
    def test_describe_stream_summary_reports_provisioned_mode(self, kinesis, make_stream):
        name = make_stream(shards=1)
        s = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        assert s["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}

    @pytest.mark.freshet_only
    def test_create_on_demand_stream(self, kinesis, make_stream):
        name = make_stream(shards=None, StreamModeDetails={"StreamMode": "ON_DEMAND"})
        s = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        assert s["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
        # AWS documents that a new on-demand stream starts with 4 shards.
        assert s["OpenShardCount"] == 4
        shards = all_shards(kinesis, name)
        assert len(shards) == 4
        assert_contiguous(shards)
        # Writing works without any ShardCount having been given.
        r = kinesis.put_record(StreamName=name, Data=b"on-demand", PartitionKey="k")
        assert r["SequenceNumber"].isdigit()

    @pytest.mark.freshet_only
    def test_create_with_tags(self, kinesis, make_stream):
        name = make_stream(shards=1, Tags={"team": "data", "env": "test"})
        tags = kinesis.list_tags_for_stream(StreamName=name)
        assert {t["Key"]: t["Value"] for t in tags["Tags"]} == {"team": "data", "env": "test"}
        assert tags["HasMoreTags"] is False

    @pytest.mark.freshet_only
    def test_address_stream_by_arn(self, kinesis, make_stream):
        name = make_stream(shards=2)
        arn = stream_arn(name)
        s = kinesis.describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]
        assert s["StreamName"] == name
        d = kinesis.describe_stream(StreamARN=arn)["StreamDescription"]
        assert d["StreamName"] == name and len(d["Shards"]) == 2
        shards = kinesis.list_shards(StreamARN=arn)["Shards"]
        assert [s["ShardId"] for s in shards] == [shard_id(0), shard_id(1)]
        put = kinesis.put_record(StreamARN=arn, Data=b"by-arn", PartitionKey="k")
        recs = kinesis.put_records(StreamARN=arn, Records=[{"Data": b"by-arn-2", "PartitionKey": "k"}])
        assert recs["FailedRecordCount"] == 0
        it = kinesis.get_shard_iterator(StreamARN=arn, ShardId=put["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        got = kinesis.get_records(ShardIterator=it, StreamARN=arn)["Records"]
        assert [r["Data"] for r in got] == [b"by-arn", b"by-arn-2"]
        kinesis.add_tags_to_stream(StreamARN=arn, Tags={"a": "1"})
        assert kinesis.list_tags_for_stream(StreamARN=arn)["Tags"] == [{"Key": "a", "Value": "1"}]
        kinesis.increase_stream_retention_period(StreamARN=arn, RetentionPeriodHours=48)
        wait_active(kinesis, name)
        assert kinesis.describe_stream_summary(StreamARN=arn)[
            "StreamDescriptionSummary"]["RetentionPeriodHours"] == 48

    @pytest.mark.freshet_only
    def test_unknown_arn_is_not_found(self, kinesis):
        name = unique_name("missing")
        err = expect_error(kinesis.describe_stream_summary, StreamARN=stream_arn(name))
        assert_client_error(err, "ResourceNotFoundException", not_found_msg(name))

    def test_create_existing_stream_is_in_use(self, kinesis, make_stream):
        name = make_stream(shards=1)
        err = expect_error(kinesis.create_stream, StreamName=name, ShardCount=1)
        assert_client_error(err, "ResourceInUseException",
                            f"Stream {name} under account {ACCOUNT} already exists.")

    def test_describe_missing_stream(self, kinesis):
        name = unique_name("missing")
        for op in (kinesis.describe_stream, kinesis.describe_stream_summary):
            err = expect_error(op, StreamName=name)
            assert_client_error(err, "ResourceNotFoundException", not_found_msg(name))

    # kinesalite ignores Limit and ExclusiveStartShardId on DescribeStream; AWS
    # documents both, so this follows AWS.
    @pytest.mark.freshet_only
    def test_describe_stream_limit_and_exclusive_start_shard(self, kinesis, make_stream):
        name = make_stream(shards=5)
        d = kinesis.describe_stream(StreamName=name, Limit=2)["StreamDescription"]
        assert [s["ShardId"] for s in d["Shards"]] == [shard_id(0), shard_id(1)]
        assert d["HasMoreShards"] is True
        d = kinesis.describe_stream(StreamName=name, ExclusiveStartShardId=shard_id(1))["StreamDescription"]
        assert [s["ShardId"] for s in d["Shards"]] == [shard_id(i) for i in (2, 3, 4)]
        assert d["HasMoreShards"] is False


class TestStateTransitions:
    def test_create_goes_creating_then_active(self, slow_state):
        name = unique_name("state")
        slow_state.create_stream(StreamName=name, ShardCount=2)
        try:
            d = slow_state.describe_stream(StreamName=name)["StreamDescription"]
            assert d["StreamStatus"] == "CREATING"
            assert d["Shards"] == []
            s = slow_state.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
            assert s["StreamStatus"] == "CREATING"
            # Writes to a stream that is still being created are refused.
            err = expect_error(slow_state.put_record, StreamName=name, Data=b"x", PartitionKey="a")
            assert_client_error(err, "ResourceNotFoundException", not_found_msg(name))
            s = wait_active(slow_state, name)
            assert s["OpenShardCount"] == 2
        finally:
            slow_state.delete_stream(StreamName=name)

    def test_delete_goes_deleting_then_gone(self, slow_state):
        name = unique_name("state")
        slow_state.create_stream(StreamName=name, ShardCount=1)
        wait_active(slow_state, name)
        slow_state.delete_stream(StreamName=name)
        s = slow_state.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        assert s["StreamStatus"] == "DELETING"
        wait_gone(slow_state, name)
        err = expect_error(slow_state.describe_stream, StreamName=name)
        assert_client_error(err, "ResourceNotFoundException", not_found_msg(name))

    def test_operations_on_updating_stream_are_in_use(self, slow_state):
        name = unique_name("state")
        slow_state.create_stream(StreamName=name, ShardCount=1)
        try:
            wait_active(slow_state, name)
            slow_state.split_shard(StreamName=name, ShardToSplit=shard_id(0),
                                   NewStartingHashKey=str(2**127))
            s = slow_state.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
            assert s["StreamStatus"] == "UPDATING"
            err = expect_error(slow_state.split_shard, StreamName=name, ShardToSplit=shard_id(0),
                               NewStartingHashKey="2")
            assert_client_error(err, "ResourceInUseException",
                                f"Stream {name} under account {ACCOUNT} not ACTIVE, instead in state UPDATING")
            # Reads and writes keep working while the stream is UPDATING (AWS
            # keeps writing to the parent until the split completes; where the
            # record lands meanwhile is not part of the contract).
            r = slow_state.put_record(StreamName=name, Data=b"during-update", PartitionKey="a")
            assert r["ShardId"] in (shard_id(0), shard_id(1), shard_id(2))
            wait_active(slow_state, name)
        finally:
            slow_state.delete_stream(StreamName=name)

    def test_merge_goes_updating_then_active(self, slow_state):
        name = unique_name("state")
        slow_state.create_stream(StreamName=name, ShardCount=2)
        try:
            wait_active(slow_state, name)
            slow_state.merge_shards(StreamName=name, ShardToMerge=shard_id(0),
                                    AdjacentShardToMerge=shard_id(1))
            s = slow_state.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
            assert s["StreamStatus"] == "UPDATING"
            s = wait_active(slow_state, name)
            assert s["OpenShardCount"] == 1
        finally:
            slow_state.delete_stream(StreamName=name)

    @pytest.mark.freshet_only
    def test_update_shard_count_goes_updating_then_active(self, slow_state):
        name = unique_name("state")
        slow_state.create_stream(StreamName=name, ShardCount=1)
        try:
            wait_active(slow_state, name)
            slow_state.update_shard_count(StreamName=name, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
            s = slow_state.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
            assert s["StreamStatus"] == "UPDATING"
            err = expect_error(slow_state.update_shard_count, StreamName=name, TargetShardCount=1,
                               ScalingType="UNIFORM_SCALING")
            assert_client_error(err, "ResourceInUseException")
            s = wait_active(slow_state, name)
            assert s["OpenShardCount"] == 2
        finally:
            slow_state.delete_stream(StreamName=name)

    def test_delete_missing_stream(self, kinesis):
        name = unique_name("missing")
        err = expect_error(kinesis.delete_stream, StreamName=name)
        assert_client_error(err, "ResourceNotFoundException", not_found_msg(name))

    def test_name_reusable_after_delete(self, kinesis):
        name = unique_name("reuse")
        kinesis.create_stream(StreamName=name, ShardCount=1)
        wait_active(kinesis, name)
        kinesis.put_record(StreamName=name, Data=b"old", PartitionKey="a")
        kinesis.delete_stream(StreamName=name)
        wait_gone(kinesis, name)
        kinesis.create_stream(StreamName=name, ShardCount=2)
        try:
            wait_active(kinesis, name)
            assert kinesis.describe_stream_summary(StreamName=name)[
                "StreamDescriptionSummary"]["OpenShardCount"] == 2
            it = kinesis.get_shard_iterator(StreamName=name, ShardId=shard_id(0),
                                            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            assert kinesis.get_records(ShardIterator=it)["Records"] == []
        finally:
            kinesis.delete_stream(StreamName=name)


@pytest.fixture(scope="module")
def three_streams(endpoint):
    client = make_client(endpoint)
    prefix = unique_name("ls")
    names = [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]
    for n in names:
        client.create_stream(StreamName=n, ShardCount=1)
    for n in names:
        wait_active(client, n)
    yield names
    for n in names:
        client.delete_stream(StreamName=n)


class TestListStreams:
    def test_list_streams_contains_names_sorted(self, kinesis, three_streams):
        names = []
        start = None
        while True:
            kw = {"Limit": 100}
            if start:
                kw["ExclusiveStartStreamName"] = start
            r = kinesis.list_streams(**kw)
            names.extend(r["StreamNames"])
            if not r["HasMoreStreams"]:
                break
            start = r["StreamNames"][-1]
        for n in three_streams:
            assert n in names
        assert names == sorted(names)
        assert len(names) == len(set(names))

    def test_exclusive_start_stream_name_and_limit(self, kinesis, three_streams):
        a, b, c = three_streams
        r = kinesis.list_streams(ExclusiveStartStreamName=a, Limit=2)
        assert r["StreamNames"] == [b, c]
        assert isinstance(r["HasMoreStreams"], bool)
        r = kinesis.list_streams(ExclusiveStartStreamName=a, Limit=1)
        assert r["StreamNames"] == [b]
        assert r["HasMoreStreams"] is True

    @pytest.mark.freshet_only
    def test_stream_summaries(self, kinesis, three_streams):
        a, b, c = three_streams
        r = kinesis.list_streams(ExclusiveStartStreamName=a, Limit=2)
        summaries = r["StreamSummaries"]
        assert [s["StreamName"] for s in summaries] == [b, c]
        for s in summaries:
            assert s["StreamARN"] == stream_arn(s["StreamName"])
            assert s["StreamStatus"] == "ACTIVE"
            assert s["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
            assert isinstance(s["StreamCreationTimestamp"], datetime)

    @pytest.mark.freshet_only
    def test_next_token_pagination(self, kinesis, three_streams):
        seen = []
        r = kinesis.list_streams(Limit=1)
        seen.extend(r["StreamNames"])
        pages = 1
        while r["HasMoreStreams"]:
            assert r.get("NextToken"), "HasMoreStreams without a NextToken"
            r = kinesis.list_streams(NextToken=r["NextToken"], Limit=1)
            assert len(r["StreamNames"]) <= 1
            seen.extend(r["StreamNames"])
            pages += 1
            assert pages < 10000
        assert "NextToken" not in r
        for n in three_streams:
            assert n in seen
        assert len(seen) == len(set(seen))
        assert seen == sorted(seen)

    @pytest.mark.freshet_only
    def test_paginator(self, kinesis, three_streams):
        names = []
        for page in kinesis.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 2}):
            names.extend(page["StreamNames"])
        for n in three_streams:
            assert names.count(n) == 1


class TestListShards:
    def test_list_shards_basic(self, kinesis, make_stream):
        name = make_stream(shards=3)
        r = kinesis.list_shards(StreamName=name)
        assert [s["ShardId"] for s in r["Shards"]] == [shard_id(i) for i in range(3)]
        assert "NextToken" not in r
        assert_contiguous(r["Shards"])
        assert r["Shards"] == all_shards(kinesis, name)

    def test_exclusive_start_shard_id(self, kinesis, make_stream):
        name = make_stream(shards=4)
        r = kinesis.list_shards(StreamName=name, ExclusiveStartShardId=shard_id(1))
        assert [s["ShardId"] for s in r["Shards"]] == [shard_id(2), shard_id(3)]

    def test_list_shards_missing_stream(self, kinesis):
        name = unique_name("missing")
        err = expect_error(kinesis.list_shards, StreamName=name)
        assert_client_error(err, "ResourceNotFoundException", not_found_msg(name))

    @pytest.mark.freshet_only
    def test_max_results_and_next_token(self, kinesis, make_stream):
        name = make_stream(shards=5)
        r = kinesis.list_shards(StreamName=name, MaxResults=2)
        ids = [s["ShardId"] for s in r["Shards"]]
        assert ids == [shard_id(0), shard_id(1)]
        token = r["NextToken"]
        r = kinesis.list_shards(NextToken=token, MaxResults=2)
        ids += [s["ShardId"] for s in r["Shards"]]
        r = kinesis.list_shards(NextToken=r["NextToken"], MaxResults=2)
        ids += [s["ShardId"] for s in r["Shards"]]
        assert ids == [shard_id(i) for i in range(5)]
        assert "NextToken" not in r

    def test_next_token_with_stream_name_is_invalid(self, kinesis, make_stream):
        name = make_stream(shards=1)
        err = expect_error(kinesis.list_shards, StreamName=name, NextToken="whatever")
        assert_client_error(err, "InvalidArgumentException",
                            "NextToken and StreamName cannot be provided together.")

    @pytest.mark.freshet_only
    def test_shard_filters(self, kinesis, make_stream):
        name = make_stream(shards=2)
        time.sleep(0.3)
        t_before_split = datetime.now(timezone.utc)
        time.sleep(0.3)
        kinesis.split_shard(StreamName=name, ShardToSplit=shard_id(0),
                            NewStartingHashKey=str(2**126))
        wait_active(kinesis, name)
        time.sleep(0.3)
        t_after_split = datetime.now(timezone.utc)
        # shard 0 closed; shard 1 open; shards 2 and 3 are shard 0's children.

        def ids(flt):
            return sorted(s["ShardId"] for s in
                          kinesis.list_shards(StreamName=name, ShardFilter=flt)["Shards"])

        all4 = [shard_id(i) for i in range(4)]
        assert ids({"Type": "FROM_TRIM_HORIZON"}) == all4
        assert ids({"Type": "AT_TRIM_HORIZON"}) == [shard_id(0), shard_id(1)]
        assert ids({"Type": "AT_LATEST"}) == [shard_id(1), shard_id(2), shard_id(3)]
        assert ids({"Type": "AFTER_SHARD_ID", "ShardId": shard_id(1)}) == [shard_id(2), shard_id(3)]
        assert ids({"Type": "AT_TIMESTAMP", "Timestamp": t_before_split}) == [shard_id(0), shard_id(1)]
        assert ids({"Type": "AT_TIMESTAMP", "Timestamp": t_after_split}) == [
            shard_id(1), shard_id(2), shard_id(3)]
        assert ids({"Type": "FROM_TIMESTAMP", "Timestamp": t_before_split}) == all4
        assert ids({"Type": "FROM_TIMESTAMP", "Timestamp": t_after_split}) == [
            shard_id(1), shard_id(2), shard_id(3)]
        # Without a filter ListShards lists everything (FROM_TRIM_HORIZON).
        assert sorted(s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"]) == all4


class TestDeleteStream:
    def test_delete_then_not_found(self, kinesis):
        name = unique_name("del")
        kinesis.create_stream(StreamName=name, ShardCount=1)
        wait_active(kinesis, name)
        kinesis.delete_stream(StreamName=name)
        wait_gone(kinesis, name)
        err = expect_error(kinesis.put_record, StreamName=name, Data=b"x", PartitionKey="a")
        assert_client_error(err, "ResourceNotFoundException", not_found_msg(name))
        listed = kinesis.list_streams(ExclusiveStartStreamName=name[:-1], Limit=10)["StreamNames"]
        assert name not in listed

    @pytest.mark.freshet_only
    def test_delete_by_arn(self, kinesis):
        name = unique_name("del")
        kinesis.create_stream(StreamName=name, ShardCount=1)
        wait_active(kinesis, name)
        kinesis.delete_stream(StreamARN=stream_arn(name))
        wait_gone(kinesis, name)

"""Operations kinesalite does not implement: enhanced monitoring, encryption,
resource policies, limits, stream mode, and enhanced fan-out consumers."""

import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import (ACCOUNT, REGION, assert_client_error, expect_error, stream_arn,
                      unique_name, wait_active, wait_gone, wait_quiescent)

pytestmark = pytest.mark.freshet_only

ALL_METRICS = {"IncomingBytes", "IncomingRecords", "OutgoingBytes", "OutgoingRecords",
               "WriteProvisionedThroughputExceeded", "ReadProvisionedThroughputExceeded",
               "IteratorAgeMilliseconds"}


def metrics(names):
    """A metric list as a set, with "ALL" read as every metric (AWS documents
    that "ALL" enables every metric; the lists may name them one by one)."""
    out = set(names)
    if "ALL" in out:
        out = (out - {"ALL"}) | ALL_METRICS
    return out


class TestEnhancedMonitoring:
    def test_enable_disable(self, kinesis, make_stream):
        name = make_stream(shards=1)
        r = kinesis.enable_enhanced_monitoring(StreamName=name,
                                               ShardLevelMetrics=["IncomingBytes", "OutgoingBytes"])
        assert r["StreamName"] == name
        assert r["CurrentShardLevelMetrics"] == []
        assert metrics(r["DesiredShardLevelMetrics"]) == {"IncomingBytes", "OutgoingBytes"}
        wait_active(kinesis, name)
        em = kinesis.describe_stream(StreamName=name)["StreamDescription"]["EnhancedMonitoring"]
        assert metrics(em[0]["ShardLevelMetrics"]) == {"IncomingBytes", "OutgoingBytes"}
        em = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["EnhancedMonitoring"]
        assert metrics(em[0]["ShardLevelMetrics"]) == {"IncomingBytes", "OutgoingBytes"}

        r = kinesis.enable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["ALL"])
        assert metrics(r["CurrentShardLevelMetrics"]) == {"IncomingBytes", "OutgoingBytes"}
        assert metrics(r["DesiredShardLevelMetrics"]) == ALL_METRICS
        wait_active(kinesis, name)

        r = kinesis.disable_enhanced_monitoring(StreamName=name, ShardLevelMetrics=["IncomingBytes"])
        assert metrics(r["CurrentShardLevelMetrics"]) == ALL_METRICS
        assert metrics(r["DesiredShardLevelMetrics"]) == ALL_METRICS - {"IncomingBytes"}
        wait_active(kinesis, name)
        em = kinesis.describe_stream(StreamName=name)["StreamDescription"]["EnhancedMonitoring"]
        assert metrics(em[0]["ShardLevelMetrics"]) == ALL_METRICS - {"IncomingBytes"}

        r = kinesis.disable_enhanced_monitoring(StreamARN=stream_arn(name), ShardLevelMetrics=["ALL"])
        assert r["DesiredShardLevelMetrics"] == []
        wait_active(kinesis, name)
        em = kinesis.describe_stream(StreamName=name)["StreamDescription"]["EnhancedMonitoring"]
        assert em == [{"ShardLevelMetrics": []}]

    def test_missing_stream(self, kinesis):
        name = unique_name("missing")
        err = expect_error(kinesis.enable_enhanced_monitoring, StreamName=name, ShardLevelMetrics=["ALL"])
        assert_client_error(err, "ResourceNotFoundException", f"Stream {name} under account {ACCOUNT} not found.")


class TestEncryption:
    def test_start_stop_encryption(self, kinesis, make_stream):
        name = make_stream(shards=1)
        kinesis.start_stream_encryption(StreamName=name, EncryptionType="KMS", KeyId="alias/aws/kinesis")
        s = wait_active(kinesis, name)
        assert s["EncryptionType"] == "KMS"
        assert s["KeyId"] == "alias/aws/kinesis"
        d = kinesis.describe_stream(StreamName=name)["StreamDescription"]
        assert d["EncryptionType"] == "KMS"
        assert d["KeyId"] == "alias/aws/kinesis"
        # Data still round-trips, and reads report the record's encryption.
        put = kinesis.put_record(StreamName=name, Data=b"secret", PartitionKey="k")
        assert put.get("EncryptionType") == "KMS"
        it = kinesis.get_shard_iterator(StreamName=name, ShardId=put["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        recs = kinesis.get_records(ShardIterator=it)["Records"]
        assert recs[0]["Data"] == b"secret"
        assert recs[0].get("EncryptionType") == "KMS"

        kinesis.stop_stream_encryption(StreamARN=stream_arn(name), EncryptionType="KMS",
                                       KeyId="alias/aws/kinesis")
        s = wait_active(kinesis, name)
        assert s["EncryptionType"] == "NONE"
        assert "KeyId" not in s
        put = kinesis.put_record(StreamName=name, Data=b"plain", PartitionKey="k")
        assert put.get("EncryptionType", "NONE") == "NONE"


class TestResourcePolicy:
    def test_put_get_delete(self, kinesis, make_stream):
        name = make_stream(shards=1)
        arn = stream_arn(name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "read",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": ["kinesis:GetRecords", "kinesis:GetShardIterator"],
                "Resource": arn,
            }],
        }
        kinesis.put_resource_policy(ResourceARN=arn, Policy=json.dumps(policy))
        got = kinesis.get_resource_policy(ResourceARN=arn)["Policy"]
        assert json.loads(got) == policy
        kinesis.delete_resource_policy(ResourceARN=arn)
        try:
            got = kinesis.get_resource_policy(ResourceARN=arn)["Policy"]
        except Exception as e:  # some services answer "not found" instead of an empty policy
            assert getattr(e, "response", {}).get("Error", {}).get("Code") == "ResourceNotFoundException"
        else:
            assert got in ("", "{}")

    def test_policy_on_missing_stream(self, kinesis):
        arn = stream_arn(unique_name("missing"))
        err = expect_error(kinesis.put_resource_policy, ResourceARN=arn, Policy="{}")
        assert_client_error(err, "ResourceNotFoundException")


class TestLimits:
    def test_describe_limits(self, kinesis, make_stream):
        wait_quiescent(kinesis)  # streams of earlier tests may still be DELETING
        before = kinesis.describe_limits()
        for k in ("ShardLimit", "OpenShardCount", "OnDemandStreamCount", "OnDemandStreamCountLimit"):
            assert isinstance(before[k], int) and before[k] >= 0, k
        assert before["ShardLimit"] >= before["OpenShardCount"]
        make_stream(shards=3)
        after = kinesis.describe_limits()
        assert after["OpenShardCount"] == before["OpenShardCount"] + 3
        assert after["ShardLimit"] == before["ShardLimit"]
        make_stream(shards=None, StreamModeDetails={"StreamMode": "ON_DEMAND"})
        on_demand = kinesis.describe_limits()
        assert on_demand["OnDemandStreamCount"] == before["OnDemandStreamCount"] + 1
        assert on_demand["OnDemandStreamCountLimit"] >= on_demand["OnDemandStreamCount"]


class TestStreamMode:
    def test_update_stream_mode_by_arn(self, kinesis, make_stream):
        name = make_stream(shards=2)
        arn = stream_arn(name)
        kinesis.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "ON_DEMAND"})
        s = wait_active(kinesis, name)
        assert s["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
        summaries = kinesis.list_streams(ExclusiveStartStreamName=name[:-1], Limit=5)["StreamSummaries"]
        mine = [x for x in summaries if x["StreamName"] == name]
        assert mine and mine[0]["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
        kinesis.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "PROVISIONED"})
        s = wait_active(kinesis, name)
        assert s["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
        assert kinesis.put_record(StreamName=name, Data=b"ok", PartitionKey="k")["SequenceNumber"]

    def test_update_stream_mode_missing_stream(self, kinesis):
        name = unique_name("missing")
        err = expect_error(kinesis.update_stream_mode, StreamARN=stream_arn(name),
                           StreamModeDetails={"StreamMode": "ON_DEMAND"})
        assert_client_error(err, "ResourceNotFoundException", f"Stream {name} under account {ACCOUNT} not found.")


def wait_consumer(client, consumer_arn, want="ACTIVE", timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        d = client.describe_stream_consumer(ConsumerARN=consumer_arn)["ConsumerDescription"]
        if d["ConsumerStatus"] == want:
            return d
        assert time.monotonic() < deadline, f"consumer still {d['ConsumerStatus']}"
        time.sleep(0.05)


class TestConsumers:
    def test_consumer_lifecycle(self, kinesis, make_stream):
        name = make_stream(shards=1)
        arn = stream_arn(name)
        before = datetime.now(timezone.utc) - timedelta(seconds=5)
        c = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="app-1")["Consumer"]
        assert c["ConsumerName"] == "app-1"
        assert re.fullmatch(rf"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{re.escape(name)}/consumer/app-1:\d+",
                            c["ConsumerARN"]), c["ConsumerARN"]
        assert c["ConsumerStatus"] in ("CREATING", "ACTIVE")
        assert before <= c["ConsumerCreationTimestamp"] <= datetime.now(timezone.utc) + timedelta(seconds=5)

        d = wait_consumer(kinesis, c["ConsumerARN"])
        assert d["ConsumerName"] == "app-1"
        assert d["StreamARN"] == arn
        assert d["ConsumerARN"] == c["ConsumerARN"]
        d2 = kinesis.describe_stream_consumer(StreamARN=arn, ConsumerName="app-1")["ConsumerDescription"]
        assert d2["ConsumerARN"] == c["ConsumerARN"]

        c2 = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="app-2")["Consumer"]
        wait_consumer(kinesis, c2["ConsumerARN"])
        listed = kinesis.list_stream_consumers(StreamARN=arn)["Consumers"]
        assert sorted(x["ConsumerName"] for x in listed) == ["app-1", "app-2"]
        assert all(x["ConsumerStatus"] == "ACTIVE" for x in listed)
        s = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        assert s["ConsumerCount"] == 2

        err = expect_error(kinesis.register_stream_consumer, StreamARN=arn, ConsumerName="app-1")
        assert_client_error(err, "ResourceInUseException")

        kinesis.deregister_stream_consumer(ConsumerARN=c["ConsumerARN"])
        deadline = time.monotonic() + 20
        while True:
            try:
                st = kinesis.describe_stream_consumer(ConsumerARN=c["ConsumerARN"])["ConsumerDescription"]
                assert st["ConsumerStatus"] == "DELETING"
            except Exception as e:
                assert e.response["Error"]["Code"] == "ResourceNotFoundException"
                break
            assert time.monotonic() < deadline, "consumer never went away"
            time.sleep(0.05)
        kinesis.deregister_stream_consumer(StreamARN=arn, ConsumerName="app-2")
        deadline = time.monotonic() + 20
        while kinesis.list_stream_consumers(StreamARN=arn)["Consumers"]:
            assert time.monotonic() < deadline, "consumers still listed after deregistering"
            time.sleep(0.05)

    def test_list_consumers_pagination(self, kinesis, make_stream):
        name = make_stream(shards=1)
        arn = stream_arn(name)
        for i in range(3):
            kinesis.register_stream_consumer(StreamARN=arn, ConsumerName=f"c{i}")
        r = kinesis.list_stream_consumers(StreamARN=arn, MaxResults=2)
        names = [x["ConsumerName"] for x in r["Consumers"]]
        assert len(names) == 2
        r = kinesis.list_stream_consumers(StreamARN=arn, NextToken=r["NextToken"], MaxResults=2)
        names += [x["ConsumerName"] for x in r["Consumers"]]
        assert sorted(names) == ["c0", "c1", "c2"]
        assert "NextToken" not in r

    def test_missing_consumer(self, kinesis, make_stream):
        name = make_stream(shards=1)
        err = expect_error(kinesis.describe_stream_consumer, StreamARN=stream_arn(name), ConsumerName="nobody")
        assert_client_error(err, "ResourceNotFoundException")

    def test_register_on_missing_stream(self, kinesis):
        name = unique_name("missing")
        err = expect_error(kinesis.register_stream_consumer, StreamARN=stream_arn(name), ConsumerName="x")
        assert_client_error(err, "ResourceNotFoundException")

    def test_delete_stream_with_consumers(self, kinesis, make_stream):
        name = make_stream(shards=1)
        arn = stream_arn(name)
        c = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="blocker")["Consumer"]
        wait_consumer(kinesis, c["ConsumerARN"])
        err = expect_error(kinesis.delete_stream, StreamName=name)
        assert_client_error(err, "ResourceInUseException")
        err = expect_error(kinesis.delete_stream, StreamName=name, EnforceConsumerDeletion=False)
        assert_client_error(err, "ResourceInUseException")
        assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
        kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
        wait_gone(kinesis, name)
        err = expect_error(kinesis.describe_stream_consumer, ConsumerARN=c["ConsumerARN"])
        assert_client_error(err, "ResourceNotFoundException")

"""Errors in AWS's exact shape and words, and the flag-dependent errors that
need a dedicated server (iterator expiry, shard limit, throughput limits)."""

import base64
import re
import time

import pytest

from conftest import (ACCOUNT, AMZ_JSON, IS_KINESALITE, MAX_HASH, REGION, TARGET_PREFIX, UUID_RE,
                      assert_client_error, decode_body, error_message, expect_error,
                      make_client, shard_id, unique_name, wait_active)


def assert_validation(resp_or_err, parts):
    """A ValidationException listing exactly `parts` (AWS's order is not part
    of the contract we test, the count and every clause are)."""
    if hasattr(resp_or_err, "response"):
        code = resp_or_err.response["Error"]["Code"]
        msg = resp_or_err.response["Error"]["Message"]
        status = resp_or_err.response["ResponseMetadata"]["HTTPStatusCode"]
    else:
        body = decode_body(resp_or_err)
        code, msg, status = body["__type"], error_message(body), resp_or_err.status_code
    assert status == 400
    assert code == "ValidationException", msg
    n = len(parts)
    prefix = f"{n} validation error{'s' if n > 1 else ''} detected: "
    assert msg.startswith(prefix), msg
    assert sorted(msg[len(prefix):].split("; ")) == sorted(parts), msg


class TestErrorShape:
    def test_not_found_raw_shape(self, raw):
        name = unique_name("missing")
        r = raw.json_call("DescribeStreamSummary", {"StreamName": name})
        assert r.status_code == 400
        assert r.headers["Content-Type"].startswith(AMZ_JSON)
        assert r.json() == {"__type": "ResourceNotFoundException",
                            "message": f"Stream {name} under account {ACCOUNT} not found."}
        assert re.match(UUID_RE, r.headers["x-amzn-RequestId"])
        assert r.headers.get("x-amz-id-2")

    def test_request_ids_on_success_and_error(self, raw, make_stream):
        name = make_stream(shards=1)
        ids = set()
        for payload, status in (({"StreamName": name}, 200),
                                ({"StreamName": name + "-nope"}, 400),
                                ({"StreamName": "bad name"}, 400)):
            r = raw.json_call("DescribeStreamSummary", payload)
            assert r.status_code == status
            rid = r.headers.get("x-amzn-RequestId")
            assert rid and re.match(UUID_RE, rid), rid
            assert r.headers.get("x-amz-id-2")
            ids.add(rid)
        assert len(ids) == 3, "every response has its own request id"

    def test_boto3_sees_request_id(self, kinesis):
        r = kinesis.list_streams(Limit=1)
        assert re.match(UUID_RE, r["ResponseMetadata"]["RequestId"])
        err = expect_error(kinesis.describe_stream, StreamName=unique_name("missing"))
        assert re.match(UUID_RE, err.response["ResponseMetadata"]["RequestId"])
        id2 = err.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-id-2")
        assert id2
        if not IS_KINESALITE:
            # As AWS's: 64 to 80 bytes once decoded.
            assert 64 <= len(base64.b64decode(id2)) <= 80, id2

    def test_unknown_operation(self, raw):
        for target in (TARGET_PREFIX + "Whatever", TARGET_PREFIX + "ListStream", "Whatever.ListStreams",
                       TARGET_PREFIX):
            r = raw.post(b"{}", target=target)
            assert r.status_code == 400, target
            body = r.json()
            assert body["__type"] == "UnknownOperationException", target
            if not IS_KINESALITE:
                assert body == {"__type": "UnknownOperationException"}  # no message, as AWS
            assert re.match(UUID_RE, r.headers["x-amzn-RequestId"])

    # kinesalite only looks at the first two dot-separated parts of the target.
    @pytest.mark.freshet_only
    def test_unknown_operation_with_extra_suffix(self, raw):
        r = raw.post(b"{}", target=TARGET_PREFIX + "ListStreams.Extra")
        assert r.status_code == 400
        assert r.json()["__type"] == "UnknownOperationException"

    @pytest.mark.freshet_only
    def test_operations_without_output_answer_an_empty_body(self, raw):
        name = unique_name("noout")
        for op, payload in (("CreateStream", {"StreamName": name, "ShardCount": 1}),
                            ("AddTagsToStream", None), ("RemoveTagsFromStream", None),
                            ("DeleteStream", {"StreamName": name})):
            if op == "AddTagsToStream":
                wait_active(make_client(raw.endpoint), name)
                payload = {"StreamName": name, "Tags": {"a": "b"}}
            if op == "RemoveTagsFromStream":
                payload = {"StreamName": name, "TagKeys": ["a"]}
            r = raw.json_call(op, payload)
            assert r.status_code == 200, (op, r.text)
            assert r.content == b"", (op, r.content)
            assert r.headers["Content-Type"].startswith(AMZ_JSON)
        # RemoveTagsFromStream checks key characters as AddTagsToStream does.
        other = unique_name("tagkeys")
        raw.json_call("CreateStream", {"StreamName": other, "ShardCount": 1})
        wait_active(make_client(raw.endpoint), other)
        r = raw.json_call("RemoveTagsFromStream", {"StreamName": other, "TagKeys": ["bad#key"]})
        assert (r.status_code, r.json()["__type"]) == (400, "InvalidArgumentException")
        assert "invalid characters" in r.json()["message"]
        # Operations with an output still answer a document.
        r = raw.json_call("ListStreams", {})
        assert r.status_code == 200 and "StreamNames" in r.json()

    def test_missing_target_header(self, raw):
        r = raw.post(b"{}", target=None)
        assert r.status_code == 400
        assert r.json()["__type"] == "UnknownOperationException"

    def test_malformed_json(self, raw):
        for body in (b"hello", b"{", b'{"StreamName": "a",}', b"\xff\xfe\x00", b'{"Limit": tru'):
            r = raw.post(body, target=TARGET_PREFIX + "ListStreams")
            assert r.status_code == 400, body
            assert r.json()["__type"] == "SerializationException", body

    @pytest.mark.parametrize("op,payload", [
        ("DescribeStreamSummary", {"StreamName": True}),
        ("DescribeStreamSummary", {"StreamName": 23}),
        ("DescribeStreamSummary", {"StreamName": ["a"]}),
        ("DescribeStreamSummary", {"StreamName": {"a": 1}}),
        ("ListStreams", {"Limit": "23"}),
        ("ListStreams", {"Limit": True}),
        ("GetRecords", {"ShardIterator": "abc", "Limit": [1]}),
        ("PutRecords", {"StreamName": "a", "Records": "nope"}),
        ("PutRecord", {"StreamName": "a", "PartitionKey": "a", "Data": 12}),
        ("PutRecord", {"StreamName": "a", "PartitionKey": "a", "Data": "not base64!"}),
        ("AddTagsToStream", {"StreamName": "a", "Tags": ["x"]}),
        ("GetShardIterator", {"StreamName": "a", "ShardId": "shardId-0", "ShardIteratorType": "AT_TIMESTAMP",
                              "Timestamp": "yesterday"}),
    ])
    def test_wrong_types(self, raw, op, payload):
        r = raw.json_call(op, payload)
        assert r.status_code == 400
        body = r.json()
        assert body["__type"] == "SerializationException", body
        # AWS words these after Java's type names, e.g. "class java.lang.Boolean
        # can not be converted to an String"; we require some explanation.
        msg = error_message(body)
        assert isinstance(msg, str) and msg, body


class TestValidation:
    def test_bad_stream_name_boto3(self, kinesis):
        err = expect_error(kinesis.describe_stream_summary, StreamName="bad/name")
        assert_client_error(err, "ValidationException",
                            "1 validation error detected: Value 'bad/name' at 'streamName' failed to satisfy "
                            "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+")

    def test_bad_stream_name_on_create(self, kinesis):
        err = expect_error(kinesis.create_stream, StreamName="has space", ShardCount=1)
        assert_client_error(err, "ValidationException",
                            "1 validation error detected: Value 'has space' at 'streamName' failed to satisfy "
                            "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+")

    def test_long_stream_name(self, kinesis):
        name = "a" * 129
        err = expect_error(kinesis.describe_stream, StreamName=name)
        assert_client_error(err, "ValidationException",
                            f"1 validation error detected: Value '{name}' at 'streamName' failed to satisfy "
                            f"constraint: Member must have length less than or equal to 128")

    def test_two_errors(self, raw):
        r = raw.json_call("GetRecords", {"ShardIterator": "", "Limit": 0})
        assert_validation(r, [
            "Value '0' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1",
            "Value '' at 'shardIterator' failed to satisfy constraint: Member must have length greater than "
            "or equal to 1",
        ])

    def test_three_errors_on_create(self, raw):
        r = raw.json_call("CreateStream", {"StreamName": "", "ShardCount": 0})
        assert_validation(r, [
            "Value '0' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1",
            "Value '' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression "
            "pattern: [a-zA-Z0-9_.-]+",
            "Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or "
            "equal to 1",
        ])

    def test_limit_too_large(self, raw):
        r = raw.json_call("GetRecords", {"ShardIterator": "x" * 513, "Limit": 100000})
        assert_validation(r, [
            "Value '100000' at 'limit' failed to satisfy constraint: Member must have value less than or equal "
            "to 10000",
            f"Value '{'x' * 513}' at 'shardIterator' failed to satisfy constraint: Member must have length less "
            f"than or equal to 512",
        ])

    def test_enum_value(self, raw, make_stream):
        name = make_stream(shards=1)
        r = raw.json_call("GetShardIterator", {"StreamName": name, "ShardId": shard_id(0),
                                               "ShardIteratorType": "SOMEWHERE"})
        body = r.json()
        assert r.status_code == 400 and body["__type"] == "ValidationException"
        msg = error_message(body)
        assert msg.startswith("1 validation error detected: Value 'SOMEWHERE' at 'shardIteratorType' failed "
                              "to satisfy constraint: Member must satisfy enum value set: ["), msg
        for t in ("AFTER_SEQUENCE_NUMBER", "LATEST", "AT_TIMESTAMP", "AT_SEQUENCE_NUMBER", "TRIM_HORIZON"):
            assert t in msg

    def test_partition_key_too_long(self, kinesis, make_stream):
        name = make_stream(shards=1)
        pk = "k" * 257
        err = expect_error(kinesis.put_record, StreamName=name, Data=b"x", PartitionKey=pk)
        assert_client_error(err, "ValidationException",
                            f"1 validation error detected: Value '{pk}' at 'partitionKey' failed to satisfy "
                            f"constraint: Member must have length less than or equal to 256")

    def test_bad_explicit_hash_key_pattern(self, raw, make_stream):
        name = make_stream(shards=1)
        r = raw.json_call("PutRecord", {"StreamName": name, "PartitionKey": "a", "Data": "",
                                        "ExplicitHashKey": "abc"})
        assert_validation(r, [
            "Value 'abc' at 'explicitHashKey' failed to satisfy constraint: Member must satisfy regular "
            "expression pattern: 0|([1-9]\\d{0,38})",
        ])


class TestInvalidArgument:
    def test_explicit_hash_key_out_of_range(self, kinesis, make_stream):
        name = make_stream(shards=1)
        key = str(MAX_HASH + 1)
        msg = ("Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. "
               f"Specified value was {key}")
        err = expect_error(kinesis.put_record, StreamName=name, Data=b"x", PartitionKey="a", ExplicitHashKey=key)
        assert_client_error(err, "InvalidArgumentException", msg)
        err = expect_error(kinesis.put_records, StreamName=name, Records=[
            {"Data": b"ok", "PartitionKey": "a"},
            {"Data": b"x", "PartitionKey": "a", "ExplicitHashKey": key}])
        assert_client_error(err, "InvalidArgumentException", msg)
        # Nothing of the refused batch was written.
        it = kinesis.get_shard_iterator(StreamName=name, ShardId=shard_id(0),
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        assert kinesis.get_records(ShardIterator=it)["Records"] == []

    def test_bad_sequence_number_for_ordering(self, kinesis, make_stream):
        # A sequence number whose encoded time lies far in the future (pinned by
        # kinesalite's tests against AWS).
        name = make_stream(shards=1)
        seq = "26227199374822427428162556223570313216"
        err = expect_error(kinesis.put_record, StreamName=name, Data=b"x", PartitionKey="a",
                           SequenceNumberForOrdering=seq)
        assert_client_error(err, "InvalidArgumentException",
                            f"ExclusiveMinimumSequenceNumber {seq} used in PutRecord on stream {name} "
                            f"under account {ACCOUNT} is invalid.")

    def test_bad_starting_sequence_number(self, kinesis, make_stream):
        name = make_stream(shards=1)
        seq = "26227199374822427428162556223570313216"
        err = expect_error(kinesis.get_shard_iterator, StreamName=name, ShardId=shard_id(0),
                           ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=seq)
        assert_client_error(err, "InvalidArgumentException",
                            f"StartingSequenceNumber {seq} used in GetShardIterator on shard {shard_id(0)} "
                            f"in stream {name} under account {ACCOUNT} is invalid.")

    def test_list_shards_needs_stream_or_token(self, raw):
        r = raw.json_call("ListShards", {})
        assert r.status_code == 400
        body = r.json()
        assert body["__type"] in ("InvalidArgumentException", "ValidationException")
        if body["__type"] == "InvalidArgumentException":
            assert body["message"] == "Either NextToken or StreamName should be provided."

    def test_put_records_too_many(self, kinesis, make_stream):
        name = make_stream(shards=1)
        err = expect_error(kinesis.put_records, StreamName=name,
                           Records=[{"Data": b"x", "PartitionKey": "a"}] * 501)
        assert_client_error(err, "ValidationException")
        msg = err.response["Error"]["Message"]
        assert msg.startswith("1 validation error detected: Value '")
        assert msg.endswith("at 'records' failed to satisfy constraint: Member must have length less than "
                            "or equal to 500")


@pytest.mark.dedicated_server
class TestExpiredIterator:
    def test_iterator_expires(self, start_server):
        server = start_server(iterator_ttl_secs=2)
        client = make_client(server.endpoint)
        name = unique_name("ttl")
        client.create_stream(StreamName=name, ShardCount=1)
        wait_active(client, name)
        client.put_record(StreamName=name, Data=b"x", PartitionKey="a")
        it = client.get_shard_iterator(StreamName=name, ShardId=shard_id(0),
                                       ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        fresh = client.get_records(ShardIterator=it)
        assert [r["Data"] for r in fresh["Records"]] == [b"x"]
        time.sleep(3)
        for stale in (it, fresh["NextShardIterator"]):
            err = expect_error(client.get_records, ShardIterator=stale)
            assert_client_error(err, "ExpiredIteratorException")
            date = r"\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2} UTC \d{4}"
            assert re.fullmatch(
                rf"Iterator expired\. The iterator was created at time {date} while right now it is {date} "
                rf"which is further in the future than the tolerated delay of 2000 milliseconds\.",
                err.response["Error"]["Message"]), err.response["Error"]["Message"]
        # A new iterator works again.
        it = client.get_shard_iterator(StreamName=name, ShardId=shard_id(0),
                                       ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        assert len(client.get_records(ShardIterator=it)["Records"]) == 1


def limit_msg(current, limit, extra):
    return (f"This request would exceed the shard limit for the account {ACCOUNT} in {REGION}. "
            f"Current shard count for the account: {current}. Limit: {limit}. "
            f"Number of additional shards that would have resulted from this request: {extra}. "
            "Refer to the AWS Service Limits page "
            "(http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) "
            "for current limits and how to request higher limits.")


@pytest.mark.dedicated_server
class TestShardLimit:
    def test_shard_limit(self, start_server):
        server = start_server(extra_args=["--shard-limit", "10"])
        client = make_client(server.endpoint)
        err = expect_error(client.create_stream, StreamName=unique_name("lim"), ShardCount=11)
        assert_client_error(err, "LimitExceededException", limit_msg(0, 10, 11))
        limits = client.describe_limits()
        assert limits["ShardLimit"] == 10
        assert limits["OpenShardCount"] == 0

        name = unique_name("lim")
        client.create_stream(StreamName=name, ShardCount=10)
        wait_active(client, name)
        assert client.describe_limits()["OpenShardCount"] == 10
        err = expect_error(client.create_stream, StreamName=unique_name("lim"), ShardCount=1)
        assert_client_error(err, "LimitExceededException", limit_msg(10, 10, 1))
        err = expect_error(client.split_shard, StreamName=name, ShardToSplit=shard_id(0),
                           NewStartingHashKey=str(2**124))
        assert_client_error(err, "LimitExceededException", limit_msg(10, 10, 1))
        err = expect_error(client.update_shard_count, StreamName=name, TargetShardCount=20,
                           ScalingType="UNIFORM_SCALING")
        assert_client_error(err, "LimitExceededException")
        assert client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["OpenShardCount"] == 10

        # Merging frees a shard, after which a 1-shard stream fits again.
        client.merge_shards(StreamName=name, ShardToMerge=shard_id(0), AdjacentShardToMerge=shard_id(1))
        wait_active(client, name)
        assert client.describe_limits()["OpenShardCount"] == 9
        other = unique_name("lim")
        client.create_stream(StreamName=other, ShardCount=1)
        wait_active(client, other)


@pytest.mark.dedicated_server
class TestThroughputLimits:
    @pytest.fixture
    def throttled(self, start_server):
        server = start_server(extra_args=["--shard-throughput-limits"])
        client = make_client(server.endpoint)
        name = unique_name("tp")
        client.create_stream(StreamName=name, ShardCount=1)
        wait_active(client, name)
        return client, name

    def test_records_per_second(self, throttled):
        client, name = throttled
        failed = []
        for _ in range(8):
            r = client.put_records(StreamName=name, Records=[{"Data": b"r", "PartitionKey": "k"}] * 500)
            failed += [x for x in r["Records"] if "ErrorCode" in x]
            assert r["FailedRecordCount"] == len([x for x in r["Records"] if "ErrorCode" in x])
            if failed:
                break
        assert failed, "4000 records in a burst to one shard should exceed 1000 records/s"
        f = failed[0]
        assert f["ErrorCode"] == "ProvisionedThroughputExceededException"
        assert f["ErrorMessage"] == (f"Rate exceeded for shard {shard_id(0)} in stream {name} "
                                     f"under account {ACCOUNT}.")
        assert "SequenceNumber" not in f and "ShardId" not in f
        # (PutRecord's own throttling is checked by the bytes test: a limiter
        # that refills continuously may well admit one more small record.)
        time.sleep(1.5)
        assert client.put_record(StreamName=name, Data=b"x", PartitionKey="k")["SequenceNumber"]

    def test_bytes_per_second(self, throttled):
        client, name = throttled
        blob = b"\x01" * (600 * 1024)
        codes = []
        for _ in range(4):
            try:
                client.put_record(StreamName=name, Data=blob, PartitionKey="k")
                codes.append("ok")
            except Exception as e:
                codes.append(e.response["Error"]["Code"])
        assert codes[0] == "ok"
        assert "ProvisionedThroughputExceededException" in codes, codes

    def test_get_records_calls_per_second(self, throttled):
        client, name = throttled
        client.put_record(StreamName=name, Data=b"x", PartitionKey="k")
        it = client.get_shard_iterator(StreamName=name, ShardId=shard_id(0),
                                       ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        throttled_calls = 0
        for _ in range(12):
            try:
                it = client.get_records(ShardIterator=it)["NextShardIterator"]
            except Exception as e:
                assert e.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
                throttled_calls += 1
        assert throttled_calls > 0, "12 GetRecords calls in a burst should exceed 5 calls/s"
        time.sleep(1.5)
        assert "Records" in client.get_records(ShardIterator=it)

"""Writing and reading records through boto3."""

import random
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import (ACCOUNT, MAX_HASH, all_shards, assert_client_error, expect_error,
                      hash_range, make_client, md5_hash_key, read_all, shard_for_hash,
                      shard_id, unique_name, wait_active)


@pytest.fixture(scope="module")
def stream3(endpoint):
    """A 3-shard stream shared by the read/write tests of this module."""
    client = make_client(endpoint)
    name = unique_name("rec")
    client.create_stream(StreamName=name, ShardCount=3)
    wait_active(client, name)
    yield name
    client.delete_stream(StreamName=name)


def iterator(client, name, shard, kind, **kw):
    return client.get_shard_iterator(StreamName=name, ShardId=shard,
                                     ShardIteratorType=kind, **kw)["ShardIterator"]


class TestPutGet:
    def test_put_record_read_back_byte_exact(self, kinesis, make_stream):
        name = make_stream(shards=1)
        payloads = [
            bytes(range(256)),             # every byte value
            bytes(range(255, -1, -1)) * 3,
            b"\x00",
            b"",                           # empty data is allowed (Data min length 0)
            "héllo wörld ✓".encode("utf-8"),
            b"\r\n\t\"\\{}[]",
        ]
        seqs = []
        for i, data in enumerate(payloads):
            r = kinesis.put_record(StreamName=name, Data=data, PartitionKey=f"pk-{i}")
            assert r["ShardId"] == shard_id(0)
            seqs.append(r["SequenceNumber"])
        records, _ = read_all(kinesis, name, shard_id(0))
        assert [r["Data"] for r in records] == payloads
        assert [r["SequenceNumber"] for r in records] == seqs
        assert [r["PartitionKey"] for r in records] == [f"pk-{i}" for i in range(len(payloads))]

    def test_one_mib_record(self, kinesis, make_stream):
        name = make_stream(shards=1)
        data = random.Random(1234).randbytes(1024 * 1024)
        r = kinesis.put_record(StreamName=name, Data=data, PartitionKey="big")
        records, _ = read_all(kinesis, name, shard_id(0))
        assert len(records) == 1
        assert records[0]["SequenceNumber"] == r["SequenceNumber"]
        assert records[0]["Data"] == data

    def test_put_records_batch_read_back(self, kinesis, make_stream):
        name = make_stream(shards=2)
        rng = random.Random(99)
        batch = [{"Data": rng.randbytes(rng.randint(0, 2000)), "PartitionKey": f"key-{i}"}
                 for i in range(100)]
        r = kinesis.put_records(StreamName=name, Records=batch)
        assert r["FailedRecordCount"] == 0
        assert len(r["Records"]) == 100
        shards = all_shards(kinesis, name)
        for sent, res in zip(batch, r["Records"]):
            assert res["SequenceNumber"].isdigit()
            assert res["ShardId"] == shard_for_hash(shards, md5_hash_key(sent["PartitionKey"]))
            assert "ErrorCode" not in res
        got = {}
        for s in (shard_id(0), shard_id(1)):
            recs, _ = read_all(kinesis, name, s)
            for rec in recs:
                got[rec["SequenceNumber"]] = (rec["PartitionKey"], rec["Data"])
        assert len(got) == 100
        for sent, res in zip(batch, r["Records"]):
            assert got[res["SequenceNumber"]] == (sent["PartitionKey"], sent["Data"])

    def test_partition_key_md5_selects_shard(self, kinesis, make_stream):
        name = make_stream(shards=4)
        shards = all_shards(kinesis, name)
        keys = [f"partition-{i}" for i in range(40)] + ["a", "ü-unicode-ключ", "x" * 256]
        expected = {}
        for k in keys:
            want = shard_for_hash(shards, md5_hash_key(k))
            r = kinesis.put_record(StreamName=name, Data=k.encode(), PartitionKey=k)
            assert r["ShardId"] == want, f"partition key {k!r}"
            expected.setdefault(want, []).append(k)
        assert len(expected) == 4, "40 keys should hit every one of 4 shards"
        for s, ks in expected.items():
            recs, _ = read_all(kinesis, name, s)
            assert [r["PartitionKey"] for r in recs] == ks
            assert [r["Data"] for r in recs] == [k.encode() for k in ks]

    def test_explicit_hash_key_selects_shard(self, kinesis, stream3):
        shards = all_shards(kinesis, stream3)
        for s in shards:
            lo, hi = hash_range(s)
            for h in (lo, hi, (lo + hi) // 2):
                r = kinesis.put_record(StreamName=stream3, Data=b"e", PartitionKey="ignored",
                                       ExplicitHashKey=str(h))
                assert r["ShardId"] == s["ShardId"], f"hash {h}"
        r = kinesis.put_records(StreamName=stream3, Records=[
            {"Data": b"0", "PartitionKey": "p", "ExplicitHashKey": "0"},
            {"Data": b"1", "PartitionKey": "p", "ExplicitHashKey": str(MAX_HASH)},
        ])
        assert [x["ShardId"] for x in r["Records"]] == [shard_id(0), shard_id(2)]

    def test_sequence_numbers_increase_within_shard(self, kinesis, make_stream):
        name = make_stream(shards=1)
        seqs = []
        for i in range(20):
            seq = kinesis.put_record(StreamName=name, Data=b"%d" % i, PartitionKey="same")["SequenceNumber"]
            assert seq.isdigit() and not seq.startswith("0")
            seqs.append(int(seq))
        r = kinesis.put_records(StreamName=name, Records=[{"Data": b"b", "PartitionKey": str(i)}
                                                          for i in range(20)])
        seqs += [int(x["SequenceNumber"]) for x in r["Records"]]
        assert all(a < b for a, b in zip(seqs, seqs[1:])), "sequence numbers must strictly increase"
        # The shard's StartingSequenceNumber is not above its first record.
        start = int(all_shards(kinesis, name)[0]["SequenceNumberRange"]["StartingSequenceNumber"])
        assert start <= seqs[0]

    def test_sequence_number_for_ordering(self, kinesis, make_stream):
        name = make_stream(shards=2)
        first = kinesis.put_record(StreamName=name, Data=b"1", PartitionKey="order")
        prev = first["SequenceNumber"]
        for i in range(5):
            r = kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="order",
                                   SequenceNumberForOrdering=prev)
            assert r["ShardId"] == first["ShardId"]
            assert int(r["SequenceNumber"]) > int(prev)
            prev = r["SequenceNumber"]

    def test_arrival_timestamp(self, kinesis, make_stream):
        name = make_stream(shards=1)
        before = datetime.now(timezone.utc) - timedelta(seconds=2)
        kinesis.put_record(StreamName=name, Data=b"t", PartitionKey="t")
        after = datetime.now(timezone.utc) + timedelta(seconds=2)
        recs, _ = read_all(kinesis, name, shard_id(0))
        ts = recs[0]["ApproximateArrivalTimestamp"]
        assert before <= ts <= after

    def test_put_to_missing_stream(self, kinesis):
        name = unique_name("missing")
        err = expect_error(kinesis.put_record, StreamName=name, Data=b"x", PartitionKey="a")
        assert_client_error(err, "ResourceNotFoundException",
                            f"Stream {name} under account {ACCOUNT} not found.")
        err = expect_error(kinesis.put_records, StreamName=name,
                           Records=[{"Data": b"x", "PartitionKey": "a"}])
        assert_client_error(err, "ResourceNotFoundException",
                            f"Stream {name} under account {ACCOUNT} not found.")


class TestIterators:
    def _put3(self, client, name, tag):
        """Put three records into shard 0 of `name`; return their sequence numbers."""
        r = client.put_records(StreamName=name, Records=[
            {"Data": f"{tag}-{i}".encode(), "PartitionKey": "p", "ExplicitHashKey": "0"}
            for i in range(3)])
        assert r["FailedRecordCount"] == 0
        return [x["SequenceNumber"] for x in r["Records"]]

    def test_trim_horizon(self, kinesis, make_stream):
        name = make_stream(shards=1)
        self._put3(kinesis, name, "th")
        recs, _ = read_all(kinesis, name, shard_id(0), "TRIM_HORIZON")
        assert [r["Data"] for r in recs] == [b"th-0", b"th-1", b"th-2"]

    def test_at_and_after_sequence_number(self, kinesis, make_stream):
        name = make_stream(shards=1)
        seqs = self._put3(kinesis, name, "sq")
        it = iterator(kinesis, name, shard_id(0), "AT_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[1])
        recs = kinesis.get_records(ShardIterator=it)["Records"]
        assert [r["SequenceNumber"] for r in recs] == seqs[1:]
        it = iterator(kinesis, name, shard_id(0), "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[1])
        recs = kinesis.get_records(ShardIterator=it)["Records"]
        assert [r["SequenceNumber"] for r in recs] == seqs[2:]
        it = iterator(kinesis, name, shard_id(0), "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[2])
        assert kinesis.get_records(ShardIterator=it)["Records"] == []

    def test_latest(self, kinesis, make_stream):
        name = make_stream(shards=1)
        self._put3(kinesis, name, "old")
        it = iterator(kinesis, name, shard_id(0), "LATEST")
        r = kinesis.get_records(ShardIterator=it)
        assert r["Records"] == []
        self._put3(kinesis, name, "new")
        # The iterator taken before the writes sees exactly the new records,
        # and so does the NextShardIterator of the empty read.
        recs = kinesis.get_records(ShardIterator=it)["Records"]
        assert [x["Data"] for x in recs] == [b"new-0", b"new-1", b"new-2"]
        recs = kinesis.get_records(ShardIterator=r["NextShardIterator"])["Records"]
        assert [x["Data"] for x in recs] == [b"new-0", b"new-1", b"new-2"]

    def test_at_timestamp(self, kinesis, make_stream):
        name = make_stream(shards=1)
        self._put3(kinesis, name, "early")
        time.sleep(0.2)
        mark = datetime.now(timezone.utc)
        time.sleep(0.2)
        self._put3(kinesis, name, "late")
        it = iterator(kinesis, name, shard_id(0), "AT_TIMESTAMP", Timestamp=mark)
        recs = kinesis.get_records(ShardIterator=it)["Records"]
        assert [x["Data"] for x in recs] == [b"late-0", b"late-1", b"late-2"]
        # A timestamp older than the trim horizon reads from the oldest record.
        it = iterator(kinesis, name, shard_id(0), "AT_TIMESTAMP",
                      Timestamp=mark - timedelta(days=3))
        recs = kinesis.get_records(ShardIterator=it)["Records"]
        assert len(recs) == 6 and recs[0]["Data"] == b"early-0"
        # Exactly at a record's arrival time includes that record.
        late0 = recs[3]
        it = iterator(kinesis, name, shard_id(0), "AT_TIMESTAMP",
                      Timestamp=late0["ApproximateArrivalTimestamp"])
        got = kinesis.get_records(ShardIterator=it)["Records"]
        assert got and got[0]["ApproximateArrivalTimestamp"] >= late0["ApproximateArrivalTimestamp"]
        assert late0["SequenceNumber"] in [g["SequenceNumber"] for g in got]

    def test_limit_and_next_iterator(self, kinesis, make_stream):
        name = make_stream(shards=1)
        r = kinesis.put_records(StreamName=name, Records=[{"Data": b"%d" % i, "PartitionKey": "p"}
                                                          for i in range(5)])
        seqs = [x["SequenceNumber"] for x in r["Records"]]
        it = iterator(kinesis, name, shard_id(0), "TRIM_HORIZON")
        got = []
        sizes = []
        for _ in range(4):
            resp = kinesis.get_records(ShardIterator=it, Limit=2)
            sizes.append(len(resp["Records"]))
            got += [x["SequenceNumber"] for x in resp["Records"]]
            assert isinstance(resp["MillisBehindLatest"], int) and resp["MillisBehindLatest"] >= 0
            assert resp["NextShardIterator"], "an open shard always has a NextShardIterator"
            it = resp["NextShardIterator"]
        assert sizes == [2, 2, 1, 0]
        assert got == seqs

    def test_millis_behind_latest_when_caught_up(self, kinesis, make_stream):
        name = make_stream(shards=1)
        kinesis.put_record(StreamName=name, Data=b"m", PartitionKey="m")
        it = iterator(kinesis, name, shard_id(0), "TRIM_HORIZON")
        r = kinesis.get_records(ShardIterator=it)
        assert "MillisBehindLatest" in r
        r = kinesis.get_records(ShardIterator=r["NextShardIterator"])
        assert r["Records"] == []
        assert r["MillisBehindLatest"] == 0

    def test_iterator_is_reusable(self, kinesis, make_stream):
        name = make_stream(shards=1)
        self._put3(kinesis, name, "re")
        it = iterator(kinesis, name, shard_id(0), "TRIM_HORIZON")
        a = kinesis.get_records(ShardIterator=it)["Records"]
        b = kinesis.get_records(ShardIterator=it)["Records"]
        assert [x["SequenceNumber"] for x in a] == [x["SequenceNumber"] for x in b]
        assert len(a) == 3

    def test_empty_shard_reads(self, kinesis, stream3):
        for s in (shard_id(1),):
            it = iterator(kinesis, stream3, s, "LATEST")
            r = kinesis.get_records(ShardIterator=it)
            assert r["Records"] == []
            assert r["NextShardIterator"]

    def test_iterator_type_errors(self, kinesis, stream3):
        base = ("Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and "
                "StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. ")
        err = expect_error(kinesis.get_shard_iterator, StreamName=stream3, ShardId=shard_id(0),
                           ShardIteratorType="AT_SEQUENCE_NUMBER")
        assert_client_error(err, "InvalidArgumentException",
                            base + "Request specified AT_SEQUENCE_NUMBER and no StartingSequenceNumber.")
        err = expect_error(kinesis.get_shard_iterator, StreamName=stream3, ShardId=shard_id(0),
                           ShardIteratorType="AFTER_SEQUENCE_NUMBER")
        assert_client_error(err, "InvalidArgumentException",
                            base + "Request specified AFTER_SEQUENCE_NUMBER and no StartingSequenceNumber.")
        seq = kinesis.put_record(StreamName=stream3, Data=b"x", PartitionKey="p",
                                 ExplicitHashKey="0")["SequenceNumber"]
        err = expect_error(kinesis.get_shard_iterator, StreamName=stream3, ShardId=shard_id(0),
                           ShardIteratorType="LATEST", StartingSequenceNumber=seq)
        assert_client_error(err, "InvalidArgumentException",
                            base + "Request specified LATEST and also a StartingSequenceNumber.")
        err = expect_error(kinesis.get_shard_iterator, StreamName=stream3, ShardId=shard_id(0),
                           ShardIteratorType="TRIM_HORIZON", StartingSequenceNumber=seq)
        assert_client_error(err, "InvalidArgumentException",
                            base + "Request specified TRIM_HORIZON and also a StartingSequenceNumber.")
        err = expect_error(kinesis.get_shard_iterator, StreamName=stream3, ShardId=shard_id(0),
                           ShardIteratorType="AT_TIMESTAMP")
        assert_client_error(err, "InvalidArgumentException",
                            "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. "
                            "Current request has no timestamp parameter.")

    def test_timestamp_in_future(self, kinesis, stream3):
        future = datetime.now(timezone.utc) + timedelta(hours=1)
        err = expect_error(kinesis.get_shard_iterator, StreamName=stream3, ShardId=shard_id(0),
                           ShardIteratorType="AT_TIMESTAMP", Timestamp=future)
        assert_client_error(err, "InvalidArgumentException")
        msg = err.response["Error"]["Message"]
        assert msg.startswith("The timestampInMillis parameter cannot be greater than the "
                              "currentTimestampInMillis. timestampInMillis: ")

    def test_sequence_number_of_other_shard(self, kinesis, stream3):
        seq1 = kinesis.put_record(StreamName=stream3, Data=b"s1", PartitionKey="p",
                                  ExplicitHashKey=str(MAX_HASH // 2))
        assert seq1["ShardId"] == shard_id(1)
        err = expect_error(kinesis.get_shard_iterator, StreamName=stream3, ShardId=shard_id(0),
                           ShardIteratorType="AT_SEQUENCE_NUMBER",
                           StartingSequenceNumber=seq1["SequenceNumber"])
        assert_client_error(err, "InvalidArgumentException",
                            f"Invalid StartingSequenceNumber. It encodes {shard_id(1)}, while it was "
                            f"used in a call to a shard with {shard_id(0)}")

    def test_missing_shard(self, kinesis, stream3):
        err = expect_error(kinesis.get_shard_iterator, StreamName=stream3, ShardId=shard_id(5),
                           ShardIteratorType="LATEST")
        assert_client_error(err, "ResourceNotFoundException",
                            f"Shard {shard_id(5)} in stream {stream3} under account {ACCOUNT} does not exist")

    def test_get_shard_iterator_missing_stream(self, kinesis):
        name = unique_name("missing")
        err = expect_error(kinesis.get_shard_iterator, StreamName=name, ShardId=shard_id(0),
                           ShardIteratorType="LATEST")
        assert_client_error(err, "ResourceNotFoundException",
                            f"Shard {shard_id(0)} in stream {name} under account {ACCOUNT} does not exist")

    def test_invalid_iterator(self, kinesis):
        err = expect_error(kinesis.get_records, ShardIterator="bm90LWEtcmVhbC1pdGVyYXRvcg==")
        assert_client_error(err, "InvalidArgumentException", "Invalid ShardIterator.")

    def test_iterator_of_deleted_stream(self, kinesis):
        from conftest import wait_gone
        name = unique_name("gone")
        kinesis.create_stream(StreamName=name, ShardCount=1)
        wait_active(kinesis, name)
        it = iterator(kinesis, name, shard_id(0), "TRIM_HORIZON")
        kinesis.delete_stream(StreamName=name)
        wait_gone(kinesis, name)
        err = expect_error(kinesis.get_records, ShardIterator=it)
        assert_client_error(err, "ResourceNotFoundException",
                            f"Shard {shard_id(0)} in stream {name} under account {ACCOUNT} does not exist")

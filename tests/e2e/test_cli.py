"""The AWS CLI (v1) against the server, signing with dummy credentials."""

import base64
import json

from conftest import ACCOUNT, run_aws, shard_id, stream_arn, unique_name, wait_active, wait_gone


def binary_format_args():
    """`--cli-binary-format raw-in-base64-out` makes CLI v2 take --data as raw
    text. CLI v1 (what requirements.txt pins) already treats blob arguments as
    raw bytes and rejects that option as unknown, so it is only passed to v2."""
    import awscli
    return [] if awscli.__version__.startswith("1.") else ["--cli-binary-format", "raw-in-base64-out"]


def aws_json(endpoint, *args):
    p = run_aws(endpoint, *args)
    return json.loads(p.stdout) if p.stdout.strip() else None


def test_cli_round_trip(endpoint, kinesis):
    name = unique_name("cli")
    assert aws_json(endpoint, "kinesis", "create-stream", "--stream-name", name, "--shard-count", "1") is None
    try:
        wait_active(kinesis, name)

        s = aws_json(endpoint, "kinesis", "describe-stream-summary", "--stream-name", name)
        summary = s["StreamDescriptionSummary"]
        assert summary["StreamName"] == name
        assert summary["StreamARN"] == stream_arn(name)
        assert summary["StreamStatus"] == "ACTIVE"
        assert summary["OpenShardCount"] == 1

        listed = aws_json(endpoint, "kinesis", "list-streams")
        assert name in listed["StreamNames"]

        put = aws_json(endpoint, "kinesis", "put-record", "--stream-name", name,
                       "--partition-key", "cli-key", "--data", "hello from the cli",
                       *binary_format_args())
        assert put["ShardId"] == shard_id(0)
        assert put["SequenceNumber"].isdigit()

        it = aws_json(endpoint, "kinesis", "get-shard-iterator", "--stream-name", name,
                      "--shard-id", shard_id(0), "--shard-iterator-type", "TRIM_HORIZON")["ShardIterator"]
        got = aws_json(endpoint, "kinesis", "get-records", "--shard-iterator", it)
        assert len(got["Records"]) == 1
        rec = got["Records"][0]
        # The CLI prints blobs base64-encoded.
        assert base64.b64decode(rec["Data"]) == b"hello from the cli"
        assert rec["PartitionKey"] == "cli-key"
        assert rec["SequenceNumber"] == put["SequenceNumber"]
        assert "NextShardIterator" in got and "MillisBehindLatest" in got

        # The same record seen through boto3.
        it2 = kinesis.get_shard_iterator(StreamName=name, ShardId=shard_id(0),
                                         ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        assert kinesis.get_records(ShardIterator=it2)["Records"][0]["Data"] == b"hello from the cli"

        assert aws_json(endpoint, "kinesis", "delete-stream", "--stream-name", name) is None
        wait_gone(kinesis, name)
    finally:
        try:
            kinesis.delete_stream(StreamName=name)
        except Exception:
            pass


def test_cli_error_output(endpoint):
    name = unique_name("cli-missing")
    p = run_aws(endpoint, "kinesis", "describe-stream-summary", "--stream-name", name, check=False)
    assert p.returncode in (254, 255)  # v2 uses 254 for service errors, v1 255
    assert "ResourceNotFoundException" in p.stderr
    assert f"Stream {name} under account {ACCOUNT} not found." in p.stderr

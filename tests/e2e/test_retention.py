"""Increase/DecreaseStreamRetentionPeriod."""

import pytest

from conftest import (ACCOUNT, assert_client_error, expect_error, stream_arn, unique_name,
                      wait_active)


def retention(client, name):
    return client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["RetentionPeriodHours"]


def test_increase_then_decrease(kinesis, make_stream):
    name = make_stream(shards=1)
    assert retention(kinesis, name) == 24
    kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=48)
    wait_active(kinesis, name)
    assert retention(kinesis, name) == 48
    assert kinesis.describe_stream(StreamName=name)["StreamDescription"]["RetentionPeriodHours"] == 48
    # Increasing to the current value is accepted (AWS: no-op).
    kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=48)
    wait_active(kinesis, name)
    kinesis.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=25)
    wait_active(kinesis, name)
    assert retention(kinesis, name) == 25
    kinesis.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=24)
    wait_active(kinesis, name)
    assert retention(kinesis, name) == 24


def test_increase_to_lower_value(kinesis, make_stream):
    name = make_stream(shards=1)
    kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=48)
    wait_active(kinesis, name)
    err = expect_error(kinesis.increase_stream_retention_period, StreamName=name, RetentionPeriodHours=30)
    assert_client_error(
        err, "InvalidArgumentException",
        f"Requested retention period (30 hours) for stream {name} can not be shorter than existing "
        f"retention period (48 hours). Use DecreaseRetentionPeriod API.")
    assert retention(kinesis, name) == 48


def test_decrease_to_higher_value(kinesis, make_stream):
    name = make_stream(shards=1)
    err = expect_error(kinesis.decrease_stream_retention_period, StreamName=name, RetentionPeriodHours=72)
    assert_client_error(
        err, "InvalidArgumentException",
        f"Requested retention period (72 hours) for stream {name} can not be longer than existing "
        f"retention period (24 hours). Use IncreaseRetentionPeriod API.")
    assert retention(kinesis, name) == 24


@pytest.mark.parametrize("op", ["increase_stream_retention_period", "decrease_stream_retention_period"])
def test_below_minimum(kinesis, make_stream, op):
    name = make_stream(shards=1)
    err = expect_error(getattr(kinesis, op), StreamName=name, RetentionPeriodHours=23)
    assert_client_error(err, "InvalidArgumentException",
                        "Minimum allowed retention period is 24 hours. "
                        "Requested retention period (23 hours) is too short.")


# kinesalite caps retention at 168 hours (AWS's old limit, and as a
# ValidationException); AWS now allows up to 8760 hours (365 days).
@pytest.mark.freshet_only
def test_maximum_is_8760_hours(kinesis, make_stream):
    name = make_stream(shards=1)
    kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=8760)
    wait_active(kinesis, name)
    assert retention(kinesis, name) == 8760
    err = expect_error(kinesis.increase_stream_retention_period, StreamName=name, RetentionPeriodHours=8761)
    assert_client_error(err, "InvalidArgumentException",
                        "Maximum allowed retention period is 8760 hours. "
                        "Requested retention period (8761 hours) is too long.")
    kinesis.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=168)
    wait_active(kinesis, name)
    assert retention(kinesis, name) == 168


def test_retention_missing_stream(kinesis):
    name = unique_name("missing")
    err = expect_error(kinesis.increase_stream_retention_period, StreamName=name, RetentionPeriodHours=48)
    assert_client_error(err, "ResourceNotFoundException", f"Stream {name} under account {ACCOUNT} not found.")


@pytest.mark.freshet_only
def test_retention_by_arn(kinesis, make_stream):
    name = make_stream(shards=1)
    kinesis.increase_stream_retention_period(StreamARN=stream_arn(name), RetentionPeriodHours=100)
    wait_active(kinesis, name)
    kinesis.decrease_stream_retention_period(StreamARN=stream_arn(name), RetentionPeriodHours=50)
    wait_active(kinesis, name)
    assert retention(kinesis, name) == 50

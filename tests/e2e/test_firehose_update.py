"""UpdateDestination with boto3: the version check, the destination id, validation as at
CreateDeliveryStream, the update merged into the destination, the new version in
DescribeDeliveryStream (and after a restart), and records put before and after an
update all delivered, under the new configuration."""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

from conftest import unique_name, wait_for
from test_firehose import ROLE, err, firehose, objects, s3_config, wait_active

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def describe(fh, name):
    return fh.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]


def records_in(bodies):
    return b"".join(bodies[k] for k in sorted(bodies)).splitlines(keepends=True)


def test_update_destination(start_server):
    srv = start_server()
    fh = firehose(srv.endpoint)
    name = unique_name("upd")
    # A long interval: the first records stay buffered until the update shortens it.
    fh.create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration=s3_config("before-bucket", 1, 900, Prefix="before/",
                                                     ErrorOutputPrefix="errors/"))
    wait_active(fh, name)
    first = [f"before-{i:03}\n".encode() for i in range(50)]
    fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": r} for r in first])
    d = describe(fh, name)
    assert d["VersionId"] == "1" and "LastUpdateTimestamp" not in d
    dest_id = d["Destinations"][0]["DestinationId"]
    assert dest_id == "destinationId-000000000001"

    def update(version="1", destination_id=dest_id, **member):
        if not member:
            member = {"ExtendedS3DestinationUpdate": {"Prefix": "x/"}}
        return fh.update_destination(DeliveryStreamName=name,
                                     CurrentDeliveryStreamVersionId=version,
                                     DestinationId=destination_id, **member)

    with pytest.raises(ClientError) as e:
        update(version="7")
    assert err(e) == ("ConcurrentModificationException",
                      f"Cannot update firehose: {name} since the current version id: 1 and "
                      "specified version id: 7 do not match")
    with pytest.raises(ClientError) as e:
        update(destination_id="destinationId-000000000002")
    assert err(e) == ("InvalidArgumentException",
                      "Destination Id destinationId-000000000002 not found")
    with pytest.raises(ClientError) as e:
        fh.update_destination(DeliveryStreamName="no-such-stream",
                              CurrentDeliveryStreamVersionId="1", DestinationId=dest_id,
                              ExtendedS3DestinationUpdate={"Prefix": "x/"})
    assert err(e)[0] == "ResourceNotFoundException"
    assert "no-such-stream" in err(e)[1]
    # Validation as at CreateDeliveryStream: the merged destination is checked.
    with pytest.raises(ClientError) as e:
        update(ExtendedS3DestinationUpdate={"Prefix": "p/!{timestamp:yyyy}/",
                                            "ErrorOutputPrefix": ""})
    assert err(e) == ("InvalidArgumentException",
                      "ErrorOutputPrefix cannot be null or empty when Prefix contains expressions.")
    with pytest.raises(ClientError) as e:
        update(ExtendedS3DestinationUpdate={"BucketARN": "arn:aws:s3:::Bad_Bucket"})
    assert err(e)[0] == "InvalidArgumentException" and "Bad_Bucket" in err(e)[1]
    with pytest.raises(ClientError) as e:
        update(ExtendedS3DestinationUpdate={"BufferingHints": {"SizeInMBs": 500}})
    assert err(e)[0] == "ValidationException" and "128" in err(e)[1]
    with pytest.raises(ClientError) as e:
        update(ExtendedS3DestinationUpdate={"DynamicPartitioningConfiguration": {"Enabled": True}})
    assert err(e)[0] == "InvalidArgumentException" and "cannot be enabled" in err(e)[1]
    with pytest.raises(ClientError) as e:
        update(HttpEndpointDestinationUpdate={"EndpointConfiguration": {"Url": "https://x.example"}})
    assert err(e)[0] == "InvalidArgumentException" and "destination type" in err(e)[1]
    with pytest.raises(ClientError) as e:
        update(ExtendedS3DestinationUpdate={"Prefix": "a/"}, S3DestinationUpdate={"Prefix": "b/"})
    assert err(e)[0] == "InvalidArgumentException"
    # Nothing of that changed the stream.
    d = describe(fh, name)
    assert d["VersionId"] == "1"
    assert d["Destinations"][0]["ExtendedS3DestinationDescription"]["Prefix"] == "before/"

    update(ExtendedS3DestinationUpdate={
        "BucketARN": "arn:aws:s3:::after-bucket", "Prefix": "after/",
        "BufferingHints": {"IntervalInSeconds": 1}, "CompressionFormat": "UNCOMPRESSED"})
    d = describe(fh, name)
    assert d["VersionId"] == "2"
    assert d["LastUpdateTimestamp"] >= d["CreateTimestamp"]
    s3 = d["Destinations"][0]["ExtendedS3DestinationDescription"]
    # Merged: what the update names changed, the rest (SizeInMBs, ErrorOutputPrefix) kept.
    assert s3["BucketARN"] == "arn:aws:s3:::after-bucket"
    assert s3["Prefix"] == "after/" and s3["ErrorOutputPrefix"] == "errors/"
    assert s3["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 1}
    assert d["Destinations"][0]["S3DestinationDescription"]["Prefix"] == "after/"
    with pytest.raises(ClientError) as e:
        update(version="1")
    assert err(e)[0] == "ConcurrentModificationException"

    second = [f"after-{i:03}\n".encode() for i in range(50)]
    for r in second:
        fh.put_record(DeliveryStreamName=name, Record={"Data": r})
    everything = sorted(first + second)
    wait_for(lambda: sorted(records_in(objects(srv.data_dir, "after-bucket"))) == everything,
             20, "every record in the updated bucket")
    # Buffered before the update, delivered under it: nothing in the old bucket, the new
    # version in every name, in order.
    assert objects(srv.data_dir, "before-bucket") == {}
    after = objects(srv.data_dir, "after-bucket")
    for key in after:
        assert re.fullmatch(rf"after/\d{{4}}/\d{{2}}/\d{{2}}/\d{{2}}/{re.escape(name)}-2-\d{{4}}(-\d{{2}}){{5}}-{UUID}", key), key
    assert records_in(after) == first + second

    # The update is durable: a restart shows version 2 and keeps delivering under it.
    assert srv.stop() == 0
    srv.start()
    fh = firehose(srv.endpoint)
    d = describe(fh, name)
    assert d["VersionId"] == "2"
    assert d["Destinations"][0]["ExtendedS3DestinationDescription"]["Prefix"] == "after/"
    fh.put_record(DeliveryStreamName=name, Record={"Data": b"restarted\n"})
    wait_for(lambda: b"restarted\n" in records_in(objects(srv.data_dir, "after-bucket")), 15,
             "the record put after the restart")


def test_update_http_endpoint_destination(start_server):
    """An HTTP endpoint stream's update merges into the endpoint and its backup bucket;
    with an unreachable URL updated to another one, batches go to the new URL."""
    srv = start_server()
    fh = firehose(srv.endpoint)
    name = unique_name("updh")
    fh.create_delivery_stream(
        DeliveryStreamName=name,
        HttpEndpointDestinationConfiguration={
            "EndpointConfiguration": {"Url": "https://old.example/ingest", "Name": "old"},
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
            "RetryOptions": {"DurationInSeconds": 60},
            "S3Configuration": s3_config("http-backup", 1, 60),
            "RoleARN": ROLE,
        })
    wait_active(fh, name)
    fh.update_destination(
        DeliveryStreamName=name, CurrentDeliveryStreamVersionId="1",
        DestinationId="destinationId-000000000001",
        HttpEndpointDestinationUpdate={
            "EndpointConfiguration": {"Url": "https://new.example/ingest"},
            "RetryOptions": {"DurationInSeconds": 0},
            "S3Update": {"Prefix": "backup/"},
        })
    d = describe(fh, name)
    assert d["VersionId"] == "2"
    h = d["Destinations"][0]["HttpEndpointDestinationDescription"]
    assert h["EndpointConfiguration"] == {"Url": "https://new.example/ingest", "Name": "old"}
    assert h["RetryOptions"] == {"DurationInSeconds": 0}
    assert h["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 60}
    assert h["S3DestinationDescription"]["Prefix"] == "backup/"
    assert h["S3DestinationDescription"]["BucketARN"] == "arn:aws:s3:::http-backup"
    with pytest.raises(ClientError) as e:
        fh.update_destination(
            DeliveryStreamName=name, CurrentDeliveryStreamVersionId="2",
            DestinationId="destinationId-000000000001",
            HttpEndpointDestinationUpdate={"EndpointConfiguration": {"Url": "https://"}})
    assert err(e)[0] == "InvalidArgumentException"
    with pytest.raises(ClientError) as e:
        fh.update_destination(
            DeliveryStreamName=name, CurrentDeliveryStreamVersionId="2",
            DestinationId="destinationId-000000000001",
            ExtendedS3DestinationUpdate={"Prefix": "x/"})
    assert err(e)[0] == "InvalidArgumentException" and "destination type" in err(e)[1]
    assert describe(fh, name)["VersionId"] == "2"

"""Kinesis Video Streams control plane (REST-JSON, POST /<operation>) with boto3's
kinesisvideo client, following the call sequence of the producer SDK (describeStream ->
404 -> createStream -> getDataEndpoint) and every documented error shape."""
import time

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, unique_name

pytestmark = pytest.mark.freshet_only


@pytest.fixture(scope="module")
def kv(endpoint):
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return boto3.session.Session().client(
        "kinesisvideo", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="test", aws_secret_access_key="test", config=cfg)


def wait_video_active(kv, name, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = kv.describe_stream(StreamName=name)["StreamInfo"]
        if info["Status"] == "ACTIVE":
            return info
        time.sleep(0.05)
    raise AssertionError(f"{name} never became ACTIVE")


def error_of(fn, **kw) -> ClientError:
    with pytest.raises(ClientError) as e:
        fn(**kw)
    return e.value


def test_producer_sdk_sequence(kv, endpoint):
    name = unique_name("cam")
    err = error_of(kv.describe_stream, StreamName=name)
    assert err.response["Error"]["Code"] == "ResourceNotFoundException"
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    arn = kv.create_stream(DeviceName="Kinesis_Video_Device", StreamName=name,
                           MediaType="video/h264", DataRetentionInHours=2)["StreamARN"]
    assert arn.startswith(f"arn:aws:kinesisvideo:us-east-1:000000000000:stream/{name}/")
    info = wait_video_active(kv, name)
    assert info["StreamARN"] == arn
    assert info["MediaType"] == "video/h264"
    assert info["DeviceName"] == "Kinesis_Video_Device"
    assert info["DataRetentionInHours"] == 2
    assert info["Version"].isalnum()
    for api in ("PUT_MEDIA", "GET_MEDIA", "LIST_FRAGMENTS", "GET_HLS_STREAMING_SESSION_URL"):
        ep = kv.get_data_endpoint(StreamARN=arn, APIName=api)["DataEndpoint"]
        assert ep == endpoint


def test_raw_error_shape(endpoint):
    r = requests.post(endpoint + "/describeStream", json={"StreamName": unique_name("none")})
    assert r.status_code == 404
    assert r.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert r.json()["Message"]
    assert r.headers.get("x-amzn-RequestId")
    r = requests.post(endpoint + "/createStream", data=b"{not json")
    assert r.status_code == 400
    assert r.headers["x-amzn-ErrorType"] == "InvalidArgumentException"
    r = requests.post(endpoint + "/noSuchOperation", json={})
    assert r.status_code == 404


def test_duplicate_and_invalid_names(kv, endpoint):
    name = unique_name("cam")
    kv.create_stream(StreamName=name)
    assert error_of(kv.create_stream, StreamName=name).response["Error"]["Code"] == "ResourceInUseException"
    err = error_of(kv.create_stream, StreamName="bad name!")
    assert err.response["Error"]["Code"] == "InvalidArgumentException"
    assert "regular expression pattern" in err.response["Error"]["Message"]
    # boto3 refuses a negative retention itself; send it raw.
    r = requests.post(endpoint + "/createStream", json={"StreamName": name + "x", "DataRetentionInHours": -1})
    assert r.status_code == 400
    assert r.headers["x-amzn-ErrorType"] == "InvalidArgumentException"
    assert "dataRetentionInHours" in r.json()["Message"]


def test_versions_guard_updates_and_deletes(kv):
    name = unique_name("cam")
    arn = kv.create_stream(StreamName=name, MediaType="video/h264")["StreamARN"]
    v1 = wait_video_active(kv, name)["Version"]
    kv.update_stream(StreamName=name, CurrentVersion=v1, MediaType="video/h265")
    info = kv.describe_stream(StreamARN=arn)["StreamInfo"]
    assert info["MediaType"] == "video/h265"
    assert info["Version"] != v1
    err = error_of(kv.update_stream, StreamName=name, CurrentVersion=v1, MediaType="video/h264")
    assert err.response["Error"]["Code"] == "VersionMismatchException"
    err = error_of(kv.delete_stream, StreamARN=arn, CurrentVersion=v1)
    assert err.response["Error"]["Code"] == "VersionMismatchException"
    kv.delete_stream(StreamARN=arn, CurrentVersion=info["Version"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            kv.describe_stream(StreamName=name)
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ResourceNotFoundException"
            break
        time.sleep(0.05)
    else:
        raise AssertionError("stream was not deleted")


def test_data_retention_changes(kv):
    name = unique_name("cam")
    kv.create_stream(StreamName=name, DataRetentionInHours=0)
    v = wait_video_active(kv, name)["Version"]
    kv.update_data_retention(StreamName=name, CurrentVersion=v, Operation="INCREASE_DATA_RETENTION",
                             DataRetentionChangeInHours=24)
    info = kv.describe_stream(StreamName=name)["StreamInfo"]
    assert info["DataRetentionInHours"] == 24
    kv.update_data_retention(StreamName=name, CurrentVersion=info["Version"],
                             Operation="DECREASE_DATA_RETENTION", DataRetentionChangeInHours=10)
    info = kv.describe_stream(StreamName=name)["StreamInfo"]
    assert info["DataRetentionInHours"] == 14
    err = error_of(kv.update_data_retention, StreamName=name, CurrentVersion=info["Version"],
                   Operation="DECREASE_DATA_RETENTION", DataRetentionChangeInHours=100)
    assert err.response["Error"]["Code"] == "InvalidArgumentException"


def test_list_streams_with_prefix_and_pagination(kv):
    prefix = unique_name("lst")
    names = [f"{prefix}-{i}" for i in range(5)]
    for n in names:
        kv.create_stream(StreamName=n)
    page = kv.list_streams(MaxResults=2, StreamNameCondition={"ComparisonOperator": "BEGINS_WITH",
                                                                "ComparisonValue": prefix})
    seen = [s["StreamName"] for s in page["StreamInfoList"]]
    assert len(seen) == 2
    while "NextToken" in page:
        page = kv.list_streams(MaxResults=2, NextToken=page["NextToken"],
                               StreamNameCondition={"ComparisonOperator": "BEGINS_WITH",
                                                    "ComparisonValue": prefix})
        seen += [s["StreamName"] for s in page["StreamInfoList"]]
    assert seen == names


def test_tags_both_families(kv):
    name = unique_name("cam")
    arn = kv.create_stream(StreamName=name, Tags={"team": "a"})["StreamARN"]
    kv.tag_stream(StreamName=name, Tags={"site": "north"})
    kv.tag_resource(ResourceARN=arn, Tags=[{"Key": "cam", "Value": "7"}])
    assert kv.list_tags_for_stream(StreamName=name)["Tags"] == {"team": "a", "site": "north", "cam": "7"}
    kv.untag_stream(StreamARN=arn, TagKeyList=["team"])
    kv.untag_resource(ResourceARN=arn, TagKeyList=["cam"])
    assert kv.list_tags_for_resource(ResourceARN=arn)["Tags"] == {"site": "north"}
    err = error_of(kv.tag_stream, StreamName=name, Tags={f"k{i}": "v" for i in range(50)})
    assert err.response["Error"]["Code"] == "TagsPerResourceExceededLimitException"
    err = error_of(kv.list_tags_for_resource, ResourceARN=arn + "0")
    assert err.response["Error"]["Code"] == "ResourceNotFoundException"


def test_size_cap_tag(kv):
    name = unique_name("cam")
    err = error_of(kv.create_stream, StreamName=name, Tags={"freshet:max-size-bytes": "10"})
    assert err.response["Error"]["Code"] == "InvalidArgumentException"
    assert "freshet:max-size-bytes" in err.response["Error"]["Message"]
    kv.create_stream(StreamName=name, DataRetentionInHours=1,
                     Tags={"freshet:max-size-bytes": str(64 << 20)})
    err = error_of(kv.tag_stream, StreamName=name, Tags={"freshet:max-size-bytes": "lots"})
    assert err.response["Error"]["Code"] == "InvalidArgumentException"
    kv.tag_stream(StreamName=name, Tags={"freshet:max-size-bytes": str(8 << 20)})
    assert kv.list_tags_for_stream(StreamName=name)["Tags"] == {"freshet:max-size-bytes": str(8 << 20)}


def test_streams_survive_restart(start_server):
    server = start_server(state_delay_ms=0)
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    kv = boto3.session.Session().client("kinesisvideo", endpoint_url=server.endpoint, region_name=REGION,
                                        aws_access_key_id="t", aws_secret_access_key="t", config=cfg)
    arn = kv.create_stream(StreamName="persisted", MediaType="video/h264", DataRetentionInHours=5,
                           Tags={"a": "b"})["StreamARN"]
    before = kv.describe_stream(StreamARN=arn)["StreamInfo"]
    server.stop()
    server.start()
    kv = boto3.session.Session().client("kinesisvideo", endpoint_url=server.endpoint, region_name=REGION,
                                        aws_access_key_id="t", aws_secret_access_key="t", config=cfg)
    after = kv.describe_stream(StreamARN=arn)["StreamInfo"]
    assert after == before
    assert kv.list_tags_for_stream(StreamARN=arn)["Tags"] == {"a": "b"}

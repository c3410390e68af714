"""Stream tags: *TagsToStream / ListTagsForStream and the ARN-based *Resource operations."""

import pytest

from conftest import (ACCOUNT, assert_client_error, expect_error, stream_arn, unique_name)


def tag_dict(tags):
    return {t["Key"]: t["Value"] for t in tags}


def test_add_list_remove_tags(kinesis, make_stream):
    name = make_stream(shards=1)
    assert kinesis.list_tags_for_stream(StreamName=name)["Tags"] == []
    kinesis.add_tags_to_stream(StreamName=name, Tags={"b": "2", "a": "1", "c": "", "d d": "x y"})
    r = kinesis.list_tags_for_stream(StreamName=name)
    assert tag_dict(r["Tags"]) == {"a": "1", "b": "2", "c": "", "d d": "x y"}
    assert r["HasMoreTags"] is False
    # Adding an existing key overwrites its value.
    kinesis.add_tags_to_stream(StreamName=name, Tags={"a": "one"})
    assert tag_dict(kinesis.list_tags_for_stream(StreamName=name)["Tags"])["a"] == "one"
    kinesis.remove_tags_from_stream(StreamName=name, TagKeys=["b", "not-there"])
    assert tag_dict(kinesis.list_tags_for_stream(StreamName=name)["Tags"]) == {"a": "one", "c": "", "d d": "x y"}


def test_list_tags_pagination(kinesis, make_stream):
    name = make_stream(shards=1)
    tags = {f"key{i:02d}": f"v{i}" for i in range(9)}
    kinesis.add_tags_to_stream(StreamName=name, Tags=tags)
    r = kinesis.list_tags_for_stream(StreamName=name, Limit=4)
    assert len(r["Tags"]) == 4
    assert r["HasMoreTags"] is True
    seen = list(r["Tags"])
    while r["HasMoreTags"]:
        r = kinesis.list_tags_for_stream(StreamName=name, Limit=4,
                                         ExclusiveStartTagKey=seen[-1]["Key"])
        assert r["Tags"], "HasMoreTags was true but the next page is empty"
        seen.extend(r["Tags"])
    assert tag_dict(seen) == tags
    assert len(seen) == len(tags)
    r = kinesis.list_tags_for_stream(StreamName=name, ExclusiveStartTagKey="key05")
    assert [t["Key"] for t in r["Tags"]] == ["key06", "key07", "key08"]
    assert r["HasMoreTags"] is False


@pytest.mark.parametrize("bad", ["abc;def", "abc,def", "abc\tdef"])
def test_invalid_tag_characters(kinesis, make_stream, bad):
    name = make_stream(shards=1)
    for tags in ({bad: "1"}, {"a": bad}):
        err = expect_error(kinesis.add_tags_to_stream, StreamName=name, Tags=tags)
        assert_client_error(err, "InvalidArgumentException",
                            "Some tags contain invalid characters. Valid characters: "
                            "Unicode letters, digits, white space, _ . / = + - % @.")
    assert kinesis.list_tags_for_stream(StreamName=name)["Tags"] == []


def test_tags_missing_stream(kinesis):
    name = unique_name("missing")
    msg = f"Stream {name} under account {ACCOUNT} not found."
    assert_client_error(expect_error(kinesis.add_tags_to_stream, StreamName=name, Tags={"a": "b"}),
                        "ResourceNotFoundException", msg)
    assert_client_error(expect_error(kinesis.list_tags_for_stream, StreamName=name),
                        "ResourceNotFoundException", msg)
    assert_client_error(expect_error(kinesis.remove_tags_from_stream, StreamName=name, TagKeys=["a"]),
                        "ResourceNotFoundException", msg)


@pytest.mark.freshet_only
def test_tag_resource_by_arn(kinesis, make_stream):
    name = make_stream(shards=1)
    arn = stream_arn(name)
    kinesis.tag_resource(ResourceARN=arn, Tags={"owner": "me", "tier": "gold"})
    assert tag_dict(kinesis.list_tags_for_resource(ResourceARN=arn)["Tags"]) == {"owner": "me", "tier": "gold"}
    # The same tags through the stream-name API.
    assert tag_dict(kinesis.list_tags_for_stream(StreamName=name)["Tags"]) == {"owner": "me", "tier": "gold"}
    kinesis.untag_resource(ResourceARN=arn, TagKeys=["owner"])
    assert tag_dict(kinesis.list_tags_for_resource(ResourceARN=arn)["Tags"]) == {"tier": "gold"}
    kinesis.add_tags_to_stream(StreamName=name, Tags={"via": "stream-api"})
    assert tag_dict(kinesis.list_tags_for_resource(ResourceARN=arn)["Tags"]) == {"tier": "gold", "via": "stream-api"}


@pytest.mark.freshet_only
def test_tag_resource_missing_stream(kinesis):
    name = unique_name("missing")
    err = expect_error(kinesis.list_tags_for_resource, ResourceARN=stream_arn(name))
    assert_client_error(err, "ResourceNotFoundException", f"Stream {name} under account {ACCOUNT} not found.")


@pytest.mark.freshet_only
def test_create_stream_tags_visible_by_arn(kinesis, make_stream):
    name = make_stream(shards=1, Tags={"k": "v"})
    assert tag_dict(kinesis.list_tags_for_resource(ResourceARN=stream_arn(name))["Tags"]) == {"k": "v"}


@pytest.mark.freshet_only
def test_too_many_tags(kinesis, make_stream):
    # AWS allows 50 tags per stream; kinesalite still enforces the old limit of
    # 10, with these words and as InvalidArgumentException. Whether AWS reports
    # the 50-tag limit as InvalidArgumentException or LimitExceededException is
    # not pinned by any source we have, so both are accepted.
    name = make_stream(shards=1)
    kinesis.add_tags_to_stream(StreamName=name, Tags={f"k{i}": "v" for i in range(50)})
    assert len(kinesis.list_tags_for_stream(StreamName=name, Limit=50)["Tags"]) == 50
    err = expect_error(kinesis.add_tags_to_stream, StreamName=name, Tags={"one-more": "v"})
    assert err.response["Error"]["Code"] in ("InvalidArgumentException", "LimitExceededException")
    assert err.response["Error"]["Message"] == (
        f"Failed to add tags to stream {name} under account {ACCOUNT} because a given stream "
        f"cannot have more than 50 tags associated with it.")
    assert len(kinesis.list_tags_for_stream(StreamName=name, Limit=50)["Tags"]) == 50

"""The lease store (the DynamoDB subset the Kinesis Client Library uses) with boto3
`dynamodb`: the table lifecycle, items with both the legacy and the expression
parameters, ConditionalCheckFailedException exactly as DynamoDB sends it, Scan paging,
Query, batches, transactions that cancel with their reasons, bad expressions; CloudWatch
PutMetricData in its three protocols, its figures on /metrics, its errors; and KCL's lease protocol run by three worker processes over a
four-shard data stream, one of them SIGKILLed, every record processed and no lease ever
held twice at the same counter."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import defaultdict
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import make_client, unique_name, wait_for

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]


@pytest.fixture
def server(start_server):
    return start_server(state_delay_ms=0)


@pytest.fixture
def ddb(server):
    return make_client(server.endpoint, "dynamodb")


def lease_table(ddb, name=None, **extra):
    name = name or unique_name("leases")
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST", **extra)
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1})
    return name


def error_of(excinfo):
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["Error"]["Message"]


def test_table_lifecycle(ddb):
    name = lease_table(ddb)
    d = ddb.describe_table(TableName=name)["Table"]
    assert d["TableStatus"] == "ACTIVE"
    assert d["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert d["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert d["TableArn"].endswith(f":table/{name}")
    assert name in ddb.list_tables()["TableNames"]
    with pytest.raises(ClientError) as e:
        lease_table(ddb, name)
    assert error_of(e) == ("ResourceInUseException", f"Table already exists: {name}")

    # The index KCL 3 adds, and point-in-time recovery, accepted.
    ddb.update_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "leaseOwner", "AttributeType": "S"}],
        GlobalSecondaryIndexUpdates=[{"Create": {
            "IndexName": "LeaseOwnerToLeaseKeyIndex",
            "KeySchema": [{"AttributeName": "leaseOwner", "KeyType": "HASH"},
                          {"AttributeName": "leaseKey", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"}}}])
    wait_for(lambda: ddb.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE",
             10, "table active after UpdateTable")
    gsis = ddb.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"]
    assert [g["IndexName"] for g in gsis] == ["LeaseOwnerToLeaseKeyIndex"]
    r = ddb.update_continuous_backups(
        TableName=name,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    assert r["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"][
        "PointInTimeRecoveryStatus"] == "ENABLED"

    ddb.delete_table(TableName=name)
    with pytest.raises(ClientError) as e:
        ddb.describe_table(TableName=name)
    assert error_of(e) == ("ResourceNotFoundException",
                           f"Requested resource not found: Table: {name} not found")
    with pytest.raises(ClientError) as e:
        ddb.get_item(TableName=name, Key={"leaseKey": {"S": "x"}})
    assert error_of(e) == ("ResourceNotFoundException", "Requested resource not found")


def test_items_with_legacy_and_expression_parameters(ddb):
    name = lease_table(ddb)
    key = {"leaseKey": {"S": "shardId-000000000000"}}
    # Legacy: Expected + AttributeUpdates, as most of KCL's calls are made.
    ddb.put_item(TableName=name, Item={**key, "leaseCounter": {"N": "0"},
                                       "checkpoint": {"S": "TRIM_HORIZON"}},
                 Expected={"leaseKey": {"Exists": False}})
    r = ddb.update_item(
        TableName=name, Key=key,
        Expected={"leaseCounter": {"Value": {"N": "0"}}},
        AttributeUpdates={"leaseOwner": {"Action": "PUT", "Value": {"S": "w1"}},
                          "leaseCounter": {"Action": "ADD", "Value": {"N": "1"}}},
        ReturnValues="ALL_NEW")
    assert r["Attributes"]["leaseCounter"] == {"N": "1"}
    assert r["Attributes"]["leaseOwner"] == {"S": "w1"}
    # Expressions.
    r = ddb.update_item(
        TableName=name, Key=key,
        UpdateExpression="SET #c = :cp, leaseCounter = leaseCounter + :one REMOVE pending",
        ConditionExpression="leaseOwner = :w AND leaseCounter = :n",
        ExpressionAttributeNames={"#c": "checkpoint"},
        ExpressionAttributeValues={":cp": {"S": "49590338271490256608559692538361571095921575989136588802"},
                                   ":one": {"N": "1"}, ":w": {"S": "w1"}, ":n": {"N": "1"}},
        ReturnValues="UPDATED_OLD")
    assert r["Attributes"] == {"checkpoint": {"S": "TRIM_HORIZON"}, "leaseCounter": {"N": "1"}}
    got = ddb.get_item(TableName=name, Key=key, ConsistentRead=True,
                       ProjectionExpression="leaseCounter, #c",
                       ExpressionAttributeNames={"#c": "checkpoint"})["Item"]
    assert got == {"leaseCounter": {"N": "2"},
                   "checkpoint": {"S": "49590338271490256608559692538361571095921575989136588802"}}
    got = ddb.get_item(TableName=name, Key=key, AttributesToGet=["leaseOwner"])["Item"]
    assert got == {"leaseOwner": {"S": "w1"}}

    # The conditional failure, exactly as DynamoDB sends it, in both forms.
    for kwargs in (
        {"Expected": {"leaseCounter": {"Value": {"N": "1"}}},
         "AttributeUpdates": {"leaseOwner": {"Action": "PUT", "Value": {"S": "w2"}}}},
        {"ConditionExpression": "leaseOwner = :w", "UpdateExpression": "SET leaseOwner = :w",
         "ExpressionAttributeValues": {":w": {"S": "w2"}}},
    ):
        with pytest.raises(ClientError) as e:
            ddb.update_item(TableName=name, Key=key, **kwargs)
        assert error_of(e) == ("ConditionalCheckFailedException", "The conditional request failed")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ddb.get_item(TableName=name, Key=key)["Item"]["leaseOwner"] == {"S": "w1"}

    with pytest.raises(ClientError) as e:
        ddb.delete_item(TableName=name, Key=key, ConditionExpression="leaseOwner = :w",
                        ExpressionAttributeValues={":w": {"S": "w2"}})
    assert error_of(e)[0] == "ConditionalCheckFailedException"
    r = ddb.delete_item(TableName=name, Key=key, Expected={"leaseOwner": {"Value": {"S": "w1"}}},
                        ReturnValues="ALL_OLD")
    assert r["Attributes"]["leaseCounter"] == {"N": "2"}
    assert "Item" not in ddb.get_item(TableName=name, Key=key)
    # UpdateItem on a missing item creates it.
    ddb.update_item(TableName=name, Key=key, UpdateExpression="ADD leaseCounter :one",
                    ExpressionAttributeValues={":one": {"N": "1"}})
    assert ddb.get_item(TableName=name, Key=key)["Item"]["leaseCounter"] == {"N": "1"}


def test_bad_requests_get_validation_errors(ddb):
    name = lease_table(ddb)
    key = {"leaseKey": {"S": "k"}}
    cases = [
        (dict(Key=key, UpdateExpression="SET a = "),
         "Invalid UpdateExpression: Syntax error; token: \"<EOF>\", near: \"SET a = \""),
        (dict(Key=key, UpdateExpression="SET a = :nope"),
         "Invalid UpdateExpression: An expression attribute value used in expression is not defined; attribute value: :nope"),
        (dict(Key=key, UpdateExpression="SET a = :v", ConditionExpression="b = :v",
              Expected={"b": {"Exists": False}}, ExpressionAttributeValues={":v": {"S": "x"}}),
         "Can not use both expression and non-expression parameters in the same request: "
         "Non-expression parameters: {Expected} Expression parameters: {ConditionExpression}"),
        (dict(Key=key, UpdateExpression="SET a = :v",
              ExpressionAttributeValues={":v": {"S": "x"}, ":w": {"S": "y"}}),
         "Value provided in ExpressionAttributeValues unused in expressions: keys: {:w}"),
        (dict(Key={"leaseKey": {"N": "1"}}, UpdateExpression="SET a = :v",
              ExpressionAttributeValues={":v": {"S": "x"}}),
         "The provided key element does not match the schema"),
        (dict(Key=key, UpdateExpression="SET leaseKey = :v",
              ExpressionAttributeValues={":v": {"S": "x"}}),
         "One or more parameter values were invalid: Cannot update attribute leaseKey. This attribute is part of the key"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ClientError) as e:
            ddb.update_item(TableName=name, **kwargs)
        assert error_of(e) == ("ValidationException", message), kwargs
    with pytest.raises(ClientError) as e:
        ddb.put_item(TableName=name, Item={"other": {"S": "x"}})
    assert error_of(e) == ("ValidationException",
                           "One or more parameter values were invalid: Missing the key leaseKey in the item")
    with pytest.raises(ClientError) as e:
        ddb.put_item(TableName=name, Item={**key, "big": {"S": "x" * 410_000}})
    assert error_of(e) == ("ValidationException", "Item size has exceeded the maximum allowed size")


def test_scan_pages_and_query(ddb):
    name = lease_table(ddb)
    for i in range(25):
        ddb.put_item(TableName=name, Item={"leaseKey": {"S": f"shard-{i:03}"},
                                           "leaseCounter": {"N": str(i)},
                                           "leaseOwner": {"S": f"w{i % 3}"}})
    seen, pages, start = [], 0, None
    while True:
        kw = {"ExclusiveStartKey": start} if start else {}
        r = ddb.scan(TableName=name, Limit=7, ConsistentRead=True, **kw)
        pages += 1
        seen += [it["leaseKey"]["S"] for it in r["Items"]]
        start = r.get("LastEvaluatedKey")
        if not start:
            break
    assert sorted(seen) == [f"shard-{i:03}" for i in range(25)] and len(seen) == 25
    assert pages == 4
    paged = [it["leaseKey"]["S"] for p in ddb.get_paginator("scan").paginate(
        TableName=name, PaginationConfig={"PageSize": 10}) for it in p["Items"]]
    assert sorted(paged) == sorted(seen)
    r = ddb.scan(TableName=name, FilterExpression="leaseOwner = :w AND leaseCounter >= :n",
                 ExpressionAttributeValues={":w": {"S": "w1"}, ":n": {"N": "10"}})
    assert sorted(int(it["leaseCounter"]["N"]) for it in r["Items"]) == [10, 13, 16, 19, 22]
    assert r["ScannedCount"] == 25

    q = unique_name("checkpoints")
    ddb.create_table(
        TableName=q,
        KeySchema=[{"AttributeName": "stream", "KeyType": "HASH"},
                   {"AttributeName": "seq", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "stream", "AttributeType": "S"},
                              {"AttributeName": "seq", "AttributeType": "N"}],
        ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
    ddb.get_waiter("table_exists").wait(TableName=q, WaiterConfig={"Delay": 1})
    for s in ("a", "b"):
        for n in (5, 100, 20, 3):
            ddb.put_item(TableName=q, Item={"stream": {"S": s}, "seq": {"N": str(n)}})
    r = ddb.query(TableName=q, KeyConditionExpression="#s = :s AND seq BETWEEN :lo AND :hi",
                  ExpressionAttributeNames={"#s": "stream"},
                  ExpressionAttributeValues={":s": {"S": "a"}, ":lo": {"N": "4"}, ":hi": {"N": "100"}})
    assert [it["seq"]["N"] for it in r["Items"]] == ["5", "20", "100"]
    r = ddb.query(TableName=q, KeyConditionExpression="#s = :s", ScanIndexForward=False, Limit=2,
                  ExpressionAttributeNames={"#s": "stream"},
                  ExpressionAttributeValues={":s": {"S": "b"}})
    assert [it["seq"]["N"] for it in r["Items"]] == ["100", "20"]
    assert r["LastEvaluatedKey"] == {"stream": {"S": "b"}, "seq": {"N": "20"}}
    with pytest.raises(ClientError) as e:
        ddb.query(TableName=q, KeyConditionExpression="seq = :n",
                  ExpressionAttributeValues={":n": {"N": "1"}})
    assert error_of(e) == ("ValidationException", "Query condition missed key schema element: stream")


def test_batches_and_transactions(ddb):
    name = lease_table(ddb)
    ddb.batch_write_item(RequestItems={name: [
        {"PutRequest": {"Item": {"leaseKey": {"S": f"k{i}"}, "leaseCounter": {"N": "1"}}}}
        for i in range(10)]})
    r = ddb.batch_get_item(RequestItems={name: {
        "Keys": [{"leaseKey": {"S": f"k{i}"}} for i in (1, 3, 99)], "ConsistentRead": True}})
    assert sorted(it["leaseKey"]["S"] for it in r["Responses"][name]) == ["k1", "k3"]
    assert r["UnprocessedKeys"] == {}
    ddb.batch_write_item(RequestItems={name: [{"DeleteRequest": {"Key": {"leaseKey": {"S": "k1"}}}}]})
    assert "Item" not in ddb.get_item(TableName=name, Key={"leaseKey": {"S": "k1"}})

    with pytest.raises(ClientError) as e:
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": {"leaseKey": {"S": "new"}}}},
            {"Update": {"TableName": name, "Key": {"leaseKey": {"S": "k2"}},
                        "UpdateExpression": "SET leaseCounter = leaseCounter + :one",
                        "ConditionExpression": "leaseCounter = :n",
                        "ExpressionAttributeValues": {":one": {"N": "1"}, ":n": {"N": "7"}}}},
        ])
    assert e.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert e.value.response["Error"]["Message"] == (
        "Transaction cancelled, please refer cancellation reasons for specific reasons "
        "[None, ConditionalCheckFailed]")
    assert e.value.response["CancellationReasons"] == [
        {"Code": "None"},
        {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}]
    assert "Item" not in ddb.get_item(TableName=name, Key={"leaseKey": {"S": "new"}})
    ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": name, "Item": {"leaseKey": {"S": "new"}}}},
        {"Update": {"TableName": name, "Key": {"leaseKey": {"S": "k2"}},
                    "UpdateExpression": "SET leaseCounter = leaseCounter + :one",
                    "ConditionExpression": "leaseCounter = :n",
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":n": {"N": "1"}}}},
    ])
    assert ddb.get_item(TableName=name, Key={"leaseKey": {"S": "k2"}})["Item"]["leaseCounter"] == {"N": "2"}
    assert "Item" in ddb.get_item(TableName=name, Key={"leaseKey": {"S": "new"}})


def test_transact_get_items_reads_items_in_request_order(ddb):
    name = lease_table(ddb)
    other = lease_table(ddb)
    ddb.put_item(TableName=name, Item={"leaseKey": {"S": "a"}, "leaseCounter": {"N": "3"},
                                       "leaseOwner": {"S": "w1"}})
    ddb.put_item(TableName=other, Item={"leaseKey": {"S": "b"}, "leaseCounter": {"N": "9"}})
    r = ddb.transact_get_items(TransactItems=[
        {"Get": {"TableName": other, "Key": {"leaseKey": {"S": "b"}}}},
        {"Get": {"TableName": name, "Key": {"leaseKey": {"S": "missing"}}}},
        {"Get": {"TableName": name, "Key": {"leaseKey": {"S": "a"}},
                 "ProjectionExpression": "#o, leaseCounter",
                 "ExpressionAttributeNames": {"#o": "leaseOwner"}}},
    ])
    assert r["Responses"] == [
        {"Item": {"leaseKey": {"S": "b"}, "leaseCounter": {"N": "9"}}},
        {},
        {"Item": {"leaseOwner": {"S": "w1"}, "leaseCounter": {"N": "3"}}},
    ]
    with pytest.raises(ClientError) as e:
        ddb.transact_get_items(TransactItems=[
            {"Get": {"TableName": name, "Key": {"leaseKey": {"S": "a"}}}},
            {"Get": {"TableName": name, "Key": {"leaseKey": {"S": "a"}}}},
        ])
    assert error_of(e) == ("ValidationException",
                           "Transaction request cannot include multiple operations on one item")
    with pytest.raises(ClientError) as e:
        ddb.transact_get_items(TransactItems=[
            {"Get": {"TableName": "no-such-table", "Key": {"leaseKey": {"S": "a"}}}}])
    assert error_of(e)[0] == "ResourceNotFoundException"


def _client_series(endpoint: str) -> dict:
    """freshet_client_metric_* samples on /metrics, by (name, labels)."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families
    text = requests.get(endpoint + "/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("freshet_client_metric"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_cloudwatch_put_metric_data_reaches_the_metrics_endpoint(server):
    import requests
    cw = make_client(server.endpoint, "cloudwatch")
    shard = (("dimensions", "Operation=ProcessTask,ShardId=shardId-000000000000"),
             ("metric", "RecordsProcessed"), ("namespace", "KCL-app"), ("unit", "Count"))
    # botocore speaks RPCv2 CBOR to CloudWatch.
    r = cw.put_metric_data(Namespace="KCL-app", MetricData=[
        {"MetricName": "RecordsProcessed", "Value": 12.0, "Unit": "Count",
         "Dimensions": [{"Name": "ShardId", "Value": "shardId-000000000000"},
                        {"Name": "Operation", "Value": "ProcessTask"}]},
        {"MetricName": "RecordsProcessed", "Values": [3.0, 5.0], "Counts": [2.0, 1.0],
         "Unit": "Count",
         "Dimensions": [{"Name": "Operation", "Value": "ProcessTask"},
                        {"Name": "ShardId", "Value": "shardId-000000000000"}]}])
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    series = _client_series(server.endpoint)
    assert series[("freshet_client_metric_samples_total", shard)] == 4
    assert series[("freshet_client_metric_sum", shard)] == 12 + 3 * 2 + 5
    assert series[("freshet_client_metric_minimum", shard)] == 3
    assert series[("freshet_client_metric_maximum", shard)] == 12

    # The SDK for Java v2 speaks JSON 1.0 or the query protocol, depending on its
    # version: both are kept the same way.
    r = requests.post(server.endpoint + "/", data=json.dumps({"Namespace": "KCL", "MetricData": [
        {"MetricName": "Time", "Unit": "Milliseconds",
         "StatisticValues": {"SampleCount": 4, "Sum": 10, "Minimum": 1, "Maximum": 4}}]}),
        headers={"Content-Type": "application/x-amz-json-1.0",
                 "X-Amz-Target": "GraniteServiceVersion20100801.PutMetricData"}, timeout=10)
    assert r.status_code == 200 and r.json() == {}
    r = requests.post(server.endpoint + "/", data=(
        "Action=PutMetricData&Version=2010-08-01&Namespace=KCL"
        "&MetricData.member.1.MetricName=Time&MetricData.member.1.Unit=Milliseconds"
        "&MetricData.member.1.Value=7"),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, timeout=10)
    assert r.status_code == 200 and "<PutMetricDataResponse" in r.text
    time_series = (("dimensions", ""), ("metric", "Time"), ("namespace", "KCL"),
                   ("unit", "Milliseconds"))
    series = _client_series(server.endpoint)
    assert series[("freshet_client_metric_samples_total", time_series)] == 5
    assert series[("freshet_client_metric_sum", time_series)] == 17
    assert series[("freshet_client_metric_maximum", time_series)] == 7


def test_cloudwatch_put_metric_data_errors_are_cloudwatchs(server):
    import requests
    cw = make_client(server.endpoint, "cloudwatch")
    with pytest.raises(ClientError) as e:
        cw.put_metric_data(Namespace="KCL-app", MetricData=[
            {"MetricName": "m", "Value": 1.0,
             "StatisticValues": {"SampleCount": 1, "Sum": 1, "Minimum": 1, "Maximum": 1}}])
    err = e.value.response["Error"]
    assert err["Code"] == "InvalidParameterCombination"
    assert err["Message"] == ("The parameters MetricData.member.1.Value and "
                              "MetricData.member.1.StatisticValues are mutually exclusive "
                              "and you have specified both.")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as e:
        cw.put_metric_data(Namespace="AWS/Kinesis", MetricData=[{"MetricName": "m", "Value": 1.0}])
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        cw.put_metric_data(Namespace="N", MetricData=[{"MetricName": "m", "Value": 1.0,
                                                       "Unit": "Count"}] * 1001)
    assert e.value.response["Error"]["Message"] == (
        "The collection MetricData must not have a size greater than 1000.")

    r = requests.post(server.endpoint + "/",
                      data="Action=PutMetricData&Version=2010-08-01&Namespace=KCL",
                      headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
                      timeout=10)
    assert r.status_code == 400
    assert "<Code>MissingParameter</Code>" in r.text
    assert "<Message>The parameter MetricData is required.</Message>" in r.text
    r = requests.post(server.endpoint + "/", data=b'{"Namespace": "KCL", "MetricData": [{"MetricName": "m", "Value": "x"}]}',
                      headers={"Content-Type": "application/x-amz-json-1.0",
                               "X-Amz-Target": "GraniteServiceVersion20100801.PutMetricData"},
                      timeout=10)
    assert r.status_code == 400
    assert r.json()["__type"] == "com.amazonaws.cloudwatch#InvalidParameterValueException"
    assert r.headers["x-amzn-query-error"] == "InvalidParameterValue;Sender"
    # Freshet keeps no metric history: reading it is an unknown operation, not a
    # silent success.
    with pytest.raises(ClientError) as e:
        cw.list_metrics(Namespace="KCL-app")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Nothing refused reached the metrics.
    assert not any(dict(labels).get("namespace") in ("AWS/Kinesis", "N")
                   for (_, labels) in _client_series(server.endpoint))


# --------------------------------------------------------------------------
# KCL's lease protocol, three workers, one SIGKILLed.
# --------------------------------------------------------------------------

LEASE_MS = 1500


def worker(endpoint: str, table: str, stream: str, me: str, out_dir: str, max_leases: int):
    """One KCL-style worker: takes expired leases, renews its own, processes records from
    the checkpoint and checkpoints under its lease. Appends what it does to files."""
    ddb = make_client(endpoint, "dynamodb")
    kin = make_client(endpoint, "kinesis")
    out = open(Path(out_dir) / f"{me}.records", "a", buffering=1)
    log = open(Path(out_dir) / f"{me}.leases", "a", buffering=1)
    seen: dict[str, tuple[int, float]] = {}   # lease -> (counter, when first seen)
    held: dict[str, int] = {}                 # lease -> counter we hold it at
    tenure: dict[str, int] = {}               # lease -> counter we took it at
    stop = Path(out_dir) / "stop"
    while not stop.exists():
        leases = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
        now = time.monotonic()
        for lease in leases:
            key = lease["leaseKey"]["S"]
            counter = int(lease["leaseCounter"]["N"])
            owner = lease.get("leaseOwner", {}).get("S")
            if key in held:
                # Renew: KCL's legacy form, on owner and counter.
                try:
                    ddb.update_item(
                        TableName=table, Key={"leaseKey": {"S": key}},
                        Expected={"leaseOwner": {"Value": {"S": me}},
                                  "leaseCounter": {"Value": {"N": str(held[key])}}},
                        AttributeUpdates={"leaseCounter": {"Action": "ADD", "Value": {"N": "1"}}})
                    held[key] += 1
                    log.write(json.dumps(["renew", key, held[key], me]) + "\n")
                except ClientError as e:
                    assert e.response["Error"]["Code"] == "ConditionalCheckFailedException"
                    del held[key]
                continue
            prev = seen.get(key)
            if prev is None or prev[0] != counter:
                seen[key] = (counter, now)
                prev = seen[key]
            expired = owner is None or (now - prev[1]) * 1000 > LEASE_MS
            if expired and len(held) < max_leases:
                try:
                    ddb.update_item(
                        TableName=table, Key={"leaseKey": {"S": key}},
                        UpdateExpression="SET leaseOwner = :me, leaseCounter = leaseCounter + :one "
                                         "ADD ownerSwitchesSinceCheckpoint :one",
                        ConditionExpression="leaseCounter = :c",
                        ExpressionAttributeValues={":me": {"S": me}, ":one": {"N": "1"},
                                                   ":c": {"N": str(counter)}})
                    held[key] = counter + 1
                    tenure[key] = counter + 1
                    log.write(json.dumps(["take", key, counter + 1, me]) + "\n")
                except ClientError as e:
                    assert e.response["Error"]["Code"] == "ConditionalCheckFailedException"
        for lease in leases:
            key = lease["leaseKey"]["S"]
            if key not in held:
                continue
            cp = lease.get("checkpoint", {}).get("S", "TRIM_HORIZON")
            got = ddb.get_item(TableName=table, Key={"leaseKey": {"S": key}},
                               ConsistentRead=True)["Item"]
            cp = got.get("checkpoint", {}).get("S", cp)
            if cp == "TRIM_HORIZON":
                it = kin.get_shard_iterator(StreamName=stream, ShardId=key,
                                            ShardIteratorType="TRIM_HORIZON")
            else:
                it = kin.get_shard_iterator(StreamName=stream, ShardId=key,
                                            ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                            StartingSequenceNumber=cp)
            recs = kin.get_records(ShardIterator=it["ShardIterator"], Limit=5)["Records"]
            if not recs:
                continue
            for r in recs:
                out.write(json.dumps([key, tenure[key], r["SequenceNumber"],
                                      r["Data"].decode()]) + "\n")
            try:
                ddb.update_item(
                    TableName=table, Key={"leaseKey": {"S": key}},
                    UpdateExpression="SET checkpoint = :cp, ownerSwitchesSinceCheckpoint = :zero",
                    ConditionExpression="leaseOwner = :me AND leaseCounter = :c",
                    ExpressionAttributeValues={":cp": {"S": recs[-1]["SequenceNumber"]},
                                               ":zero": {"N": "0"}, ":me": {"S": me},
                                               ":c": {"N": str(held[key])}})
            except ClientError as e:
                assert e.response["Error"]["Code"] == "ConditionalCheckFailedException"
                held.pop(key, None)
        time.sleep(0.1)  # pacing of the lease loop, not synchronisation


def read_lines(path: Path) -> list:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line cut short by SIGKILL
    return out


def test_kcl_lease_protocol_three_workers_one_killed(server, ddb, tmp_path):
    kin = make_client(server.endpoint, "kinesis")
    stream = unique_name("kcl")
    kin.create_stream(StreamName=stream, ShardCount=4)
    wait_for(lambda: kin.describe_stream_summary(StreamName=stream)[
        "StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", 20, "stream active")
    shards = [s["ShardId"] for s in kin.list_shards(StreamName=stream)["Shards"]]
    assert len(shards) == 4
    table = lease_table(ddb)
    for s in shards:  # what KCL's shard sync writes for a new stream
        ddb.put_item(TableName=table, Item={
            "leaseKey": {"S": s}, "leaseCounter": {"N": "0"},
            "checkpoint": {"S": "TRIM_HORIZON"}, "ownerSwitchesSinceCheckpoint": {"N": "0"}},
            ConditionExpression="attribute_not_exists(leaseKey)")

    put: dict[str, str] = {}

    def produce(start, n):
        for b in range(start, start + n, 50):
            entries = [{"Data": f"r{i}".encode(), "PartitionKey": f"pk{i}"}
                       for i in range(b, min(b + 50, start + n))]
            resp = kin.put_records(StreamName=stream, Records=entries)
            assert resp["FailedRecordCount"] == 0
            for e, r in zip(entries, resp["Records"]):
                put[e["Data"].decode()] = r["ShardId"]

    produce(0, 300)
    assert len(set(put.values())) == 4, "records reach every shard"

    ctx = multiprocessing.get_context("fork")
    workers = {f"w{i}": ctx.Process(target=worker, args=(
        server.endpoint, table, stream, f"w{i}", str(tmp_path), 2)) for i in range(3)}
    for p in workers.values():
        p.start()

    def processed():
        return {line[3] for w in workers for line in read_lines(tmp_path / f"{w}.records")}

    # Kill a worker that holds leases once it has processed some records.
    def victim():
        for w in workers:
            if len(read_lines(tmp_path / f"{w}.records")) >= 20:
                return w
        return None
    wait_for(lambda: victim() is not None, 60, "a worker processing records")
    killed = victim()
    workers[killed].kill()
    workers[killed].join(10)
    produce(300, 200)
    try:
        wait_for(lambda: set(put) <= processed(), 120, "every record processed")
    finally:
        (tmp_path / "stop").touch()
        for w, p in workers.items():
            if w != killed:
                p.join(30)
                if p.is_alive():
                    p.kill()
    for w, p in workers.items():
        if w != killed:
            assert p.exitcode == 0, f"worker {w} failed"

    # Per-shard order within each worker's tenure of a lease.
    for w in workers:
        runs = defaultdict(list)
        for shard, ten, seq, data in read_lines(tmp_path / f"{w}.records"):
            assert put[data] == shard
            runs[(shard, ten)].append(int(seq))
        for (shard, ten), seqs in runs.items():
            assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), (w, shard, ten)
    # Never two workers at the same lease counter.
    holders = defaultdict(set)
    for w in workers:
        for _, lease, counter, who in read_lines(tmp_path / f"{w}.leases"):
            holders[(lease, counter)].add(who)
    assert holders and all(len(h) == 1 for h in holders.values()), \
        {k: v for k, v in holders.items() if len(v) > 1}
    # The killed worker's leases were taken over by the others.
    takers = {who for (lease, c), h in holders.items() for who in h}
    assert takers - {killed}, "surviving workers took leases"

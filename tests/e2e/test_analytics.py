"""Analytics applications (the Kinesis Data Analytics for SQL applications API) with
boto3 `kinesisanalytics`: the control plane and its errors, SQL that does not compile
refused with its line and column, applications that read a data stream and write
their in-application streams to data streams (row-by-row pumps and tumbling windows,
checked against answers computed here from the records' arrival times), bad records
to the error stream while the application keeps running, schema discovery, and
windows that survive a restart and a SIGKILL without being lost or double-counted."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, make_client, stream_arn, unique_name, wait_for

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]

ROLE = f"arn:aws:iam::{ACCOUNT}:role/analytics"

TICKER_SCHEMA = {
    "RecordFormat": {"RecordFormatType": "JSON",
                     "MappingParameters": {"JSONMappingParameters": {"RecordRowPath": "$"}}},
    "RecordEncoding": "UTF-8",
    "RecordColumns": [
        {"Name": "TICKER_SYMBOL", "Mapping": "$.TICKER_SYMBOL", "SqlType": "VARCHAR(4)"},
        {"Name": "SECTOR", "Mapping": "$.SECTOR", "SqlType": "VARCHAR(16)"},
        {"Name": "CHANGE", "Mapping": "$.CHANGE", "SqlType": "REAL"},
        {"Name": "PRICE", "Mapping": "$.PRICE", "SqlType": "REAL"},
    ],
}

FILTER_SQL = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker_symbol VARCHAR(4), price REAL, up BOOLEAN);
-- Rows of one sector, with whether the price went up.
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM TICKER_SYMBOL, PRICE, CASE WHEN CHANGE > 0 THEN TRUE ELSE FALSE END
  FROM "SOURCE_SQL_STREAM_001"
  WHERE SECTOR = 'TECHNOLOGY';
"""

WINDOW_SQL = """
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
  window_start TIMESTAMP, ticker_symbol VARCHAR(4), n INTEGER, total REAL);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '2' SECOND),
         TICKER_SYMBOL, COUNT(*), SUM(PRICE)
  FROM "SOURCE_SQL_STREAM_001"
  GROUP BY TICKER_SYMBOL, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '2' SECOND);
"""


@pytest.fixture(scope="module")
def server():
    from conftest import FreshetServer, can_start_dedicated
    ok, why = can_start_dedicated()
    if not ok:
        pytest.skip(why)
    srv = FreshetServer(state_delay_ms=0).start()
    yield srv
    srv.cleanup()


def analytics_client(endpoint):
    return boto3.client(
        "kinesisanalytics", endpoint_url=endpoint, region_name=REGION,
        config=Config(retries={"max_attempts": 2, "mode": "standard"},
                      connect_timeout=5, read_timeout=20))


@pytest.fixture
def ka(server):
    return analytics_client(server.endpoint)


@pytest.fixture
def k(server):
    return make_client(server.endpoint)


def make_stream(k, shards=1):
    name = unique_name("ka")
    k.create_stream(StreamName=name, ShardCount=shards)
    wait_for(lambda: k.describe_stream_summary(StreamName=name)
             ["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", 20, f"{name} ACTIVE")
    return name


def app_input(source, schema=TICKER_SCHEMA):
    return {"NamePrefix": "SOURCE_SQL_STREAM",
            "KinesisStreamsInput": {"ResourceARN": stream_arn(source), "RoleARN": ROLE},
            "InputParallelism": {"Count": 1},
            "InputSchema": schema}


def app_output(dest, name="DESTINATION_SQL_STREAM", fmt="JSON"):
    return {"Name": name,
            "KinesisStreamsOutput": {"ResourceARN": stream_arn(dest), "RoleARN": ROLE},
            "DestinationSchema": {"RecordFormatType": fmt}}


def create_app(ka, code, source, outputs):
    name = unique_name("app")
    ka.create_application(ApplicationName=name, ApplicationCode=code,
                          Inputs=[app_input(source)], Outputs=outputs)
    return name


def start(ka, name, position="TRIM_HORIZON"):
    detail = ka.describe_application(ApplicationName=name)["ApplicationDetail"]
    input_id = detail["InputDescriptions"][0]["InputId"]
    ka.start_application(ApplicationName=name, InputConfigurations=[
        {"Id": input_id, "InputStartingPositionConfiguration": {"InputStartingPosition": position}}])
    wait_for(lambda: ka.describe_application(ApplicationName=name)
             ["ApplicationDetail"]["ApplicationStatus"] == "RUNNING", 20, f"{name} RUNNING")


def put_rows(k, stream, rows):
    for i in range(0, len(rows), 500):
        batch = rows[i:i + 500]
        resp = k.put_records(StreamName=stream, Records=[
            {"Data": json.dumps(r).encode(), "PartitionKey": str(j)} for j, r in enumerate(batch)])
        assert resp["FailedRecordCount"] == 0


def read_stream(k, stream):
    """Every record of every shard, from the start, as (arrival datetime, bytes)."""
    out = []
    for shard in k.list_shards(StreamName=stream)["Shards"]:
        it = k.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            resp = k.get_records(ShardIterator=it, Limit=10000)
            out.extend((r["ApproximateArrivalTimestamp"], r["Data"]) for r in resp["Records"])
            if not resp["Records"] and resp.get("MillisBehindLatest", 0) == 0:
                break
            it = resp.get("NextShardIterator")
    return out


def read_json(k, stream):
    return [json.loads(d) for _, d in read_stream(k, stream)]


def expect_error(code, fn, **kwargs) -> str:
    with pytest.raises(ClientError) as e:
        fn(**kwargs)
    assert e.value.response["Error"]["Code"] == code, e.value.response
    return e.value.response["Error"]["Message"]


# ----------------------------------------------------------------------------------
# Control plane
# ----------------------------------------------------------------------------------

def test_create_describe_list_update_delete(ka, k):
    source, dest = make_stream(k), make_stream(k)
    name = create_app(ka, FILTER_SQL, source, [app_output(dest)])
    d = ka.describe_application(ApplicationName=name)["ApplicationDetail"]
    assert d["ApplicationStatus"] == "READY"
    assert d["ApplicationVersionId"] == 1
    assert d["ApplicationARN"] == f"arn:aws:kinesisanalytics:{REGION}:{ACCOUNT}:application/{name}"
    assert d["ApplicationCode"] == FILTER_SQL
    (inp,) = d["InputDescriptions"]
    assert inp["InAppStreamNames"] == ["SOURCE_SQL_STREAM_001"]
    assert inp["KinesisStreamsInputDescription"]["ResourceARN"] == stream_arn(source)
    assert [c["Name"] for c in inp["InputSchema"]["RecordColumns"]] == \
        ["TICKER_SYMBOL", "SECTOR", "CHANGE", "PRICE"]
    (out,) = d["OutputDescriptions"]
    assert out["Name"] == "DESTINATION_SQL_STREAM"
    assert out["DestinationSchema"] == {"RecordFormatType": "JSON"}

    names = [a["ApplicationName"] for a in ka.list_applications(Limit=50)["ApplicationSummaries"]]
    assert name in names

    # A version that is not the current one is refused; the current one increments.
    msg = expect_error("ConcurrentModificationException", ka.update_application,
                       ApplicationName=name, CurrentApplicationVersionId=7,
                       ApplicationUpdate={"ApplicationCodeUpdate": FILTER_SQL})
    assert "version" in msg
    ka.update_application(ApplicationName=name, CurrentApplicationVersionId=1,
                          ApplicationUpdate={"ApplicationCodeUpdate": FILTER_SQL + "\n-- v2\n"})
    d2 = ka.describe_application(ApplicationName=name)["ApplicationDetail"]
    assert d2["ApplicationVersionId"] == 2
    assert d2["ApplicationCode"].endswith("-- v2\n")

    # Tags by ARN.
    arn = d["ApplicationARN"]
    ka.tag_resource(ResourceARN=arn, Tags=[{"Key": "team", "Value": "quotes"}])
    assert ka.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "team", "Value": "quotes"}]
    ka.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert ka.list_tags_for_resource(ResourceARN=arn)["Tags"] == []

    # Delete needs the creation timestamp.
    expect_error("ConcurrentModificationException", ka.delete_application,
                 ApplicationName=name, CreateTimestamp=d["CreateTimestamp"].replace(year=2001))
    ka.delete_application(ApplicationName=name, CreateTimestamp=d["CreateTimestamp"])
    expect_error("ResourceNotFoundException", ka.describe_application, ApplicationName=name)


def test_bad_sql_and_bad_configuration_are_refused(ka, k):
    source, dest = make_stream(k), make_stream(k)
    bad = ("CREATE OR REPLACE STREAM \"D\" (x INTEGER);\n"
           "CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"D\"\n"
           "  SELECT STREAM NO_SUCH_COLUMN FROM \"SOURCE_SQL_STREAM_001\";")
    msg = expect_error("CodeValidationException", ka.create_application,
                       ApplicationName=unique_name("bad"), ApplicationCode=bad,
                       Inputs=[app_input(source)])
    assert "line 3" in msg and "NO_SUCH_COLUMN" in msg.upper(), msg
    msg = expect_error("CodeValidationException", ka.create_application,
                       ApplicationName=unique_name("bad"), ApplicationCode="CREATE STREAM;",
                       Inputs=[app_input(source)])
    assert "line 1" in msg, msg
    # A type the service does not know.
    schema = json.loads(json.dumps(TICKER_SCHEMA))
    schema["RecordColumns"][0]["SqlType"] = "BLOB"
    expect_error("InvalidArgumentException", ka.create_application,
                 ApplicationName=unique_name("bad"), ApplicationCode="",
                 Inputs=[app_input(source, schema)])
    # A source stream that does not exist.
    expect_error("InvalidArgumentException", ka.create_application,
                 ApplicationName=unique_name("bad"), ApplicationCode="",
                 Inputs=[app_input("no-such-stream")])
    # The model's constraints: a name outside the pattern.
    expect_error("ValidationException", ka.create_application,
                 ApplicationName="bad name!", ApplicationCode="")
    # Unknown application; starting one that is not READY.
    expect_error("ResourceNotFoundException", ka.start_application,
                 ApplicationName=unique_name("none"), InputConfigurations=[])
    name = create_app(ka, FILTER_SQL, source, [app_output(dest)])
    start(ka, name)
    expect_error("ResourceInUseException", ka.start_application, ApplicationName=name,
                 InputConfigurations=[{"Id": "1.1", "InputStartingPositionConfiguration":
                                       {"InputStartingPosition": "NOW"}}])
    ka.stop_application(ApplicationName=name)
    wait_for(lambda: ka.describe_application(ApplicationName=name)
             ["ApplicationDetail"]["ApplicationStatus"] == "READY", 20, "READY")


def test_discover_input_schema(ka, k):
    source = make_stream(k)
    put_rows(k, source, [{"TICKER_SYMBOL": "AMZN", "SECTOR": "RETAIL", "CHANGE": -0.5, "PRICE": 120.25,
                          "N": i} for i in range(5)])
    resp = ka.discover_input_schema(
        ResourceARN=stream_arn(source), RoleARN=ROLE,
        InputStartingPositionConfiguration={"InputStartingPosition": "TRIM_HORIZON"})
    cols = {c["Name"]: (c["Mapping"], c["SqlType"]) for c in resp["InputSchema"]["RecordColumns"]}
    assert cols["TICKER_SYMBOL"] == ("$.TICKER_SYMBOL", "VARCHAR(4)")
    assert cols["PRICE"] == ("$.PRICE", "DOUBLE")
    assert cols["N"] == ("$.N", "INTEGER")
    assert resp["InputSchema"]["RecordFormat"]["RecordFormatType"] == "JSON"
    assert len(resp["RawInputRecords"]) == 5
    assert len(resp["ParsedInputRecords"]) == 5
    empty = make_stream(k)
    expect_error("UnableToDetectSchemaException", ka.discover_input_schema,
                 ResourceARN=stream_arn(empty), RoleARN=ROLE,
                 InputStartingPositionConfiguration={"InputStartingPosition": "TRIM_HORIZON"})


# ----------------------------------------------------------------------------------
# Running applications
# ----------------------------------------------------------------------------------

SECTORS = ["TECHNOLOGY", "RETAIL", "ENERGY"]
TICKERS = ["AMZN", "MSFT", "XOM", "WMT"]


def quote(i):
    return {"TICKER_SYMBOL": TICKERS[i % 4], "SECTOR": SECTORS[i % 3],
            "CHANGE": (i % 5) - 2, "PRICE": 10 + (i % 17)}


def test_filter_pump_to_a_data_stream(server, ka, k):
    source, dest = make_stream(k, shards=2), make_stream(k)
    rows = [quote(i) for i in range(300)]
    put_rows(k, source, rows)
    name = create_app(ka, FILTER_SQL, source, [app_output(dest)])
    start(ka, name)
    want = [{"TICKER_SYMBOL": r["TICKER_SYMBOL"], "PRICE": float(r["PRICE"]), "UP": r["CHANGE"] > 0}
            for r in rows if r["SECTOR"] == "TECHNOLOGY"]
    wait_for(lambda: len(read_stream(k, dest)) >= len(want), 30, "filtered rows")
    got = read_json(k, dest)
    # Unquoted column names are upper case, as in SQL.
    def key(r):
        return json.dumps(r, sort_keys=True)
    assert sorted(map(key, got)) == sorted(map(key, want))
    # Rows put while it runs are processed too.
    put_rows(k, source, [quote(3 * 7)])
    wait_for(lambda: len(read_stream(k, dest)) == len(want) + 1, 30, "one more row")
    # The metrics count what was read and emitted.
    import requests
    text = requests.get(f"{server.endpoint}/metrics", timeout=10).text
    label = f'{{application="{name}"}}'
    assert f"freshet_analytics_records_total{label} {len(rows) + 1}" in text, text[-2000:]
    assert f"freshet_analytics_rows_out_total{label} {len(want) + 1}" in text
    assert f"freshet_analytics_errors_total{label} 0" in text
    ka.stop_application(ApplicationName=name)


def window_answers(k, source, width_ms=2000):
    """(window start ms, ticker) -> (count, sum of prices), from the records' arrival times."""
    out = defaultdict(lambda: [0, 0.0])
    for arrival, data in read_stream(k, source):
        r = json.loads(data)
        ms = int(round(arrival.timestamp() * 1000))
        start = (ms // width_ms) * width_ms
        out[(start, r["TICKER_SYMBOL"])][0] += 1
        out[(start, r["TICKER_SYMBOL"])][1] += r["PRICE"]
    return {key: (n, round(s, 3)) for key, (n, s) in out.items()}


def window_results(k, dest):
    got = Counter()
    values = {}
    for r in read_json(k, dest):
        ms = int(datetime.strptime(r["WINDOW_START"], "%Y-%m-%d %H:%M:%S.%f").replace(
            tzinfo=timezone.utc).timestamp() * 1000)
        key = (ms, r["TICKER_SYMBOL"])
        got[key] += 1
        values.setdefault(key, set()).add((r["N"], round(r["TOTAL"], 3)))
    return got, values


def put_over_time(k, source, n, seconds):
    """`n` quotes spread over `seconds` (several windows), in small batches."""
    batches = 10
    for b in range(batches):
        put_rows(k, source, [quote(i) for i in range(b * n // batches, (b + 1) * n // batches)])
        deadline = time.monotonic() + seconds / batches
        # Pace the puts (not synchronisation: the test waits for results below).
        while time.monotonic() < deadline:
            time.sleep(0.02)


def test_tumbling_window_counts_match_arrival_times(ka, k):
    source, dest = make_stream(k, shards=2), make_stream(k)
    name = create_app(ka, WINDOW_SQL, source, [app_output(dest)])
    start(ka, name, "NOW")
    put_over_time(k, source, 400, 5)
    want = window_answers(k, source)
    assert len({start for start, _ in want}) >= 2, "the puts should span several windows"
    wait_for(lambda: len(window_results(k, dest)[0]) >= len(want), 30, "every window's rows")
    got, values = window_results(k, dest)
    assert set(got) == set(want)
    assert all(n == 1 for n in got.values()), "each window's row exactly once"
    for key, (n, total) in want.items():
        assert values[key] == {(n, total)}, key
    ka.stop_application(ApplicationName=name)


def test_bad_records_go_to_the_error_stream(ka, k):
    source, dest, errors = make_stream(k), make_stream(k), make_stream(k)
    name = create_app(ka, FILTER_SQL, source, [app_output(dest), app_output(errors, "error_stream")])
    start(ka, name)
    k.put_record(StreamName=source, Data=b"this is not json", PartitionKey="x")
    k.put_record(StreamName=source, Data=json.dumps(
        {"TICKER_SYMBOL": "TOOLONG", "SECTOR": "TECHNOLOGY", "CHANGE": 1, "PRICE": 1}).encode(),
        PartitionKey="x")
    good = {"TICKER_SYMBOL": "AMZN", "SECTOR": "TECHNOLOGY", "CHANGE": 1, "PRICE": 5}
    k.put_record(StreamName=source, Data=json.dumps(good).encode(), PartitionKey="x")
    wait_for(lambda: len(read_stream(k, errors)) >= 2, 30, "two error rows")
    errs = read_json(k, errors)
    assert len(errs) == 2
    assert "JSON" in errs[0]["MESSAGE"]
    assert errs[0]["DATA_ROW"] == "this is not json"
    assert "longer" in errs[1]["MESSAGE"]
    # The application keeps running: the good record after them is processed.
    wait_for(lambda: len(read_stream(k, dest)) == 1, 30, "the good row")
    assert read_json(k, dest) == [{"TICKER_SYMBOL": "AMZN", "PRICE": 5.0, "UP": True}]
    ka.stop_application(ApplicationName=name)


@pytest.mark.parametrize("how", ["restart", "sigkill"])
def test_windows_survive_a_restart(start_server, how):
    """Records put across a restart (clean or SIGKILL) of the server: every window's row
    is there with the right count; after a SIGKILL a window's row may come twice (rows
    written after the last checkpoint are written again), never with a wrong count."""
    srv = start_server(state_delay_ms=0)
    ka, k = analytics_client(srv.endpoint), make_client(srv.endpoint)
    source, dest = make_stream(k), make_stream(k)
    name = create_app(ka, WINDOW_SQL, source, [app_output(dest)])
    start(ka, name, "NOW")
    put_over_time(k, source, 150, 2)
    if how == "restart":
        srv.stop()
    else:
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=10)
        srv.proc = None
    srv.start()
    ka, k = analytics_client(srv.endpoint), make_client(srv.endpoint)
    assert ka.describe_application(ApplicationName=name)["ApplicationDetail"][
        "ApplicationStatus"] == "RUNNING"
    put_over_time(k, source, 150, 2)
    want = window_answers(k, source)
    wait_for(lambda: set(window_results(k, dest)[0]) >= set(want), 40, "every window's row")
    got, values = window_results(k, dest)
    assert set(got) == set(want)
    for key, (n, total) in want.items():
        assert values[key] == {(n, total)}, (key, values[key], (n, total))
    if how == "restart":
        assert all(c == 1 for c in got.values())


# ----------------------------------------------------------------------------------
# freshet sql
# ----------------------------------------------------------------------------------

def test_freshet_sql_prints_a_query_over_a_stream(server, k, tmp_path):
    import subprocess
    from conftest import freshet_bin
    source = make_stream(k, shards=2)
    rows = [quote(i) for i in range(120)]
    put_rows(k, source, rows)
    code = tmp_path / "counts.sql"
    code.write_text("""
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (ticker_symbol VARCHAR(8), n INTEGER, top DOUBLE);
CREATE OR REPLACE PUMP "P" AS INSERT INTO "DESTINATION_SQL_STREAM"
  SELECT STREAM TICKER_SYMBOL, COUNT(*), MAX(PRICE)
  FROM "SOURCE_SQL_STREAM_001"
  GROUP BY TICKER_SYMBOL, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '1' HOUR);
""")
    run = subprocess.run(
        [str(freshet_bin()), "sql", str(code), "--stream", source, "--from-start", "--no-follow",
         "--endpoint", server.endpoint],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    # Piped: JSON lines. The schema was inferred from the records (told on stderr).
    assert "TICKER_SYMBOL VARCHAR" in run.stderr
    got = [json.loads(line) for line in run.stdout.splitlines()]
    hours = {datetime.fromtimestamp(a.timestamp(), timezone.utc).replace(minute=0, second=0, microsecond=0)
             for a, _ in read_stream(k, source)}
    want = Counter(r["TICKER_SYMBOL"] for r in rows)
    if len(hours) == 1:
        assert {r["TICKER_SYMBOL"]: r["N"] for r in got} == dict(want)
        assert {r["TICKER_SYMBOL"]: r["TOP"] for r in got} == {
            t: float(max(r["PRICE"] for r in rows if r["TICKER_SYMBOL"] == t)) for t in want}
    else:  # the puts straddled an hour: the counts add up per ticker
        totals = Counter()
        for r in got:
            totals[r["TICKER_SYMBOL"]] += r["N"]
        assert totals == want
    assert all("ROWTIME" in r for r in got)

    # Bad SQL: the file, line and column.
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE STREAM \"D\" (x INTEGER);\nCREATE PUMP \"P\" AS INSERT INTO \"D\" SELECT STREAM nope FROM \"SOURCE_SQL_STREAM_001\";\n")
    run = subprocess.run(
        [str(freshet_bin()), "sql", str(bad), "--stream", source, "--from-start", "--no-follow",
         "--endpoint", server.endpoint],
        capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert f"{bad}:2:" in run.stderr, run.stderr


def test_last_stopped_point_resumes_where_it_stopped(ka, k):
    """Stop, put while stopped, start from LAST_STOPPED_POINT: the records put while it
    was stopped are processed, the ones before are not processed again."""
    source, dest = make_stream(k), make_stream(k)
    name = create_app(ka, FILTER_SQL, source, [app_output(dest)])
    start(ka, name)
    first = [dict(quote(i), SECTOR="TECHNOLOGY") for i in range(20)]
    put_rows(k, source, first)
    wait_for(lambda: len(read_stream(k, dest)) == 20, 30, "the first rows")
    ka.stop_application(ApplicationName=name)
    wait_for(lambda: ka.describe_application(ApplicationName=name)
             ["ApplicationDetail"]["ApplicationStatus"] == "READY", 20, "READY")
    second = [dict(quote(i), SECTOR="TECHNOLOGY", PRICE=1000 + i) for i in range(15)]
    put_rows(k, source, second)
    start(ka, name, "LAST_STOPPED_POINT")
    wait_for(lambda: len(read_stream(k, dest)) >= 35, 30, "the rows put while stopped")
    prices = sorted(r["PRICE"] for r in read_json(k, dest))
    assert prices == sorted([float(r["PRICE"]) for r in first] + [float(r["PRICE"]) for r in second])
    detail = ka.describe_application(ApplicationName=name)["ApplicationDetail"]
    assert detail["InputDescriptions"][0]["InputStartingPositionConfiguration"] == {
        "InputStartingPosition": "LAST_STOPPED_POINT"}
    ka.stop_application(ApplicationName=name)


def test_update_while_running_keeps_reading(ka, k):
    """UpdateApplication on a running application: the new code takes over from where
    the old one was, and the version increments."""
    source, dest = make_stream(k), make_stream(k)
    name = create_app(ka, FILTER_SQL, source, [app_output(dest)])
    start(ka, name)
    put_rows(k, source, [dict(quote(i), SECTOR="TECHNOLOGY") for i in range(10)])
    wait_for(lambda: len(read_stream(k, dest)) == 10, 30, "rows of the first code")
    new_code = FILTER_SQL.replace("WHERE SECTOR = 'TECHNOLOGY'", "WHERE SECTOR = 'ENERGY'")
    ka.update_application(ApplicationName=name, CurrentApplicationVersionId=1,
                          ApplicationUpdate={"ApplicationCodeUpdate": new_code})
    wait_for(lambda: ka.describe_application(ApplicationName=name)
             ["ApplicationDetail"]["ApplicationStatus"] == "RUNNING", 20, "RUNNING")
    put_rows(k, source, [dict(quote(i), SECTOR="ENERGY", PRICE=500 + i) for i in range(5)]
             + [dict(quote(i), SECTOR="TECHNOLOGY", PRICE=900) for i in range(5)])
    wait_for(lambda: len(read_stream(k, dest)) >= 15, 30, "rows of the new code")
    got = read_json(k, dest)
    assert len(got) == 15
    assert sorted(r["PRICE"] for r in got[10:]) == [500.0, 501.0, 502.0, 503.0, 504.0]
    assert ka.describe_application(ApplicationName=name)["ApplicationDetail"][
        "ApplicationVersionId"] == 2
    ka.stop_application(ApplicationName=name)

"""`GET /metrics`: OpenMetrics text whose per-stream counters match exactly what was
put and read, parsed with the Prometheus project's own Python parser."""
import pytest
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import make_client, read_all, unique_name, wait_active, wait_for
from test_producer_sdk import BODY, FRAGMENTS, PutMediaUpload, get_media_documents, upload_body

pytestmark = pytest.mark.freshet_only


def scrape(endpoint, **kw) -> dict:
    """{(sample name, labels as a sorted tuple): value}."""
    r = requests.get(endpoint + "/metrics", timeout=10, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def put_media(endpoint, name):
    acks = upload_body(PutMediaUpload(endpoint, name))
    assert sum(a["EventType"] == "PERSISTED" for a in acks) == FRAGMENTS, acks


def test_counters_match_what_was_put_and_read(start_server):
    server = start_server(state_delay_ms=0)
    ep = server.endpoint
    k = make_client(ep)
    name = unique_name("metrics")
    k.create_stream(StreamName=name, ShardCount=2)
    wait_active(k, name)
    data = [b"x" * n for n in (0, 1, 10, 100, 1000, 25_000)]
    out = k.put_records(StreamName=name, Records=[
        {"Data": d, "PartitionKey": f"k{i}"} for i, d in enumerate(data)])
    assert out["FailedRecordCount"] == 0
    k.put_record(StreamName=name, Data=b"single", PartitionKey="s")
    records = sum(len(read_all(k, name, s["ShardId"])[0])
                  for s in k.list_shards(StreamName=name)["Shards"])
    assert records == len(data) + 1
    total = sum(map(len, data)) + len(b"single")

    m = scrape(ep)
    assert value(m, "freshet_incoming_records_total", stream=name) == len(data) + 1
    assert value(m, "freshet_incoming_bytes_total", stream=name) == total
    assert value(m, "freshet_put_latency_seconds_count", stream=name) == 2
    assert value(m, "freshet_put_latency_seconds_sum", stream=name) > 0
    assert value(m, "freshet_get_records_records_total", stream=name) == len(data) + 1
    assert value(m, "freshet_get_records_bytes_total", stream=name) == total
    assert value(m, "freshet_iterator_age_milliseconds", stream=name) == 0
    assert value(m, "freshet_write_throughput_exceeded_total", stream=name) == 0
    assert value(m, "freshet_storage_bytes", stream=name, kind="data") > total
    assert value(m, "freshet_fsync_latency_seconds_count") > 0
    assert value(m, "freshet_open_connections") >= 1

    # Video: the producer SDK's PutMedia, then GetMedia of every fragment.
    cam = unique_name("metrics-cam")
    r = requests.post(ep + "/createStream", json={"StreamName": cam, "DataRetentionInHours": 1},
                      timeout=10)
    assert r.status_code == 200, r.text
    put_media(ep, cam)
    got = get_media_documents(server.port, cam, FRAGMENTS)
    m = scrape(ep)
    assert value(m, "freshet_putmedia_fragments_total", stream=cam) == FRAGMENTS
    stored = value(m, "freshet_putmedia_bytes_total", stream=cam)
    assert 0 < stored <= len(BODY)
    assert value(m, "freshet_putmedia_ack_latency_seconds_count", stream=cam) == FRAGMENTS
    # Everything the server counted as sent was received, and no more.
    wait_for(lambda: value(scrape(ep), "freshet_getmedia_bytes_total", stream=cam) == len(got),
             10, "GetMedia bytes to match what was received")
    assert value(m, "freshet_storage_bytes", stream=cam, kind="video") >= stored

    # A deleted stream's series go away.
    k.delete_stream(StreamName=name)
    wait_for(lambda: value(scrape(ep), "freshet_incoming_records_total", stream=name) is None,
             20, "the deleted stream's series to go")


def test_metrics_need_credentials_when_keys_are_configured(start_server, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[[auth.keys]]\naccess_key_id = "AKIAMETRICS000000001"\n'
                    'secret_access_key = "metrics-secret-0123"\n')
    server = start_server(extra_args=["--auth-keys-file", str(keys)])
    r = requests.get(server.endpoint + "/metrics", timeout=10)
    assert r.status_code == 401
    # Prometheus' `authorization: {type: Bearer, credentials: ID:SECRET}`.
    m = scrape(server.endpoint,
               headers={"Authorization": "Bearer AKIAMETRICS000000001:metrics-secret-0123"})
    assert value(m, "freshet_open_connections") >= 1
    assert "metrics-secret-0123" not in requests.get(
        server.endpoint + "/metrics", timeout=10,
        headers={"Authorization": "Bearer AKIAMETRICS000000001:metrics-secret-0123"}).text
    # Health checks stay open.
    assert requests.get(server.endpoint + "/ready", timeout=10).status_code == 200

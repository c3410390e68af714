"""Consumer groups (`/v1/groups/...` and `freshet tail --group`): several real worker
processes share a stream's shards; one is SIGKILLed mid-run and a shard is split while
records keep arriving. Every record must be printed at least once, each worker's
output must keep each shard's order, the dead worker's shards must move within its
lease timeout, and children must be read only after their parent. Error answers are
checked against docs/openapi.json."""
import base64
import copy
import json
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from jsonschema import Draft7Validator

from conftest import freshet_bin, make_client, shard_id, unique_name, wait_active, wait_for

pytestmark = pytest.mark.freshet_only

SPEC = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
LEASE_TIMEOUT_MS = 3000
HALF = 2**127


def _nullable(node):
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        node.pop("format", None)
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


COMPONENTS = _nullable(copy.deepcopy(SPEC["components"]))


def check_schema(route: str, method: str, resp: requests.Response):
    """The body validates against what the spec gives for this route and status."""
    responses = SPEC["paths"][route][method]["responses"]
    assert str(resp.status_code) in responses, \
        f"{method.upper()} {route} answered {resp.status_code}, undocumented: {resp.text}"
    r = responses[str(resp.status_code)]
    if "$ref" in r:
        r = SPEC["components"]["responses"][r["$ref"].rsplit("/", 1)[1]]
    schema = {**_nullable(r["content"]["application/json"]["schema"]), "components": COMPONENTS}
    errors = list(Draft7Validator(schema).iter_errors(resp.json()))
    assert not errors, f"{route} {resp.status_code} body {resp.text} breaks the spec: {errors[0].message}"


class Group:
    def __init__(self, endpoint: str, stream: str, name: str):
        self.endpoint, self.stream, self.name = endpoint, stream, name

    def post(self, route: str, body, raw: bytes | None = None) -> requests.Response:
        url = f"{self.endpoint}/v1/groups/{self.name}/{route}?stream={self.stream}"
        data = raw if raw is not None else json.dumps(body).encode()
        resp = requests.post(url, data=data, headers={"content-type": "application/json"}, timeout=10)
        check_schema(f"/v1/groups/{{group}}/{route}", "post", resp)
        return resp

    def describe(self, missing_ok: bool = False) -> dict | None:
        resp = requests.get(f"{self.endpoint}/v1/groups/{self.name}?stream={self.stream}", timeout=10)
        check_schema("/v1/groups/{group}", "get", resp)
        if missing_ok and resp.status_code == 404:
            return None  # no worker has joined yet
        assert resp.status_code == 200, resp.text
        return resp.json()


def start_worker(endpoint: str, stream: str, group: str, worker: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(freshet_bin()), "tail", stream, "--group", group, "--worker", worker, "--json",
         "--lease-timeout-ms", str(LEASE_TIMEOUT_MS), "--endpoint", endpoint],
        stdout=open(out, "wb"), stderr=open(out.with_suffix(".err"), "wb"), stdin=subprocess.DEVNULL)


def printed(path: Path) -> list[dict]:
    """The complete lines a worker printed so far (a killed one may end mid-line)."""
    lines = path.read_bytes().split(b"\n")[:-1]
    return [json.loads(l) for l in lines]


def seq(line: dict) -> int:
    return int(line["sequenceNumber"])


def test_workers_share_shards_survive_a_kill_and_follow_a_split(endpoint, kinesis, tmp_path):
    stream, group = unique_name("grp"), unique_name("g")
    kinesis.create_stream(StreamName=stream, ShardCount=4)
    wait_active(kinesis, stream)
    g = Group(endpoint, stream, group)
    producer_client = make_client(endpoint)
    sent: list[str] = []
    stop = threading.Event()

    def produce():
        n = 0
        while not stop.is_set():
            batch = [{"Data": f"r{n + i}".encode(), "PartitionKey": f"k{random.randrange(10**9)}"}
                     for i in range(20)]
            out = producer_client.put_records(StreamName=stream, Records=batch)
            for rec, res in zip(batch, out["Records"]):
                if "SequenceNumber" in res:
                    sent.append(rec["Data"].decode())
            n += len(batch)
            stop.wait(0.05)

    outs = {f"w{i}": tmp_path / f"w{i}.jsonl" for i in range(3)}
    procs = {}
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        for w, path in outs.items():
            procs[w] = start_worker(endpoint, stream, group, w, path)

        def spread():
            d = g.describe(missing_ok=True)
            if d is None:
                return None
            counts = sorted(len(m["shards"]) for m in d["members"])
            return d if counts == [1, 1, 2] and all(s["worker"] for s in d["shards"]) else None
        d = wait_for(spread, 30, "the 4 shards spread over the 3 workers")
        wait_for(lambda: all(printed(p) for p in outs.values()), 30, "every worker printing")

        # SIGKILL a worker that holds shards; they must move to the survivors.
        victim = next(m["worker"] for m in d["members"] if m["shards"])
        victim_shards = set(next(m["shards"] for m in d["members"] if m["worker"] == victim))
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        killed_at = time.monotonic()

        def moved():
            d = g.describe()
            holders = {s["shardId"]: s["worker"] for s in d["shards"]}
            ok = all(holders.get(s) not in (None, victim) for s in victim_shards)
            return ok and victim not in [m["worker"] for m in d["members"]]
        wait_for(moved, LEASE_TIMEOUT_MS / 1000 + 10, "the killed worker's shards moving")
        moved_after = time.monotonic() - killed_at
        assert moved_after < LEASE_TIMEOUT_MS / 1000 + 5, f"took {moved_after:.1f} s"

        # Split a shard while records keep coming; children only after the parent.
        parent = shard_id(1)
        kinesis.split_shard(StreamName=stream, ShardToSplit=parent,
                            NewStartingHashKey=str(HALF // 4 * 3))
        wait_active(kinesis, stream)
        children = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]
                    if s.get("ParentShardId") == parent]
        assert len(children) == 2

        def children_read():
            d = g.describe()
            by_id = {s["shardId"]: s for s in d["shards"]}
            for c in children:
                if by_id[c]["worker"] is not None:
                    assert by_id[parent]["finished"], f"{c} leased before {parent} finished: {d}"
            return all(by_id[c]["checkpoint"] for c in children)
        wait_for(children_read, 60, "both children read and checkpointed", every=0.05)
    finally:
        stop.set()
        producer.join(30)
    try:
        want = set(sent)
        assert len(want) > 200

        def all_printed():
            got = {l["data"] for p in outs.values() for l in printed(p)}
            return want <= got
        wait_for(all_printed, 60, "every record printed at least once")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait(15)

    for w, path in outs.items():
        lines = printed(path)
        by_shard: dict[str, list[int]] = {}
        for l in lines:
            by_shard.setdefault(l["shardId"], []).append(seq(l))
        for shard, seqs in by_shard.items():
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), \
                f"{w} printed {shard} out of order"
        parent_at = [i for i, l in enumerate(lines) if l["shardId"] == parent]
        child_at = [i for i, l in enumerate(lines) if l["shardId"] in children]
        if parent_at and child_at:
            assert max(parent_at) < min(child_at), f"{w} printed a child before the end of its parent"
    # The survivors left on SIGTERM; the group remembers none of them.
    d = g.describe()
    assert d["members"] == []
    assert all(s["worker"] is None for s in d["shards"])


def test_bad_requests_get_the_rest_error_shape(endpoint, kinesis):
    stream, group = unique_name("grp"), unique_name("g")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    wait_active(kinesis, stream)
    g = Group(endpoint, stream, group)

    missing = Group(endpoint, unique_name("nostream"), group).post("join", {})
    assert missing.status_code == 404 and missing.json()["error"] == "ResourceNotFoundException"

    for raw in (b"{not json", b"[1, 2]", b'{"worker": 7}', b'{"surprise": true}'):
        r = g.post("join", None, raw=raw)
        assert r.status_code == 400, (raw, r.text)
        assert r.json()["error"] == "InvalidArgumentException"
    r = g.post("join", {"leaseTimeoutMs": 10})
    assert r.status_code == 400 and "leaseTimeoutMs" in r.json()["message"]
    r = requests.post(f"{endpoint}/v1/groups/{group}/join", json={}, timeout=10)
    assert r.status_code == 400 and "stream" in r.json()["message"]

    unknown = g.post("heartbeat", {"worker": "nobody"})
    assert unknown.status_code == 404  # the group does not exist yet

    joined = g.post("join", {"worker": "a", "leaseTimeoutMs": LEASE_TIMEOUT_MS})
    assert joined.status_code == 200, joined.text
    assert joined.json()["worker"] == "a"
    hb = g.post("heartbeat", {"worker": "a"}).json()
    assert [l["shardId"] for l in hb["leases"]] == [shard_id(0)]
    epoch = hb["leases"][0]["epoch"]
    put = kinesis.put_record(StreamName=stream, Data=b"x", PartitionKey="k")
    rec = g.post("records", {"worker": "a", "shardId": shard_id(0), "epoch": epoch}).json()
    assert [r["sequenceNumber"] for r in rec["records"]] == [put["SequenceNumber"]]
    assert base64.b64decode(rec["records"][0]["data"]) == b"x"

    wrong = g.post("checkpoint", {"worker": "a", "shardId": shard_id(0), "epoch": epoch + 1,
                                  "sequenceNumber": put["SequenceNumber"]})
    assert wrong.status_code == 409 and wrong.json()["error"] == "LeaseLostException"
    open_end = g.post("checkpoint", {"worker": "a", "shardId": shard_id(0), "epoch": epoch,
                                     "shardEnd": True})
    assert open_end.status_code == 400
    bad_seq = g.post("checkpoint", {"worker": "a", "shardId": shard_id(0), "epoch": epoch,
                                    "sequenceNumber": "12x"})
    assert bad_seq.status_code == 400
    ok = g.post("checkpoint", {"worker": "a", "shardId": shard_id(0), "epoch": epoch,
                               "sequenceNumber": put["SequenceNumber"]})
    assert ok.status_code == 200, ok.text
    d = g.describe()
    assert d["shards"][0]["checkpoint"] == put["SequenceNumber"]
    assert d["shards"][0]["lagRecords"] == 0
    # Read again without `after`: from the checkpoint, so nothing.
    again = g.post("records", {"worker": "a", "shardId": shard_id(0), "epoch": epoch}).json()
    assert again["records"] == []

    # A second worker gets nothing while "a" holds the only shard.
    g.post("join", {"worker": "b", "leaseTimeoutMs": LEASE_TIMEOUT_MS})
    assert g.post("heartbeat", {"worker": "b"}).json()["leases"] == []
    # "a" goes silent: after its timeout "b" holds the shard under a higher epoch and
    # "a" is fenced off.
    def b_holds():
        hb = g.post("heartbeat", {"worker": "b"}).json()
        return hb["leases"]
    leases = wait_for(b_holds, LEASE_TIMEOUT_MS / 1000 + 5, "b taking over", every=0.2)
    assert leases[0]["epoch"] > epoch and leases[0]["checkpoint"] == put["SequenceNumber"]
    late = g.post("checkpoint", {"worker": "a", "shardId": shard_id(0), "epoch": epoch,
                                 "sequenceNumber": put["SequenceNumber"]})
    assert late.status_code == 409 and late.json()["error"] == "WorkerExpiredException"
    assert g.post("leave", {"worker": "b"}).status_code == 200
    assert g.post("leave", {"worker": "b"}).status_code == 409


def test_groups_and_checkpoints_survive_a_restart(start_server, tmp_path):
    (tmp_path / "data").mkdir()
    data_dir = str(tmp_path / "data")
    server = start_server(data_dir=data_dir)
    kinesis = make_client(server.endpoint)
    stream, group = unique_name("grp"), unique_name("g")
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    wait_active(kinesis, stream)
    put = kinesis.put_record(StreamName=stream, Data=b"x", PartitionKey="k")
    g = Group(server.endpoint, stream, group)
    g.post("join", {"worker": "a", "leaseTimeoutMs": 60000})
    hb = g.post("heartbeat", {"worker": "a"}).json()
    lease = next(l for l in hb["leases"] if l["shardId"] == put["ShardId"])
    assert g.post("checkpoint", {"worker": "a", "shardId": put["ShardId"], "epoch": lease["epoch"],
                                 "sequenceNumber": put["SequenceNumber"]}).status_code == 200
    server.stop()
    server.start()
    g.endpoint = server.endpoint
    d = g.describe()
    assert [m["worker"] for m in d["members"]] == ["a"]
    by_id = {s["shardId"]: s for s in d["shards"]}
    assert by_id[put["ShardId"]]["checkpoint"] == put["SequenceNumber"]
    # The member keeps its leases (a fresh timeout after the restart), epochs unchanged.
    hb2 = g.post("heartbeat", {"worker": "a"}).json()
    assert {(l["shardId"], l["epoch"]) for l in hb2["leases"]} == \
        {(l["shardId"], l["epoch"]) for l in hb["leases"]}

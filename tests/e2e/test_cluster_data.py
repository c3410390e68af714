"""Scale-out with the shared data path: three Freshet nodes on one PostgreSQL (started
by the test: Debian's initdb in a temporary directory, a free loopback port) and one
S3-compatible server (moto_server on loopback), each node started with
`--cluster ... --object-store s3://bucket/prefix`.

- Streams created through one node are served by every node (and a retention change
  through one node holds on the others); boto3 producers write
  through every node while one node is SIGKILLed: its shards move to the survivors,
  and every acknowledged record reads back from each survivor, once, in order, with
  increasing sequence numbers.
- A shard owner paused with SIGSTOP past its lease, then resumed: nothing it commits
  after losing the lease, every acknowledged record back in order, and in the index
  the old epoch's rows all come before the new owner's.
- PostgreSQL stopped and started again mid-run: writes fail with a retryable error
  (ServiceUnavailable, or InternalFailure per record) and resume by themselves; no
  acknowledged record is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from conftest import REGION, FreshetServer, free_port, freshet_bin, make_client, wait_for
from test_firehose_s3 import moto, s3_client, s3_env  # noqa: F401 (moto is a fixture)

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]

LEASE_SECS = 2
HEARTBEAT_MS = 300


def pg_bindir() -> Path | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted((int(p.name), p / "bin") for p in root.glob("*")
                      if p.name.isdigit() and (p / "bin" / "initdb").exists()) if root.exists() else []
    return versions[-1][1] if versions else None


class Postgres:
    """A throwaway PostgreSQL: initdb, pg_ctl start/stop on a free loopback port. Runs as
    `nobody` when the tests run as root (PostgreSQL refuses root)."""

    def __init__(self, bindir: Path):
        self.bin = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="freshet-pg-"))
        self.as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "nobody")
        self.port = free_port()
        self.url = f"postgres://freshet@127.0.0.1:{self.port}/postgres"
        self.run("initdb", "-D", str(self.dir / "data"), "-U", "freshet", "--auth=trust",
                 "-E", "UTF8", "--no-sync")

    def run(self, program: str, *args: str):
        out = subprocess.run([*self.as_user, str(self.bin / program), *args], cwd=self.dir,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{program} failed: {out.stdout}\n{out.stderr}"

    def start(self):
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "server.log"),
                 "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                       f"-c max_connections=100",
                 "-w", "-t", "60", "start")

    def stop(self):
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def sql(self, query: str) -> list[list[str]]:
        out = subprocess.run([str(self.bin / "psql"), self.url, "-At", "-F", "\t", "-c", query],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def cleanup(self):
        try:
            self.stop()
        except AssertionError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres():
    bindir = pg_bindir()
    if bindir is None:
        assert not os.environ.get("CI"), "PostgreSQL is missing under CI: scripts/deps.sh test installs it"
        pytest.skip("PostgreSQL is not installed (scripts/deps.sh test installs it)")
    pg = Postgres(bindir)
    pg.start()
    yield pg
    pg.cleanup()


@pytest.fixture
def bucket(moto):  # noqa: F811 (fixture)
    name = f"cluster-{uuid.uuid4().hex[:12]}"
    s3_client(moto).create_bucket(Bucket=name)
    return name


class Cluster:
    def __init__(self, pg: Postgres, moto_url: str, bucket: str, batch_ms: int = 10,
                 retention_check_secs: int = 60):
        self.retention_check_secs = retention_check_secs
        self.pg = pg
        self.moto = moto_url
        self.bucket = bucket
        self.batch_ms = batch_ms
        self.nodes: dict[str, FreshetServer] = {}

    def start(self, node_id: str) -> FreshetServer:
        port = free_port()
        srv = FreshetServer(port=port, env=s3_env(self.moto), extra_args=[
            "--cluster", self.pg.url, "--node-id", node_id,
            "--advertise-url", f"http://127.0.0.1:{port}",
            "--object-store", f"s3://{self.bucket}/freshet",
            "--cluster-lease-secs", str(LEASE_SECS),
            "--cluster-heartbeat-ms", str(HEARTBEAT_MS),
            "--cluster-batch-ms", str(self.batch_ms),
            "--retention-check-secs", str(self.retention_check_secs),
        ])
        srv.start()
        self.nodes[node_id] = srv
        return srv

    def client(self, node_id: str):
        return make_client(self.nodes[node_id].endpoint)

    def status(self) -> dict:
        out = subprocess.run([str(freshet_bin()), "cluster", "status", "--cluster", self.pg.url,
                              "--json"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def owners(self, stream: str) -> dict[str, tuple[str, int]]:
        return {lease["resource"].split("/", 1)[1]: (lease["owner"], lease["epoch"])
                for lease in self.status()["leases"]
                if lease["resource"].startswith(f"shard:{stream}/") and lease["owner"]
                and lease["expires_in_secs"] > 0}

    def cleanup(self):
        for srv in self.nodes.values():
            srv.cleanup()


@pytest.fixture
def cluster(postgres, moto, bucket):  # noqa: F811 (fixture)
    # Retention passes every second: the shared sweeps (and the first orphan sweep,
    # which lists the bucket) run while the test does.
    c = Cluster(postgres, moto, bucket, retention_check_secs=1)
    yield c
    c.cleanup()


def create_everywhere(cluster: Cluster, via: str, name: str, shards: int):
    cluster.client(via).create_stream(StreamName=name, ShardCount=shards)
    for node in cluster.nodes:
        c = cluster.client(node)

        def active():
            try:
                return c.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
                    "StreamStatus"] == "ACTIVE"
            except ClientError:
                return False
        wait_for(active, 20, f"{name} ACTIVE on {node}")
    wait_for(lambda: len(cluster.owners(name)) == shards, 20, f"every shard of {name} owned")


def read_shard(client, stream: str, shard: str) -> list[dict]:
    it = client.get_shard_iterator(StreamName=stream, ShardId=shard,
                                   ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    out = []
    while True:
        r = client.get_records(ShardIterator=it, Limit=1000)
        out.extend(r["Records"])
        it = r["NextShardIterator"]
        if not r["Records"] and r["MillisBehindLatest"] == 0:
            return out


def one_try_client(endpoint: str):
    """A Kinesis client that does not retry: the tests see every failure."""
    return boto3.client("kinesis", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"max_attempts": 1}, connect_timeout=2,
                                      read_timeout=60))


class Producer(threading.Thread):
    """Puts batches of ten unique records through `endpoints[0]` (then the next endpoint
    when a node stops answering), keeping what was acknowledged."""

    def __init__(self, name: str, stream: str, endpoints: list[str]):
        super().__init__(daemon=True)
        self.tag = name
        self.stream = stream
        self.endpoints = endpoints
        self.stop = threading.Event()
        self.acked: list[tuple[str, str, bytes]] = []  # (shard, sequence, data)
        self.errors: list[str] = []
        self.batches = 0

    def run(self):
        n = 0
        at = 0
        client = one_try_client(self.endpoints[at])
        while not self.stop.is_set():
            records = [{"Data": f"{self.tag}-{n + i}".encode(), "PartitionKey": f"{self.tag}-{n + i}"}
                       for i in range(10)]
            n += 10
            try:
                r = client.put_records(StreamName=self.stream, Records=records)
            except (BotoCoreError, ClientError) as e:
                self.errors.append(str(e))
                if isinstance(e, BotoCoreError):  # the node is gone: use the next one
                    at = (at + 1) % len(self.endpoints)
                    client = one_try_client(self.endpoints[at])
                continue
            self.batches += 1
            for rec, res in zip(records, r["Records"]):
                if "SequenceNumber" in res:
                    self.acked.append((res["ShardId"], res["SequenceNumber"], rec["Data"]))
                else:
                    self.errors.append(f"{res['ErrorCode']}: {res['ErrorMessage']}")


def check_reads(cluster: Cluster, node: str, stream: str, acked: list[tuple[str, str, bytes]]):
    """Every acknowledged record is read back from `node` exactly once, on its shard,
    with its sequence number; sequence numbers grow along each shard."""
    client = cluster.client(node)
    want: dict[str, dict[str, bytes]] = {}
    for shard, seq, data in acked:
        want.setdefault(shard, {})[seq] = data
    shards = [s["ShardId"] for s in client.list_shards(StreamName=stream)["Shards"]]
    for shard in shards:
        got = read_shard(client, stream, shard)
        seqs = [int(r["SequenceNumber"]) for r in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"{shard} out of order on {node}"
        by_seq = {r["SequenceNumber"]: r["Data"] for r in got}
        missing = [s for s in want.get(shard, {}) if s not in by_seq]
        assert not missing, f"{len(missing)} acknowledged records of {shard} missing on {node}"
        for seq, data in want.get(shard, {}).items():
            assert by_seq[seq] == data
        datas = [r["Data"] for r in got]
        assert len(set(datas)) == len(datas), f"a record of {shard} read twice on {node}"


def test_every_node_serves_every_stream_and_a_killed_owner_loses_nothing(cluster):
    for node in ("n1", "n2", "n3"):
        cluster.start(node)
    stream = f"cl-{uuid.uuid4().hex[:8]}"
    create_everywhere(cluster, "n1", stream, 6)
    # Leases spread over the three nodes.
    wait_for(lambda: len({o for o, _ in cluster.owners(stream).values()}) == 3, 20,
             "shards spread over three nodes")

    # A setting changed through one node holds on the others.
    cluster.client("n1").increase_stream_retention_period(StreamName=stream,
                                                          RetentionPeriodHours=48)
    wait_for(lambda: cluster.client("n3").describe_stream_summary(StreamName=stream)[
        "StreamDescriptionSummary"]["RetentionPeriodHours"] == 48, 20,
        "the retention period seen on n3")

    # A record put through one node reads back through the others.
    seq = cluster.client("n2").put_record(StreamName=stream, Data=b"hello", PartitionKey="k")
    got = read_shard(cluster.client("n3"), stream, seq["ShardId"])
    assert [(r["SequenceNumber"], r["Data"]) for r in got] == [(seq["SequenceNumber"], b"hello")]

    endpoints = {n: s.endpoint for n, s in cluster.nodes.items()}
    producers = [Producer(n, stream, [endpoints[n]] + [endpoints[m] for m in endpoints if m != n])
                 for n in endpoints]
    for p in producers:
        p.start()
    wait_for(lambda: all(p.batches >= 20 for p in producers), 60, "producers under way")

    victim = "n2"
    victim_shards = {s for s, (o, _) in cluster.owners(stream).items() if o == victim}
    assert victim_shards, "the victim owns shards"
    os.kill(cluster.nodes[victim].proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    cluster.nodes[victim].proc.wait(10)

    # Its shards are taken by the survivors and accept writes again.
    def moved():
        owners = cluster.owners(stream)
        return all(owners.get(s, (victim,))[0] != victim for s in victim_shards)
    wait_for(moved, 4 * LEASE_SECS + 10, "the killed node's shards owned by survivors")
    after = {p.tag: len(p.acked) for p in producers}
    acked_shards_after = lambda: {s for p in producers for s, _, _ in p.acked[after[p.tag]:]}
    wait_for(lambda: victim_shards <= acked_shards_after(), 30,
             "writes acknowledged on the moved shards")
    failover = time.monotonic() - killed
    for p in producers:
        p.stop.set()
    for p in producers:
        p.join(60)
    acked = [(seq["ShardId"], seq["SequenceNumber"], b"hello")] + [a for p in producers for a in p.acked]
    assert len(acked) > 600
    # Only retryable failures while the shards moved.
    for e in (e for p in producers for e in p.errors):
        assert any(code in e for code in ("ServiceUnavailable", "InternalFailure", "Could not connect",
                                          "Connection", "Read timeout", "EndpointConnectionError")), e
    errors = sum(len(p.errors) for p in producers)
    print(f"failover: shards of the killed node writable again after {failover:.1f} s; "
          f"{len(acked)} records acknowledged, {errors} failures")
    assert failover < 20
    for node in ("n1", "n3"):
        check_reads(cluster, node, stream, acked)
    # The survivors' retention passes ran against S3 (ListObjectsV2 for orphans) cleanly.
    for node in ("n1", "n3"):
        log = cluster.nodes[node].log_text()
        assert "orphan sweep done" in log, log[-3000:]
        assert "retention pass failed" not in log, log[-3000:]


def test_a_paused_owner_commits_nothing_after_losing_its_lease(postgres, moto, bucket):  # noqa: F811
    # A long batch interval: the paused owner is caught holding a batch it has not
    # committed.
    cluster = Cluster(postgres, moto, bucket, batch_ms=1500)
    try:
        for node in ("a", "b"):
            cluster.start(node)
        stream = f"cl-{uuid.uuid4().hex[:8]}"
        create_everywhere(cluster, "a", stream, 1)
        shard = "shardId-000000000000"
        owner, epoch = cluster.owners(stream)[shard]
        other = "b" if owner == "a" else "a"
        first = cluster.client(owner).put_record(StreamName=stream, Data=b"before", PartitionKey="k")

        outcome: dict = {}

        def put_on_paused_owner():
            c = one_try_client(cluster.nodes[owner].endpoint)
            try:
                outcome["ok"] = c.put_record(StreamName=stream, Data=b"in-flight", PartitionKey="k")
            except (BotoCoreError, ClientError) as e:
                outcome["error"] = str(e)
        t = threading.Thread(target=put_on_paused_owner, daemon=True)
        t.start()
        pid = cluster.nodes[owner].proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: cluster.owners(stream).get(shard, ("", 0))[0] == other,
                     4 * LEASE_SECS + 10, "the shard taken by the other node")
            new_epoch = cluster.owners(stream)[shard][1]
            assert new_epoch > epoch
            during = cluster.client(other).put_record(StreamName=stream, Data=b"during",
                                                      PartitionKey="k")
        finally:
            os.kill(pid, signal.SIGCONT)
        t.join(90)
        assert not t.is_alive()
        print("the write held by the paused owner: "
              + (f"acknowledged as {outcome['ok']['SequenceNumber']}" if "ok" in outcome
                 else f"refused: {outcome['error']}"))
        acked = [(shard, first["SequenceNumber"], b"before"), (shard, during["SequenceNumber"], b"during")]
        if "ok" in outcome:
            acked.append((shard, outcome["ok"]["SequenceNumber"], b"in-flight"))
            # Acknowledged only under the new owner's epoch: after "during".
            assert int(outcome["ok"]["SequenceNumber"]) > int(during["SequenceNumber"])
        else:
            assert "ServiceUnavailable" in outcome["error"] or "InternalFailure" in outcome["error"], outcome
        after = cluster.client(owner).put_record(StreamName=stream, Data=b"after", PartitionKey="k")
        acked.append((shard, after["SequenceNumber"], b"after"))
        for node in ("a", "b"):
            check_reads(cluster, node, stream, acked)
        # In the index, the old epoch's rows were all committed before the new epoch's,
        # and offsets follow the commit order.
        rows = postgres.sql(
            f"SELECT lease_epoch, first_offset, extract(epoch from committed_at) "
            f"FROM cluster_record_objects WHERE stream = '{stream}' ORDER BY first_offset")
        epochs = [int(r[0]) for r in rows]
        committed = [float(r[2]) for r in rows]
        assert epochs == sorted(epochs), rows
        assert committed == sorted(committed), rows
        assert epoch in epochs and new_epoch in epochs
    finally:
        cluster.cleanup()


def test_postgres_restarted_mid_run_fails_writes_retryably_and_loses_nothing(cluster, postgres):
    for node in ("n1", "n2"):
        cluster.start(node)
    stream = f"cl-{uuid.uuid4().hex[:8]}"
    create_everywhere(cluster, "n1", stream, 2)
    endpoints = [s.endpoint for s in cluster.nodes.values()]
    producer = Producer("p", stream, endpoints)
    producer.start()
    wait_for(lambda: producer.batches >= 20, 60, "producer under way")
    postgres.stop()
    before = len(producer.errors)
    wait_for(lambda: len(producer.errors) >= before + 5, 60, "writes failing while PostgreSQL is down")
    acked_while_down = len(producer.acked)
    postgres.start()
    wait_for(lambda: len(producer.acked) >= acked_while_down + 200, 60,
             "writes acknowledged again once PostgreSQL is back")
    producer.stop.set()
    producer.join(60)
    print(f"{len(producer.acked)} records acknowledged, {len(producer.errors)} retryable "
          f"failures while PostgreSQL was away")
    for e in producer.errors:
        assert "ServiceUnavailable" in e or "InternalFailure" in e, e
    for node in cluster.nodes:
        check_reads(cluster, node, stream, producer.acked)

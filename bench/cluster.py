#!/usr/bin/env python3
"""Cluster benchmark: write throughput, ack latency and reads of history with the
embedded default, one node and three nodes (PostgreSQL + an S3-compatible server, all
on this machine), and the failover time of a SIGKILLed node's shards.

Starts its own PostgreSQL (Debian's initdb on a free loopback port) and S3-compatible
server (s3s-fs when found, else moto_server), then for each configuration starts the
nodes and runs `freshet-bench kinesis` against node 1 (with three nodes, two thirds of
the records are forwarded to their shard's owner, and the get phase reads the other
owners' objects cold from the object store); after the three-node run, a fourth node
joins and reads the whole stream again with an empty cache (cold history, every object
from the object store). Prints one table per run and a summary; --json FILE writes
every report.

    python3 bench/cluster.py --freshet target/release/freshet \\
        --bench target/release/freshet-bench --duration 15 --batch-ms 10

Needs boto3 (the e2e virtualenv has it: .venv/bin/python bench/cluster.py ...).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def up(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status < 500
    except Exception as e:  # noqa: BLE001 (any failure means "not yet")
        return getattr(e, "code", 500) < 500


class Postgres:
    def __init__(self, root: Path):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise SystemExit("PostgreSQL is not installed: scripts/deps.sh test installs it")
        self.bin = bins[-1].parent
        self.dir = root / "pg"
        self.dir.mkdir()
        self.as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(root, "nobody")
            shutil.chown(self.dir, "nobody")
        self.port = free_port()
        self.url = f"postgres://freshet@127.0.0.1:{self.port}/postgres"
        self.run("initdb", "-D", str(self.dir / "data"), "-U", "freshet", "--auth=trust",
                 "-E", "UTF8", "--no-sync")
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "-w", "start")

    def run(self, program, *args):
        subprocess.run([*self.as_user, str(self.bin / program), *args], check=True,
                       capture_output=True, cwd=self.dir)

    def stop(self):
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")


class ObjectServer:
    def __init__(self, root: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        s3s = shutil.which("s3s-fs") or next(
            (p for p in ("/work/tools/bin/s3s-fs", str(Path.home() / ".cargo/bin/s3s-fs"))
             if Path(p).exists()), None)
        if s3s:
            data = root / "s3"
            (data / "bench").mkdir(parents=True)
            cmd = [s3s, "--host", "127.0.0.1", "--port", str(self.port), "--access-key", "test",
                   "--secret-key", "test", str(data)]
            self.kind = "s3s-fs"
        else:
            moto = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
            cmd = [moto, "-H", "127.0.0.1", "-p", str(self.port)]
            self.kind = "moto_server"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: up(self.url), 30, self.kind)
        if self.kind == "moto_server":
            boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                         aws_access_key_id="test", aws_secret_access_key="test").create_bucket(
                Bucket="bench")

    def env(self) -> dict:
        return {"AWS_ENDPOINT_URL_S3": self.url, "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class Node:
    def __init__(self, freshet: str, root: Path, name: str, cluster: list[str], env: dict):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(root / f"{name}.log", "wb")
        args = [freshet, "serve", "--listen", f"127.0.0.1:{self.port}",
                "--data-dir", str(root / name), "--state-delay-ms", "0"]
        if cluster:
            args += [*cluster, "--node-id", name, "--advertise-url", self.endpoint]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **env})
        wait(lambda: up(self.endpoint + "/ready"), 30, f"node {name}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def run_bench(bench: str, endpoint: str, label: str, args, extra=()) -> dict:
    out = subprocess.run([bench, "kinesis", "--endpoint", endpoint, "--shards", str(args.shards),
                          "--clients", str(args.clients), "--batch", str(args.records_per_call),
                          "--record-size", str(args.record_size), "--duration", str(args.duration),
                          "--visibility-samples", "200", "--json", *extra],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"freshet-bench failed for {label}:\n{out.stderr[-3000:]}")
    print(f"== {label}\n" + out.stdout.rsplit("\n", 2)[0], flush=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["label"] = label
    return report


def owners(freshet: str, url: str, stream: str) -> dict:
    out = subprocess.run([freshet, "cluster", "status", "--cluster", url, "--json"],
                         capture_output=True, text=True, check=True)
    return {l["resource"].split("/", 1)[1]: l["owner"] for l in json.loads(out.stdout)["leases"]
            if l["resource"].startswith(f"shard:{stream}/") and l["owner"]
            and l["expires_in_secs"] > 0}


def failover(freshet: str, pg: Postgres, nodes: list[Node], names: list[str]) -> float:
    """Kills the node (other than node 1) owning the most shards of a new stream and times
    how long until a write to each of its shards, through node 1, is acknowledged again."""
    quick = Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30)
    client = boto3.client("kinesis", endpoint_url=nodes[0].endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test", config=quick)
    stream = f"failover-{int(time.time() * 1000)}"
    client.create_stream(StreamName=stream, ShardCount=6)
    shards = {s["ShardId"]: s["HashKeyRange"]["StartingHashKey"]
              for s in client.list_shards(StreamName=stream)["Shards"]}

    def spread():
        held = owners(freshet, pg.url, stream)
        others = [o for o in held.values() if o != names[0]]
        return len(held) == len(shards) and others
    wait(spread, 60, "every shard owned, some by a node other than the one written to")
    held = owners(freshet, pg.url, stream)
    # The node (other than the one the client talks to) that owns the most shards.
    target = max((o for o in held.values() if o != names[0]),
                 key=lambda o: sum(1 for v in held.values() if v == o))
    victim = [s for s, o in held.items() if o == target]
    node = nodes[names.index(target)]
    node.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    node.proc.wait(10)
    pending = set(victim)
    while pending:
        for shard in sorted(pending):
            try:
                client.put_record(StreamName=stream, Data=b"x", PartitionKey="k",
                                  ExplicitHashKey=shards[shard])
                pending.discard(shard)
            except (BotoCoreError, ClientError):
                pass
        if time.monotonic() - killed > 120:
            raise SystemExit("the killed node's shards were not writable within 120 s")
    return time.monotonic() - killed


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--freshet", default="target/release/freshet")
    p.add_argument("--bench", default="target/release/freshet-bench")
    p.add_argument("--duration", type=float, default=15)
    p.add_argument("--batch-ms", type=int, default=10, help="--cluster-batch-ms")
    p.add_argument("--lease-secs", type=int, default=None, help="--cluster-lease-secs")
    p.add_argument("--shards", type=int, default=6)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--records-per-call", type=int, default=100)
    p.add_argument("--record-size", type=int, default=1024)
    p.add_argument("--runs", type=int, default=1, help="repetitions of every configuration")
    p.add_argument("--only", choices=["embedded", "1", "3", "failover"], action="append")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="freshet-cluster-bench-"))
    pg = Postgres(root)
    s3 = ObjectServer(root)
    reports, failovers = [], []
    only = set(args.only or ["embedded", "1", "3", "failover"])
    try:
        for run in range(args.runs):
            for config in ("embedded", "1", "3"):
                if config not in only:
                    continue
                n = 1 if config == "embedded" else int(config)
                names = [f"r{run}-{config}-n{i + 1}" for i in range(n)]
                flags = [] if config == "embedded" else [
                    "--cluster", pg.url, "--object-store", f"s3://bench/{names[0]}",
                    "--cluster-batch-ms", str(args.batch_ms)]
                if flags and args.lease_secs:
                    flags += ["--cluster-lease-secs", str(args.lease_secs)]
                nodes = [Node(args.freshet, root, name, flags, s3.env()) for name in names]
                try:
                    label = "embedded (no cluster)" if n == 1 and not flags else f"{n} node(s)"
                    if n < 3:
                        reports.append(run_bench(args.bench, nodes[0].endpoint, label, args))
                        continue
                    # Kept, then read again through a node that joins afterwards: every
                    # object comes from the object store (its cache is empty).
                    stream = f"bench-{names[0]}"
                    reports.append(run_bench(args.bench, nodes[0].endpoint, label, args,
                                             ["--stream", stream, "--keep"]))
                    nodes.append(Node(args.freshet, root, f"{names[0]}-cold", flags, s3.env()))
                    reports.append(run_bench(args.bench, nodes[-1].endpoint,
                                             "cold read (new node)", args,
                                             ["--stream", stream, "--skip-put",
                                              "--skip-visibility"]))
                finally:
                    for node in nodes:
                        node.stop()
            if "failover" in only:
                names = [f"r{run}-f-n{i + 1}" for i in range(3)]
                flags = ["--cluster", pg.url, "--object-store", f"s3://bench/{names[0]}",
                         "--cluster-batch-ms", str(args.batch_ms)]
                if args.lease_secs:
                    flags += ["--cluster-lease-secs", str(args.lease_secs)]
                nodes = [Node(args.freshet, root, name, flags, s3.env()) for name in names]
                try:
                    secs = failover(args.freshet, pg, nodes, names)
                    failovers.append(secs)
                    print(f"== failover: the killed node's shards writable through a survivor "
                          f"after {secs:.1f} s", flush=True)
                finally:
                    for node in nodes:
                        node.stop()
    finally:
        s3.stop()
        pg.stop()
    if args.json:
        args.json.write_text(json.dumps({"reports": reports, "failover_secs": failovers}))
    print(f"\nobject store: {s3.kind}; batch interval {args.batch_ms} ms; "
          f"{args.clients} clients x {args.records_per_call} records of {args.record_size} B")
    print(f"{'configuration':<24} {'put rec/s':>10} {'put MB/s':>9} {'put p50':>8} {'put p99':>8} "
          f"{'get rec/s':>10} {'vis p50':>8}")
    by_label: dict[str, list[dict]] = {}
    for r in reports:
        by_label.setdefault(r["label"], []).append(r)

    def med(rs, phase, key):
        vals = [r[phase][key] for r in rs if r.get(phase)]
        return statistics.median(vals) if vals else float("nan")
    for label, rs in by_label.items():
        vis = [r["visibility"]["p50_ms"] for r in rs if r.get("visibility")]
        print(f"{label:<24} {med(rs, 'put', 'records_per_sec'):>10.0f} "
              f"{med(rs, 'put', 'mb_per_sec'):>9.2f} {med(rs, 'put', 'latency_p50_ms'):>7.1f}ms "
              f"{med(rs, 'put', 'latency_p99_ms'):>7.1f}ms {med(rs, 'get', 'records_per_sec'):>10.0f} "
              f"{(statistics.median(vis) if vis else float('nan')):>7.1f}ms")
    if failovers:
        print(f"failover (median of {len(failovers)}): {statistics.median(failovers):.1f} s")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

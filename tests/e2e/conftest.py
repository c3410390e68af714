"""Shared fixtures and helpers for the Freshet end-to-end conformance suite.

The suite talks to a real Kinesis-compatible server with real clients (boto3,
the AWS CLI, raw HTTP via `requests`).  By default it starts the Freshet binary
(`$FRESHET_BIN`, default `target/debug/freshet`) itself; with
`FRESHET_ENDPOINT=http://127.0.0.1:PORT` it uses an already running server
instead.  `FRESHET_KINESALITE=1` says that server is kinesalite: tests marked
`freshet_only` (operations or behaviour kinesalite lacks) are then skipped, as
are tests that need a dedicated Freshet server with different flags.

Helpers live in this module and are imported by the test modules with
`from conftest import ...`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

# --------------------------------------------------------------------------
# Constants and environment
# --------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "000000000000"
REGION = "us-east-1"
MAX_HASH = 2**128 - 1
HASH_SPACE = 2**128
AMZ_JSON = "application/x-amz-json-1.1"
AMZ_CBOR = "application/x-amz-cbor-1.1"
TARGET_PREFIX = "Kinesis_20131202."
UUID_RE = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

IS_KINESALITE = os.environ.get("FRESHET_KINESALITE", "") not in ("", "0")
EXTERNAL_ENDPOINT = os.environ.get("FRESHET_ENDPOINT", "").rstrip("/") or None

# Real users sign their requests: give every client (boto3, the CLI, raw
# requests) dummy credentials, and keep any personal AWS configuration of the
# person running the suite out of the way.
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_PAGER": "",
}
for _k, _v in _AWS_ENV.items():
    os.environ[_k] = _v
for _k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
           "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KINESIS"):
    os.environ.pop(_k, None)

CREDENTIALS = Credentials("test", "test")


def freshet_bin() -> Path:
    raw = os.environ.get("FRESHET_BIN", "target/debug/freshet")
    p = Path(raw)
    if not p.is_absolute():
        cwd_p = Path.cwd() / p
        p = cwd_p if cwd_p.exists() else REPO_ROOT / p
    return p


def stream_arn(name: str) -> str:
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"


def unique_name(prefix: str = "e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------
# pytest wiring: markers, skips, default timeouts
# --------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "freshet_only: exercises an operation or behaviour kinesalite does not "
        "implement; skipped when FRESHET_KINESALITE=1",
    )
    config.addinivalue_line(
        "markers",
        "dedicated_server: starts its own short-lived Freshet with different flags",
    )


def pytest_collection_modifyitems(config, items):
    skip_kl = pytest.mark.skip(reason="not implemented by kinesalite (FRESHET_KINESALITE=1)")
    for item in items:
        if IS_KINESALITE and (item.get_closest_marker("freshet_only")
                              or item.get_closest_marker("dedicated_server")):
            item.add_marker(skip_kl)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(120))


# --------------------------------------------------------------------------
# Running a Freshet server
# --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FreshetServer:
    """One Freshet process, started exactly as the contract says:

    $FRESHET_BIN serve --listen 127.0.0.1:PORT --data-dir DIR
                       --state-delay-ms 100 --iterator-ttl-secs 300 [extra flags]
    """

    def __init__(self, *, data_dir: str | None = None, state_delay_ms: int = 100,
                 iterator_ttl_secs: int = 300, extra_args=(), tls_ca: str | None = None,
                 env: dict[str, str | None] | None = None, port: int | None = None):
        self.binary = freshet_bin()
        # A port chosen by the caller (when a flag must name it), else a free one.
        self.fixed_port = port
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="freshet-e2e-data-")
        self.state_delay_ms = state_delay_ms
        self.iterator_ttl_secs = iterator_ttl_secs
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="freshet-e2e-", suffix=".log")[1])
        self.returncode: int | None = None
        # With TLS (--tls-cert in extra_args): the CA file that verifies the server.
        self.tls_ca = tls_ca
        # Environment variables set (or, with None, removed) for the child, e.g. AWS_*.
        self.env = dict(env or {})

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls_ca else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(self.binary), "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--data-dir", self.data_dir,
            "--state-delay-ms", str(self.state_delay_ms),
            "--iterator-ttl-secs", str(self.iterator_ttl_secs),
            *self.extra_args,
        ]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, ready_timeout: float = 30.0) -> "FreshetServer":
        if not self.binary.exists():
            raise RuntimeError(
                f"Freshet binary {self.binary} does not exist: build it with `cargo build` "
                f"or point FRESHET_BIN at it (or FRESHET_ENDPOINT at a running server)")
        last_error = ""
        for _attempt in range(3):  # a port picked as free can be taken meanwhile
            self.port = self.fixed_port or free_port()
            log = open(self.log_path, "ab")
            # Only the flags count: keep FRESHET_* settings of the caller's
            # environment (the server reads them) out of the child.
            env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
            for k, v in self.env.items():
                if v is None:
                    env.pop(k, None)
                else:
                    env[k] = v
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.data_dir, env=env)
            log.close()
            deadline = time.monotonic() + ready_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last_error = f"exited with code {self.proc.returncode}"
                    break
                try:
                    r = requests.get(self.endpoint + "/health", timeout=1,
                                     verify=self.tls_ca or True)
                    if r.status_code == 200:
                        return self
                except requests.RequestException:
                    pass
                time.sleep(0.05)
            else:
                self.stop()
                raise RuntimeError(
                    f"Freshet did not answer GET /health with 200 within {ready_timeout} s\n"
                    f"command: {' '.join(self.command())}\nlog:\n{self.log_text()[-4000:]}")
        raise RuntimeError(
            f"Freshet failed to start ({last_error})\ncommand: {' '.join(self.command())}\n"
            f"log:\n{self.log_text()[-4000:]}")

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        self.proc = None
        return self.returncode

    def cleanup(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        try:
            self.log_path.unlink()
        except OSError:
            pass


def _wait_tcp(endpoint: str, timeout: float = 30.0):
    host_port = endpoint.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens at {endpoint}")
            time.sleep(0.1)


_SESSION_SERVER: list = []


@pytest.fixture(scope="session")
def session_server():
    """The shared Freshet process, or None when FRESHET_ENDPOINT is set."""
    if EXTERNAL_ENDPOINT:
        yield None
        return
    server = FreshetServer().start()
    _SESSION_SERVER.append(server)
    yield server
    _SESSION_SERVER.clear()
    server.cleanup()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of the shared server's log to failing tests."""
    report = yield
    if report.failed and _SESSION_SERVER:
        tail = "\n".join(_SESSION_SERVER[0].log_text().splitlines()[-40:])
        report.sections.append(("freshet server log (last 40 lines)", tail))
    return report


@pytest.fixture(scope="session")
def endpoint(session_server) -> str:
    if session_server is None:
        _wait_tcp(EXTERNAL_ENDPOINT)
        return EXTERNAL_ENDPOINT
    return session_server.endpoint


def can_start_dedicated() -> tuple[bool, str]:
    if IS_KINESALITE:
        return False, "needs a dedicated Freshet server; the suite runs against kinesalite"
    if not freshet_bin().exists():
        return False, f"needs a dedicated Freshet server but {freshet_bin()} does not exist"
    return True, ""


@pytest.fixture
def start_server():
    """Factory: start a dedicated, short-lived Freshet with other flags."""
    ok, why = can_start_dedicated()
    if not ok:
        pytest.skip(why)
    servers: list[FreshetServer] = []

    def _start(**kwargs) -> FreshetServer:
        s = FreshetServer(**kwargs).start()
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.cleanup()


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

def make_client(endpoint: str, service: str = "kinesis"):
    # No retries: every error the server gives must surface in the test, and
    # botocore would otherwise silently retry LimitExceededException and
    # ProvisionedThroughputExceededException.
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                 connect_timeout=5, read_timeout=60, max_pool_connections=4)
    return boto3.session.Session().client(
        service, endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="test", aws_secret_access_key="test", config=cfg)


@pytest.fixture(scope="session")
def kinesis(endpoint):
    return make_client(endpoint)


class RawClient:
    """Hand-made HTTP requests, signed with SigV4 like a real SDK would."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.session = requests.Session()

    def signed_headers(self, body: bytes, headers: dict) -> dict:
        req = AWSRequest(method="POST", url=self.endpoint + "/", data=body, headers=headers)
        SigV4Auth(CREDENTIALS, "kinesis", REGION).add_auth(req)
        return dict(req.headers.items())

    def post(self, body: bytes | str = b"", *, target: str | None = None,
             content_type: str | None = AMZ_JSON, headers: dict | None = None,
             sign: bool = True, timeout: float = 30) -> requests.Response:
        if isinstance(body, str):
            body = body.encode()
        h = {}
        if content_type is not None:
            h["Content-Type"] = content_type
        if target is not None:
            h["X-Amz-Target"] = target
        h.update(headers or {})
        if sign:
            h = self.signed_headers(body, h)
        return self.session.post(self.endpoint + "/", data=body, headers=h, timeout=timeout)

    def json_call(self, op: str, payload, **kw) -> requests.Response:
        body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        return self.post(body, target=TARGET_PREFIX + op, content_type=AMZ_JSON, **kw)

    def cbor_call(self, op: str, payload, **kw) -> requests.Response:
        import cbor2
        body = payload if isinstance(payload, (bytes, str)) else cbor2.dumps(payload)
        return self.post(body, target=TARGET_PREFIX + op, content_type=AMZ_CBOR, **kw)


@pytest.fixture(scope="session")
def raw(endpoint) -> RawClient:
    return RawClient(endpoint)


def decode_body(resp: requests.Response):
    """Decode a response body according to its Content-Type (JSON or CBOR)."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
    try:
        if ctype == AMZ_CBOR:
            import cbor2
            return cbor2.loads(resp.content)
        return json.loads(resp.content.decode("utf-8")) if resp.content else None
    except Exception as e:
        raise AssertionError(f"response body does not decode as its Content-Type {ctype!r} says "
                             f"({e}): {resp.content[:200]!r}") from None


def error_message(body: dict):
    """AWS JSON errors carry `message`; a few (SerializationException) use `Message`."""
    if not isinstance(body, dict):
        return None
    return body.get("message", body.get("Message"))


# --------------------------------------------------------------------------
# Stream helpers
# --------------------------------------------------------------------------

def wait_for(predicate, timeout: float, what: str, every: float = 0.1):
    """Polls `predicate` until it returns something true (returned), failing after
    `timeout` seconds with `what` in the message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def wait_status(client, name: str, want: str = "ACTIVE", timeout: float = 20.0,
                arn: bool = False) -> dict:
    """Poll DescribeStreamSummary (as real clients do) until StreamStatus == want."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        kw = {"StreamARN": stream_arn(name)} if arn else {"StreamName": name}
        summary = client.describe_stream_summary(**kw)["StreamDescriptionSummary"]
        last = summary["StreamStatus"]
        if last == want:
            return summary
        if time.monotonic() > deadline:
            raise AssertionError(f"stream {name} still {last} after {timeout} s (wanted {want})")
        time.sleep(0.05)


def wait_quiescent(client, timeout: float = 20.0):
    """Wait until no stream of the account is CREATING, UPDATING or DELETING
    (uses ListStreams' StreamSummaries), so account-wide counters are stable."""
    deadline = time.monotonic() + timeout
    while True:
        busy = []
        kw = {"Limit": 100}
        while True:
            r = client.list_streams(**kw)
            busy += [s["StreamName"] for s in r.get("StreamSummaries", [])
                     if s["StreamStatus"] != "ACTIVE"]
            if not r["HasMoreStreams"] or not r.get("NextToken"):
                break
            kw = {"NextToken": r["NextToken"]}
        if not busy:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"streams still changing state: {busy}")
        time.sleep(0.05)


def wait_active(client, name: str, timeout: float = 20.0) -> dict:
    return wait_status(client, name, "ACTIVE", timeout)


def wait_gone(client, name: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.describe_stream_summary(StreamName=name)
        except ClientError as e:
            if e.response["Error"]["Code"] == "ResourceNotFoundException":
                return
            raise
        if time.monotonic() > deadline:
            raise AssertionError(f"stream {name} still exists {timeout} s after DeleteStream")
        time.sleep(0.05)


def all_shards(client, name: str) -> list[dict]:
    """Every shard of a stream via DescribeStream (follows HasMoreShards)."""
    shards: list[dict] = []
    kw = {"StreamName": name}
    while True:
        d = client.describe_stream(**kw)["StreamDescription"]
        shards.extend(d["Shards"])
        if not d["HasMoreShards"]:
            return shards
        kw = {"StreamName": name, "ExclusiveStartShardId": shards[-1]["ShardId"]}


def open_shards(shards: list[dict]) -> list[dict]:
    return [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]


def hash_range(shard: dict) -> tuple[int, int]:
    r = shard["HashKeyRange"]
    return int(r["StartingHashKey"]), int(r["EndingHashKey"])


def md5_hash_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def shard_for_hash(shards: list[dict], h: int) -> str:
    matches = [s["ShardId"] for s in open_shards(shards)
               if hash_range(s)[0] <= h <= hash_range(s)[1]]
    assert len(matches) == 1, f"hash {h} is covered by {matches}"
    return matches[0]


def shard_id(i: int) -> str:
    return f"shardId-{i:012d}"


def read_all(client, name: str, shard: str, iterator_type: str = "TRIM_HORIZON",
             max_calls: int = 50, stop_when_empty: bool = True, **kw) -> tuple[list, dict]:
    """Read a shard from an iterator until a call returns no records (or the
    shard ends). Returns (records, last GetRecords response)."""
    it = client.get_shard_iterator(StreamName=name, ShardId=shard,
                                   ShardIteratorType=iterator_type, **kw)["ShardIterator"]
    records: list = []
    resp: dict = {}
    for _ in range(max_calls):
        resp = client.get_records(ShardIterator=it)
        records.extend(resp["Records"])
        it = resp.get("NextShardIterator")
        if it is None or (stop_when_empty and not resp["Records"]):
            break
    return records, resp


def expect_error(fn, *args, **kwargs) -> ClientError:
    with pytest.raises(ClientError) as ei:
        fn(*args, **kwargs)
    return ei.value


def assert_client_error(err: ClientError, code: str, message: str | None = None,
                        status: int = 400):
    e = err.response["Error"]
    assert e["Code"] == code, f"expected {code}, got {e['Code']}: {e.get('Message')}"
    if message is not None:
        assert e.get("Message") == message, f"message differs:\n got: {e.get('Message')!r}\nwant: {message!r}"
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == status


def not_found_msg(name: str) -> str:
    return f"Stream {name} under account {ACCOUNT} not found."


@pytest.fixture
def make_stream(kinesis):
    """Factory creating uniquely named streams, deleted again after the test."""
    created: list[str] = []

    def _make(shards: int | None = 1, prefix: str = "e2e", wait: bool = True,
              name: str | None = None, **kwargs) -> str:
        name = name or unique_name(prefix)
        if shards is not None:
            kwargs["ShardCount"] = shards
        kinesis.create_stream(StreamName=name, **kwargs)
        created.append(name)
        if wait:
            wait_active(kinesis, name)
        return name

    yield _make
    for name in created:
        try:
            if IS_KINESALITE:
                kinesis.delete_stream(StreamName=name)
            else:
                kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
        except ClientError:
            pass


# --------------------------------------------------------------------------
# AWS CLI
# --------------------------------------------------------------------------

def aws_cli_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "aws"
    if exe.exists():
        return [sys.executable, str(exe)]
    return [sys.executable, "-m", "awscli"]


def run_aws(endpoint: str, *args: str, check: bool = True, timeout: float = 60):
    env = dict(os.environ)
    env.update(_AWS_ENV)
    env["AWS_MAX_ATTEMPTS"] = "1"
    cmd = [*aws_cli_cmd(), "--endpoint-url", endpoint, "--region", REGION, "--output", "json", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def rss_kib(pid: int) -> int:
    """A process's resident memory (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")

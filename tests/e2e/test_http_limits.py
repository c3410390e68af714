"""The HTTP listener under abuse, while a well-behaved client keeps working.

- slow bodies (declared 10 MiB, or chunked, one byte every 2 s) are cut with 408 once
  they fall under the minimum body rate, and hold nothing others need meanwhile;
- 2,000 connections trickling header bytes are cut at the header-read timeout;
- connection caps per address and server-wide answer 503 and close;
- oversized headers get 431.

Every abusive loop is bounded in count and time, and only targets 127.0.0.0/8.
"""
import json
import resource
import selectors
import socket
import statistics
import threading
import time

import boto3
import requests
import pytest
from botocore.config import Config

from conftest import REGION, rss_kib, unique_name, wait_for

pytestmark = pytest.mark.freshet_only

TARGET = "Kinesis_20131202."


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def kinesis(endpoint):
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5,
                 read_timeout=10)
    return boto3.session.Session().client("kinesis", endpoint_url=endpoint, region_name=REGION,
                                          aws_access_key_id="test", aws_secret_access_key="test",
                                          config=cfg)


class GoodClient(threading.Thread):
    """PutRecord every 200 ms from 127.0.0.1, recording each call's latency or error."""

    def __init__(self, endpoint: str, stream: str, seconds: float):
        super().__init__(daemon=True)
        self.client = kinesis(endpoint)
        self.stream, self.seconds = stream, seconds
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self):
        end = time.monotonic() + self.seconds
        i = 0
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                self.client.put_record(StreamName=self.stream, Data=b"good %d" % i, PartitionKey="k")
                self.latencies.append(time.monotonic() - t0)
            except Exception as e:  # every failure counts against the server
                self.errors.append(f"{type(e).__name__}: {e}")
            i += 1
            time.sleep(max(0.0, 0.2 - (time.monotonic() - t0)))

    def check(self, max_latency: float = 2.0):
        assert self.errors == [], self.errors[:5]
        assert len(self.latencies) >= 10, self.latencies
        assert max(self.latencies) < max_latency, sorted(self.latencies)[-5:]
        assert statistics.median(self.latencies) < 0.25, statistics.median(self.latencies)


class Crowd:
    """Many non-blocking client sockets on one selector, each sending its bytes slowly.
    Tracks what each one got back and when the server closed it."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.socks: list[dict] = []

    def open(self, port: int, source_ip: str, head: bytes, count: int, trickle: bytes = b""):
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((source_ip, 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            entry = {"sock": s, "got": b"", "closed_at": None, "sent": 0, "trickle": trickle}
            try:
                s.send(head)
            except OSError:
                entry["closed_at"] = time.monotonic()
            self.socks.append(entry)
            self.sel.register(s, selectors.EVENT_READ, entry)

    def open_count(self) -> int:
        return sum(e["closed_at"] is None for e in self.socks)

    def pump(self, seconds: float, every: float = 2.0, until=lambda crowd: False):
        """For `seconds` at most: read what the server sends, note closes, and send
        each open socket's `trickle` bytes every `every` seconds."""
        end = time.monotonic() + seconds
        next_send = time.monotonic() + every
        while time.monotonic() < end and not until(self):
            for key, _ in self.sel.select(timeout=0.1):
                e = key.data
                try:
                    data = e["sock"].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    e["got"] += data
                else:
                    self._closed(e)
            if time.monotonic() >= next_send:
                next_send += every
                for e in self.socks:
                    if e["closed_at"] is None and e["trickle"]:
                        try:
                            e["sock"].send(e["trickle"])
                            e["sent"] += len(e["trickle"])
                        except (BlockingIOError, OSError):
                            pass

    def _closed(self, e):
        if e["closed_at"] is None:
            e["closed_at"] = time.monotonic()
            self.sel.unregister(e["sock"])

    def close(self):
        for e in self.socks:
            if e["closed_at"] is None:
                self.sel.unregister(e["sock"])
            e["sock"].close()
        self.sel.close()


def data_stream(endpoint: str) -> str:
    name = unique_name("limits")
    k = kinesis(endpoint)
    k.create_stream(StreamName=name, ShardCount=1)
    deadline = time.monotonic() + 20
    while k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return name


@pytest.mark.timeout(120)
def test_slow_bodies_are_cut_and_starve_no_one(start_server):
    raise_fd_limit()
    server = start_server()
    stream = data_stream(server.endpoint)
    rss_before = rss_kib(server.proc.pid)
    put = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
           f"Content-Type: application/x-amz-json-1.1\r\nX-Amz-Target: {TARGET}PutRecord\r\n")
    crowd = Crowd()
    good = GoodClient(server.endpoint, stream, seconds=14)
    try:
        # 60 declared 10 MiB bodies (600 MiB: more than the whole in-flight budget) and
        # 60 chunked ones, each then sending one byte every 2 s.
        crowd.open(server.port, "127.0.0.2", (put + f"Content-Length: {10 * 1024 * 1024}\r\n\r\n{{").encode(), 60,
                   trickle=b" ")
        crowd.open(server.port, "127.0.0.3", (put + "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n").encode(), 60,
                   trickle=b"1\r\n \r\n")
        started = time.monotonic()
        good.start()
        crowd.pump(40, every=2.0, until=lambda c: c.open_count() == 0)
        good.join()
        cut_after = max(e["closed_at"] for e in crowd.socks) - started
    finally:
        crowd.close()
    good.check()
    # Cut once under the minimum rate: after the 10 s grace, well before 40 s.
    assert all(e["closed_at"] is not None for e in crowd.socks)
    assert 9 < cut_after < 30, cut_after
    answered = [e["got"] for e in crowd.socks]
    assert all(g.startswith(b"HTTP/1.1 408") for g in answered), {g[:60] for g in answered}
    body = json.loads(answered[0].split(b"\r\n\r\n", 1)[1])
    assert body["__type"] == "RequestTimeoutException" and "too slowly" in body["message"]
    assert rss_kib(server.proc.pid) - rss_before < 200 * 1024


@pytest.mark.timeout(120)
def test_header_tricklers_are_cut_at_the_header_timeout(start_server):
    have = raise_fd_limit()
    if have < 2300:
        pytest.fail(f"needs 2300 open files, the hard limit allows {have}")
    server = start_server(extra_args=["--http-header-timeout-secs", "4"])
    stream = data_stream(server.endpoint)
    rss_before = rss_kib(server.proc.pid)
    crowd = Crowd()
    good = GoodClient(server.endpoint, stream, seconds=8)
    try:
        # 2,000 connections from four addresses (500 each: under the per-address cap).
        for i in range(4):
            crowd.open(server.port, f"127.0.0.{10 + i}", b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ", 500,
                       trickle=b"a")
        started = time.monotonic()
        good.start()
        crowd.pump(30, every=1.0, until=lambda c: c.open_count() == 0)
        cut_after = max(e["closed_at"] for e in crowd.socks if e["closed_at"]) - started
        still_open = crowd.open_count()
        good.join()
    finally:
        crowd.close()
    assert still_open == 0
    assert cut_after < 4 + 10, cut_after
    good.check()
    assert rss_kib(server.proc.pid) - rss_before < 200 * 1024


@pytest.mark.timeout(60)
def test_connection_caps_answer_503_and_close(start_server):
    raise_fd_limit()
    server = start_server(extra_args=["--max-connections-per-ip", "50", "--max-connections", "200"])
    stream = data_stream(server.endpoint)
    crowd = Crowd()
    idle = b""  # connect and say nothing
    try:
        crowd.open(server.port, "127.0.0.2", idle, 60)
        crowd.pump(10, until=lambda c: c.open_count() == 50 and sum(bool(e["got"]) for e in c.socks) == 10)
        refused = [e for e in crowd.socks if e["got"]]
        assert len(refused) == 10 and crowd.open_count() == 50
        assert all(e["got"].startswith(b"HTTP/1.1 503") and e["closed_at"] for e in refused)
        # Another address is not affected by the first one's cap.
        c = kinesis(server.endpoint)
        c.put_record(StreamName=stream, Data=b"x", PartitionKey="k")
        # Fill the server-wide cap: 50 + 3 x 45 + 30 = 215 > 200.
        for ip in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
            crowd.open(server.port, ip, idle, 45)
        crowd.open(server.port, "127.0.0.6", idle, 30)
        crowd.pump(10, until=lambda c: sum(bool(e["got"]) for e in c.socks) >= 10 + 15 - 2)
        # The boto3 client holds a connection or two of the 200 itself.
        refused = [e for e in crowd.socks[60:] if e["got"]]
        assert 13 <= len(refused) <= 17, len(refused)
        assert "server-wide connection limit reached" in server.log_text()
        assert "per-address connection limit reached" in server.log_text()
    finally:
        crowd.close()
    # Once the crowd is gone, everyone is served again.
    deadline = time.monotonic() + 10
    while True:
        try:
            kinesis(server.endpoint).put_record(StreamName=stream, Data=b"y", PartitionKey="k")
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_oversized_headers_get_431(start_server):
    server = start_server()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n")
        got = b""
        while b"\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    assert got.startswith(b"HTTP/1.1 431"), got[:100]


def test_ready_reports_saturation_and_recovers(start_server):
    server = start_server(extra_args=["--max-connections", "20", "--max-connections-per-ip", "20"])
    r = requests.get(server.endpoint + "/ready", timeout=5)
    assert (r.status_code, r.json()) == (200, {"ready": True, "reasons": []})
    crowd = Crowd()
    try:
        # 18 idle connections from another address, plus the probe's own: 19 of 20 open.
        crowd.open(server.port, "127.0.0.2", b"", 18)
        def saturated():
            r = requests.get(server.endpoint + "/ready", timeout=5)
            if r.status_code != 503:
                return None
            body = r.json()
            # At the limit, the probe's own connection may be the one refused (a 503
            # ServiceUnavailable error, not /ready's answer): try again.
            return body if "ready" in body else None
        body = wait_for(saturated, 10, "/ready to report saturation")
        assert body["ready"] is False
        assert any("connections are open" in reason for reason in body["reasons"]), body
    finally:
        crowd.close()
    wait_for(lambda: requests.get(server.endpoint + "/ready", timeout=5).status_code == 200, 10,
             "/ready to recover")

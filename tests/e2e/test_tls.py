"""TLS on Freshet's listeners (`--tls-cert` / `--tls-key`, `--rtsps-listen`), with real
clients: boto3 and requests verifying against a test CA made with openssl, curl
negotiating HTTP/2 by ALPN (and h2c with prior knowledge on a plain listener), Python's
`ssl` reading the served certificate while it is reloaded (SIGHUP, file change, broken
file), and ffmpeg publishing over RTSPS into fragments read back with boto3 and HLS."""
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config

from conftest import REGION, REPO_ROOT, FreshetServer, free_port, unique_name, wait_for

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]

SAMPLES = REPO_ROOT / "media-samples"


def openssl(*args, cwd):
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"openssl {' '.join(args)}: {p.stderr}"


class Pki:
    """A test CA, and server certificates it issues for localhost / 127.0.0.1."""

    def __init__(self, root: Path):
        self.root = root
        self.ca = root / "ca.pem"
        self.serial = 1000
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Freshet e2e CA", "-days", "2",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=root)
        (root / "leaf.ext").write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")

    def issue(self, cn: str, key_format: str = "pkcs8") -> tuple[bytes, bytes]:
        """(certificate chain PEM: leaf then CA, private key PEM) for `cn`."""
        self.serial += 1
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{cn}.key", "-out", f"{cn}.csr", "-subj", f"/CN={cn}", cwd=self.root)
        if key_format == "sec1":
            openssl("ec", "-in", f"{cn}.key", "-out", f"{cn}.key", cwd=self.root)
        openssl("x509", "-req", "-in", f"{cn}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-set_serial", str(self.serial), "-days", "2", "-extfile", "leaf.ext",
                "-out", f"{cn}.pem", cwd=self.root)
        chain = (self.root / f"{cn}.pem").read_bytes() + self.ca.read_bytes()
        return chain, (self.root / f"{cn}.key").read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


def tls_server(pki, directory: Path, cn: str, *extra, config_file=False) -> FreshetServer:
    """A server with a new certificate for `cn` in `directory`, named by flags or, with
    `config_file`, by a `[tls]` table."""
    cert, key = pki.issue(cn)
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    if config_file:
        config = directory / "freshet.toml"
        config.write_text(f'[tls]\ncert = "{directory / "cert.pem"}"\nkey = "{directory / "key.pem"}"\n')
        files = ["--config", str(config)]
    else:
        files = ["--tls-cert", str(directory / "cert.pem"), "--tls-key", str(directory / "key.pem")]
    return FreshetServer(state_delay_ms=0, tls_ca=str(pki.ca), extra_args=[*files, *extra])


@pytest.fixture(scope="module")
def server(pki, tmp_path_factory):
    """A TLS server with an RTSPS listener, shared by the tests that do not reload."""
    rtsps_port = free_port()
    s = tls_server(pki, tmp_path_factory.mktemp("tls"), "freshet-shared",
                   "--rtsps-listen", f"127.0.0.1:{rtsps_port}").start()
    s.rtsps = f"rtsps://127.0.0.1:{rtsps_port}"
    yield s
    s.cleanup()


def client(server, service, endpoint=None):
    cfg = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5,
                 read_timeout=60)
    return boto3.session.Session().client(
        service, endpoint_url=endpoint or server.endpoint, region_name=REGION, verify=server.tls_ca,
        aws_access_key_id="test", aws_secret_access_key="test", config=cfg)


def served_cert(port: int, ca) -> dict:
    """The certificate a new TLS connection gets, verified against `ca`."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert()


def served_cn(port: int, ca) -> str:
    subject = dict(item[0] for item in served_cert(port, ca)["subject"])
    return subject["commonName"]


def curl(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True, text=True,
                          timeout=60)


def test_kinesis_over_https_and_plain_http_is_refused(server):
    kinesis = client(server, "kinesis")
    name = unique_name("tls")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    put = kinesis.put_record(StreamName=name, Data=b"over tls", PartitionKey="k")
    it = kinesis.get_shard_iterator(StreamName=name, ShardId=put["ShardId"],
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = kinesis.get_records(ShardIterator=it)["Records"]
    assert [r["Data"] for r in records] == [b"over tls"]

    # Plain HTTP to the TLS port: the client gets no HTTP answer, the server goes on.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.port}/health", timeout=5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = s.recv(4096)
        assert not reply.startswith(b"HTTP/"), reply
    assert requests.get(server.endpoint + "/health", verify=server.tls_ca, timeout=5).status_code == 200
    # A client without the CA refuses the server: the certificate is really checked.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.endpoint + "/health", timeout=5)


def test_curl_negotiates_http2_by_alpn(server):
    name = unique_name("h2")
    kinesis = client(server, "kinesis")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    body = json.dumps({"StreamName": name, "PartitionKey": "k",
                       "Data": base64.b64encode(b"sent over h2").decode()})
    kinesis_headers = ["-H", "Content-Type: application/x-amz-json-1.1"]
    p = curl("--http2", "--cacert", server.tls_ca, "-w", "\n%{http_version}", *kinesis_headers,
             "-H", "X-Amz-Target: Kinesis_20131202.PutRecord", "--data-binary", body,
             f"https://localhost:{server.port}/")
    assert p.returncode == 0, p.stderr
    answer, version = p.stdout.rsplit("\n", 1)
    assert version == "2"
    shard = json.loads(answer)["ShardId"]
    it = kinesis.get_shard_iterator(StreamName=name, ShardId=shard,
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert [r["Data"] for r in kinesis.get_records(ShardIterator=it)["Records"]] == [b"sent over h2"]

    # HTTP/1.1 still works on the same port.
    p = curl("--http1.1", "--cacert", server.tls_ca, "-w", "\n%{http_version}", *kinesis_headers,
             "-H", "X-Amz-Target: Kinesis_20131202.ListStreams", "--data-binary", "{}",
             f"https://127.0.0.1:{server.port}/")
    assert p.returncode == 0, p.stderr
    answer, version = p.stdout.rsplit("\n", 1)
    assert version == "1.1"
    assert name in json.loads(answer)["StreamNames"]


def test_subscribe_to_shard_over_h2_by_alpn(server):
    """Enhanced fan-out as the Java SDK v2 / KCL read it: HTTP/2 negotiated by ALPN."""
    from botocore.eventstream import EventStreamBuffer
    name = unique_name("efo")
    kinesis = client(server, "kinesis")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    arn = kinesis.register_stream_consumer(
        StreamARN=kinesis.describe_stream_summary(StreamName=name)[
            "StreamDescriptionSummary"]["StreamARN"],
        ConsumerName="h2")["Consumer"]["ConsumerARN"]
    seq = kinesis.put_record(StreamName=name, Data=b"pushed over h2",
                             PartitionKey="k")["SequenceNumber"]
    body = json.dumps({"ConsumerARN": arn, "ShardId": "shardId-000000000000",
                       "StartingPosition": {"Type": "TRIM_HORIZON"}})
    # The subscription stays open (5 minutes): read for 3 s, then parse what came.
    p = subprocess.run(["curl", "-sS", "--http2", "--max-time", "3", "--cacert", server.tls_ca,
                        "-w", "%{stderr}%{http_version} %{content_type}",
                        "-H", "Content-Type: application/x-amz-json-1.1",
                        "-H", "X-Amz-Target: Kinesis_20131202.SubscribeToShard",
                        "--data-binary", body, f"https://localhost:{server.port}/"],
                       capture_output=True, timeout=60)
    assert p.returncode in (0, 28), p.stderr
    assert b"2 application/vnd.amazon.eventstream" in p.stderr, p.stderr
    buf = EventStreamBuffer()
    buf.add_data(p.stdout)
    messages = list(buf)
    assert messages[0].headers[":event-type"] == "initial-response"
    event = json.loads(messages[1].payload)
    assert [r["SequenceNumber"] for r in event["Records"]] == [seq]
    assert base64.b64decode(event["Records"][0]["Data"]) == b"pushed over h2"


@pytest.mark.parametrize("version", ["--http2", "--http1.1"])
def test_put_media_streams_over_https(server, version):
    """HTTP/2 DATA frames, and HTTP/1.1 chunked as the producer SDK sends it."""
    name = unique_name("tls-media")
    kv = client(server, "kinesisvideo")
    kv.create_stream(StreamName=name, DataRetentionInHours=1)
    chunked = ["-H", "Transfer-Encoding: chunked"] if version == "--http1.1" else []
    p = curl(version, "--cacert", server.tls_ca, "-w", "\n%{http_version}", *chunked,
             "-H", f"x-amzn-stream-name: {name}", "-H", "x-amzn-fragment-timecode-type: RELATIVE",
             "-H", f"x-amzn-producer-start-timestamp: {time.time():.3f}",
             "--data-binary", f"@{SAMPLES / 'h264-aac.kvs.mkv'}", f"https://localhost:{server.port}/putMedia")
    assert p.returncode == 0, p.stderr
    *acks, negotiated = p.stdout.strip().split("\n")
    assert negotiated == version.removeprefix("--http")
    persisted = [a for a in map(json.loads, filter(None, acks)) if a.get("EventType") == "PERSISTED"]
    assert len(persisted) == 6, acks
    archived = client(server, "kinesis-video-archived-media")
    fragments = archived.list_fragments(StreamName=name)["Fragments"]
    assert len(fragments) == 6


def test_h2c_with_prior_knowledge_on_a_plain_listener(endpoint):
    p = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", "-H",
             "Content-Type: application/x-amz-json-1.1", "-H", "X-Amz-Target: Kinesis_20131202.ListStreams",
             "--data-binary", "{}", endpoint + "/")
    assert p.returncode == 0, p.stderr
    answer, version = p.stdout.rsplit("\n", 1)
    assert version == "2"
    assert "StreamNames" in json.loads(answer)
    p = curl("-w", "\n%{http_version}", endpoint + "/health")
    assert p.stdout.rsplit("\n", 1)[1] == "1.1"


def test_http2_settings_carry_the_limits(endpoint):
    """The server's SETTINGS frame (RFC 9113 §6.5): 100 streams, 64 KiB of headers."""
    host, port = endpoint.split("://")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(3) + b"\x04\x00" + bytes(4))
        data = b""
        while len(data) < 9 or len(data) < 9 + int.from_bytes(data[:3], "big"):
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
    length, kind = int.from_bytes(data[:3], "big"), data[3]
    assert kind == 0x4, data  # SETTINGS, the first frame a server sends
    payload = data[9:9 + length]
    settings = {int.from_bytes(payload[i:i + 2], "big"): int.from_bytes(payload[i + 2:i + 6], "big")
                for i in range(0, length, 6)}
    assert settings[0x3] == 100  # SETTINGS_MAX_CONCURRENT_STREAMS
    assert settings[0x6] == 64 * 1024  # SETTINGS_MAX_HEADER_LIST_SIZE


def test_a_client_that_never_handshakes_is_cut(pki, tmp_path):
    s = tls_server(pki, tmp_path, "freshet-timeout", "--http-header-timeout-secs", "2").start()
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=15) as silent:
            started = time.monotonic()
            assert silent.recv(1) == b""  # closed by the server, nothing sent
            waited = time.monotonic() - started
        assert 1.5 <= waited <= 5, waited
        # Handshaken, then silent: cut as an idle connection.
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", s.port), timeout=15) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.selected_alpn_protocol() == "h2"
                started = time.monotonic()
                while tls.recv(4096):  # the server's SETTINGS, then the close
                    pass
                waited = time.monotonic() - started
        assert 1.5 <= waited <= 5, waited
        assert requests.get(s.endpoint + "/health", verify=s.tls_ca, timeout=5).status_code == 200
    finally:
        s.cleanup()


def replace_files(directory: Path, pair: tuple[bytes, bytes], keep_mtime: bool):
    """Puts a new pair in place by rename; with `keep_mtime` the new files carry the old
    modification times, so only SIGHUP can make the server notice."""
    for name, data in (("key.pem", pair[1]), ("cert.pem", pair[0])):
        path = directory / name
        fresh = directory / f".{name}.new"
        fresh.write_bytes(data)
        if keep_mtime:
            old = path.stat()
            os.utime(fresh, ns=(old.st_atime_ns, old.st_mtime_ns))
        os.replace(fresh, path)


def test_certificates_reload_on_sighup_and_file_change(pki, tmp_path):
    s = tls_server(pki, tmp_path, "freshet-reload-1", config_file=True).start()
    try:
        assert served_cn(s.port, pki.ca) == "freshet-reload-1"
        before = served_cert(s.port, pki.ca)["serialNumber"]

        replace_files(tmp_path, pki.issue("freshet-reload-2", key_format="sec1"), keep_mtime=True)
        s.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: served_cn(s.port, pki.ca) == "freshet-reload-2", 10, "the SIGHUP reload")
        assert served_cert(s.port, pki.ca)["serialNumber"] != before
        assert 'why="SIGHUP"' in s.log_text()

        replace_files(tmp_path, pki.issue("freshet-reload-3"), keep_mtime=False)
        wait_for(lambda: served_cn(s.port, pki.ca) == "freshet-reload-3", 10, "the file-change reload")
        assert 'why="file changed"' in s.log_text()

        # A broken certificate: logged, and the old one stays in service.
        (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n"
                                           "-----END CERTIFICATE-----\n")
        wait_for(lambda: "TLS certificate reload failed" in s.log_text(), 10, "the failed reload")
        s.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: s.log_text().count("TLS certificate reload failed") >= 2, 10,
                 "the failed SIGHUP reload")
        assert served_cn(s.port, pki.ca) == "freshet-reload-3"
        assert requests.get(s.endpoint + "/health", verify=s.tls_ca, timeout=5).status_code == 200
        assert s.proc.poll() is None
        # The key never reaches the log.
        key_line = (tmp_path / "key.pem").read_text().splitlines()[1]
        assert key_line not in s.log_text()
    finally:
        s.cleanup()


def test_rtsps_publish_and_https_hls(server):
    stream = unique_name("rtsps")
    p = subprocess.run(["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
                        "-t", "4", "-c:v", "libx264", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p",
                        "-f", "rtsp", "-rtsp_transport", "tcp", f"{server.rtsps}/{stream}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "RTSP publishing accepted on rtsps://" in server.log_text()

    kv = client(server, "kinesisvideo")
    data = kv.get_data_endpoint(StreamName=stream, APIName="GET_HLS_STREAMING_SESSION_URL")["DataEndpoint"]
    assert data == f"https://127.0.0.1:{server.port}"
    archived = client(server, "kinesis-video-archived-media", endpoint=data)
    fragments = wait_for(lambda: archived.list_fragments(StreamName=stream)["Fragments"], 10,
                         "fragments from the RTSPS publisher")
    assert all(f["FragmentLengthInMilliseconds"] > 0 for f in fragments), fragments

    now = time.time()
    url = archived.get_hls_streaming_session_url(
        StreamName=stream, PlaybackMode="ON_DEMAND",
        HLSFragmentSelector={"FragmentSelectorType": "SERVER_TIMESTAMP",
                             "TimestampRange": {"StartTimestamp": now - 600, "EndTimestamp": now + 60}},
    )["HLSStreamingSessionURL"]
    assert url.startswith(f"https://127.0.0.1:{server.port}/"), url
    master = requests.get(url, verify=server.tls_ca, timeout=10)
    assert master.status_code == 200 and master.text.startswith("#EXTM3U"), master.text
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v",
                            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0",
                            "-ca_file", str(server.tls_ca), "-tls_verify", "1", url],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    # Every frame pushed over RTSPS (4 s at 25/s), in each program of the playlist.
    assert set(probe.stdout.split()) == {"100"}, probe.stdout

"""The container image (docker/Dockerfile), built for real by a Docker engine and run.

The image is built from the Dockerfile's runtime stage with BuildKit. Its base image is
Debian bookworm made here with debootstrap from the machine's own Debian mirror (these
machines reach no container registry), and its binary is the `freshet` under test,
built on this bookworm machine and handed to the Dockerfile through `FRESHET_FROM`
(an image holding /usr/local/bin/freshet). The Dockerfile's Rust build stage needs the
`rust:1.95-bookworm` image from Docker Hub, so it is the one part not built here.

Checked: the server runs as a non-root user and every library it links is in the
image; the container turns healthy through the image's own HEALTHCHECK; boto3 and
`freshet video push` work against it, and GetImages (GStreamer's decoders in the
image) returns a decodable PNG; `docker stop` is a clean shutdown (exit 0) and the
records are still there after a new container starts on the same volume, whose files
belong to the non-root user; and the image with docker/compose.yaml's environment
delivers a delivery stream to an S3-compatible server (moto on loopback standing in for
the compose file's MinIO).

A Docker engine is used when one answers (`DOCKER_HOST` or the default socket);
otherwise, as root, the test starts a private `dockerd` (Debian's docker.io, installed
by scripts/deps.sh test) with its own data root, and stops it at the end. Where no
engine can be had, the tests are skipped with the reason.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import yaml
import pytest
from botocore.config import Config

from conftest import REGION, REPO_ROOT, free_port, freshet_bin, unique_name, wait_for
from test_firehose import s3_config, wait_active
from test_firehose_s3 import keys, moto, s3_client, objects  # noqa: F401 (moto is a fixture)

# Setting up (a base image by debootstrap, the build) takes minutes on a cold machine.
pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server, pytest.mark.timeout(900)]

IMAGE = "freshet-test/freshet:latest"
BASE = "freshet-test/bookworm:minbase"
BINARY = "freshet-test/binary:latest"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "freshet-test"


def docker_client() -> str | None:
    # Debian's docker.io client speaks BuildKit itself (DOCKER_BUILDKIT=1); a newer
    # client needs the buildx plugin for that, so prefer the engine's own client.
    for c in ("/usr/bin/docker", shutil.which("docker")):
        if c and os.access(c, os.X_OK):
            return c
    return None


class Engine:
    def __init__(self, client: str, host: str | None):
        self.client = client
        self.env = dict(os.environ, DOCKER_BUILDKIT="1")
        if host:
            self.env["DOCKER_HOST"] = host

    def run(self, *args: str, check: bool = True, timeout: float = 300, input: bytes | None = None):
        p = subprocess.run([self.client, *args], env=self.env, capture_output=True,
                           timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {p.returncode}:\n"
                                 f"{p.stdout.decode(errors='replace')[-3000:]}\n"
                                 f"{p.stderr.decode(errors='replace')[-3000:]}")
        return p

    def out(self, *args: str, **kw) -> str:
        return self.run(*args, **kw).stdout.decode().strip()

    def answers(self) -> bool:
        try:
            return self.run("info", "--format", "{{.ServerVersion}}", check=False, timeout=20).returncode == 0
        except subprocess.TimeoutExpired:
            return False


def start_private_engine(client: str):
    """A dockerd of our own: data and sockets in a temporary directory, no bridge or
    iptables rules (containers use the host's network)."""
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not os.access(dockerd, os.X_OK):
        return None, None, "no Docker engine answers and dockerd is not installed (scripts/deps.sh test installs docker.io)"
    if os.geteuid() != 0:
        return None, None, "no Docker engine answers, and starting one needs root"
    root = Path(tempfile.mkdtemp(prefix="fdk-", dir="/tmp"))
    sock = root / "sock"
    log = open(root / "dockerd.log", "wb")
    proc = subprocess.Popen([dockerd, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                             "--pidfile", str(root / "pid"), "-H", f"unix://{sock}",
                             "--iptables=false", "--ip-masq=false", "--bridge=none"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    engine = Engine(client, f"unix://{sock}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if sock.exists() and engine.answers():
            return engine, (proc, root), ""
        time.sleep(0.2)
    proc.kill()
    proc.wait(10)
    tail = (root / "dockerd.log").read_text(errors="replace")[-1500:]
    shutil.rmtree(root, ignore_errors=True)
    return None, None, f"a private dockerd did not come up on this machine:\n{tail}"


def stop_private_engine(handle):
    proc, root = handle
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    # Layers may still be mounted if dockerd died uncleanly.
    subprocess.run(["sh", "-c", f"grep -o ' {root}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"],
                   capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def debian_mirror() -> str:
    """The mirror this machine's own apt uses, so that the base image comes from where
    the rest of the test environment comes from."""
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = f.read_text()
        except OSError:
            continue
        for m in re.finditer(r"(?:^URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+/debian)/?\s", text, re.M):
            return m.group(1)
    return "http://deb.debian.org/debian"


def base_rootfs_tar() -> Path:
    """A minimal Debian bookworm root file system, made once and kept in the cache."""
    tar = CACHE / "bookworm-minbase.tar"
    if tar.exists():
        return tar
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.access(debootstrap, os.X_OK):
        pytest.skip("debootstrap is not installed (scripts/deps.sh test installs it)")
    CACHE.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bookworm-", dir="/tmp"))
    try:
        p = subprocess.run([debootstrap, "--variant=minbase", "bookworm", str(root), debian_mirror()],
                           capture_output=True, timeout=900)
        assert p.returncode == 0, p.stdout.decode(errors="replace")[-3000:]
        for junk in (root / "var/cache/apt/archives").glob("*.deb"):
            junk.unlink()
        partial = tar.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.rename(tar)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return tar


@pytest.fixture(scope="module")
def engine():
    client = docker_client()
    if client is None:
        pytest.skip("no docker client is installed (scripts/deps.sh test installs docker.io)")
    handle = None
    eng = Engine(client, os.environ.get("DOCKER_HOST"))
    if not eng.answers():
        eng, handle, why = start_private_engine(client)
        if eng is None:
            pytest.skip(f"no Docker engine: {why}")
    yield eng
    if handle is not None:
        stop_private_engine(handle)


@pytest.fixture(scope="module")
def image(engine):
    if not engine.run("image", "inspect", BASE, check=False).returncode == 0:
        with open(base_rootfs_tar(), "rb") as f:
            engine.run("import", "-", BASE, input=f.read(), timeout=600)
    # The binary under test, as an image holding /usr/local/bin/freshet.
    with tempfile.TemporaryDirectory() as d:
        tar = Path(d) / "binary.tar"
        with tarfile.open(tar, "w") as t:
            info = t.gettarinfo(str(freshet_bin()), arcname="usr/local/bin/freshet")
            info.mode = 0o755
            info.uid = info.gid = 0
            with open(freshet_bin(), "rb") as f:
                t.addfile(info, f)
        engine.run("import", str(tar), BINARY, timeout=600)
    engine.run("build", "--network", "host", "-f", str(REPO_ROOT / "docker" / "Dockerfile"),
               "--build-arg", f"RUNTIME_IMAGE={BASE}", "--build-arg", f"FRESHET_FROM={BINARY}",
               "-t", IMAGE, str(REPO_ROOT), timeout=900)
    yield IMAGE
    engine.run("image", "rm", "-f", IMAGE, BINARY, check=False)


class Container:
    """One `docker run -d` of the image on the host's network, on a free port."""

    def __init__(self, engine: Engine, image: str, volume: str, env: dict | None = None):
        self.engine = engine
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.name = f"freshet-test-{uuid.uuid4().hex[:10]}"
        args = ["run", "-d", "--name", self.name, "--network", "host",
                # Check often so the test need not wait the default 10 s between checks.
                "--health-interval", "1s", "--health-start-period", "60s",
                "-v", f"{volume}:/var/lib/freshet",
                "-e", f"FRESHET_ENDPOINT={self.endpoint}"]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        args += [image, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", "/var/lib/freshet"]
        engine.run(*args)

    def state(self) -> dict:
        return json.loads(self.engine.out("inspect", "--format", "{{json .State}}", self.name))

    def wait_healthy(self, timeout: float = 90):
        def healthy():
            st = self.state()
            assert st["Status"] == "running", (st, self.logs())
            return st.get("Health", {}).get("Status") == "healthy"
        wait_for(healthy, timeout, f"{self.name} healthy")

    def logs(self) -> str:
        p = self.engine.run("logs", self.name, check=False)
        return (p.stdout + p.stderr).decode(errors="replace")[-4000:]

    def stop(self, grace: int = 30) -> int:
        self.engine.run("stop", "--time", str(grace), self.name, timeout=grace + 30)
        return self.state()["ExitCode"]

    def remove(self):
        self.engine.run("rm", "-f", self.name, check=False)


@pytest.fixture
def volume(engine):
    name = f"freshet-test-{uuid.uuid4().hex[:10]}"
    engine.run("volume", "create", name)
    containers: list[Container] = []
    yield name, containers
    for c in containers:
        c.remove()
    engine.run("volume", "rm", "-f", name, check=False)


def aws(endpoint: str, service: str):
    return boto3.session.Session().client(
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="test",
        aws_secret_access_key="test", config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def test_runs_as_a_non_root_user_with_every_library_it_links(engine, image):
    out = engine.out("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                     "id -u; id -g; ldd /usr/local/bin/freshet; ls -ldn /var/lib/freshet")
    lines = out.splitlines()
    assert lines[0] == "10001" and lines[1] == "10001", out
    assert "not found" not in out, out
    assert "libgstreamer-1.0.so" in out, out
    assert re.search(r"^d\S+\s+\d+\s+10001\s+10001\s", lines[-1]), lines[-1]
    # The entrypoint is the binary: arguments after the image name are freshet's.
    version = engine.out("run", "--rm", "--network", "none", image, "--version")
    assert version.startswith("freshet "), version
    # (GStreamer's decoders are exercised by GetImages in the next test.)


def test_serves_turns_healthy_stops_cleanly_and_keeps_its_data(engine, image, volume, tmp_path):
    vol, containers = volume
    c = Container(engine, image, vol)
    containers.append(c)
    c.wait_healthy()
    k = aws(c.endpoint, "kinesis")
    name = unique_name("docker")
    k.create_stream(StreamName=name, ShardCount=1)
    wait_for(lambda: k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
             ["StreamStatus"] == "ACTIVE", 30, "stream ACTIVE")
    sent = [f"record-{i}".encode() for i in range(50)]
    out = k.put_records(StreamName=name, Records=[{"Data": d, "PartitionKey": "p"} for d in sent])
    assert out["FailedRecordCount"] == 0

    # Video through the container: a push, then GetImages, which decodes with the
    # image's GStreamer.
    video = unique_name("docker-cam")
    p = subprocess.run([str(freshet_bin()), "video", "push", str(REPO_ROOT / "media-samples" / "h264-1s-gop.kvs.mkv"),
                        "--stream", video, "--endpoint", c.endpoint], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr + c.logs()
    persisted = sum(json.loads(line)["EventType"] == "PERSISTED"
                    for line in p.stdout.splitlines() if line.startswith("{"))
    assert persisted == 6, p.stdout  # the clip's six fragments
    archived = aws(c.endpoint, "kinesis-video-archived-media")
    resp = archived.get_images(StreamName=video, ImageSelectorType="PRODUCER_TIMESTAMP",
                               StartTimestamp=0.5, EndTimestamp=2.6, SamplingInterval=1000,
                               Format="PNG", WidthPixels=160, HeightPixels=120)
    assert len(resp["Images"]) == 3, resp["Images"]
    for img in resp["Images"]:
        assert "Error" not in img, img
        data = img["ImageContent"]
        data = data if isinstance(data, bytes) else base64.b64decode(data)
        png = tmp_path / "frame.png"
        png.write_bytes(data)
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
                                "-of", "json", str(png)], capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0, probe.stderr
        (stream,) = json.loads(probe.stdout)["streams"]
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("png", 160, 120)

    # docker stop sends SIGTERM: a clean shutdown exits 0 well within the grace time.
    t0 = time.monotonic()
    assert c.stop(grace=30) == 0, c.logs()
    assert time.monotonic() - t0 < 25, "the server did not stop on SIGTERM before docker's grace time"

    # The data directory is the volume, owned by the server's user, and a new container
    # on it has everything back.
    owners = engine.out("run", "--rm", "--network", "none", "-v", f"{vol}:/data", "--entrypoint", "sh", image,
                        "-c", "find /data -printf '%U:%G\\n' | sort -u")
    assert owners.split() == ["10001:10001"], owners
    c2 = Container(engine, image, vol)
    containers.append(c2)
    c2.wait_healthy()
    k2 = aws(c2.endpoint, "kinesis")
    shard = k2.list_shards(StreamName=name)["Shards"][0]["ShardId"]
    it = k2.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    got = []
    while len(got) < len(sent):
        r = k2.get_records(ShardIterator=it, Limit=1000)
        got += [rec["Data"] for rec in r["Records"]]
        if not r["Records"]:
            break
        it = r["NextShardIterator"]
    assert got == sent
    frags = aws(c2.endpoint, "kinesis-video-archived-media").list_fragments(StreamName=video)["Fragments"]
    assert len(frags) == persisted, frags
    assert c2.stop() == 0, c2.logs()


def compose_freshet_env() -> dict:
    """The freshet service's environment in docker/compose.yaml."""
    doc = yaml.safe_load((REPO_ROOT / "docker" / "compose.yaml").read_text())
    svc = doc["services"]["freshet"]
    assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert "freshet-data:/var/lib/freshet" in svc["volumes"]
    assert "freshet-data" in doc["volumes"]
    # The bucket the compose file makes is the one its instructions deliver to.
    assert "local/freshet-delivery" in doc["services"]["buckets"]["command"][0]
    assert "arn:aws:s3:::freshet-delivery" in (REPO_ROOT / "docker" / "compose.yaml").read_text()
    return {k: str(v) for k, v in svc["environment"].items()}


def test_the_compose_environment_delivers_to_an_s3_compatible_store(engine, image, volume, moto):
    env = compose_freshet_env()
    assert env["FRESHET_DELIVERY_S3"] == "s3"
    assert env["AWS_ENDPOINT_URL_S3"].startswith("http://minio:")
    # The compose file's MinIO is reached by service name; here the S3-compatible server
    # is moto on the host's loopback. Everything else is the compose file's.
    env["AWS_ENDPOINT_URL_S3"] = moto
    env["AWS_ACCESS_KEY_ID"] = env["AWS_SECRET_ACCESS_KEY"] = "test"
    vol, containers = volume
    c = Container(engine, image, vol, env=env)
    containers.append(c)
    c.wait_healthy()
    # JSON logs, as the compose file asks for.
    first = next(line for line in c.logs().splitlines() if line.startswith("{"))
    assert json.loads(first)["level"], first

    s3 = s3_client(moto)
    bucket = f"docker-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    fh = aws(c.endpoint, "firehose")
    name = unique_name("docker-fh")
    fh.create_delivery_stream(DeliveryStreamName=name, ExtendedS3DestinationConfiguration=s3_config(bucket, 1, 1))
    wait_active(fh, name)
    lines = [f"line {i}\n".encode() for i in range(20)]
    assert fh.put_record_batch(DeliveryStreamName=name, Records=[{"Data": d} for d in lines])["FailedPutCount"] == 0
    wait_for(lambda: keys(s3, bucket), 30, "an object in S3")
    assert b"".join(objects(s3, bucket).values()) == b"".join(lines)
    assert c.stop() == 0, c.logs()

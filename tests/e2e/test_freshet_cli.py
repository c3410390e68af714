"""Freshet's own command-line client (`freshet stream|put|tail|delivery`) against a live server,
as a person would use it."""
import json
from pathlib import Path
import subprocess
import time

import pytest

from conftest import freshet_bin, make_client, shard_id, unique_name, wait_active, wait_for

pytestmark = pytest.mark.freshet_only


def freshet(endpoint, *args, input=None, check=True, timeout=60):
    p = subprocess.run([str(freshet_bin()), *args, "--endpoint", endpoint], input=input,
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"freshet {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p


def test_help_explains_itself():
    out = subprocess.run([str(freshet_bin()), "--help"], capture_output=True, text=True).stdout
    for word in ("serve", "stream", "put", "tail"):
        assert word in out
    serve = subprocess.run([str(freshet_bin()), "serve", "--help"], capture_output=True, text=True).stdout
    for flag in ("--listen", "--data-dir", "--durability", "--config", "FRESHET_LISTEN"):
        assert flag in serve


def test_stream_lifecycle(endpoint, kinesis):
    name = unique_name("cli")
    out = freshet(endpoint, "stream", "create", name, "--shards", "3").stdout
    assert f"created stream {name}" in out
    assert kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    listed = freshet(endpoint, "stream", "list").stdout
    assert any(line.split()[0] == name and "ACTIVE" in line for line in listed.splitlines() if line.strip())
    described = freshet(endpoint, "stream", "describe", name).stdout
    assert "open shards: 3" in described
    assert described.count("shardId-") == 3
    freshet(endpoint, "stream", "delete", name)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and name in freshet(endpoint, "stream", "list").stdout:
        time.sleep(0.1)
    assert name not in freshet(endpoint, "stream", "list").stdout


def test_put_args_stdin_file_then_tail(endpoint, tmp_path):
    name = unique_name("cli")
    freshet(endpoint, "stream", "create", name, "--shards", "2")
    freshet(endpoint, "put", name, "alpha", "beta")
    freshet(endpoint, "put", name, input="gamma\ndelta\n")
    f = tmp_path / "records.jsonl"
    f.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(1200)))
    p = freshet(endpoint, "put", name, "--file", str(f))
    assert "put 1200 records" in p.stderr
    out = freshet(endpoint, "tail", name, "--from-start", "--no-follow").stdout.splitlines()
    assert set(out) >= {"alpha", "beta", "gamma", "delta"}
    assert len(out) == 1204
    nums = sorted(json.loads(l)["n"] for l in out if l.startswith("{"))
    assert nums == list(range(1200))


def test_put_to_missing_stream_fails_clearly(endpoint):
    p = freshet(endpoint, "put", unique_name("missing"), "x", check=False)
    assert p.returncode != 0
    assert "ResourceNotFoundException" in p.stderr


def test_delivery_list_describe_put(session_server):
    endpoint = session_server.endpoint
    fh = make_client(endpoint, "firehose")
    name, bucket = unique_name("cli-delivery"), unique_name("cli-bucket")
    fh.create_delivery_stream(
        DeliveryStreamName=name, DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::000000000000:role/firehose",
            "BucketARN": f"arn:aws:s3:::{bucket}", "Prefix": "cli/",
            "CompressionFormat": "UNCOMPRESSED",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1}})
    wait_for(lambda: fh.describe_delivery_stream(DeliveryStreamName=name)
             ["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE", 10, "ACTIVE")

    listed = [l.split() for l in freshet(endpoint, "delivery", "list").stdout.splitlines()]
    assert [name, "ACTIVE", "DirectPut", f"s3://{bucket}/cli/"] in listed
    text = freshet(endpoint, "delivery", "describe", name).stdout
    assert f"delivers to: s3://{bucket}/cli/" in text
    assert "buffering:   1 MiB or 1 s, whichever comes first" in text
    assert "last error:    none" in text
    described = json.loads(freshet(endpoint, "delivery", "describe", name, "--json").stdout)
    assert described["DeliveryStreamDescription"]["DeliveryStreamName"] == name

    out = freshet(endpoint, "delivery", "put", name, "a", "b").stdout
    assert out.strip() == f"put 2 records into {name}"
    freshet(endpoint, "delivery", "put", name, input="c\nd\n")
    root = Path(session_server.data_dir) / "buckets" / bucket

    def delivered():
        return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())
    wait_for(lambda: sorted(delivered().split()) == [b"a", b"b", b"c", b"d"], 15,
             "the four records delivered")
    assert all(str(p.relative_to(root)).startswith("cli/") for p in root.rglob("*") if p.is_file())

    p = freshet(endpoint, "delivery", "put", unique_name("missing"), "x", check=False)
    assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr
    p = freshet(endpoint, "delivery", "describe", unique_name("missing"), check=False)
    assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr


def test_unreachable_server_is_explained():
    p = subprocess.run([str(freshet_bin()), "stream", "list", "--endpoint", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "cannot reach Freshet" in p.stderr


def test_tail_follows_children_after_split(endpoint, kinesis):
    name = unique_name("cli")
    freshet(endpoint, "stream", "create", name, "--shards", "1")
    tail = subprocess.Popen([str(freshet_bin()), "tail", name, "--json", "--limit", "5",
                             "--endpoint", endpoint], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # tail starts at LATEST
        freshet(endpoint, "put", name, "--partition-key", "k", "before-split")
        kinesis.split_shard(StreamName=name, ShardToSplit=shard_id(0), NewStartingHashKey=str(2 ** 127))
        wait_active(kinesis, name)
        for i in range(4):
            freshet(endpoint, "put", name, "--partition-key", f"key-{i}", f"after-{i}")
        out, _ = tail.communicate(timeout=30)
    finally:
        tail.kill()
    lines = [json.loads(l) for l in out.splitlines()]
    assert [l["data"] for l in lines][0] == "before-split"
    assert lines[0]["shardId"] == shard_id(0)
    assert sorted(l["data"] for l in lines[1:]) == [f"after-{i}" for i in range(4)]
    assert {l["shardId"] for l in lines[1:]} <= {shard_id(1), shard_id(2)}


SAMPLES = Path(__file__).resolve().parents[2] / "media-samples"


def test_video_push_fragments_get(endpoint, tmp_path):
    name = unique_name("vcli")
    p = freshet(endpoint, "video", "push", str(SAMPLES / "h264-1s-gop.kvs.mkv"), "--stream", name)
    acks = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert [a["EventType"] for a in acks].count("PERSISTED") == 6
    assert "6 fragments persisted" in p.stderr
    listed = freshet(endpoint, "video", "fragments", "--stream", name).stdout.splitlines()
    assert len(listed) == 6
    assert listed[0].split()[0] == next(a["FragmentNumber"] for a in acks if a["EventType"] == "PERSISTED")
    out = tmp_path / "get.mkv"
    with open(out, "wb") as f:
        subprocess.run([str(freshet_bin()), "video", "get", "--stream", name, "--seconds", "3",
                        "--endpoint", endpoint], stdout=f, check=True, timeout=30)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(out)],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "150"


def test_video_push_of_a_non_mkv_file_fails_clearly(endpoint, tmp_path):
    bogus = tmp_path / "not-video.mkv"
    bogus.write_bytes(b"plain text, not matroska\n" * 10)
    p = freshet(endpoint, "video", "push", str(bogus), "--stream", unique_name("vcli"), check=False)
    assert p.returncode != 0
    assert '"ErrorId":4006' in p.stdout


def test_gstreamer_live_push_with_a_live_reader(endpoint, kinesis, tmp_path):
    """A GStreamer producer (matroskamux streamable=true) piped into `freshet video push -`
    while a GetMedia reader that started at NOW follows the live edge."""
    import requests
    name = unique_name("gst")
    r = requests.post(endpoint + "/createStream", json={"StreamName": name, "DataRetentionInHours": 1})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 10
    while requests.post(endpoint + "/describeStream", json={"StreamName": name}).json()["StreamInfo"]["Status"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    out = tmp_path / "live.mkv"
    with open(out, "wb") as f:
        reader = subprocess.Popen([str(freshet_bin()), "video", "get", "--stream", name, "--start", "NOW",
                                   "--seconds", "12", "--endpoint", endpoint], stdout=f)
        time.sleep(0.5)
        gst = subprocess.Popen(
            "gst-launch-1.0 -q videotestsrc is-live=true num-buffers=75 ! "
            "video/x-raw,width=320,height=240,framerate=25/1 ! "
            "x264enc key-int-max=25 bframes=0 tune=zerolatency ! h264parse ! "
            "video/x-h264,stream-format=avc ! matroskamux streamable=true ! fdsink",
            shell=True, stdout=subprocess.PIPE)
        push = subprocess.run([str(freshet_bin()), "video", "push", "-", "--stream", name, "--endpoint", endpoint],
                              stdin=gst.stdout, capture_output=True, text=True, timeout=60)
        gst.wait(timeout=30)
        assert push.returncode == 0, push.stderr
        assert push.stdout.count('"PERSISTED"') == 3
        reader.wait(timeout=30)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(out)],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "75"


@pytest.mark.parametrize("clip,fragments,streams", [
    ("h264-aac.kvs.mkv", 6, {"h264": "150", "aac": "281"}),
    ("h265-2s-gop.kvs.mkv", 3, {"hevc": "150"}),
])
def test_video_tracks_h265_and_aac_round_trip(endpoint, tmp_path, clip, fragments, streams):
    name = unique_name("codec")
    p = freshet(endpoint, "video", "push", str(SAMPLES / clip), "--stream", name)
    assert p.stdout.count('"PERSISTED"') == fragments, p.stdout
    out = tmp_path / "get.mkv"
    with open(out, "wb") as f:
        subprocess.run([str(freshet_bin()), "video", "get", "--stream", name, "--seconds", "3",
                        "--endpoint", endpoint], stdout=f, check=True, timeout=30)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                            "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(out)],
                           capture_output=True, text=True, check=True)
    got = dict(line.split(",") for line in probe.stdout.split())
    assert got == streams
    decode = subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(out), "-f", "null", "-"],
                            capture_output=True, text=True)
    assert decode.returncode == 0, decode.stderr


def test_the_cli_signs_with_the_environments_credentials(start_server, tmp_path):
    """With keys configured, the CLI signs (SigV4) with AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY as the AWS CLI reads them: data streams, video control,
    PutMedia and the feed API work; without credentials it says why it was refused."""
    import os
    keys = tmp_path / "keys.toml"
    keys.write_text('[[auth.keys]]\naccess_key_id = "AKIAFRESHETCLI000001"\n'
                    'secret_access_key = "cli-secret-0123456789"\n')
    server = start_server(state_delay_ms=0, extra_args=["--auth-keys-file", str(keys)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}

    def run(*args, creds=True, check=True):
        e = dict(env, AWS_ACCESS_KEY_ID="AKIAFRESHETCLI000001",
                 AWS_SECRET_ACCESS_KEY="cli-secret-0123456789") if creds else env
        p = subprocess.run([str(freshet_bin()), *args, "--endpoint", server.endpoint],
                           capture_output=True, text=True, timeout=60, env=e)
        if check:
            assert p.returncode == 0, f"freshet {' '.join(args)}: {p.stderr}"
        return p

    name = unique_name("signed-cli")
    p = run("stream", "create", name, "--shards", "1", creds=False, check=False)
    assert p.returncode != 0 and "MissingAuthenticationTokenException" in p.stderr, p.stderr
    run("stream", "create", name, "--shards", "1")
    run("put", name, "hello")
    assert name in run("stream", "list").stdout
    cam = unique_name("signed-cam")
    p = run("video", "push", str(SAMPLES / "h264-1s-gop.kvs.mkv"), "--stream", cam)
    listed = run("video", "fragments", "--stream", cam).stdout.splitlines()
    assert len(listed) >= 1, p.stdout + p.stderr
    assert "cli-secret-0123456789" not in server.log_text()


def test_status_prints_health_readiness_and_figures(start_server):
    server = start_server(state_delay_ms=0)
    name = unique_name("status")
    freshet(server.endpoint, "stream", "create", name, "--shards", "1")
    freshet(server.endpoint, "put", name, "one", "two", "three")
    out = freshet(server.endpoint, "status").stdout
    assert "ready           yes" in out, out
    assert "authentication  none" in out, out
    line = next(l for l in out.splitlines() if l.strip().startswith(name))
    assert line.split()[1] == "3" and "records in" in line, out
    # A server that is not there: a clear error, non-zero exit.
    p = freshet("http://127.0.0.1:9", "status", check=False)
    assert p.returncode != 0 and "cannot reach Freshet" in p.stderr


def test_completions_complete_subcommands_and_flags_in_bash(tmp_path):
    script = tmp_path / "freshet.bash"
    out = subprocess.run([str(freshet_bin()), "completions", "bash"], capture_output=True,
                         timeout=30, check=True)
    script.write_bytes(out.stdout)

    def complete(*words: str) -> list[str]:
        # What bash offers after `freshet WORDS...` (the last word being typed).
        array = " ".join(f"'{w}'" for w in ("freshet", *words))
        cmd = (f"source {script}; COMP_WORDS=({array}); COMP_CWORD={len(words)}; "
               f"_freshet freshet '{words[-1]}' '{(('freshet',) + words)[-2]}'; "
               "printf '%s\\n' \"${COMPREPLY[@]}\"")
        p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout.split()

    assert complete("se") == ["serve"]
    assert "status" in complete("st") and "stream" in complete("st")
    assert "--data-dir" in complete("serve", "--data")
    assert "--tls-cert" in complete("serve", "--tls")
    for shell in ("zsh", "fish"):
        p = subprocess.run([str(freshet_bin()), "completions", shell], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0 and "serve" in p.stdout, shell
    bad = subprocess.run([str(freshet_bin()), "completions", "tcsh"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode != 0 and "possible values" in bad.stderr

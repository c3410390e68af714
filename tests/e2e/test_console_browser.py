"""The web console (`GET /console`) served by Freshet, playback in a real browser, and
the data-stream view (rates and chart from /metrics, the record tail) in a real browser.

The browser tests run `tests/browser/play.mjs` (Node + playwright-core) which drives
Debian's headless Chromium (/usr/bin/chromium) as a person would: open /console, press
the stream's "Live" button, or "From time…" then type the times and press "Play", and
sample `video.currentTime`. The page plays with the vendored hls.js (MSE).

Nothing here is skipped for a missing tool: node, Chromium and playwright-core are
installed by the test command (`scripts/deps.sh test`, `scripts/e2e.sh`), so a missing
one is a failure that says how to install it.
"""
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time

import pytest
import requests

from conftest import REPO_ROOT, freshet_bin, unique_name, wait_active

pytestmark = pytest.mark.freshet_only

ASSETS = REPO_ROOT / "assets"
SAMPLES = REPO_ROOT / "media-samples"
BROWSER_DIR = REPO_ROOT / "tests" / "browser"
PLAY = BROWSER_DIR / "play.mjs"
DATA = BROWSER_DIR / "data.mjs"
WORKERS = BROWSER_DIR / "workers.mjs"
TIMELINE = BROWSER_DIR / "timeline.mjs"
WALL = BROWSER_DIR / "wall.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# What the live producer sends (GStreamer's test pattern, 1 s GOPs like a camera).
WIDTH, HEIGHT, FPS = 320, 240, 25


# --------------------------------------------------------------------------
# The page and its files
# --------------------------------------------------------------------------

def test_console_page_and_its_files_are_served(endpoint):
    page = requests.get(endpoint + "/console", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-cache"
    assert "<video" in page.text and 'id="streams"' in page.text
    # Everything the page loads comes from this server (works offline, no CDN).
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs and all(r.startswith("/console/") for r in refs), refs
    want_types = {
        "/console/console.js": "text/javascript; charset=utf-8",
        "/console/console-streams.js": "text/javascript; charset=utf-8",
        "/console/console-workers.js": "text/javascript; charset=utf-8",
        "/console/console-timeline.js": "text/javascript; charset=utf-8",
        "/console/console-wall.js": "text/javascript; charset=utf-8",
        "/console/console.css": "text/css; charset=utf-8",
        "/console/console-icon.svg": "image/svg+xml",
        "/console/vendor/hls.min.js": "text/javascript; charset=utf-8",
    }
    assert set(refs) == set(want_types), refs
    for ref, ctype in want_types.items():
        r = requests.get(endpoint + ref, timeout=10)
        assert r.status_code == 200, ref
        assert r.headers["Content-Type"] == ctype, ref
        assert r.headers["Cache-Control"] == "no-cache", ref
        assert r.headers["X-Content-Type-Options"] == "nosniff", ref

    # The vendored hls.js is served byte for byte, with its licence.
    hls = requests.get(endpoint + "/console/vendor/hls.min.js", timeout=10)
    vendored = (ASSETS / "vendor" / "hls.min.js").read_bytes()
    assert hashlib.sha256(hls.content).hexdigest() == hashlib.sha256(vendored).hexdigest()
    lic = requests.get(endpoint + "/console/vendor/hls.js-LICENSE", timeout=10)
    assert lic.status_code == 200 and lic.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Apache License" in lic.text

    # Revalidation: the ETag gives 304 without a body.
    etag = hls.headers["ETag"]
    again = requests.get(endpoint + "/console/vendor/hls.min.js", headers={"If-None-Match": etag}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag

    missing = requests.get(endpoint + "/console/nothing.js", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"


def test_root_sends_browsers_to_the_console(endpoint):
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"  # a browser's
    r = requests.get(endpoint + "/", headers={"Accept": accept}, allow_redirects=False, timeout=10)
    assert r.status_code == 302
    assert r.headers["Location"] == "/console"
    followed = requests.get(endpoint + "/", headers={"Accept": accept}, timeout=10)
    assert followed.status_code == 200 and followed.url == endpoint + "/console"
    assert "<video" in followed.text
    # Other clients keep the plain-text banner.
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "text/plain"}):
        r = requests.get(endpoint + "/", headers=headers, allow_redirects=False, timeout=10)
        assert r.status_code == 200, headers
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert r.text.startswith("Freshet ")


# --------------------------------------------------------------------------
# Playback in Chromium
# --------------------------------------------------------------------------

def browser_tools() -> str:
    """node, Chromium and playwright-core, or a failure saying how to install them."""
    missing = []
    node = shutil.which("node")
    if not node:
        missing.append("node (apt-get install nodejs npm; `scripts/deps.sh test` does it)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium; `scripts/deps.sh test` does it)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        missing.append("playwright-core (npm ci --prefix tests/browser; `scripts/e2e.sh` does it)")
    if missing:
        pytest.fail("the browser tests need: " + "; ".join(missing))
    return node


def run_script(script, *args, timeout: float) -> tuple[int, dict]:
    """Runs one of the tests/browser scripts with node; returns (exit code, its JSON
    result), or fails with its output when it printed none."""
    node = browser_tools()
    p = subprocess.run([node, str(script), *(str(a) for a in args), "--chromium", CHROMIUM],
                       capture_output=True, text=True, timeout=timeout, cwd=BROWSER_DIR)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"{script.name} exited {p.returncode} without a JSON result\n"
                             f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}") from None


def play(endpoint: str, stream: str, mode: str, *times, seconds: float, min_advance: float):
    """Runs play.mjs; returns (exit code, its JSON result)."""
    code, result = run_script(PLAY, endpoint, stream, mode, *times, "--seconds", seconds,
                              "--min-advance", min_advance, timeout=seconds + 150)
    print(f"play.mjs {mode}: exit {code}, advance {result.get('advance')} s, "
          f"samples {[(s['t'], s['currentTime']) for s in result.get('samples', [])]}")
    return code, result


def summary(result: dict) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "sessionUrl"}, indent=1)[:6000]


def assert_played_cleanly(result: dict):
    assert result["engine"] == "hls.js", summary(result)
    assert result["videoError"] is None, summary(result)
    assert result["mediaErrors"] == [], summary(result)
    assert [e for e in result["hlsErrors"] if e["fatal"]] == [], summary(result)
    assert result["apiErrors"] == [] and result["pageErrors"] == [], summary(result)
    assert result["consoleErrors"] == [], summary(result)
    assert (result["videoWidth"], result["videoHeight"]) == (WIDTH, HEIGHT), summary(result)


def session_url(endpoint: str, body: dict) -> requests.Response:
    return requests.post(endpoint + "/getHLSStreamingSessionURL", json=body, timeout=10)


class LiveCamera:
    """A live camera: GStreamer's test pattern at real time (1 s GOPs), piped into
    `freshet video push -` (which creates the stream); 90 s at most. A context manager
    that stops both processes on exit."""

    def __init__(self, endpoint: str, name: str, log_path):
        self.endpoint, self.name, self.log_path = endpoint, name, log_path
        self.gst = subprocess.Popen(
            ["gst-launch-1.0", "-q", "videotestsrc", "is-live=true", f"num-buffers={90 * FPS}", "!",
             f"video/x-raw,width={WIDTH},height={HEIGHT},framerate={FPS}/1", "!",
             "x264enc", f"key-int-max={FPS}", "bframes=0", "tune=zerolatency", "!", "h264parse", "!",
             "video/x-h264,stream-format=avc", "!", "matroskamux", "streamable=true", "!", "fdsink"],
            stdout=subprocess.PIPE)
        with open(log_path, "wb") as log:
            self.push = subprocess.Popen([str(freshet_bin()), "video", "push", "-", "--stream", name,
                                          "--endpoint", endpoint], stdin=self.gst.stdout, stdout=log,
                                         stderr=subprocess.STDOUT)
        self.gst.stdout.close()

    def pushing(self) -> bool:
        return self.gst.poll() is None and self.push.poll() is None

    def live_session_url(self, timeout: float = 30) -> str:
        """Waits for the first fragment (LIVE answers once one arrived in the last 30 s)."""
        deadline = time.monotonic() + timeout
        while True:
            r = session_url(self.endpoint, {"StreamName": self.name, "PlaybackMode": "LIVE"})
            if r.status_code == 200:
                return r.json()["HLSStreamingSessionURL"]
            assert self.push.poll() is None, f"the producer stopped:\n{self.log_path.read_text()}"
            assert time.monotonic() < deadline, f"no LIVE session after {timeout} s: {r.status_code} {r.text}"
            time.sleep(0.2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.gst.terminate()
        self.gst.wait(timeout=30)
        try:
            self.push.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.push.kill()
            self.push.wait()


@pytest.mark.timeout(240)
def test_live_plays_in_chromium_while_a_producer_pushes(endpoint, tmp_path):
    browser_tools()
    name = unique_name("console-live")
    with LiveCamera(endpoint, name, tmp_path / "push.log") as camera:
        camera.live_session_url()
        code, result = play(endpoint, name, "live", seconds=6, min_advance=3)
        still_pushing = camera.pushing()
    assert code == 0, summary(result)
    assert still_pushing, "the producer ended before the browser had played"
    assert_played_cleanly(result)
    samples = result["samples"]
    assert samples[-1]["t"] - samples[0]["t"] >= 5.5, samples
    assert result["advance"] >= 3.0, samples
    # Live is not a replay of a finished stream: playback never ended.
    assert not result["ended"]


@pytest.mark.timeout(180)
def test_on_demand_plays_a_stored_clip_to_its_end(endpoint):
    browser_tools()
    name = unique_name("console-vod")
    start = math.floor(time.time()) - 1
    p = subprocess.run([str(freshet_bin()), "video", "push", str(SAMPLES / "h264-aac.kvs.mkv"),
                        "--stream", name, "--endpoint", endpoint],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count('"PERSISTED"') == 6, p.stdout
    end = math.ceil(time.time()) + 1

    code, result = play(endpoint, name, "ondemand", start, end, seconds=15, min_advance=4.5)
    assert code == 0, summary(result)
    assert_played_cleanly(result)
    assert result["advance"] >= 4.5, result["samples"]
    # The clip is 6 s (150 frames at 25 fps): played to its end.
    assert result["finalCurrentTime"] >= 5.0, result["samples"]
    assert result["ended"], result["samples"]


@pytest.mark.timeout(120)
def test_status_line_shows_the_api_error(endpoint):
    """LIVE on a stream nothing was pushed to: the page shows the server's error
    (x-amzn-ErrorType and Message), and play.mjs reports the failure."""
    browser_tools()
    name = unique_name("console-empty")
    r = requests.post(endpoint + "/createStream", json={"StreamName": name, "DataRetentionInHours": 1},
                      timeout=10)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 10
    while requests.post(endpoint + "/describeStream", json={"StreamName": name},
                        timeout=10).json()["StreamInfo"]["Status"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    want = session_url(endpoint, {"StreamName": name, "PlaybackMode": "LIVE"})
    assert want.status_code == 404
    assert want.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"

    code, result = play(endpoint, name, "live", seconds=1, min_advance=0)
    assert code == 1, summary(result)
    assert result["apiErrors"] == [{
        "operation": "getHLSStreamingSessionURL", "status": 404,
        "type": "ResourceNotFoundException", "message": want.json()["Message"]}], summary(result)
    assert "ResourceNotFoundException" in result["status"], result["status"]
    assert want.json()["Message"] in result["status"], result["status"]
    assert result["samples"] == [] and result["engine"] is None


@pytest.mark.timeout(300)
def test_video_wall_shows_every_camera_live_and_an_idle_one_without_signal(endpoint, tmp_path):
    """Two cameras pushing and one stream that receives nothing: the wall ("Wall" on the
    video streams panel) plays both cameras in their tiles at once, their video
    advancing with a decoded picture, marks the idle stream "No signal", and a click on
    a tile opens that camera live in the main player. The server holds the other tests'
    streams too, more than the wall's 16 tiles: the wall's filter narrows it to these
    three (their names share a tag), and no other stream is shown."""
    browser_tools()
    tag = unique_name("wall")
    names = [f"{tag}-a", f"{tag}-b"]
    idle = f"{tag}-idle"
    r = requests.post(endpoint + "/createStream", json={"StreamName": idle, "DataRetentionInHours": 1},
                      timeout=10)
    assert r.status_code == 200, r.text
    shot = tmp_path / "console-wall.png"
    with LiveCamera(endpoint, names[0], tmp_path / "a.log") as a, \
            LiveCamera(endpoint, names[1], tmp_path / "b.log") as b:
        a.live_session_url()
        b.live_session_url()
        code, result = run_script(WALL, endpoint, "--live", ",".join(names), "--idle", idle,
                                  "--filter", tag, "--seconds", 6, "--min-advance", 2, "--screenshot", shot, timeout=240)
        still_pushing = a.pushing() and b.pushing()
    assert code == 0, json.dumps(result, indent=1)[:6000]
    assert still_pushing, "a producer ended before the wall had played"
    for name in names:
        tile = result["tiles"][name]
        assert tile["status"] == "playing" and tile["advance"] >= 2, tile
        assert (tile["videoWidth"], tile["videoHeight"]) == (WIDTH, HEIGHT), tile
        assert result["labels"][name] == f"{name} live", result["labels"]
    assert result["tiles"][idle]["status"] == "no-signal", result["tiles"][idle]
    assert sorted(result["tiles"]) == sorted(names + [idle]), sorted(result["tiles"])
    assert result["labels"][idle] == f"{idle} No signal", result["labels"]
    assert result["player"]["stream"] == names[0] and result["player"]["mode"] == "LIVE", result["player"]
    assert result["pageErrors"] == [], result["pageErrors"]
    assert shot.exists() and shot.stat().st_size > 10_000


# --------------------------------------------------------------------------
# Data streams in Chromium
# --------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_data_stream_rates_chart_and_tail_update_while_records_are_put(endpoint, kinesis, tmp_path):
    """While a producer puts JSON records (some marked), the console lists the stream,
    shows a records/s figure above zero and a chart from /metrics, and its tail shows
    the marked records pretty-printed; the filter keeps only matching records."""
    name = unique_name("console-data")
    kinesis.create_stream(StreamName=name, ShardCount=2)
    wait_active(kinesis, name)
    marker = f"marker-{name}"
    stop = threading.Event()
    put = [0]

    def producer():
        i = 0
        while not stop.is_set():
            records = [{"Data": json.dumps({"marker": marker, "n": i, "detail": {"k": i % 7}}).encode(),
                        "PartitionKey": f"k{i}"},
                       {"Data": json.dumps({"other": i}).encode(), "PartitionKey": f"o{i}"}]
            kinesis.put_records(StreamName=name, Records=records)
            put[0] += len(records)
            i += 1
            stop.wait(0.1)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    shot = tmp_path / "console-data.png"
    try:
        code, result = run_script(DATA, endpoint, name, marker, "--seconds", 60,
                                  "--screenshot", shot, timeout=210)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert code == 0, json.dumps(result, indent=1)[:6000]
    data = result["data"]
    assert name in data["streams"]
    # The page's rate is from the server's counters: positive, and no more than what
    # was put over the whole run (20 records/s at most here, with slack for timing).
    assert 0 < data["rates"][name] < 200, data["rates"]
    assert data["tail"]["stream"] == name and data["tail"]["received"] > 0
    assert data["tail"]["received"] <= put[0]
    # Pretty-printed JSON: the nested object is on lines of its own.
    assert '"detail": {' in result["firstRecord"] or '"other":' in result["firstRecord"], result["firstRecord"]
    assert shot.exists() and shot.stat().st_size > 10_000


# --------------------------------------------------------------------------
# Delivery streams and analytics applications in Chromium
# --------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_delivery_and_analytics_status_with_the_last_error(endpoint, kinesis, tmp_path):
    """The console's workers panel lists a delivery stream that delivers (its records
    delivered, no error), one whose HTTP endpoint refuses connections (its last error,
    the text DescribeDeliveryStream gives), and a running analytics application with the
    records it has read: the figures from /metrics, the statuses from the same
    Firehose and Kinesis Analytics calls an SDK makes."""
    import boto3
    from botocore.config import Config
    from conftest import REGION, free_port, make_client, stream_arn, wait_for
    from test_analytics import FILTER_SQL, app_input, app_output, put_rows, start
    from test_firehose import s3_config
    from test_firehose_http import http_config

    cfg = Config(retries={"total_max_attempts": 2, "mode": "standard"})
    fh = boto3.client("firehose", endpoint_url=endpoint, region_name=REGION, config=cfg)
    ka = boto3.client("kinesisanalytics", endpoint_url=endpoint, region_name=REGION, config=cfg)
    good, bad = unique_name("console-fh"), unique_name("console-fh-down")
    fh.create_delivery_stream(DeliveryStreamName=good,
                              ExtendedS3DestinationConfiguration=s3_config("console-bucket", 1, 1))
    # Nothing listens on this port: every attempt fails to connect.
    fh.create_delivery_stream(DeliveryStreamName=bad, HttpEndpointDestinationConfiguration=http_config(
        f"http://127.0.0.1:{free_port()}/in", "console-backup", interval=0))
    for name in (good, bad):
        wait_for(lambda n=name: fh.describe_delivery_stream(DeliveryStreamName=n)
                 ["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE", 20, f"{name} ACTIVE")
    assert fh.put_record_batch(DeliveryStreamName=good, Records=[{"Data": b"line %d\n" % i} for i in range(40)]
                               )["FailedPutCount"] == 0
    fh.put_record(DeliveryStreamName=bad, Record={"Data": b"undeliverable\n"})
    failure = wait_for(lambda: fh.describe_delivery_stream(DeliveryStreamName=bad)
                       ["DeliveryStreamDescription"].get("FailureDescription"), 30, "the failing stream's error")

    source, dest = unique_name("console-src"), unique_name("console-dst")
    for s in (source, dest):
        kinesis.create_stream(StreamName=s, ShardCount=1)
        wait_active(kinesis, s)
    app = unique_name("console-app")
    ka.create_application(ApplicationName=app, ApplicationCode=FILTER_SQL, Inputs=[app_input(source)],
                          Outputs=[app_output(dest)])
    start(ka, app)
    put_rows(kinesis, source, [{"TICKER_SYMBOL": "AMZN", "SECTOR": "TECHNOLOGY", "CHANGE": 1.5, "PRICE": 10.0 + i}
                               for i in range(25)])

    expect = tmp_path / "expect.json"
    expect.write_text(json.dumps({
        "delivery": {good: {"status": "ACTIVE", "minDelivered": 40, "error": None},
                     bad: {"status": "ACTIVE", "minDelivered": 0, "error": failure["Details"][:60]}},
        "analytics": {app: {"status": "RUNNING", "minRead": 25}},
    }))
    shot = tmp_path / "console-workers.png"
    code, result = run_script(WORKERS, endpoint, expect, "--seconds", 60, "--screenshot", shot, timeout=210)
    assert code == 0, json.dumps(result, indent=1)[:6000]
    rows = result["rows"]
    assert rows["delivery"][good]["destination"] == "S3 console-bucket/", rows["delivery"][good]
    assert rows["delivery"][good]["source"] == "Direct PUT"
    assert rows["delivery"][bad]["destination"].startswith("HTTP http://127.0.0.1:")
    assert result["workers"]["delivery"][bad]["failures"] >= 1
    assert result["workers"]["analytics"][app]["read"] >= 25
    assert shot.exists() and shot.stat().st_size > 10_000
    ka.stop_application(ApplicationName=app)
    for name in (good, bad):
        fh.delete_delivery_stream(DeliveryStreamName=name)


# --------------------------------------------------------------------------
# A video stream's timeline in Chromium
# --------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_timeline_plays_from_a_click_and_exports_a_clip_that_decodes(endpoint, tmp_path):
    """The timeline of a stored clip draws every fragment ListFragments lists; a click on
    it plays from there (LIVE_REPLAY, the video advancing); "Export MP4" downloads a
    GetClip of the range it shows, which ffprobe reads as the clip's H.264 video."""
    browser_tools()
    name = unique_name("console-timeline")
    p = subprocess.run([str(freshet_bin()), "video", "push", str(SAMPLES / "h264-1s-gop.kvs.mkv"),
                        "--stream", name, "--endpoint", endpoint],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count('"PERSISTED"') == 6, p.stdout
    clip = tmp_path / "clip.mp4"
    shot = tmp_path / "console-timeline.png"
    code, result = run_script(TIMELINE, endpoint, name, 6, clip, "--seconds", 60, "--screenshot", shot,
                              timeout=210)
    assert code == 0, json.dumps(result, indent=1)[:6000]
    timeline = result["timeline"]
    assert timeline["stream"] == name and timeline["fragments"] == 6
    assert timeline["from"] <= result["player"]["clicked"] <= timeline["to"]
    assert result["download"]["suggested"].startswith(name) and result["download"]["suggested"].endswith(".mp4")
    assert timeline["clip"]["bytes"] == clip.stat().st_size > 10_000
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,nb_read_frames",
                            "-count_frames", "-show_entries", "format=format_name", "-of", "json", str(clip)],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    info = json.loads(probe.stdout)
    assert "mp4" in info["format"]["format_name"]
    (video,) = [s for s in info["streams"] if s["codec_name"] == "h264"]
    # The whole clip: 150 frames (6 s at 25 fps).
    assert int(video["nb_read_frames"]) == 150, video
    assert shot.exists() and shot.stat().st_size > 10_000

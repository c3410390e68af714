"""Cross-origin use from browsers (CORS).

- hls.js on a page of another origin (a user's own site) plays LIVE and ON_DEMAND HLS
  session URLs in headless Chromium (tests/browser/cross_origin.mjs);
- the same page's fetch to the Kinesis API (it needs a preflight) succeeds from an
  origin in `--cors-origin` and fails from any other one, which the server refuses with
  403 before doing anything, even for requests a browser sends without a preflight.
"""
import json
import math
import subprocess
import time

import pytest
import requests

from conftest import REPO_ROOT, free_port, freshet_bin, unique_name
from test_console_browser import LiveCamera, browser_tools, run_script

pytestmark = pytest.mark.freshet_only

SAMPLES = REPO_ROOT / "media-samples"
SCRIPT = REPO_ROOT / "tests" / "browser" / "cross_origin.mjs"


def page_run(page_port: int, endpoint: str, hls_url: str, tmp_path, *, seconds: float) -> dict:
    shot = tmp_path / f"cross-origin-{page_port}.png"
    code, result = run_script(SCRIPT, page_port, endpoint, hls_url, "--seconds", seconds,
                              "--screenshot", shot, timeout=seconds + 150)
    assert code == 0, json.dumps(result, indent=1)[:4000]
    return result


def hls_url(endpoint: str, body: dict) -> requests.Response:
    return requests.post(endpoint + "/getHLSStreamingSessionURL", json=body, timeout=10)


def assert_played(result: dict, min_advance: float):
    assert [e for e in result["hlsErrors"] if e.get("fatal") or "play" in e] == [], result
    assert result["advance"] is not None and result["advance"] >= min_advance, result["samples"]


@pytest.fixture
def page_ports():
    allowed = free_port()
    other = free_port()
    while other == allowed:
        other = free_port()
    return allowed, other


@pytest.mark.timeout(300)
def test_hls_plays_from_another_origin_and_only_allowed_origins_call_the_api(start_server, page_ports,
                                                                              tmp_path):
    allowed, other = page_ports
    server = start_server(extra_args=["--cors-origin", f"http://127.0.0.1:{allowed}"])
    ep = server.endpoint

    # ON_DEMAND: a stored clip.
    name = unique_name("cors-vod")
    start = math.floor(time.time()) - 1
    p = subprocess.run([str(freshet_bin()), "video", "push", str(SAMPLES / "h264-aac.kvs.mkv"),
                        "--stream", name, "--endpoint", ep], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    r = hls_url(ep, {"StreamName": name, "PlaybackMode": "ON_DEMAND", "HLSFragmentSelector": {
        "FragmentSelectorType": "SERVER_TIMESTAMP",
        "TimestampRange": {"StartTimestamp": start, "EndTimestamp": math.ceil(time.time()) + 1}}})
    assert r.status_code == 200, r.text
    vod = r.json()["HLSStreamingSessionURL"]

    result = page_run(allowed, ep, vod, tmp_path, seconds=15)
    assert_played(result, 4.5)
    assert result["ended"], result["samples"]
    assert result["api"]["ok"] and result["api"]["status"] == 200, result["api"]
    assert result["api"]["requestId"], result["api"]  # exposed to the page
    assert '"StreamNames"' in result["api"]["body"], result["api"]

    # Another origin plays the same capability URL, but cannot drive the API.
    result = page_run(other, ep, vod, tmp_path, seconds=4)
    assert_played(result, 2)
    assert not result["api"]["ok"] and result["api"]["status"] is None, result["api"]
    assert "Failed to fetch" in result["api"]["error"], result["api"]
    assert "cross-origin request refused" in server.log_text()


@pytest.mark.timeout(300)
def test_live_hls_plays_from_another_origin(start_server, page_ports, tmp_path):
    allowed, _ = page_ports
    server = start_server()
    ep = server.endpoint
    browser_tools()
    with LiveCamera(ep, unique_name("cors-live"), tmp_path / "push.log") as camera:
        result = page_run(allowed, ep, camera.live_session_url(), tmp_path, seconds=6)
        still_pushing = camera.pushing()
    assert still_pushing
    assert_played(result, 3)
    assert not result["ended"]
    # No --cors-origin: the API refuses this page's origin.
    assert not result["api"]["ok"], result["api"]


def test_preflights_and_refusals_on_the_wire(start_server):
    server = start_server(extra_args=["--cors-origin", "https://app.example.com",
                                      "--cors-playback-origin", "https://player.example.com"])
    ep = server.endpoint
    pre = requests.options(ep + "/", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-amz-date,x-amz-target,x-amz-user-agent"},
        timeout=10)
    assert pre.status_code == 200
    assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert pre.headers["Access-Control-Max-Age"] == "172800"
    assert "x-amz-target" in pre.headers["Access-Control-Allow-Headers"]
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]

    # The video control plane without a preflight (a "simple" request a page can send):
    # refused before it runs, so the stream is still there.
    name = unique_name("cors-keep")
    assert requests.post(ep + "/createStream", json={"StreamName": name}, timeout=10).status_code == 200
    r = requests.post(ep + "/deleteStream", data=json.dumps({"StreamName": name}),
                      headers={"Origin": "https://evil.example", "Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"] == "AccessDeniedException"
    assert "Access-Control-Allow-Origin" not in r.headers
    assert requests.post(ep + "/describeStream", json={"StreamName": name}, timeout=10).status_code == 200

    # The REST API, too.
    r = requests.post(ep + "/v1/streams/x/records", data="[]",
                      headers={"Origin": "https://evil.example"}, timeout=10)
    assert r.status_code == 403

    # Playback URLs answer their configured origin, whoever asks.
    pre = requests.options(ep + "/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=x", headers={
        "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"}, timeout=10)
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "https://player.example.com"
    r = requests.get(ep + "/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=x",
                     headers={"Origin": "https://elsewhere.example"}, timeout=10)
    assert r.status_code >= 400  # a bad token, but still readable by the player's page
    assert r.headers["Access-Control-Allow-Origin"] == "https://player.example.com"
    assert "x-amzn-ErrorType" in r.headers["Access-Control-Expose-Headers"]

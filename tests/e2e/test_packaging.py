"""The systemd unit (packaging/freshet.service).

These machines do not run systemd as PID 1, so the unit is not started by systemd here.
What is checked instead: `systemd-analyze verify` accepts it (directives, paths, the
ExecStart command), `systemd-analyze security --offline` rates its sandbox at or below
an exposure of 2.0, and its ExecStart run directly with the unit's own Environment
(data directory and port moved to a temporary place) serves, becomes ready, logs JSON,
and exits 0 on the unit's KillSignal within its TimeoutStopSec.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import REPO_ROOT, free_port, freshet_bin, wait_for

pytestmark = [pytest.mark.freshet_only, pytest.mark.dedicated_server]

UNIT = REPO_ROOT / "packaging" / "freshet.service"


def service_section() -> list[tuple[str, str]]:
    out, section = [], None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with its ExecStart binary pointed at the binary under test."""
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/freshet " in text
    copy = tmp_path / "freshet.service"
    copy.write_text(text.replace("/usr/local/bin/freshet", str(freshet_bin().resolve())))
    return copy


def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (scripts/deps.sh test installs systemd)")
    return tool


def test_systemd_accepts_the_unit(tmp_path):
    unit = unit_for_this_machine(tmp_path)
    p = subprocess.run([analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
    p = subprocess.run([analyze(), "security", "--offline=yes", "--threshold=20", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    assert "Overall exposure level for freshet.service" in p.stdout


def test_exec_start_serves_and_stops_cleanly_on_the_kill_signal(tmp_path):
    settings = service_section()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    for key, value in settings:
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
    assert env["FRESHET_DATA_DIR"] == "/var/lib/freshet"
    assert dict(settings)["StateDirectory"] == "freshet", "the data directory is the unit's state directory"
    port = free_port()
    env["FRESHET_DATA_DIR"] = str(tmp_path / "state")
    env["FRESHET_LISTEN"] = f"127.0.0.1:{port}"
    argv = shlex.split(dict(settings)["ExecStart"])
    assert argv[0] == "/usr/local/bin/freshet"
    argv[0] = str(freshet_bin())
    kill = getattr(signal, dict(settings)["KillSignal"])
    stop_timeout = float(dict(settings)["TimeoutStopSec"])

    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def ready():
            assert proc.poll() is None, (tmp_path / "log").read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_for(ready, 30, "the unit's server ready")
        t0 = time.monotonic()
        proc.send_signal(kill)
        assert proc.wait(stop_timeout) == 0
        assert time.monotonic() - t0 < stop_timeout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    lines = [json.loads(l) for l in (tmp_path / "log").read_text().splitlines() if l.startswith("{")]
    assert lines and all("level" in l for l in lines), "the unit asks for JSON logs"
    assert (tmp_path / "state").is_dir()

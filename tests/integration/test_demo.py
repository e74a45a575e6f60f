"""`make run`'s demo (python -m detector.demo) against the session broker: alerts are printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.realdb]


def test_demo_prints_the_london_to_new_york_alert_and_stops_on_ctrl_c(
    kafka_bootstrap: str, real_db: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "detector.demo",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--geoip-db",
            real_db,
            "--metrics-port",
            str(free_port()),
            "--rate",
            "400",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "London, GB -> New York, US" in line:
                break
        assert any("London, GB -> New York, US" in x and "km/h" in x for x in lines), "".join(lines)
        assert any("metrics at http://127.0.0.1:" in x for x in lines)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        code = proc.wait(30)
        rest = proc.stdout.read()
        assert code == 0, rest  # (what it printed after Ctrl-C says why)
        assert "Traceback" not in "".join(lines) + rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

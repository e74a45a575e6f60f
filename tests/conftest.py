"""Shared fixtures. Broker fixtures live in tests/integration/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from detector.localkafka import LocalKafka, broker_answers, free_port
from detector.testing import build_city_db

ROOT = Path(__file__).resolve().parent.parent
REAL_DB = ROOT / ".cache" / "geoip" / "GeoLite2-City.mmdb"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def city_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small GeoLite2-City-layout database of real cities (see detector.testing.PLACES)."""
    return build_city_db(str(tmp_path_factory.mktemp("geo") / "test-city.mmdb"))


@pytest.fixture(scope="session")
def real_db() -> str:
    """The real GeoLite2-City database from `make geoip` (required in CI, skipped elsewhere if absent)."""
    if not REAL_DB.exists():
        if IN_CI:
            pytest.fail(f"{REAL_DB} is missing: CI must run `make geoip` first")
        pytest.skip("run `make geoip` for the real-database tests")
    return str(REAL_DB)


def run_cli(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m detector ...` as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "detector", *args],
        input=stdin,
        capture_output=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )


# -- the real broker, shared by every test that needs one ---------------------------------------------
#
# KAFKA_BOOTSTRAP_SERVERS when set, else a local Apache Kafka started for the session (see
# detector.localkafka). Readiness is a metadata request, never a sleep. With CI=true a broker test
# never skips: it fails.


def _need_tools() -> None:
    missing = [tool for tool in ("java", "mvn") if not shutil.which(tool)]
    if missing:
        message = f"a local Kafka broker needs {', '.join(missing)}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        deadline = time.monotonic() + 60
        while not broker_answers(given):
            if time.monotonic() > deadline:
                pytest.fail(f"KAFKA_BOOTSTRAP_SERVERS={given} does not answer")
            time.sleep(0.5)
        yield given
        return
    _need_tools()
    broker = LocalKafka(name=f"pytest-{os.getpid()}", port=free_port())
    broker.up(timeout_s=180)
    try:
        yield broker.bootstrap
    finally:
        broker.wipe()

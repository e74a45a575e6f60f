"""Shared fixtures. Broker fixtures live in tests/integration/conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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

"""Fixtures for the deployment tests: where deploy/ is, promtool and prometheus, a real broker.

The broker is the session fixture ``kafka_bootstrap`` of tests/conftest.py, shared with the integration
tests. ``topics`` and ``detectors`` are the fixtures of tests/integration/conftest.py, imported so that
pytest finds them for this directory (fixtures of a sibling directory are not visible).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI, ROOT
from tests.integration.conftest import detectors, topics

__all__ = ["detectors", "topics"]

DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
KUBERNETES_DIR = DEPLOY / "kubernetes"
GRAFANA_DIR = DEPLOY / "grafana"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD = GRAFANA_DIR / "dashboards" / "impossible-travel.json"


def fail_or_skip(message: str) -> None:
    """In CI a missing tool fails the test (it must never pass by skipping); elsewhere it skips."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def need_tool(name: str) -> str:
    """The path of a Prometheus tool (Debian package `prometheus`, which .ci/run installs)."""
    path = shutil.which(name)
    if path is None:
        fail_or_skip(f"{name} is not on PATH (apt-get install prometheus)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return need_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return need_tool("prometheus")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]

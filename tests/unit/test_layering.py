"""The core never imports an adapter: checked on the source, so a stray import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "detector"

# Who may import whom: model <- geo <- rules <- state <- engine; codec sits beside rules.
CORE = {
    "errors": set(),
    "model": set(),
    "geo": {"model"},  # (its C speedups, which model loads)
    "rules": {"model", "geo"},
    "statecodec": {"model"},
    "state": {"model", "statecodec"},
    "reorder": {"model"},
    "codec": {"errors", "model"},
    "engine": {"model", "rules", "state", "geo", "errors", "codec"},
}
THIRD_PARTY_ALLOWED = {"numpy", "geopy", "geographiclib", "orjson"}
FORBIDDEN = {"kafka", "prometheus_client", "geoip2", "maxminddb"}


def imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_imports_only_the_core_below_it(module: str) -> None:
    for name in imports(module):
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{module} imports {name}"
        if top == "detector":
            inner = name.split(".")[1] if "." in name else ""
            assert inner in CORE[module], f"core module {module} imports detector.{inner}"


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """Guard against a checker that passes everything."""
    source = "import os\nfrom detector.kafka import x\nimport prometheus_client\n"
    tree = ast.parse(source)
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "prometheus_client" in names and "detector.kafka" in names


def test_every_module_is_classified() -> None:
    """A new module is either core (listed above) or an adapter; adapters are never imported by the core."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    adapters = modules - set(CORE)
    for module in CORE:
        for name in imports(module):
            if name.startswith("detector."):
                assert name.split(".")[1] not in adapters

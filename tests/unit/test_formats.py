"""Native formats against fixtures written from the vendors' public documentation, independently of
the adapters (tests/fixtures/formats/SOURCES.md), with their answer key (expected.json)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from detector.config import resolve
from detector.formats import Normalizer, NotASignIn, Outcome, SyslogClock
from detector.formats.mapping import FieldMapping
from detector.model import utc_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
DOCUMENTS = [
    "entra-graph-page.json",
    "entra-eventhub.json",
    "okta-page.json",
    "cloudtrail.json",
    "gworkspace-page.json",
]
LINES = ["entra-eventhub-lines.jsonl", "sshd.log", "mixed.jsonl", "mapping.jsonl"]


def mapping() -> FieldMapping:
    table = tomllib.loads((FIXTURES / "mapping.toml").read_text())["mapping"]
    settings = resolve({f"mapping_{k}": v for k, v in table.items()}, environ={})
    found = FieldMapping.from_settings(settings)
    assert found is not None
    return found


def normalizer(fmt: str = "auto", with_mapping: bool = False) -> Normalizer:
    n = Normalizer(fmt, mapping=mapping() if with_mapping else None)
    n.syslog = SyslogClock.make(2024, "UTC", None, 0.0)
    return n


def outcomes(name: str, n: Normalizer) -> list[Outcome]:
    raw = (FIXTURES / name).read_bytes()
    if name in DOCUMENTS:
        return list(n.records(raw, document=True))
    return [o for line in raw.splitlines() if line.strip() for o in n.records(line)]


def as_expected(o: Outcome) -> dict[str, Any]:
    if o.error is not None:
        return {"none" if isinstance(o.error, NotASignIn) else "reject": o.error.reason}
    signins = [
        {
            "user": s.user,
            "ip": s.ip,
            "timestamp": utc_text(s.time),
            "outcome": "success" if s.success else "failure",
        }
        for s in o.signins
    ]
    return {"signin": signins[0]} if len(signins) == 1 else {"signins": signins}


def kind(entry: dict[str, Any]) -> Any:
    """An expected entry, reasons left out (their wording is ours to choose)."""
    key = next(iter(entry))
    return (key, entry[key]) if key in ("signin", "signins") else (key,)


@pytest.mark.parametrize("name", DOCUMENTS + LINES)
def test_every_record_normalises_as_the_answer_key_says(name: str) -> None:
    got = [as_expected(o) for o in outcomes(name, normalizer(with_mapping=name == "mapping.jsonl"))]
    expected = EXPECTED[name]
    assert len(got) == len(expected), f"{name}: {len(got)} records, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert kind(g) == kind(e), f"{name} record {i}: got {g}, expected {e}"


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("entra-graph-page.json", "entra"),
        ("okta-page.json", "okta"),
        ("cloudtrail.json", "cloudtrail"),
        ("gworkspace-page.json", "gworkspace"),
    ],
)
def test_a_fixed_format_gives_the_same_as_detection(name: str, fmt: str) -> None:
    fixed = [kind(as_expected(o)) for o in outcomes(name, normalizer(fmt))]
    auto = [kind(as_expected(o)) for o in outcomes(name, normalizer("auto"))]
    assert fixed == auto


def test_a_fixed_format_refuses_other_formats_records() -> None:
    line = (FIXTURES / "mixed.jsonl").read_bytes().splitlines()[0]
    (o,) = normalizer("okta").records(line)
    assert o.error is not None and not o.signins


def test_vendor_geolocation_is_carried_when_present() -> None:
    o = outcomes("entra-graph-page.json", normalizer())[0]
    (s,) = o.signins
    assert s.vendor_location is not None and s.vendor_location.source == "entra"
    assert -90 <= s.vendor_location.latitude <= 90

"""The JSON Schemas are valid 2020-12 schemas, and what the code accepts and emits agrees with them."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from detector.codec import alert_to_dict, decode_event, encode_alert
from detector.errors import InvalidEvent
from detector.model import Location, SignIn
from detector.rules import Policy, evaluate

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


EVENT = validator("signin-event.schema.json")
ALERT = validator("alert.schema.json")

VALID_EVENTS = [
    {"user": "a", "ip": "81.2.69.10", "timestamp": "2024-03-01T10:00:00Z"},
    {
        "user": "a",
        "ip": "::ffff:81.2.69.10",
        "timestamp": "2024-03-01T10:00:00.1234567+05:30",
        "event_id": "x",
    },
    {"user": "a", "ip": "81.2.69.10:443", "timestamp": 1709287200, "outcome": "failure"},
    {"user": "a", "ip": "[2001:db8::1]:443", "timestamp": 1709287200000, "event_id": 7, "outcome": "SUCCESS"},
    {"user": "a", "ip": "2a02:c7f::1", "timestamp": "2024-03-01 10:00:00z", "extra": {"k": [1]}},
]
INVALID_EVENTS = [
    {"ip": "81.2.69.10", "timestamp": "2024-03-01T10:00:00Z"},
    {"user": "", "ip": "81.2.69.10", "timestamp": "2024-03-01T10:00:00Z"},
    {"user": "a", "ip": "nope", "timestamp": "2024-03-01T10:00:00Z"},
    {"user": "a", "ip": "81.2.69.10", "timestamp": "2024-03-01T10:00:00"},
    {"user": "a", "ip": "81.2.69.10", "timestamp": 5},
    {"user": "a", "ip": "81.2.69.10", "timestamp": "2024-03-01T10:00:00Z", "outcome": "maybe"},
    {"user": "x" * 513, "ip": "81.2.69.10", "timestamp": "2024-03-01T10:00:00Z"},
]


@pytest.mark.parametrize("doc", VALID_EVENTS)
def test_valid_events_pass_schema_and_decoder(doc: dict) -> None:
    EVENT.validate(doc)
    decode_event(orjson.dumps(doc))


@pytest.mark.parametrize("doc", INVALID_EVENTS)
def test_invalid_events_fail_schema_and_decoder(doc: dict) -> None:
    assert not EVENT.is_valid(doc)
    with pytest.raises(InvalidEvent):
        decode_event(orjson.dumps(doc))


def _alert(seconds_apart: float) -> dict:
    lon = Location(51.5074, -0.1278, 10, "GB", "London")
    ny = Location(40.7128, -74.0060, 20, "US", None, coarse=True)
    first = SignIn("alice", "81.2.69.10", 1709287200.0, "a")
    second = SignIn("alice", "4.7.5.10", 1709287200.0 + seconds_apart, "b")
    state = evaluate(None, first, lon, Policy(), 1709287300.5).state
    (alert,) = evaluate(state, second, ny, Policy(), 1709287300.5).alerts
    return alert_to_dict(alert)


@pytest.mark.parametrize("seconds", [0, 0.25, 300, 3600])
def test_emitted_alerts_validate(seconds: float) -> None:
    doc = _alert(seconds)
    ALERT.validate(doc)


def test_alert_schema_rejects_what_it_should() -> None:
    doc = _alert(300)
    for broken in (
        {**doc, "severity": "extreme"},
        {k: v for k, v in doc.items() if k != "alert_id"},
        {**doc, "detected_at": "yesterday"},
        {**doc, "speed_kmh": -1},
    ):
        assert not ALERT.is_valid(broken)


def test_encoded_alert_is_compact_single_line_json() -> None:
    lon = Location(51.5074, -0.1278, 10, "GB", "London")
    first = SignIn("alice", "81.2.69.10", 1709287200.0, "a")
    state = evaluate(None, first, lon, Policy(), 0).state
    (alert,) = evaluate(
        state,
        SignIn("alice", "4.7.5.10", 1709287500.0, "b"),
        Location(40.7128, -74.0060, 20, "US", "New York"),
        Policy(),
        0,
    ).alerts
    raw = encode_alert(alert)
    assert b"\n" not in raw
    assert raw == json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode()
    ALERT.validate(orjson.loads(raw))

"""The check of issue 9: thousands of hostile lines mixed into the held-out clear-cut set. `replay` exits
0 without a traceback, rejects each hostile line with a reason, and still gives exactly the labelled
alerts (over the real GeoLite2-City database)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.codec import reason_code
from detector.traffic import Traffic, score
from tests.conftest import run_cli

pytestmark = pytest.mark.realdb

HOSTILE_LINES = 3000
SEED = 9


def _event(rng: random.Random, events: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(rng.choice(events))


def _with(field: str, value: Any) -> Callable[[random.Random, list[dict[str, Any]]], bytes]:
    def make(rng: random.Random, events: list[dict[str, Any]]) -> bytes:
        ev = _event(rng, events)
        ev[field] = value(rng) if callable(value) else value
        return orjson.dumps(ev)

    return make


def _random_bytes(rng: random.Random, _: list[dict[str, Any]]) -> bytes:
    data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))).replace(b"\n", b"\xff")
    return data if data.strip() else b"\xff"


def _invalid_utf8(rng: random.Random, events: list[dict[str, Any]]) -> bytes:
    raw = orjson.dumps(_event(rng, events))
    at = raw.index(b'"user":"') + 8
    return raw[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]) + raw[at:]


def _json_token(token: bytes) -> Callable[..., bytes]:
    def make(rng: random.Random, events: list[dict[str, Any]]) -> bytes:
        ev = _event(rng, events)
        ev["timestamp"] = "@@"
        return orjson.dumps(ev).replace(b'"@@"', token)

    return make


def _nested(rng: random.Random, events: list[dict[str, Any]]) -> bytes:
    depth = rng.randint(40, 5000)
    raw = orjson.dumps(_event(rng, events))
    return raw[:-1] + b',"n":' + b"[" * depth + b"]" * depth + b"}"


def _too_large(rng: random.Random, events: list[dict[str, Any]]) -> bytes:
    ev = _event(rng, events)
    ev["pad"] = "p" * rng.randint(70_000, 200_000)
    return orjson.dumps(ev)


def _truncated(rng: random.Random, events: list[dict[str, Any]]) -> bytes:
    raw = orjson.dumps(_event(rng, events))
    return raw[: rng.randint(1, len(raw) - 1)]


def _control_in_ip(rng: random.Random, events: list[dict[str, Any]]) -> bytes:
    ev = _event(rng, events)
    ip = str(ev["ip"])
    at = rng.randint(1, len(ip) - 1)  # inside: white space around an address is only trimmed
    ev["ip"] = ip[:at] + rng.choice(["\n", "\x00", "\x1b[2J", "\u2028", "\r", "\x7f", "\x9b"]) + ip[at:]
    return orjson.dumps(ev)


def _missing(rng: random.Random, events: list[dict[str, Any]]) -> bytes:
    ev = _event(rng, events)
    del ev[rng.choice(["user", "ip", "timestamp"])]
    return orjson.dumps(ev)


KINDS: dict[str, Callable[[random.Random, list[dict[str, Any]]], bytes]] = {
    "random bytes": _random_bytes,
    "invalid UTF-8": _invalid_utf8,
    "NaN": _json_token(b"NaN"),
    "Infinity": _json_token(b"-Infinity"),
    "huge number": _json_token(b"1" + b"0" * 400),
    "1e400": _json_token(b"1e400"),
    "deep nesting": _nested,
    "too large": _too_large,
    "truncated": _truncated,
    "control characters in the ip": _control_in_ip,
    "missing field": _missing,
    "user of the wrong type": _with("user", lambda r: r.choice([7, 1.5, True, [], {}, None, ["a"]])),
    "ip of the wrong type": _with("ip", lambda r: r.choice([1, 0.0, False, ["81.2.69.142"], {}])),
    "timestamp of the wrong type": _with("timestamp", lambda r: r.choice([True, [], {}, "soon", ""])),
    "timestamp out of range": _with("timestamp", lambda r: r.choice([0, -1, 10**17, "1970-01-01T00:00:00Z"])),
    "impossible date": _with("timestamp", "2024-02-30T10:00:00Z"),
    "outcome of the wrong kind": _with("outcome", lambda r: r.choice(["maybe", 1, [], "succes"])),
    "user too long": _with("user", lambda r: "u" * r.randint(513, 5000)),
    "blank user": _with("user", lambda r: r.choice(["", " ", "\t\r\n"])),
    "event_id of the wrong type": _with("event_id", lambda r: r.choice([[], {}, 1.5, ""])),
    "not an object": lambda r, _: r.choice([b"[1, 2, 3]", b'"text"', b"42", b"null", b"true", b"[]"]),
    "empty": lambda r, _: r.choice([b"", b"   ", b"\t", b"\r"]),
    "unknown format": lambda r, _: orjson.dumps({"k\x1b]0;pwned\x07": r.random(), "other": "\n"}),
    "not a sign-in": lambda r, _: b"Mar  1 10:00:01 host sshd[7]: Connection closed by 81.2.69.142 port 22",
}


def hostile_lines(events: list[dict[str, Any]], n: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    names = sorted(KINDS)
    out = []
    for i in range(n):
        kind = names[i % len(names)]
        raw = KINDS[kind](rng, events)
        assert b"\n" not in raw
        out.append((kind, raw))
    rng.shuffle(out)
    return out


def test_replay_rejects_thousands_of_hostile_lines_and_gives_exactly_the_labelled_alerts(
    tmp_path: Path, real_db: str, clear_set: Traffic
) -> None:
    assert len(clear_set.events) > 1500 and len(clear_set.labels) >= 40
    hostile = hostile_lines(clear_set.events, HOSTILE_LINES, SEED)
    good = [orjson.dumps(e) for e in clear_set.events]
    # Hostile lines at random places; the valid events keep their order, the first line is valid.
    rng = random.Random(SEED)
    slots = sorted(rng.sample(range(1, len(good) + len(hostile)), len(hostile)))
    lines: list[bytes] = []
    kinds: dict[int, str] = {}
    g = h = 0
    for number in range(len(good) + len(hostile)):
        if h < len(slots) and slots[h] == number:
            kinds[number + 1] = hostile[h][0]
            lines.append(hostile[h][1])
            h += 1
        else:
            lines.append(good[g])
            g += 1
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out, rej = tmp_path / "alerts.jsonl", tmp_path / "rejects.jsonl"

    res = run_cli("replay", str(src), "--geoip-db", real_db, "--output", str(out), "--rejects", str(rej))

    assert res.returncode == 0, res.stderr[-2000:]
    assert b"Traceback" not in res.stderr
    # Every hostile line is rejected, once, with a reason; no valid line is.
    rejects = [json.loads(x) for x in rej.read_bytes().splitlines()]
    assert len(rejects) == HOSTILE_LINES
    assert {r["line"] for r in rejects} == set(kinds)
    assert all(r["reason"] and r["file"] == str(src) and len(r["raw"]) <= 1024 for r in rejects)
    summary = res.stderr.decode().strip().splitlines()[-1]
    assert f"{len(lines):,} events read, {HOSTILE_LINES:,} rejected" in summary, summary
    # Reasons are of the fixed vocabulary before the colon (what metrics count by), and never raw.
    codes = Counter(reason_code(r["reason"]) for r in rejects)
    assert set(codes) <= {
        "bad JSON",
        "not UTF-8",
        "too deeply nested",
        "too large",
        "bad user",
        "bad ip",
        "bad timestamp",
        "bad outcome",
        "bad event_id",
        "missing field",
        "not an object",
        "empty",
        "unknown format",
        "not a sign-in",
    }, codes
    assert not any(re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", r["reason"]) for r in rejects)
    assert b"\x1b" not in rej.read_bytes() and b"\x1b" not in res.stderr
    # And the detection is exactly what the clean set gives: every labelled alert, nothing else.
    alerts = [json.loads(x) for x in out.read_text().splitlines()]
    from tests.unit.test_schemas import ALERT

    for alert in alerts:
        ALERT.validate(alert)
    result = score(alerts, clear_set.labels)
    assert (result.precision, result.recall) == (1.0, 1.0), result
    assert len(alerts) == len(clear_set.labels)

"""Hostile input, generated: whatever bytes arrive, the decoders and every format adapter answer with a
sign-in or an ``InvalidEvent`` (never another exception), their reasons are safe to print and to count,
and a valid record in a batch of garbage still gives its sign-ins.

The generated inputs: random bytes, invalid UTF-8, JSON with numbers far out of range, NaN and Infinity
tokens, deep nesting, every field of the wrong type, very long strings, control characters, and mutations
(of values and of bytes) of the valid records of tests/fixtures/formats.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.codec import DEFAULT_LIMITS, decode_batch, decode_event, reason_code
from detector.config import resolve
from detector.errors import InvalidEvent
from detector.formats import FORMATS, MAX_REASON_CHARS, FieldMapping, Normalizer, Outcome, SyslogClock
from detector.identity import AccountIds
from detector.model import SignIn

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
DOCUMENTS = ["entra-graph-page.json", "entra-eventhub.json", "okta-page.json", "cloudtrail.json"]
DOCUMENTS += ["gworkspace-page.json"]
LINES = ["entra-eventhub-lines.jsonl", "mixed.jsonl", "mapping.jsonl"]

# The fixed part of every reason (what a metric label shows): never any of the input.
REASON_CODES = re.compile(
    r"bad [\w.]+|bad JSON|bad syslog line|missing field|not a sign-in|unknown format|too large|not UTF-8"
    r"|empty|too deeply nested|not an object|wrong kind|unreadable record"
)

# What must never be in a reason raw: control characters, line separators, bidirectional controls.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def field_mapping() -> FieldMapping:
    table = tomllib.loads((FIXTURES / "mapping.toml").read_text())["mapping"]
    found = FieldMapping.from_settings(resolve({f"mapping_{k}": v for k, v in table.items()}, environ={}))
    assert found is not None
    return found


MAPPING = field_mapping()


def normalizer(fmt: str, accounts: AccountIds | None = None) -> Normalizer:
    n = Normalizer(fmt, mapping=MAPPING, accounts=accounts)
    n.syslog = SyslogClock.make(2024, "UTC", None, 0.0)
    return n


def fixture_records() -> list[bytes]:
    """Every record of the fixtures as one line: JSON records compact, syslog lines as they are."""
    out: list[bytes] = []
    for name in DOCUMENTS:
        doc = orjson.loads((FIXTURES / name).read_bytes())
        for key in ("value", "records", "Records", "items"):
            if isinstance(doc, dict) and isinstance(doc.get(key), list):
                doc = doc[key]
        out += [orjson.dumps(item) for item in (doc if isinstance(doc, list) else [doc])]
    for name in LINES:
        out += [line for line in (FIXTURES / name).read_bytes().splitlines() if line.strip()]
    out += [line for line in (FIXTURES / "sshd.log").read_bytes().splitlines() if line.strip()]
    return out


def parsed(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # the fixtures hold broken records on purpose
        return None


RECORDS = fixture_records()
PARSED = [p for p in map(parsed, RECORDS) if isinstance(p, dict)]


def valid_for(fmt: str) -> list[tuple[bytes, list[SignIn]]]:
    """The fixture records that give sign-ins in ``fmt``, with those sign-ins (read alone)."""
    n = normalizer(fmt)
    out = []
    for raw in RECORDS:
        outcomes = list(n.records(raw))
        if outcomes and all(o.error is None and o.signins for o in outcomes):
            out.append((raw, [s for o in outcomes for s in o.signins]))
    return out


VALID = {fmt: valid_for(fmt) for fmt in FORMATS}


def test_every_format_has_valid_records_to_mix_in() -> None:
    assert all(len(VALID[fmt]) >= 3 for fmt in FORMATS), {f: len(v) for f, v in VALID.items()}


# -- hostile inputs -----------------------------------------------------------------------------------

CONTROL = st.sampled_from(
    ["\n", "\r", "\x00", "\x1b[31m", "\x1b]0;owned\x07", "\x7f", "\x85", "\x9b", "\u2028", "\u202e"]
)
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, c, b: a + c + b, st.text(max_size=10), CONTROL, st.text(max_size=10)),
    st.integers(1, 70_000).map(lambda n: "u" * n),
    st.sampled_from(["", " ", "\t\n", "NaN", "Infinity", "-Infinity", "1e400", "null", "\ud800", "30"]),
    st.sampled_from(["2024-02-30T10:00:00Z", "2024-03-01T25:00:00Z", "9999-12-31T23:59:59Z"]),
    st.sampled_from(["1.2.3.4", "999.1.1.1", "::ffff:1.2.3.4", "[::1]:99999", "1.2.3.4:0", "fe80::1%eth0"]),
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    HOSTILE_TEXT,
)
JSON_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8) | HOSTILE_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)


def dumps(value: Any) -> bytes:
    """JSON as a careless producer writes it: NaN, Infinity and 400-digit numbers included."""
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    inner = b'{"user": "a", "ip": "81.2.69.142", "timestamp": 1709287200}'
    return b'{"a": ' * depth + inner + b"}" * depth


CANONICAL_SHAPED = st.fixed_dictionaries(
    {"user": JSON_VALUE, "ip": JSON_VALUE, "timestamp": JSON_VALUE},
    optional={"event_id": JSON_VALUE, "outcome": JSON_VALUE, "vendor_location": JSON_VALUE},
).map(dumps)


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict) and value:
        return [prefix] + [p for k, v in value.items() for p in leaf_paths(v, (*prefix, k))]
    if isinstance(value, list) and value:
        return [prefix] + [p for i, v in enumerate(value) for p in leaf_paths(v, (*prefix, i))]
    return [prefix]


@st.composite
def mutated_value(draw: st.DrawFn) -> bytes:
    """A valid fixture record with one field (at any depth) replaced, removed or wrapped."""
    record = json.loads(json.dumps(draw(st.sampled_from(PARSED))))
    where = draw(st.sampled_from(leaf_paths(record)))
    if not where:
        return dumps(draw(JSON_VALUE))
    parent = record
    for step in where[:-1]:
        parent = parent[step]
    if draw(st.booleans()):  # the fields that say what a record is (and that reasons quote) first
        near = [p for p in leaf_paths(record) if 1 <= len(p) <= 2]
        where = draw(st.sampled_from(near)) if near else where
        parent = record if len(where) == 1 else record[where[0]]
    action = draw(st.sampled_from(["replace", "delete", "wrap", "control"]))
    if action == "delete" and isinstance(parent, dict):
        del parent[where[-1]]
    elif action == "wrap":
        parent[where[-1]] = {"value": [parent[where[-1]]]}
    elif action == "control" and isinstance(parent[where[-1]], str):
        parent[where[-1]] = draw(CONTROL) + parent[where[-1]] + draw(CONTROL)
    else:
        parent[where[-1]] = draw(JSON_VALUE)
    return dumps(record)


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    """A valid fixture record (JSON or syslog) with its bytes cut, flipped or spliced."""
    raw = bytearray(draw(st.sampled_from(RECORDS)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["cut", "flip", "insert", "invalid_utf8", "control"]))
        if action == "cut":
            del raw[at:]
        elif action == "flip" and at < len(raw):
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "invalid_utf8":
            raw[at:at] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]))
        else:
            raw[at:at] = draw(CONTROL).encode()
    return bytes(raw)


SYSLOG = st.one_of(
    st.builds(
        lambda user, ip, port: (
            f"Mar  1 10:00:01 host sshd[1]: Accepted password for {user} from {ip} port {port}"
        ),
        HOSTILE_TEXT,
        HOSTILE_TEXT,
        st.integers(0, 10**20),
    ),
    st.builds(
        lambda prog, msg: f"2024-03-01T10:00:00Z host {prog}[7]: {msg}", st.text(max_size=8), HOSTILE_TEXT
    ),
).map(lambda line: line.encode("utf-8", "surrogatepass"))

HOSTILE = st.one_of(
    st.binary(max_size=200),
    JSON_VALUE.map(dumps),
    CANONICAL_SHAPED,
    mutated_value(),
    mutated_bytes(),
    SYSLOG,
    st.builds(nested, st.integers(1, 3000), st.sampled_from(["list", "object"])),
    st.integers(DEFAULT_LIMITS.max_event_bytes - 100, DEFAULT_LIMITS.max_event_bytes + 100).map(
        lambda n: b'{"user": "a", "ip": "81.2.69.142", "timestamp": 1709287200, "pad": "' + b"p" * n + b'"}'
    ),
)


# -- properties ---------------------------------------------------------------------------------------


def check_error(error: BaseException) -> None:
    assert isinstance(error, InvalidEvent), repr(error)
    reason = error.reason
    assert reason and len(reason) <= MAX_REASON_CHARS + 3, reason
    assert REASON_CODES.fullmatch(reason_code(reason)), reason


def check_outcomes(outcomes: list[Outcome], clean: bool = True) -> None:
    assert outcomes
    for o in outcomes:
        assert isinstance(o, Outcome)
        if o.error is not None:
            check_error(o.error)
            if clean:  # a reason quoting the input is escaped
                assert not UNSAFE.search(o.error.reason), o.error.reason
            assert not o.signins
        else:
            assert all(isinstance(s, SignIn) for s in o.signins)


@SETTINGS
@given(st.lists(HOSTILE, max_size=16))
def test_codec_decoders_answer_every_input_with_a_sign_in_or_a_reason(raws: list[bytes]) -> None:
    batch = decode_batch(raws)
    assert len(batch) == len(raws)
    for raw, batched in zip(raws, batch, strict=True):
        try:
            alone: SignIn | InvalidEvent = decode_event(raw)
        except InvalidEvent as exc:
            alone = exc
        except Exception as exc:  # pragma: no cover - the failure this test looks for
            pytest.fail(f"decode_event raised {exc!r} on {raw[:200]!r}")
        if isinstance(alone, InvalidEvent):
            check_error(alone)
            assert isinstance(batched, InvalidEvent) and batched.reason == alone.reason
        else:
            assert batched == alone


@pytest.mark.parametrize("fmt", FORMATS)
@SETTINGS
@given(data=st.data())
def test_every_format_rejects_garbage_with_a_reason_and_keeps_the_valid_records(
    fmt: str, data: st.DataObject
) -> None:
    n = normalizer(fmt)
    hostile = data.draw(st.lists(HOSTILE, min_size=1, max_size=12), label="hostile")
    valid = data.draw(st.lists(st.sampled_from(VALID[fmt]), min_size=1, max_size=6), label="valid")
    order = data.draw(st.permutations(range(len(hostile) + len(valid))), label="order")
    items: list[tuple[bytes, list[SignIn] | None]] = [(raw, None) for raw in hostile] + list(valid)
    batch = [items[i] for i in order]
    results = n.many([raw for raw, _ in batch])
    assert len(results) == len(batch)
    for (_, expected), outcomes in zip(batch, results, strict=True):
        check_outcomes(outcomes)
        if expected is not None:  # a valid record is never lost, whatever surrounds it
            assert [s for o in outcomes for s in o.signins] == expected
    for raw in hostile:  # one at a time, and as a whole document
        check_outcomes(list(n.records(raw)))
        check_outcomes(list(n.records(raw, document=True)))


@SETTINGS
@given(st.lists(HOSTILE, min_size=1, max_size=12), st.sampled_from(["off", "trim", "email"]))
def test_account_transform_survives_hostile_accounts(raws: list[bytes], mode: str) -> None:
    ids = AccountIds(mode, b"k" * 32)
    n = normalizer("auto", ids)
    for outcomes in n.many(raws):
        check_outcomes(outcomes)
        for s in (s for o in outcomes for s in o.signins):
            assert re.fullmatch(r"p:[0-9a-f]{32}", s.user)
            assert not re.fullmatch(r"h:[0-9a-f]{32}", s.event_id)


@pytest.mark.parametrize(
    "raw",
    [
        # Found by the fuzz test above: a category that is an object, a login event name that is a list.
        b'{"time": "2024-03-01T10:15:30Z", "operationName": "Sign-in activity", "category": {"v": 1},'
        b' "callerIpAddress": "81.2.69.142", "properties": {"userPrincipalName": "a@b.example"}}',
        b'{"id": {"time": "2024-03-01T10:15:30Z", "applicationName": "login"}, "actor": {"email": "a@b.example"},'
        b' "ipAddress": "81.2.69.142", "events": [{"name": ["login_success"]}]}',
    ],
)
def test_fields_of_unforeseen_types_are_rejected_not_raised(raw: bytes) -> None:
    for fmt in ("auto", "entra", "gworkspace"):
        (outcome,) = Normalizer(fmt).many([raw])
        assert all(o.error is not None and not o.signins for o in outcome), (fmt, outcome)


@pytest.mark.parametrize("fmt", ["auto", "canonical"])
@SETTINGS
@given(
    raws=st.lists(
        st.one_of(HOSTILE, st.sampled_from([v for f in FORMATS for v in VALID[f]]).map(lambda v: v[0])),
        max_size=16,
    )
)
def test_triage_rejects_only_what_records_rejects_for_the_same_reason(fmt: str, raws: list[bytes]) -> None:
    n = normalizer(fmt)
    quick, rejected = n.triage(raws)
    assert len(quick) == len(raws)
    for i, raw in enumerate(raws):
        alone = list(n.records(raw))
        if quick[i] is not None:
            assert i not in rejected
            assert [s for o in alone for s in o.signins] == [quick[i]]
        elif i in rejected:
            assert [(o.error.reason if o.error else None, o.signins) for o in alone] == [
                (rejected[i].reason, [])
            ]


def test_triage_settles_broken_canonical_records_and_leaves_the_rest_to_records() -> None:
    good = b'{"user": "a@b.example", "ip": "81.2.69.142", "timestamp": "2024-03-01T10:00:00Z"}'
    bad_ip = b'{"user": "a@b.example", "ip": "unknown", "timestamp": "2024-03-01T10:00:00Z"}'
    bad_time = b'{"user": "a@b.example", "ip": "81.2.69.142", "timestamp": "2024-02-30T10:00:00Z"}'
    broken = b'{"user": "a@b.example", "ip": '
    okta, page = VALID["okta"][0][0], b'{"records": [' + good + b"]}"
    lines = [good, bad_ip, okta, bad_time, broken, page, bad_ip]
    quick, rejected = normalizer("auto").triage(lines)
    assert quick[0] is not None and quick[5] is None
    assert [quick[2]] == [s for o in normalizer("auto").records(okta) for s in o.signins]  # (one Okta record)
    assert {i: e.reason for i, e in rejected.items()} == {
        1: "bad ip: not an IPv4 or IPv6 address",
        3: "bad timestamp: impossible date or time",
        4: "bad JSON: unexpected end of data",
        6: "bad ip: not an IPv4 or IPv6 address",
    }
    for i in rejected:  # as records has them
        (alone,) = normalizer("auto").records(lines[i])
        assert alone.error is not None and alone.error.reason == rejected[i].reason
    assert [s for o in normalizer("auto").records(page) for s in o.signins] == [quick[0]]

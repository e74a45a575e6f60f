"""Account normalisation, pseudonymisation, IP truncation in alerts, and control characters kept out of
logs, rejects and metric labels."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from detector import logs
from detector.codec import (
    alert_to_dict,
    derive_event_id,
    encode_alert,
    escape_json_controls,
    printable,
    truncate_ip,
)
from detector.config import resolve
from detector.engine import Engine
from detector.errors import ConfigError
from detector.formats import Normalizer
from detector.geoip import GeoIP
from detector.identity import AccountIds, key_from, looks_like_email, normalise_account
from detector.ingest import normalizer_from
from detector.metrics import Metrics
from detector.model import Alert, Location, SignIn, Visit
from detector.rules import Policy, evaluate
from detector.sinks import AlertFile, RejectsFile
from detector.state import MemoryStore
from detector.testing import FakeClock
from tests.unit.test_schemas import ALERT

KEY = b"0123456789abcdef0123456789abcdef"
T0 = 1_709_287_200.0


def line(user: str, ip: str = "81.2.69.10", ts: object = "2024-03-01T10:00:00Z", **kw: object) -> bytes:
    return orjson.dumps({"user": user, "ip": ip, "timestamp": ts, **kw})


# -- account normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "given", "expected"),
    [
        ("off", "  Alice@Example.COM ", "  Alice@Example.COM "),
        ("trim", "  Alice@Example.COM\t", "Alice@Example.COM"),
        ("email", "  Alice@Example.COM\t", "alice@example.com"),
        ("email", "Straße@Example.de", "strasse@example.de"),  # case-folded, not just lower-cased
        (
            "email",
            "ALICE_GMAIL.COM#EXT#@Contoso.onmicrosoft.com",
            "alice_gmail.com#ext#@contoso.onmicrosoft.com",
        ),
        # Not e-mail-like: the case may tell two accounts apart, so it stays.
        ("email", "CONTOSO\\Alice", "CONTOSO\\Alice"),
        ("email", " Alice ", "Alice"),
        ("email", "arn:aws:sts::123456789012:assumed-role/Admin/Alice@Example.com", None),
        ("email", "Alice@localhost", "Alice@localhost"),
        ("email", "a@b@Example.com", "a@b@Example.com"),
    ],
)
def test_account_normalisation(mode: str, given: str, expected: str | None) -> None:
    assert normalise_account(given, mode) == (given.strip() if expected is None else expected)


def test_what_looks_like_an_email() -> None:
    assert looks_like_email("alice.martin@contoso.com") and looks_like_email("ana.00001@gov.example")
    assert not any(map(looks_like_email, ["alice", "a b@c.com", "DOM\\a@b.com", "arn:x:a@b.com", "@a.com"]))


def test_normalisation_makes_one_person_one_account_in_every_path() -> None:
    n = Normalizer("auto", accounts=AccountIds("email"))
    variants = [
        line(u, event_id=f"e{i}") for i, u in enumerate(["alice@x.com", " Alice@X.com", "ALICE@X.COM "])
    ]
    batched = [s.user for outcomes in n.many(variants) for o in outcomes for s in o.signins]
    alone = [s.user for raw in variants for o in n.records(raw) for s in o.signins]
    assert batched == alone == ["alice@x.com"] * 3
    # and the id derived for an id-less event comes from what the event said, as before
    (o,) = n.records(line(" Alice@X.com"))
    assert o.signins[0].event_id == derive_event_id(" Alice@X.com", "81.2.69.10", T0, True)


# -- pseudonymisation ---------------------------------------------------------------------------------


def test_pseudonym_is_a_keyed_hmac_of_the_normalised_account() -> None:
    ids = AccountIds("email", KEY)
    expected = "p:" + hmac.new(KEY, b"alice@x.com", hashlib.sha256).hexdigest()[:32]
    assert ids.account("alice@x.com") == ids.account(" Alice@X.COM ") == expected
    assert ids.account("alice@x.com") == AccountIds("email", KEY).account("alice@x.com")  # stable
    assert AccountIds("email", KEY[::-1]).account("alice@x.com") != expected  # keyed
    assert ids.account("bob@x.com") != expected
    long_key = b"k" * 100  # longer than a SHA-256 block: hashed first, as HMAC says
    assert (
        AccountIds("off", long_key).account("a") == "p:" + hmac.new(long_key, b"a", "sha256").hexdigest()[:32]
    )


def test_derived_event_ids_are_keyed_and_other_ids_kept() -> None:
    n = Normalizer("auto", accounts=AccountIds("off", KEY))
    # The same sign-in written in two ways: one derived id, keyed, the same for both.
    a, b = (
        next(n.records(raw)).signins[0]
        for raw in (line("alice", ts="2024-03-01T10:00:00Z"), line("alice", ts="2024-03-01T11:00:00+01:00"))
    )
    plain = derive_event_id("alice", "81.2.69.10", T0, True)
    assert a.event_id == b.event_id != plain and a.event_id.startswith("k:") and len(a.event_id) == 34
    assert AccountIds("off", KEY[::-1]).event_id(plain) != a.event_id
    (o,) = n.records(line("alice", event_id="vendor-42"))
    assert o.signins[0].event_id == "vendor-42"
    # `normalize` output carries derived ids explicitly: keyed all the same
    (o,) = n.records(line("alice", event_id=plain))
    assert o.signins[0].event_id == a.event_id


def test_pseudonymisation_applies_to_every_format_and_path() -> None:
    n = Normalizer("auto", accounts=AccountIds("email", KEY))
    okta = orjson.dumps(
        {
            "uuid": "u-1",
            "published": "2024-03-01T10:00:00.000Z",
            "eventType": "user.session.start",
            "actor": {"alternateId": "Alice@X.com", "type": "User"},
            "client": {"ipAddress": "81.2.69.10"},
            "outcome": {"result": "SUCCESS"},
        }
    )
    sshd = b"2024-03-01T10:00:00Z bastion sshd[1]: Accepted publickey for alice from 81.2.69.10 port 22 ssh2"
    page = orjson.dumps({"value": [orjson.loads(line("ALICE@x.com", event_id="g1"))]})
    users = {
        s.user
        for outcomes in n.many([line("alice@x.com"), okta, sshd, page])
        for o in outcomes
        for s in o.signins
    }
    assert users == {
        AccountIds("email", KEY).account("alice@x.com"),
        AccountIds("email", KEY).account("alice"),
    }
    assert all(u.startswith("p:") for u in users)
    assert [s.user for s in n.record(orjson.loads(line("Alice@x.com")))] == [
        n.accounts.account("alice@x.com")
    ]


def test_normalizer_from_settings(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")  # a mounted secret's trailing newline is not part of the key
    settings = resolve({"pseudonymize_key_file": str(key_file), "account_normalize": "email"}, environ={})
    n = normalizer_from(settings)
    (o,) = n.records(line("Alice@X.com"))
    assert o.signins[0].user == AccountIds("email", KEY).account("alice@x.com")
    assert normalizer_from(resolve({}, environ={})).accounts is None  # off: nothing to do, nothing done


def test_key_options_are_checked(tmp_path: Path) -> None:
    def settings(**flags: str) -> object:
        return resolve(flags, environ={})

    assert key_from(settings()) is None
    assert key_from(settings(pseudonymize_key="x" * 20)) == b"x" * 20
    with pytest.raises(ConfigError, match=r"pseudonymize_key.*not both"):
        key_from(settings(pseudonymize_key="x" * 20, pseudonymize_key_file=str(tmp_path / "k")))
    with pytest.raises(ConfigError, match=r"^pseudonymize_key_file: cannot read"):
        key_from(settings(pseudonymize_key_file=str(tmp_path / "missing")))
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(ConfigError, match=r"^pseudonymize_key_file: .* is empty"):
        key_from(settings(pseudonymize_key_file=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match=r"^pseudonymize_key: too short"):
        AccountIds.from_settings(settings(pseudonymize_key="short"))


# -- IP truncation in alerts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "v4", "v6", "expected"),
    [
        ("203.0.113.77", 24, 128, "203.0.113.0"),
        ("203.0.113.77", 16, 128, "203.0.0.0"),
        ("203.0.113.77", 32, 48, "203.0.113.77"),
        ("203.0.113.77", 0, 48, "0.0.0.0"),
        ("2001:db8:1234:5678::1", 32, 48, "2001:db8:1234::"),
        ("2001:db8:1234:5678::1", 24, 128, "2001:db8:1234:5678::1"),
        ("2001:db8:1234:5678::1", 24, 56, "2001:db8:1234:5600::"),
    ],
)
def test_truncate_ip(ip: str, v4: int, v6: int, expected: str) -> None:
    assert truncate_ip(ip, v4, v6) == expected
    ipaddress.ip_address(expected)  # still an address


def _alert(ip1: str = "81.2.69.10", ip2: str = "2600:1700:abcd:1234::5") -> Alert:
    lon = Location(51.5074, -0.1278, 10, "GB", "London")
    ny = Location(40.7128, -74.0060, 20, "US", "New York")
    first = SignIn("p:" + "a" * 32, ip1, T0, "a")
    second = SignIn("p:" + "a" * 32, ip2, T0 + 600, "b")
    state = evaluate(None, first, lon, Policy(), T0 + 700).state
    (alert,) = evaluate(state, second, ny, Policy(), T0 + 700).alerts
    return alert


def test_alerts_truncate_addresses_and_still_validate() -> None:
    alert = _alert()
    full = alert_to_dict(alert)
    assert (full["previous"]["ip"], full["current"]["ip"]) == ("81.2.69.10", "2600:1700:abcd:1234::5")
    assert "ip_prefix" not in full["previous"]
    doc = orjson.loads(encode_alert(alert, 24, 48))
    ALERT.validate(doc)
    assert (doc["previous"]["ip"], doc["previous"]["ip_prefix"]) == ("81.2.69.0", 24)
    assert (doc["current"]["ip"], doc["current"]["ip_prefix"]) == ("2600:1700:abcd::", 48)
    assert "81.2.69.10" not in json.dumps(doc) and "1234::5" not in json.dumps(doc)
    # one family truncated, the other kept whole
    doc = alert_to_dict(alert, 24, 128)
    assert doc["previous"]["ip"] == "81.2.69.0" and doc["current"]["ip"] == "2600:1700:abcd:1234::5"
    assert "ip_prefix" not in doc["current"]


def test_alert_file_truncates(tmp_path: Path) -> None:
    out = AlertFile(str(tmp_path / "alerts.jsonl"), 24, 48)
    out.write([_alert()])
    out.close()
    (doc,) = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    ALERT.validate(doc)
    assert doc["previous"]["ip"] == "81.2.69.0" and doc["current"]["ip"] == "2600:1700:abcd::"


# -- control characters -------------------------------------------------------------------------------

NASTY = "mallory\n2024-01-01T00:00:00Z info detector: FAKE\x1b[2J\x7f\x85\x9b\u2028\u202e"


def test_printable_escapes_every_control_and_bounds_length() -> None:
    text = printable(NASTY)
    assert text.isprintable() and "\\x0a" in text and "\\x1b" in text and "\\u202e" in text
    assert printable("é ok") == "é ok" and printable("x" * 50, 10) == "x" * 10 + "..."


def test_json_escaping_keeps_the_value_and_drops_raw_controls() -> None:
    raw = orjson.dumps({"v": NASTY})
    safe = escape_json_controls(raw)
    assert json.loads(safe) == {"v": NASTY}
    assert not any(c in safe.decode() for c in "\x1b\x7f\x85\x9b\u2028\u202e\n")


@pytest.mark.parametrize(
    "char", ["\x7f", "\x80", "\x9f", "\u061c", "\u200e", "\u200f", "\u2028", "\u202e", "\u2066", "\u2069"]
)
def test_json_escaping_finds_each_unsafe_character_alone(char: str) -> None:
    """Each on its own among safe text (the escaping looks for their first bytes before it searches)."""
    value = f"Z\u00fcrich, S\u00e3o Paulo {char}."  # (no other character that starts as one of them)
    safe = escape_json_controls(orjson.dumps({"city": value}))
    assert json.loads(safe) == {"city": value}
    assert char not in safe.decode() and f"\\u{ord(char):04x}".encode() in safe
    plain = orjson.dumps({"city": "Z\u00fcrich \u2013 S\u00e3o Paulo"})
    assert escape_json_controls(plain) == plain


def test_text_logs_escape_and_quote(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", "text")
    logs.event(logging.getLogger("detector.x"), "rejected", user=NASTY, reason="ok=1 forged=2", n=3)
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and "\x1b" not in out and "\u2028" not in out and "\x85" not in out
    assert 'reason="ok=1 forged=2"' in out and " n=3" in out


def test_text_log_tracebacks_keep_lines_but_escape_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", "text")
    try:
        raise ValueError("bad \x1b[31m value")
    except ValueError:
        logging.getLogger("detector.x").exception("failed")
    out = capsys.readouterr().err
    assert "Traceback" in out and "\x1b" not in out and "bad \\x1b[31m value" in out


def test_json_logs_escape_every_control(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("info", "json")
    logs.event(logging.getLogger("detector.x"), NASTY, user=NASTY)
    (line_,) = capsys.readouterr().err.splitlines()
    record = json.loads(line_)
    assert record["user"] == NASTY and record["message"] == NASTY
    assert not any(c in line_ for c in "\x1b\x7f\x85\x9b\u2028\u202e")


def test_rejects_file_escapes_controls_but_keeps_the_raw_input(tmp_path: Path) -> None:
    rejects = RejectsFile(str(tmp_path / "r.jsonl"))
    rejects.write("in", 1, "bad ip: x", NASTY.encode())
    rejects.close()
    data = (tmp_path / "r.jsonl").read_bytes()
    assert json.loads(data)["raw"] == NASTY
    assert not any(c in data.decode() for c in "\x1b\x7f\x85\x9b\u2028\u202e")


def test_reasons_quoting_input_are_escaped_and_bounded() -> None:
    n = Normalizer("auto")
    hostile = [
        orjson.dumps(
            {
                "eventType": "evil\x1b[2J\n",
                "uuid": "1",
                "published": "2024-03-01T10:00:00Z",
                "actor": {},
                "client": {},
            }
        ),
        orjson.dumps({"k\x1b]0;pwned\x07" * 100: 1}),
        b"2024-03-01T10:00:00Z host sshd[7]: \x1b[31mhello\x85",
        orjson.dumps(
            {
                "kind": "admin#reports#activity",
                "id": {"applicationName": "login"},
                "actor": {"email": "a@x.com"},
                "ipAddress": "81.2.69.10",
                "events": [{"name": "x" * 1000 + "\u2028"}] * 10,
            }
        ),
    ]
    for outcomes in n.many(hostile):
        (o,) = outcomes
        assert o.error is not None
        reason = o.error.reason
        assert len(reason) <= 303 and not any(c in reason for c in "\x1b\n\x07\x85\u2028"), reason


def test_metric_labels_never_hold_an_account_an_address_or_input(city_db: str) -> None:
    registry = CollectorRegistry()
    geo = GeoIP(city_db)
    engine = Engine(Policy(), geo, MemoryStore(), FakeClock())
    metrics = Metrics(registry)
    metrics.attach(engine, geo)
    n = Normalizer("auto", accounts=AccountIds("email", KEY))
    raws = [
        line("Victim@Example.com", "81.2.69.10", T0, event_id="a"),
        line("victim@example.com", "4.7.5.10", T0 + 300, event_id="b"),
        orjson.dumps({"Victim@Example.com 81.2.69.10": 1}),
        line("victim@example.com", "81.2.69.10\x00", T0),
        orjson.dumps({"eventType": "Victim@Example.com", "uuid": "1", "published": "2024-03-01T10:00:00Z"}),
    ]
    signins, reasons = [], []
    for outcomes in n.many(raws):
        for o in outcomes:
            signins += o.signins
            reasons += [o.error.reason] if o.error else []
    result = engine.process(signins, reasons)
    engine.commit(result)
    assert len(result.alerts) == 1 and result.alerts[0].user.startswith("p:")
    text = metrics.render().decode().lower()
    assert "victim" not in text and "81.2.69.10" not in text and "4.7.5.10" not in text


def test_alert_user_is_the_pseudonym(tmp_path: Path) -> None:
    n = Normalizer("auto", accounts=AccountIds("off", KEY))
    a, b = (
        next(n.records(raw)).signins[0] for raw in (line("alice", ts=T0), line("alice", "4.7.5.10", T0 + 300))
    )
    lon = Location(51.5074, -0.1278, 10, "GB", "London")
    ny = Location(40.7128, -74.0060, 20, "US", "New York")
    state = evaluate(None, a, lon, Policy(), T0 + 400).state
    (alert,) = evaluate(state, b, ny, Policy(), T0 + 400).alerts
    data = encode_alert(alert)
    assert b"alice" not in data and AccountIds("off", KEY).account("alice").encode() in data
    assert isinstance(alert.previous, Visit)

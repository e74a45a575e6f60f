"""Privacy end to end: with a pseudonymisation key no raw account reaches alerts or logs, detection is
exactly as without it, and `pseudonym` lets an analyst with the key re-identify an alert's account."""

from __future__ import annotations

import json
import random
from pathlib import Path

import orjson
import pytest

from detector.identity import AccountIds
from detector.traffic import Traffic, score
from tests.conftest import run_cli

KEY = b"an-example-key-of-32-bytes-long!"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "pseudonymize.key"
    path.write_bytes(KEY + b"\n")
    return path


def lines_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_bytes().splitlines()]


@pytest.mark.realdb
def test_replay_with_a_key_writes_no_raw_account_and_finds_exactly_the_labelled_alerts(
    tmp_path: Path, real_db: str, clear_set: Traffic, key_file: Path
) -> None:
    rng = random.Random(5)
    events = []
    for ev in clear_set.events:
        ev = dict(ev)
        if "event_id" in ev and rng.random() < 0.3:  # one person, written several ways
            ev["user"] = rng.choice([" ", "", "\t"]) + ev["user"].upper() + rng.choice([" ", ""])
        events.append(ev)
    hostile = [
        orjson.dumps({"user": u, "ip": "not an address", "timestamp": 0}) for u in ("ana.x@gov.example",)
    ]
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events) + b"".join(h + b"\n" for h in hostile))
    out, rej = tmp_path / "alerts.jsonl", tmp_path / "rejects.jsonl"

    res = run_cli(
        "replay",
        str(src),
        "--geoip-db",
        real_db,
        "--output",
        str(out),
        "--rejects",
        str(rej),
        "--account-normalize",
        "email",
        "--log-level",
        "debug",
        "--log-format",
        "json",
        env={"DETECTOR_PSEUDONYMIZE_KEY_FILE": str(key_file)},
    )

    assert res.returncode == 0, res.stderr[-2000:]
    ids = AccountIds("email", KEY)
    expected = [
        {
            "user": ids.account(lb["user"]),
            "previous": ids.event_id(lb["previous"]),
            "current": ids.event_id(lb["current"]),
        }
        for lb in clear_set.labels
    ]
    alerts = lines_of(out)
    result = score(alerts, expected)
    assert (result.precision, result.recall) == (1.0, 1.0), result
    assert len(alerts) == len(expected)
    assert all(a["user"].startswith("p:") and len(a["user"]) == 34 for a in alerts)
    # No account, in any case, anywhere but in the rejects file (the raw input, by design).
    written = (out.read_bytes() + res.stderr).decode().casefold()
    users = {e["user"].strip().casefold() for e in clear_set.events}
    assert not [u for u in users if u in written]
    assert not [u for u in users if u.split("@")[0] in written]
    assert "ana.x@gov.example" in rej.read_text()

    # The analyst with the key finds whose alert it is.
    someone = clear_set.labels[0]["user"]
    found = run_cli(
        "pseudonym", someone.upper(), "--account-normalize", "email", "--pseudonymize-key-file", str(key_file)
    )
    assert found.returncode == 0, found.stderr
    pseudonym, account = found.stdout.decode().rstrip("\n").split("\t")
    assert account == someone.upper()
    assert pseudonym in {a["user"] for a in alerts}


def test_pseudonym_command(tmp_path: Path, key_file: Path) -> None:
    env = {"DETECTOR_PSEUDONYMIZE_KEY": KEY.decode()}
    res = run_cli("pseudonym", "alice@x.com", "Alice@X.com", env=env)
    assert res.returncode == 0, res.stderr
    rows = [r.split("\t") for r in res.stdout.decode().splitlines()]
    off = AccountIds("off", KEY)
    assert rows == [[off.account("alice@x.com"), "alice@x.com"], [off.account("Alice@X.com"), "Alice@X.com"]]
    # same key from a file, normalisation from the config file, accounts from stdin
    config = tmp_path / "detector.toml"
    config.write_text('account_normalize = "email"\n')
    res = run_cli(
        "pseudonym",
        "-",
        "--config",
        str(config),
        "--pseudonymize-key-file",
        str(key_file),
        stdin=b"alice@x.com\n ALICE@x.com\nbob\x1b[2J\n",
    )
    assert res.returncode == 0, res.stderr
    rows = [r.split("\t") for r in res.stdout.decode().splitlines()]
    email = AccountIds("email", KEY)
    assert [r[0] for r in rows] == [email.account("alice@x.com")] * 2 + [email.account("bob\x1b[2J")]
    assert rows[2][1] == "bob\\x1b[2J"  # the account echoed, escaped


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--pseudonymize-key-file", "/nonexistent/key"], {}, "pseudonymize_key_file: cannot read"),
        (["--pseudonymize-key-file", "KEYFILE"], {"DETECTOR_PSEUDONYMIZE_KEY": KEY.decode()}, "not both"),
        (["--pseudonymize-key", "short"], {}, "pseudonymize_key: too short"),
    ],
)
@pytest.mark.parametrize("command", ["replay", "normalize", "pseudonym"])
def test_bad_key_options_are_refused_naming_the_key(
    tmp_path: Path,
    key_file: Path,
    city_db: str,
    command: str,
    args: list[str],
    env: dict[str, str],
    names: str,
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"user": "a", "ip": "81.2.69.10", "timestamp": 1709287200}\n')
    args = [str(key_file) if a == "KEYFILE" else a for a in args]
    target = "alice" if command == "pseudonym" else str(src)
    extra = ["--geoip-db", city_db, "--output", str(tmp_path / "alerts.jsonl")] if command == "replay" else []
    res = run_cli(command, target, *args, *extra, env=env)
    assert res.returncode == 2, res.stderr
    err = res.stderr.decode()
    assert names in err and "Traceback" not in err and KEY.decode() not in err


def test_pseudonym_needs_a_key() -> None:
    res = run_cli("pseudonym", "alice")
    assert res.returncode == 2 and b"pseudonymize_key: no key" in res.stderr


def test_print_config_masks_the_key() -> None:
    res = run_cli("pseudonym", "a", "--print-config", env={"DETECTOR_PSEUDONYMIZE_KEY": KEY.decode()})
    assert res.returncode == 0 and KEY not in res.stdout and b"********" in res.stdout


def test_normalize_with_a_key_writes_pseudonyms(key_file: Path) -> None:
    res = run_cli(
        "normalize",
        "-",
        "--pseudonymize-key-file",
        str(key_file),
        "--account-normalize",
        "trim",
        stdin=b'{"user": " alice ", "ip": "81.2.69.10", "timestamp": 1709287200}\n',
    )
    assert res.returncode == 0, res.stderr
    (event,) = [json.loads(x) for x in res.stdout.splitlines()]
    assert event["user"] == AccountIds("trim", KEY).account("alice") and event["event_id"].startswith("k:")
    assert b"alice" not in res.stdout + res.stderr


def test_replay_truncates_alert_addresses(tmp_path: Path, city_db: str) -> None:
    from tests.unit.test_schemas import ALERT

    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'{"user": "alice", "ip": "81.2.69.10", "timestamp": "2024-03-01T10:00:00Z", "event_id": "a1"}\n'
        b'{"user": "alice", "ip": "4.7.5.10", "timestamp": "2024-03-01T10:05:00Z", "event_id": "a2"}\n'
        b'{"user": "carol", "ip": "2.16.117.10", "timestamp": "2024-03-01T10:00:00Z", "event_id": "c1"}\n'
        b'{"user": "carol", "ip": "2600:1700::5", "timestamp": "2024-03-01T10:30:00Z", "event_id": "c2"}\n'
    )
    out = tmp_path / "alerts.jsonl"
    res = run_cli(
        "replay",
        str(src),
        "--geoip-db",
        city_db,
        "--output",
        str(out),
        "--alert-ipv4-prefix",
        "24",
        "--alert-ipv6-prefix",
        "48",
    )
    assert res.returncode == 0, res.stderr
    alerts = {a["user"]: a for a in lines_of(out)}
    for alert in alerts.values():
        ALERT.validate(alert)
    assert (alerts["alice"]["previous"]["ip"], alerts["alice"]["current"]["ip"]) == ("81.2.69.0", "4.7.5.0")
    assert alerts["carol"]["current"]["ip"] == "2600:1700::" and alerts["carol"]["current"]["ip_prefix"] == 48

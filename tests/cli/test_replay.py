"""`python -m detector replay` end to end, through a subprocess, as an analyst would run it."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import run_cli

LONDON, READING, NEW_YORK, PARIS = "81.2.69.10", "81.2.70.10", "4.7.5.10", "2.16.117.10"


def line(user: str, ip: str, ts: object, **kw: object) -> bytes:
    return orjson.dumps({"user": user, "ip": ip, "timestamp": ts, **kw})


GOOD = [
    line("alice", LONDON, "2024-03-01T10:00:00Z", event_id="a1"),
    line("alice", f"::ffff:{NEW_YORK}", "2024-03-01T06:05:00-05:00", event_id="a2"),  # 5 min later
    line("alice", NEW_YORK, "2024-03-01T06:05:00-05:00", event_id="a2"),  # re-delivered
    line("bob", LONDON, 1709287200),
    line("bob", READING, 1709290800000),  # an hour later, 58 km: fine
    line("bob", "10.0.0.7", "2024-03-01T11:30:00Z"),  # private: no location
    line("bob", PARIS, "2024-03-01T11:35:00Z", outcome="failure"),  # failure: ignored
    line("carol", f"{PARIS}:5555", "2024-03-01T10:00:00.1234567Z", event_id="c1"),
    line("carol", "[2600:1700::5]:443", "2024-03-01T10:30:00Z", event_id="c2"),  # Paris -> NY 30 min
]
HOSTILE = [
    b"not json at all",
    b"\xff\xfe\xfa garbage bytes",
    b"",
    b"[1, 2, 3]",
    b'{"user": "x", "ip": "1.2.3.4"}',
    b'{"user": "x", "ip": "999.1.1.1", "timestamp": 1709287200}',
    b'{"user": "x", "ip": "81.2.69.10", "timestamp": "tomorrow"}',
    b'{"user": "x", "ip": "81.2.69.10", "timestamp": 1709287200, "n": ' + b"[" * 100 + b"]" * 100 + b"}",
    b'{"user": "' + b"u" * 600 + b'", "ip": "81.2.69.10", "timestamp": 1709287200}',
    b'{"user": "x", "ip": "81.2.69.10", "timestamp": 1709287200, "pad": "' + b"p" * 100_000 + b'"}',
    b'{"user": "x", "ip": "81.2.69.10", "timestamp": 1e400}',
]


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def alerts_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_replay_finds_exactly_the_impossible_trips_and_rejects_the_rest(tmp_path: Path, city_db: str) -> None:
    mixed = (
        [x for pair in zip(GOOD, HOSTILE, strict=False) for x in pair]
        + GOOD[len(HOSTILE) :]
        + HOSTILE[len(GOOD) :]
    )
    src = write(tmp_path / "in.jsonl", mixed)
    out, rej = tmp_path / "alerts.jsonl", tmp_path / "rejects.jsonl"
    res = run_cli("replay", str(src), "--geoip-db", city_db, "--output", str(out), "--rejects", str(rej))
    assert res.returncode == 0, res.stderr
    assert b"Traceback" not in res.stderr
    alerts = alerts_of(out)
    assert sorted((a["user"], a["previous"]["event_id"], a["current"]["event_id"]) for a in alerts) == [
        ("alice", "a1", "a2"),
        ("carol", "c1", "c2"),
    ]
    rejects = [json.loads(x) for x in rej.read_text().splitlines()]
    assert len(rejects) == len(HOSTILE)
    hostile_lines = {i + 1 for i, raw in enumerate(mixed) if raw in HOSTILE}
    assert {r["line"] for r in rejects} == hostile_lines
    assert all(r["reason"] and len(r["raw"]) <= 1024 and r["file"] == str(src) for r in rejects)
    reasons = " ".join(r["reason"] for r in rejects)
    for expected in (
        "bad JSON",
        "not UTF-8",
        "empty",
        "not an object",
        "missing field: timestamp",
        "bad ip",
        "bad timestamp",
        "too deeply nested",
        "bad user",
        "too large",
    ):
        assert expected in reasons
    summary = res.stderr.decode().strip().splitlines()[-1]
    assert f"{len(mixed):,} events read, {len(HOSTILE)} rejected, 1 without location" in summary
    assert "3 accounts, 2 alerts" in summary and "events/s" in summary


def test_stdin_gzip_and_several_inputs(tmp_path: Path, city_db: str) -> None:
    first = write(tmp_path / "a.jsonl", GOOD[:1])
    second = tmp_path / "b.jsonl.gz"
    second.write_bytes(gzip.compress(GOOD[1] + b"\n"))
    res = run_cli("replay", str(first), str(second), "--geoip-db", city_db)
    assert res.returncode == 0, res.stderr
    (alert,) = [json.loads(x) for x in res.stdout.splitlines()]
    assert alert["current"]["event_id"] == "a2"
    res = run_cli("replay", "-", "--geoip-db", city_db, stdin=b"\n".join(GOOD[:2]))
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 1


def test_the_program_leaves_a_replays_memory_to_the_exit(
    tmp_path: Path, city_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` (python -m detector, the script) ends a replay with os._exit, its output written and its
    streams flushed (the subprocess tests here read what it wrote); other commands exit as usual."""
    from detector import cli
    from detector.engine import Engine

    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)  # (returns: run's sys.exit follows)
    monkeypatch.setattr(cli, "_left_to_exit", None)
    src, out = write(tmp_path / "in.jsonl", GOOD), tmp_path / "alerts.jsonl"
    monkeypatch.setattr(sys, "argv", ["impossible-travel", "replay", str(src), "--geoip-db", city_db,
                                      "--output", str(out), "--workers", "1"])  # fmt: skip
    with pytest.raises(SystemExit):
        cli.run()
    assert exits == [0]
    assert any(isinstance(kept, Engine) for kept in cli._left_to_exit or [])
    assert len(alerts_of(out)) == 2 and "2 alerts" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["impossible-travel", "replay", "--max-speed-kmh", "fast"])
    with pytest.raises(SystemExit) as exited:
        cli.run()
    assert exited.value.code == 2 and exits == [0]  # (no second os._exit)


def test_settings_from_flags_environment_and_file(tmp_path: Path, city_db: str) -> None:
    src = write(
        tmp_path / "in.jsonl",
        [line("d", LONDON, "2024-03-01T10:00:00Z"), line("d", PARIS, "2024-03-01T10:30:00Z")],
    )  # ~340 km/30 min
    assert run_cli("replay", str(src), "--geoip-db", city_db).stdout == b""
    assert (
        len(run_cli("replay", str(src), "--geoip-db", city_db, "--max-speed-kmh", "500").stdout.splitlines())
        == 1
    )
    assert (
        len(
            run_cli(
                "replay", str(src), env={"DETECTOR_GEOIP_DB": city_db, "DETECTOR_MAX_SPEED_KMH": "500"}
            ).stdout.splitlines()
        )
        == 1
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'geoip_db = "{city_db}"\nmax_speed_kmh = 500\nmin_distance_km = 400\n')
    assert run_cli("replay", str(src), "--config", str(cfg)).stdout == b""
    res = run_cli("replay", str(src), "--config", str(cfg), "--min-distance-km", "0")
    assert len(res.stdout.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "/nonexistent.jsonl"], "input not found"),
        (["replay", "{src}", "--geoip-db", "/nonexistent.mmdb"], "GeoIP database not found"),
        (["replay", "{src}", "--max-speed-kmh", "warp"], "--max-speed-kmh"),
        (["replay", "{src}", "--config", "/nonexistent.toml"], "--config"),
    ],
)
def test_usage_and_config_errors_exit_2_with_one_line(
    tmp_path: Path, city_db: str, args: list[str], message: str
) -> None:
    src = write(tmp_path / "in.jsonl", GOOD[:1])
    argv = [a.format(src=src) for a in args]
    if "--geoip-db" not in argv:
        argv += ["--geoip-db", city_db]
    res = run_cli(*argv)
    assert res.returncode == 2
    err = res.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_not_a_city_database_is_refused(tmp_path: Path) -> None:
    from detector.testing import build_city_db

    asn = build_city_db(
        str(tmp_path / "asn.mmdb"),
        [],
        database_type="GeoLite2-ASN",
        extra={"81.2.69.0/24": {"autonomous_system_number": 1}},
    )
    src = write(tmp_path / "in.jsonl", GOOD[:1])
    res = run_cli("replay", str(src), "--geoip-db", asn)
    assert res.returncode == 2 and b"not a City database" in res.stderr


def test_help_explains_every_option_with_its_environment_twin() -> None:
    res = run_cli("replay", "--help")
    assert res.returncode == 0
    text = res.stdout.decode()
    for flag, env in (
        ("--geoip-db", "DETECTOR_GEOIP_DB"),
        ("--output", "DETECTOR_OUTPUT"),
        ("--rejects", "DETECTOR_REJECTS"),
        ("--max-speed-kmh", "DETECTOR_MAX_SPEED_KMH"),
        ("--min-distance-km", "DETECTOR_MIN_DISTANCE_KM"),
    ):
        assert flag in text and env in text
    assert "--config" in text


def test_print_config(city_db: str) -> None:
    res = run_cli("replay", "x", "--print-config", "--max-speed-kmh", "1234")
    assert res.returncode == 0
    assert json.loads(res.stdout)["max_speed_kmh"] == 1234


def test_progress_bar_when_asked(tmp_path: Path, city_db: str) -> None:
    src = write(tmp_path / "in.jsonl", GOOD * 50)
    res = run_cli("replay", str(src), "--geoip-db", city_db, "--progress", "always", "--batch-size", "10")
    assert res.returncode == 0
    assert b"\r[" in res.stderr and b"100%" in res.stderr


def test_console_script_is_installed() -> None:
    import shutil
    import subprocess
    import sys
    from pathlib import Path as P

    script = P(sys.executable).parent / "impossible-travel"
    assert script.exists() or shutil.which("impossible-travel")
    res = subprocess.run([str(script), "--version"], capture_output=True)
    assert res.returncode == 0 and b"impossible-travel" in res.stdout


def test_geoip_index_then_replay_gives_the_same_alerts(tmp_path: Path, city_db: str) -> None:
    import ipaddress
    import random

    from detector.testing import PLACES, build_city_db

    db = build_city_db(str(tmp_path / "city.mmdb"))
    # Hundreds of accounts hopping between the test cities: batches locate their many new addresses
    # together, the path the index serves.
    rng = random.Random(3)
    networks = [ipaddress.ip_network(p.network) for p in PLACES if p.network.count(".") == 3]
    events = []
    for k in range(3000):
        net = rng.choice(networks)
        ip = str(net[rng.randrange(net.num_addresses)])
        t = 1_700_000_000 + k * 7
        events.append({"timestamp": t, "user": f"u{rng.randrange(300)}", "ip": ip, "event_id": f"e{k}"})
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")

    def replay() -> tuple[bytes, str]:
        out = tmp_path / "alerts.jsonl"
        res = run_cli("replay", str(src), "--geoip-db", db, "--output", str(out), "--workers", "1")
        assert res.returncode == 0, res.stderr
        lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
        for alert in lines:
            del alert["detected_at"]
        return orjson.dumps(lines), res.stderr.decode()

    without, log = replay()
    assert 'record_index="none' in log and len(without) > 100
    res = run_cli("geoip-index", "--geoip-db", db)
    assert res.returncode == 0, res.stderr
    assert Path(db + ".index").stat().st_size > 0
    assert "records" in res.stderr.decode() and "-> " + db + ".index" in res.stderr.decode()
    with_index, log = replay()
    assert with_index == without
    assert re.search(r'record_index="[0-9,]+ records"', log)


def test_geoip_index_errors_are_one_line(tmp_path: Path) -> None:
    res = run_cli("geoip-index", "--geoip-db", str(tmp_path / "missing.mmdb"))
    err = res.stderr.decode().strip()
    assert res.returncode == 2 and len(err.splitlines()) == 1 and "not found" in err


def test_the_command_line_starts_no_blas_threads_unless_asked() -> None:
    """numpy's BLAS would start a spinning thread per core at import (0.1 s of CPU a replay, for no
    use): the command line asks for one, unless OPENBLAS_NUM_THREADS is set already."""
    code = "import os, detector.cli, numpy; print(len(os.listdir('/proc/self/task')))"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    threads = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, env=env | extra, check=True)
        for extra in ({}, {"OPENBLAS_NUM_THREADS": "2"})
    ]
    assert [int(t.stdout) for t in threads] == [1, 2]

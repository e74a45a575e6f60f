"""`normalize` and `replay` over native vendor logs, through a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from tests.conftest import run_cli
from tests.unit.test_formats import EXPECTED, FIXTURES


def expected_signins(name: str) -> list[dict]:
    out: list[dict] = []
    for entry in EXPECTED[name]:
        out += entry.get("signins", [entry["signin"]] if "signin" in entry else [])
    return out


def test_normalize_documents_mixed_files_and_syslog(tmp_path: Path) -> None:
    files = [str(FIXTURES / n) for n in ("cloudtrail.json", "okta-page.json", "mixed.jsonl", "sshd.log")]
    res = run_cli("normalize", *files, "--syslog-year", "2024")
    assert res.returncode == 0 and b"Traceback" not in res.stderr
    events = [json.loads(x) for x in res.stdout.splitlines()]
    expected = [
        s
        for name in ("cloudtrail.json", "okta-page.json", "mixed.jsonl", "sshd.log")
        for s in expected_signins(name)
    ]
    assert [(e["user"], e["ip"], e["timestamp"], e["outcome"]) for e in events] == [
        (e["user"], e["ip"], e["timestamp"], e["outcome"]) for e in expected
    ]
    err = res.stderr.decode().splitlines()
    rejects = [json.loads(x) for x in err if x.startswith("{")]
    no_signin = sum(
        1
        for n in ("cloudtrail.json", "okta-page.json", "mixed.jsonl", "sshd.log")
        for e in EXPECTED[n]
        if "none" in e or "reject" in e
    )
    assert len(rejects) == no_signin
    assert all(r["reason"] and r["file"] and r["line"] >= 1 for r in rejects)
    assert any(r["reason"].startswith("not a sign-in") for r in rejects)
    assert any("taken as year 2024 and zone UTC (given" in x for x in err)


def test_normalize_with_a_fixed_format_and_a_mapping_from_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text((FIXTURES / "mapping.toml").read_text())
    res = run_cli(
        "normalize",
        str(FIXTURES / "mapping.jsonl"),
        "--config",
        str(cfg),
        "--format",
        "mapping",
        "--rejects",
        str(tmp_path / "rejects.jsonl"),
    )
    assert res.returncode == 0, res.stderr
    got = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(got) == sum(1 for e in EXPECTED["mapping.jsonl"] if "signin" in e)
    assert got[0]["event_id"] == "vpn-7f3a-0001"
    assert len((tmp_path / "rejects.jsonl").read_text().splitlines()) == 3


def test_unknown_format_is_a_usage_error() -> None:
    res = run_cli("normalize", str(FIXTURES / "sshd.log"), "--format", "syslog")
    assert res.returncode == 2 and b"--format" in res.stderr


def okta_event(
    user: str, ip: str, published: str, uuid: str, lat: float | None = None, lon: float | None = None
) -> dict:
    geo = {"geolocation": {"lat": lat, "lon": lon}, "city": "X", "country": "Y"} if lat is not None else {}
    return {
        "uuid": uuid,
        "published": published,
        "eventType": "user.session.start",
        "actor": {"alternateId": user, "type": "User"},
        "client": {"ipAddress": ip, "geographicalContext": geo},
        "outcome": {"result": "SUCCESS"},
        "securityContext": {"isProxy": False},
    }


def test_replay_detects_over_native_records_and_vendor_geolocation_when_asked(
    tmp_path: Path, city_db: str
) -> None:
    page = [
        okta_event("jane@example.com", "81.2.69.10", "2024-03-01T10:00:00.000Z", "u1"),
        okta_event("jane@example.com", "4.7.5.10", "2024-03-01T10:05:00.000Z", "u2"),
        # 45.1.2.3 is not in the test database; Okta says Tokyo.
        okta_event("kim@example.com", "81.2.69.10", "2024-03-01T10:00:00.000Z", "u3"),
        okta_event("kim@example.com", "45.1.2.3", "2024-03-01T10:10:00.000Z", "u4", 35.68, 139.69),
    ]
    src = tmp_path / "okta.json"
    src.write_bytes(orjson.dumps(page, option=orjson.OPT_INDENT_2))  # a pretty-printed API page
    res = run_cli("replay", str(src), "--geoip-db", city_db)
    assert res.returncode == 0, res.stderr
    assert [json.loads(x)["user"] for x in res.stdout.splitlines()] == ["jane@example.com"]
    res = run_cli("replay", str(src), "--geoip-db", city_db, "--use-vendor-location", "true")
    alerts = [json.loads(x) for x in res.stdout.splitlines()]
    kim = [a for a in alerts if a["user"] == "kim@example.com"]
    assert len(kim) == 1 and kim[0]["current"]["location_source"] == "okta"

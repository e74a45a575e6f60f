"""Against the real GeoLite2-City database from `make geoip`: smoke test, and the labelled clear-cut set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.geoip import GeoIP
from detector.traffic import Catalogue, Generator, score, write_jsonl
from tests.conftest import run_cli

pytestmark = pytest.mark.realdb


def test_real_database_smoke(real_db: str) -> None:
    geo = GeoIP(real_db)
    assert geo.database.database_type == "GeoLite2-City"
    london = geo.locate("81.2.69.142")  # MaxMind's own test address, in Cambridgeshire
    assert london is not None and london.country == "GB" and london.accuracy_radius_km > 0
    us = geo.locate("8.8.8.8")
    assert us is not None and us.country == "US" and us.coarse
    assert geo.locate("10.0.0.1") is None


def test_generator_is_deterministic(catalogue: Catalogue) -> None:
    a = Generator(catalogue, seed=11).generate(60, "nuanced")
    b = Generator(catalogue, seed=11).generate(60, "nuanced")
    assert a.events == b.events and a.labels == b.labels
    assert Generator(catalogue, seed=12).generate(60, "nuanced").events != a.events


@pytest.mark.parametrize("seed", [1, 2])
def test_clear_cut_set_precision_and_recall_are_one(
    tmp_path: Path, real_db: str, catalogue: Catalogue, seed: int
) -> None:
    traffic = Generator(catalogue, seed=seed).generate(300, "clear")
    assert len(traffic.events) > 1500 and len(traffic.labels) >= 40
    src, out = tmp_path / "events.jsonl", tmp_path / "alerts.jsonl"
    write_jsonl(str(src), traffic.events)
    res = run_cli("replay", str(src), "--geoip-db", real_db, "--output", str(out))
    assert res.returncode == 0, res.stderr
    alerts = [json.loads(x) for x in out.read_text().splitlines()]
    from tests.unit.test_schemas import ALERT

    for alert in alerts:
        ALERT.validate(alert)
    result = score(alerts, traffic.labels)
    assert (result.precision, result.recall) == (1.0, 1.0), result
    assert len({a["alert_id"] for a in alerts}) == len(alerts)

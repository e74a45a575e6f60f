"""Metrics on a fresh registry, read with get_sample_value; the HTTP endpoints over a real socket."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry

from detector.engine import Engine
from detector.geoip import GeoIP
from detector.metrics import Health, HttpServer, Metrics
from detector.model import SignIn
from detector.rules import Policy
from detector.state import MemoryStore
from detector.testing import FakeClock

T0 = 1_709_287_200.0


def test_engine_tallies_are_exposed_without_account_or_address_labels(city_db: str) -> None:
    registry = CollectorRegistry()
    geo = GeoIP(city_db)
    engine = Engine(Policy(), geo, MemoryStore(), FakeClock())
    metrics = Metrics(registry)
    metrics.attach(engine, geo)
    result = engine.process(
        [
            SignIn("alice", "81.2.69.10", T0, "a"),
            SignIn("alice", "4.7.5.10", T0 + 300, "b"),
            SignIn("bob", "10.0.0.1", T0, "c"),
            SignIn("bob", "81.2.69.10", T0, "d", success=False),
        ],
        rejected=["bad JSON: x", "bad ip: y", "bad ip: z"],
    )
    assert (
        registry.get_sample_value("detector_events_total", {"result": "evaluated"}) == 0
    )  # not committed yet
    engine.commit(result)
    value = registry.get_sample_value
    assert value("detector_events_total", {"result": "evaluated"}) == 2
    assert value("detector_events_total", {"result": "no_location"}) == 1
    assert value("detector_events_total", {"result": "failure_ignored"}) == 1
    assert value("detector_events_total", {"result": "rejected"}) == 3
    assert value("detector_rejected_total", {"reason": "bad ip"}) == 2
    assert value("detector_alerts_total", {"severity": "high"}) == 1
    assert value("detector_accounts_tracked") == 1
    assert value("detector_geoip_lookups_total") == 3
    assert value("detector_newest_event_timestamp_seconds") == T0 + 300
    text = metrics.render().decode()
    assert "alice" not in text and "81.2.69.10" not in text and "4.7.5.10" not in text


def test_http_endpoints() -> None:
    metrics, health = Metrics(CollectorRegistry()), Health()
    server = HttpServer(metrics, health, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(base + path, timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        status, body = get("/metrics")
        assert status == 200 and "detector_build_info" in body
        assert get("/healthz")[0] == 200
        assert get("/readyz") == (503, "not ok: GeoIP database not loaded\n")
        health.geoip_loaded = True
        assert get("/readyz")[1] == "not ok: no partitions assigned\n"
        health.partitions = 3
        assert get("/readyz")[0] == 200
        health.stopping = True
        assert get("/readyz")[0] == 503
        assert get("/nope")[0] == 404
    finally:
        server.stop()

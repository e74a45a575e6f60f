"""Several detector processes in one group, on a real broker: partitioning by account, state in a
changelog, restore on assignment, SIGKILL mid-stream, TTL tombstones."""

from __future__ import annotations

import signal
import time
from typing import Any

import orjson
import pytest

from detector.traffic import Catalogue, Generator
from tests.integration.conftest import (
    Topics,
    alerts_in,
    assert_exactly_the_labels,
    caught_up,
    create_topic,
    produce,
    read_all,
)

pytestmark = [pytest.mark.kafka, pytest.mark.realdb]


def all_caught_up(topics: Topics) -> bool:
    by_account = f"{topics.group}-signins-by-account"
    return caught_up(topics.bootstrap, topics.group, topics.input) and caught_up(
        topics.bootstrap, topics.group, by_account
    )


def exactly_the_labels(topics: Topics, labels: list[dict[str, Any]]) -> None:
    assert_exactly_the_labels(alerts_in(topics.bootstrap, topics.alerts), labels)  # read_committed


def test_two_processes_one_killed_with_sigkill_and_a_third_started(
    topics: Topics, real_db: str, catalogue: Catalogue, detectors: Any
) -> None:
    traffic = Generator(catalogue, seed=31).generate(240, "clear")
    events = [orjson.dumps(e) for e in traffic.events]
    half = len(events) // 2
    create_topic(topics.bootstrap, topics.input, 6)
    a = detectors(topics, real_db, "--batch-size", "100")
    b = detectors(topics, real_db, "--batch-size", "100")
    a.wait_ready()
    b.wait_ready()
    produce(topics.bootstrap, topics.input, events[:half])
    a.wait_for(lambda: a.events_seen() + b.events_seen() >= half // 2, "half of the first half")
    a.proc.send_signal(signal.SIGKILL)
    a.wait(10)
    produce(topics.bootstrap, topics.input, events[half:])
    c = detectors(topics, real_db)
    c.wait_for(lambda: all_caught_up(topics), "the group to catch up", timeout=180)
    exactly_the_labels(topics, traffic.labels)
    out = b.output() + c.output()
    assert "state restored from the changelog" in out
    assert b.stop() == 0 and c.stop() == 0


def test_three_processes_share_the_work(
    topics: Topics, real_db: str, catalogue: Catalogue, detectors: Any
) -> None:
    traffic = Generator(catalogue, seed=32).generate(180, "clear")
    create_topic(topics.bootstrap, topics.input, 6)
    procs = [detectors(topics, real_db) for _ in range(3)]
    for p in procs:
        p.wait_ready()
    produce(topics.bootstrap, topics.input, [orjson.dumps(e) for e in traffic.events])
    procs[0].wait_for(lambda: all_caught_up(topics), "the group to catch up", timeout=120)
    exactly_the_labels(topics, traffic.labels)
    seen = [p.events_seen() for p in procs]
    assert all(n > 0 for n in seen), f"every process did some of the work: {seen}"
    for p in procs:
        assert p.stop() == 0


def test_a_full_restart_restores_every_account_from_the_changelog(
    topics: Topics, real_db: str, catalogue: Catalogue, detectors: Any
) -> None:
    traffic = Generator(catalogue, seed=33).generate(150, "clear")
    events = [orjson.dumps(e) for e in traffic.events]
    # Restart right before the arrival of a trip, at about half way, so that trips span the restart.
    arrivals = sorted(
        i
        for i, e in enumerate(traffic.events)
        if e.get("event_id") in {lb["current"] for lb in traffic.labels}
    )
    half = min(arrivals, key=lambda i: abs(i - len(events) // 2))
    ids_before = {e.get("event_id") for e in traffic.events[:half]}
    spanning = [
        lb for lb in traffic.labels if lb["previous"] in ids_before and lb["current"] not in ids_before
    ]
    assert spanning, "the test needs trips that start before the restart and end after it"
    create_topic(topics.bootstrap, topics.input, 6)
    first = detectors(topics, real_db)
    first.wait_ready()
    produce(topics.bootstrap, topics.input, events[:half])
    first.wait_for(lambda: all_caught_up(topics), "the first part")
    accounts = first.metrics()["detector_accounts_tracked"]
    assert first.stop() == 0
    restarted = detectors(topics, real_db)
    restarted.wait_ready()
    restarted.wait_for(lambda: "state restored from the changelog" in restarted.output(), "the restore")
    assert restarted.metrics()["detector_accounts_tracked"] == accounts
    produce(topics.bootstrap, topics.input, events[half:])
    restarted.wait_for(lambda: all_caught_up(topics), "the second part")
    exactly_the_labels(topics, traffic.labels)
    assert restarted.stop() == 0


def test_idle_accounts_expire_with_a_tombstone(topics: Topics, real_db: str, detectors: Any) -> None:
    create_topic(topics.bootstrap, topics.input, 6)
    det = detectors(topics, real_db, "--state-ttl", "1h", "--state-ttl-check", "500ms")
    det.wait_ready()
    t0 = time.time() - 86400
    old = [
        orjson.dumps({"user": "sleepy@example.org", "ip": "81.2.69.142", "timestamp": t0, "event_id": "s1"})
    ]
    new = [
        orjson.dumps(
            {
                "user": f"busy{i}@example.org",
                "ip": "81.2.69.142",
                "timestamp": t0 + 7200 + i,
                "event_id": f"b{i}",
            }
        )
        for i in range(5)
    ]
    produce(topics.bootstrap, topics.input, old)
    det.wait_events(1)
    produce(topics.bootstrap, topics.input, new)
    changelog = f"{topics.group}-state-changelog"

    def tombstone() -> bool:
        return any(
            r.key == b"sleepy@example.org" and r.value is None
            for r in read_all(topics.bootstrap, changelog, idle_ms=500)
        )

    det.wait_for(tombstone, "the tombstone of the idle account", timeout=60)
    m = det.metrics()
    assert m["detector_changelog_tombstones_total"] >= 1
    assert m["detector_accounts_tracked"] == 5
    assert det.stop() == 0

"""`python -m detector run` against a real Apache Kafka broker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.localkafka import LocalKafka
from detector.traffic import Catalogue, Generator, score
from tests.conftest import run_cli
from tests.integration.conftest import (
    Topics,
    alerts_in,
    assert_exactly_the_labels,
    caught_up,
    create_topic,
    free_port,
    labelled,
    pairs,
    produce,
    read_all,
)

pytestmark = [pytest.mark.kafka, pytest.mark.realdb]

HOSTILE = [
    b"not json",
    b"\xff\xfe garbage",
    b"[1, 2]",
    b'{"user": "x", "ip": "81.2.69.10"}',
    b'{"user": "x", "ip": "300.1.1.1", "timestamp": 1709287200}',
    b'{"user": "", "ip": "81.2.69.10", "timestamp": 1709287200}',
    b'{"user": "x", "ip": "81.2.69.10", "timestamp": "soon"}',
    b'{"user": "x", "ip": "81.2.69.10", "timestamp": 1709287200, "d": ' + b"[" * 60 + b"]" * 60 + b"}",
    b"",
]


def traffic(catalogue: Catalogue, seed: int, accounts: int = 150) -> tuple[list[bytes], list[dict[str, Any]]]:
    t = Generator(catalogue, seed=seed).generate(accounts, "clear")
    return [orjson.dumps(e) for e in t.events], t.labels


def test_end_to_end_exact_alerts_dead_letters_metrics_and_clean_shutdown(
    topics: Topics, real_db: str, catalogue: Catalogue, detectors: Any
) -> None:
    events, labels = traffic(catalogue, seed=21)
    create_topic(topics.bootstrap, topics.input)
    det = detectors(topics, real_db)
    det.wait_ready()
    assert det.get("/healthz")[0] == 200
    mixed = list(events)
    for i, bad in enumerate(HOSTILE):
        mixed.insert((i + 1) * len(events) // (len(HOSTILE) + 1), bad)
    produce(topics.bootstrap, topics.input, mixed)
    det.wait_events(len(mixed))
    det.wait_for(lambda: caught_up(topics.bootstrap, topics.group, topics.input), "offsets committed")

    alerts = alerts_in(topics.bootstrap, topics.alerts)
    result = score(alerts, labels)
    m = det.metrics()
    assert (result.precision, result.recall) == (1.0, 1.0), (
        f"{result}; unexpected {sorted(map(str, pairs(alerts) - labelled(labels)))}; "
        f"missing {sorted(map(str, labelled(labels) - pairs(alerts)))}; late {m.get('detector_late_events_total')}"
    )
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    keys = {r.key for r in read_all(topics.bootstrap, topics.alerts)}
    assert keys == {a["user"].encode() for a in alerts}  # keyed by account

    dead = read_all(topics.bootstrap, topics.dlq)
    assert sorted(r.value for r in dead) == sorted(HOSTILE)
    reasons = {r.value: dict(r.headers)["reason"] for r in dead}
    assert reasons[HOSTILE[4]] == b"bad ip: not an IPv4 or IPv6 address"  # (a canonical record: triage's)
    assert reasons[HOSTILE[0]].startswith(b"bad JSON")
    for record in dead:
        headers = dict(record.headers)
        assert headers["reason"] and headers["source_topic"] == topics.input.encode()
        source = read_all_at(
            topics.bootstrap, topics.input, int(headers["source_partition"]), int(headers["source_offset"])
        )
        assert source == record.value

    total = sum(v for k, v in m.items() if k.startswith("detector_events_total{"))
    assert total == len(mixed)
    assert m['detector_events_total{result="rejected"}'] == len(HOSTILE)
    assert m["detector_dlq_messages_total"] == len(HOSTILE)
    assert sum(v for k, v in m.items() if k.startswith("detector_alerts_total{")) == len(alerts)
    assert m['detector_transactions_total{result="committed"}'] >= 1
    assert m["detector_accounts_tracked"] > 0
    assert m["detector_alert_latency_seconds_count"] == len(alerts)

    started = time.monotonic()
    assert det.stop() == 0
    assert time.monotonic() - started < 10
    out = det.output()
    assert "Traceback" not in out and "detector stopped" in out


def read_all_at(bootstrap: str, topic: str, partition: int, offset: int) -> bytes:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        for _ in range(50):
            for records in consumer.poll(timeout_ms=200).values():
                return bytes(records[0].value)
        raise AssertionError("source record not found")
    finally:
        consumer.close()


def test_kill_dash_nine_mid_stream_then_restart_loses_and_repeats_no_alert(
    topics: Topics, real_db: str, catalogue: Catalogue, detectors: Any
) -> None:
    events, labels = traffic(catalogue, seed=22, accounts=200)
    half = len(events) // 2
    create_topic(topics.bootstrap, topics.input)
    first = detectors(topics, real_db, "--instance-id", "one", "--batch-size", "50")
    first.wait_ready()
    produce(topics.bootstrap, topics.input, events[:half])
    first.wait_events(half // 3)
    first.kill()  # SIGKILL, mid-stream
    produce(topics.bootstrap, topics.input, events[half:])
    second = detectors(topics, real_db, "--instance-id", "one")
    second.wait_for(lambda: caught_up(topics.bootstrap, topics.group, topics.input), "catching up", 120)

    # State is durable (the changelog): trips whose first sign-in came before the kill are found too.
    assert_exactly_the_labels(alerts_in(topics.bootstrap, topics.alerts), labels)  # read_committed
    assert second.stop() == 0


def test_broker_stopped_and_restarted_mid_stream(
    tmp_path: Path, real_db: str, catalogue: Catalogue, detectors: Any
) -> None:
    broker = LocalKafka(name=f"restart-{free_port()}", port=free_port())
    broker.up()
    try:
        topics = Topics(broker.bootstrap, "signins", "alerts", "dlq", "group")
        events, labels = traffic(catalogue, seed=23)
        half = len(events) // 2
        create_topic(broker.bootstrap, topics.input)
        det = detectors(topics, real_db, "--instance-id", "solo")
        det.wait_ready()
        produce(broker.bootstrap, topics.input, events[:half])
        det.wait_events(half)
        broker.down()
        time.sleep(4)  # the detector runs on without a broker for a while
        assert det.proc.poll() is None
        broker.up()
        produce(broker.bootstrap, topics.input, events[half:])
        det.wait_for(lambda: caught_up(broker.bootstrap, topics.group, topics.input), "catching up", 180)
        assert_exactly_the_labels(alerts_in(broker.bootstrap, topics.alerts), labels)
        assert det.stop() == 0
        assert "Traceback" not in det.output()
    finally:
        broker.wipe()


def test_at_least_once_when_transactions_are_off(
    topics: Topics, real_db: str, catalogue: Catalogue, detectors: Any
) -> None:
    events, labels = traffic(catalogue, seed=24, accounts=80)
    create_topic(topics.bootstrap, topics.input)
    det = detectors(topics, real_db, "--transactions", "false")
    det.wait_ready()
    produce(topics.bootstrap, topics.input, events)
    det.wait_for(lambda: caught_up(topics.bootstrap, topics.group, topics.input), "catching up")
    alerts = [orjson.loads(r.value) for r in read_all(topics.bootstrap, topics.alerts, committed=False)]
    assert pairs(alerts) == labelled(labels)
    assert det.stop() == 0


def test_unreachable_broker_fails_fast_with_a_clear_message(tmp_path: Path, real_db: str) -> None:
    started = time.monotonic()
    res = run_cli(
        "run",
        "--bootstrap-servers",
        f"127.0.0.1:{free_port()}",
        "--geoip-db",
        real_db,
        "--startup-timeout",
        "3s",
        "--metrics-port",
        "0",
        timeout=60,
    )
    assert res.returncode == 1
    assert b"cannot reach Kafka at 127.0.0.1:" in res.stderr
    assert b"Traceback" not in res.stderr
    assert time.monotonic() - started < 30


def test_native_formats_per_topic_and_auto_detected(topics: Topics, real_db: str, detectors: Any) -> None:
    """One topic fixed to Okta, another auto-detected (CloudTrail here): both give their alerts."""
    okta_topic = f"{topics.input}-okta"
    create_topic(topics.bootstrap, topics.input)
    create_topic(topics.bootstrap, okta_topic)
    det = detectors(
        topics, real_db, "--input-topic", f"{topics.input},{okta_topic}", "--format", f"{okta_topic}=okta"
    )
    det.wait_ready()
    now = time.time()

    def okta(uuid: str, ip: str, t: float) -> bytes:
        when = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))
        return orjson.dumps(
            {
                "uuid": uuid,
                "published": when,
                "eventType": "user.session.start",
                "actor": {"alternateId": "jane@example.com"},
                "client": {"ipAddress": ip},
                "outcome": {"result": "SUCCESS"},
            }
        )

    def trail(eid: str, ip: str, t: float) -> bytes:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        return orjson.dumps(
            {
                "Records": [
                    {
                        "eventVersion": "1.08",
                        "eventSource": "signin.amazonaws.com",
                        "eventName": "ConsoleLogin",
                        "eventTime": when,
                        "sourceIPAddress": ip,
                        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/bob"},
                        "responseElements": {"ConsoleLogin": "Success"},
                        "eventID": eid,
                    }
                ]
            }
        )

    produce(
        topics.bootstrap,
        okta_topic,
        [
            okta("o1", "81.2.69.142", now - 600),
            okta("o2", "1.21.128.10", now - 300),
            b'{"eventType": "user.session.end", "published": "2024-03-01T10:00:00Z"}',
        ],
    )
    produce(
        topics.bootstrap,
        topics.input,
        [trail("c1", "81.2.69.142", now - 600), trail("c2", "4.7.5.10", now - 60)],
    )
    det.wait_events(5)
    det.wait_for(
        lambda: (
            len(
                alerts_in(
                    topics.bootstrap,
                    topics.alerts,
                )
            )
            >= 2
        ),
        "two alerts",
    )
    alerts = alerts_in(topics.bootstrap, topics.alerts)
    assert sorted(a["user"] for a in alerts) == ["arn:aws:iam::1:user/bob", "jane@example.com"]
    dead = read_all(topics.bootstrap, topics.dlq)
    assert len(dead) == 1 and dict(dead[0].headers)["reason"].startswith(b"not a sign-in")
    assert det.stop() == 0

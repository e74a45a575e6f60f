"""Real-broker fixtures: uuid-named topics per test and a detector subprocess driver (the session broker
is ``kafka_bootstrap`` in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.localkafka import delete_topics
from tests.conftest import ROOT, free_port

__all__ = ["free_port"]  # the broker itself is tests/conftest.py's session fixture ``kafka_bootstrap``


@dataclass
class Topics:
    bootstrap: str
    input: str
    alerts: str
    dlq: str
    group: str

    def args(self) -> list[str]:
        return [
            "--bootstrap-servers",
            self.bootstrap,
            "--input-topic",
            self.input,
            "--alert-topic",
            self.alerts,
            "--dlq-topic",
            self.dlq,
            "--group-id",
            self.group,
        ]


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Topics]:
    tag = uuid.uuid4().hex[:10]
    yield Topics(kafka_bootstrap, f"in-{tag}", f"alerts-{tag}", f"dlq-{tag}", f"group-{tag}")
    delete_topics(kafka_bootstrap, lambda name: tag in name)  # (the detector's internal ones too)


def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes | None] | None = None) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for i, value in enumerate(values):
            producer.send(topic, value=value, key=keys[i] if keys else None)
        producer.flush(30)
    finally:
        producer.close()


def topic_ends(bootstrap: str, topic: str, isolation: str = "read_uncommitted") -> dict[Any, int]:
    """Each partition's end offset; read_committed: its last stable offset."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return dict(consumer.end_offsets([TopicPartition(topic, p) for p in parts]))
    finally:
        consumer.close()


def settled(bootstrap: str, topic: str, timeout_s: float = 60.0) -> None:
    """Wait until no open transaction holds back the topic's committed records: a read_committed reader
    sees nothing past the first record of a transaction still open, and a detector killed mid-batch
    leaves one open until the broker aborts it (its ``transaction_timeout`` plus the broker's check
    interval, up to ~25 s here). Records that other processes committed after it stay hidden until then,
    so reading "everything" before would miss them."""
    written = topic_ends(bootstrap, topic)  # what had been written when we were asked
    deadline = time.monotonic() + timeout_s
    while True:
        stable = topic_ends(bootstrap, topic, "read_committed")  # the last stable offsets
        if all(stable.get(tp, 0) >= end for tp, end in written.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{topic}: a transaction still open after {timeout_s:g} s ({stable} < {written})"
            )
        time.sleep(0.5)


def read_all(bootstrap: str, topic: str, committed: bool = True, idle_ms: int = 3000) -> list[Any]:
    """Every record of a topic from the start (read_committed by default, once no open transaction
    holds any back: see ``settled``)."""
    from kafka import KafkaConsumer

    if committed:
        settled(bootstrap, topic)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=idle_ms,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    try:
        return list(consumer)
    finally:
        consumer.close()


def create_topic(bootstrap: str, name: str, partitions: int = 6) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def alerts_in(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_all(bootstrap, topic)]


def pairs(alerts: list[dict[str, Any]]) -> set[tuple[str, frozenset[str]]]:
    """(account, {previous event id, current event id}) of each alert."""
    return {(a["user"], frozenset((a["previous"]["event_id"], a["current"]["event_id"]))) for a in alerts}


def labelled(labels: list[dict[str, Any]]) -> set[tuple[str, frozenset[str]]]:
    """The same of each expected alert (traffic.Generator's labels)."""
    return {(lb["user"], frozenset((lb["previous"], lb["current"]))) for lb in labels}


def assert_exactly_the_labels(alerts: list[dict[str, Any]], labels: list[dict[str, Any]]) -> None:
    """No alert twice, and exactly the labelled ones."""
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids)), "an alert was committed twice"
    assert pairs(alerts) == labelled(labels), (
        f"unexpected {sorted(map(str, pairs(alerts) - labelled(labels)))[:5]}; "
        f"missing {sorted(map(str, labelled(labels) - pairs(alerts)))[:5]}"
    )


class Detector:
    """`python -m detector run` as a subprocess, with its metrics port and log."""

    def __init__(
        self, topics: Topics, geoip_db: str, tmp: Path, *extra: str, env: dict[str, str] | None = None
    ):
        self.port = free_port()
        self.log = tmp / f"detector-{uuid.uuid4().hex[:6]}.log"
        argv = [
            sys.executable,
            "-m",
            "detector",
            "run",
            *topics.args(),
            "--geoip-db",
            geoip_db,
            "--metrics-port",
            str(self.port),
            *extra,
        ]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
        full_env.update(env or {})
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            argv, stdout=self._log_fh, stderr=subprocess.STDOUT, cwd=ROOT, env=full_env
        )

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def events_seen(self) -> float:
        with contextlib.suppress(OSError):
            m = self.metrics()
            return sum(v for k, v in m.items() if k.startswith("detector_events_total{"))
        return -1

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"detector exited ({self.proc.returncode}) waiting for {what}:\n{self.output()}"
                )
            if condition():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()[-3000:]}")

    def wait_events(self, n: int, timeout: float = 90) -> None:
        self.wait_for(lambda: self.events_seen() >= n, f"{n} events", timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_for(lambda: self.get_safe("/readyz") == 200, "readiness", timeout)

    def get_safe(self, path: str) -> int:
        try:
            return self.get(path)[0]
        except OSError:
            return -1

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.wait(10)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log_fh.close()

    def output(self) -> str:
        if not self._log_fh.closed:
            self._log_fh.flush()
        return self.log.read_text(errors="replace")


@pytest.fixture
def detectors(tmp_path: Path) -> Iterator[Callable[..., Detector]]:
    started: list[Detector] = []

    def start(topics: Topics, geoip_db: str, *extra: str, env: dict[str, str] | None = None) -> Detector:
        d = Detector(topics, geoip_db, tmp_path, *extra, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            with contextlib.suppress(Exception):
                d.wait(10)


def caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """The group's committed offsets have reached the end of every partition of the topic."""
    from kafka import KafkaAdminClient

    ends = topic_ends(bootstrap, topic)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        committed = admin.list_group_offsets(group).get(group, {})
        return all(end == 0 or (tp in committed and committed[tp].offset >= end) for tp, end in ends.items())
    finally:
        admin.close()


@pytest.fixture(scope="session")
def catalogue(real_db: str) -> Any:
    from detector.traffic import Catalogue

    return Catalogue.from_database(real_db)

"""The pipeline's transactions on a real broker, in-process (to see the requests kafka-python makes)."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from kafka.partitioner import DefaultPartitioner

from detector.app import build_engine, open_geoip, prepare_topics
from detector.config import resolve
from detector.kafka import Pipeline, keyed_partition, utf8
from detector.metrics import Health, Metrics
from detector.state import PartitionedStore
from detector.traffic import Catalogue, Generator
from tests.integration.conftest import (
    Topics,
    assert_exactly_the_labels,
    caught_up,
    create_topic,
    produce,
    read_all,
)

pytestmark = [pytest.mark.kafka, pytest.mark.realdb]


class Requests(logging.Handler):
    """The requests that the transaction manager of the producer whose transactional id begins with
    ``prefix`` enqueues (kafka-python's debug log; the test's own idempotent producers log there too),
    transaction by transaction: a transaction begins with the move from state READY (2) to IN_TRANSACTION (3), which
    only a transactional producer makes. Each request as (its name, what it asks: an AddPartitionsToTxn's
    topics and partitions): a request retried after a retriable error (CONCURRENT_TRANSACTIONS, while the
    broker still completes the last transaction) is enqueued again, asking the same."""

    def __init__(self, prefix: str) -> None:
        super().__init__(logging.DEBUG)
        self.ours = f"'{prefix}"
        self.transactions: list[list[tuple[str, str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message == "Transition from state 2 to 3":
            self.transactions.append([])
        elif (
            message.startswith("Enqueuing transactional request ")
            and self.ours in message
            and self.transactions
        ):
            text = message.removeprefix("Enqueuing transactional request ")
            self.transactions[-1].append((text.split("(")[0], text.partition("topics=")[2] or text))


def _pipeline(topics: Topics, real_db: str, **more: object) -> tuple[int, Any, Pipeline, Health]:
    """A pipeline in this process on the test's topics (input keyed by account), not started; its
    partition count, GeoIP reader (to close), and health."""
    create_topic(topics.bootstrap, topics.input)
    settings = resolve(
        {
            "bootstrap_servers": topics.bootstrap,
            "input_topic": topics.input,
            "alert_topic": topics.alerts,
            "dlq_topic": topics.dlq,
            "group_id": topics.group,
            "geoip_db": real_db,
            "input_keyed_by_account": True,
            **more,
        },
        environ={},
        command="run",
    )
    partitions = prepare_topics(settings)
    geo = open_geoip(settings)
    store = PartitionedStore(geo.locate, settings.state_cache_size, partitions)
    health = Health()
    return (
        partitions,
        geo,
        Pipeline(settings, build_engine(settings, geo, store=store), Metrics(), health),
        health,
    )


def test_each_transaction_adds_its_partitions_in_one_request_and_alerts_keep_kafkas_partition(
    topics: Topics, real_db: str, catalogue: Catalogue
) -> None:
    t = Generator(catalogue, seed=31).generate(150, "clear")
    partitions, geo, pipeline, health = _pipeline(topics, real_db)
    requests = Requests(f"{topics.group}-")  # (the pipeline's transactional id: the group, then the instance)
    manager_log = logging.getLogger("kafka.producer.transaction_manager")
    level = manager_log.level
    manager_log.addHandler(requests)
    manager_log.setLevel(logging.DEBUG)
    stop = threading.Event()
    runner = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    try:
        pipeline.start(partitions)
        runner.start()
        for _ in range(300):  # (partitions assigned first: else the first rounds wait, and go in one batch)
            if health.partitions:
                break
            stop.wait(0.2)
        # In rounds, so that there are several transactions, each writing to several partitions.
        rounds = 6
        for k in range(rounds):
            part = t.events[k * len(t.events) // rounds : (k + 1) * len(t.events) // rounds]
            produce(
                topics.bootstrap,
                topics.input,
                [orjson.dumps(e) for e in part],
                [utf8(e["user"]) for e in part],
            )
            stop.wait(1.5)
        for _ in range(300):
            if caught_up(topics.bootstrap, topics.group, topics.input):
                break
            stop.wait(0.2)
    finally:
        stop.set()
        runner.join(30)
        pipeline.close()
        geo.close()
        manager_log.removeHandler(requests)
        manager_log.setLevel(level)

    added = [[text for name, text in r if name == "AddPartitionsToTxnRequest"] for r in requests.transactions]
    writing = [texts for texts in added if texts]
    assert len(writing) >= 4, requests.transactions
    for (
        texts
    ) in writing:  # one request for all of a transaction's partitions, never a second (a retry: the same)
        assert len(set(texts)) == 1, "\n".join(texts)
    records = read_all(topics.bootstrap, topics.alerts)
    assert_exactly_the_labels([orjson.loads(r.value) for r in records], t.labels)
    # Alerts are sent to an explicit partition: the one Kafka's default partitioner picks for their key.
    cluster = SimpleNamespace(
        topics=lambda: {topics.alerts},
        partitions_for_topic=lambda _: set(range(6)),
        available_partitions_for_topic=lambda _: set(range(6)),
    )
    for r in records:
        assert r.key == utf8(orjson.loads(r.value)["user"])
        assert r.partition == DefaultPartitioner().partition(topics.alerts, r.key, r.key, None, None, cluster)


def test_a_batchs_records_go_as_whole_record_batches_but_large_ones_and_dead_letters(
    topics: Topics, real_db: str
) -> None:
    """The records a batch writes to a partition it names go into kafka-python's accumulator as whole
    record batches (``kafkarecords.append_records``); a record over ``DIRECT_MAX_BYTES`` and a dead
    letter (Kafka's partitioner places it, with headers) go through ``send()``. Every one lands where
    it was sent, a partition's records in the order given, its tombstones before its changes (an
    account that expired and signed in again keeps its new state)."""
    from detector import kafka as kafka_module
    from detector import kafkarecords

    partitions, geo, pipeline, _ = _pipeline(topics, real_db, transactions=False)
    small = {f"user-{n}": (n % partitions, bytes([n]) * 120) for n in range(50)}
    large = ("user-large", 3, b"L" * (kafka_module.DIRECT_MAX_BYTES + 1))
    first = ("user-first", 3, b"F" * (kafka_module.DIRECT_MAX_BYTES + 1))
    dead = SimpleNamespace(key=b"k", value=b"not a sign-in", topic=topics.input, partition=0, offset=7)
    listed = [(user, p, blob) for user, (p, blob) in small.items()]
    listed.insert(25, large)
    listed.insert(0, first)
    changes: dict[int, tuple[list[bytes], list[bytes]]] = {}
    for user, p, blob in listed:
        keys, values = changes.setdefault(p, ([], []))
        keys.append(user.encode())
        values.append(blob)
    tombstones = [("user-0", 0), ("user-9", 9 % partitions), ("user-gone", 1)]
    sent: list[str] = []
    try:
        pipeline.start(partitions)
        assert pipeline.producer is not None and kafkarecords.direct_batches(pipeline.producer)
        send = pipeline.producer.send

        def counted(topic: str, **kw: object) -> object:
            sent.append(topic)
            return send(topic, **kw)

        pipeline.producer.send = counted  # type: ignore[method-assign]
        futures = pipeline._outputs(
            kafka_module.Outputs([], [(dead, "bad: test")], [], changes, tombstones, [])
        )
        pipeline.producer.flush(timeout=30)
        assert all(f.get(timeout=30) is not None for f in futures)
    finally:
        pipeline.close()
        geo.close()
    assert sorted(sent) == sorted([topics.dlq, pipeline.changelog, pipeline.changelog])  # and the large ones
    read = sorted(read_all(topics.bootstrap, pipeline.changelog), key=lambda r: (r.partition, r.offset))
    landed = {r.key.decode(): (r.partition, r.value) for r in read}  # (the last of each key)
    assert landed == {**small, large[0]: large[1:], first[0]: first[1:], "user-gone": (1, None)}
    in_3 = [r.key.decode() for r in read if r.partition == 3]
    assert in_3 == [user for user, p in tombstones if p == 3] + [user for user, p, _ in listed if p == 3]
    (letter,) = read_all(topics.bootstrap, topics.dlq)
    assert letter.value == dead.value and dict(letter.headers)["reason"] == b"bad: test"


def test_a_poll_of_live_traffic_also_takes_what_came_in_after_its_records_were_fetched(
    topics: Topics, real_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Pipeline._poll``: records already fetched (kafka-python's buffer), and, when they are few, what
    came in since, from the fetch the first poll sends; many are returned alone."""
    from detector import kafka as kafka_module

    monkeypatch.setattr(kafka_module, "FRESH_FETCH_MS", 10_000)  # (returns once the records are in)
    partitions, geo, pipeline, _ = _pipeline(topics, real_db)
    key = [b"one-account"] * 6  # (one partition: its records in order)

    def values(polled: dict[Any, list[Any]]) -> list[bytes]:
        return [record.value for records in polled.values() for record in records]

    try:
        pipeline.start(partitions)
        assert pipeline.consumer is not None
        produce(topics.bootstrap, topics.input, [b"a0", b"b0", b"b1", b"b2", b"b3"], key)
        first: list[bytes] = []
        while not first:  # (joins the group; the fetch brings all five, one is returned, four are kept)
            first = values(pipeline.consumer.poll(timeout_ms=1000, max_records=1))
        assert first == [b"a0"]
        produce(topics.bootstrap, topics.input, [b"c0", b"c1"], key)
        assert values(pipeline._poll(1000)) == [b"b0", b"b1", b"b2", b"b3", b"c0", b"c1"]

        produce(topics.bootstrap, topics.input, [b"d0", b"d1", b"d2"], key)
        assert values(pipeline.consumer.poll(timeout_ms=10_000, max_records=1)) == [b"d0"]
        produce(topics.bootstrap, topics.input, [b"e0"], key)
        monkeypatch.setattr(kafka_module, "FRESH_FETCH_MAX", 1)  # (two kept: a backlog's poll)
        assert values(pipeline._poll(1000)) == [b"d1", b"d2"]
    finally:
        pipeline.close()
        geo.close()


def test_a_backlogs_hold_counts_from_when_its_records_were_seen_in_the_log(
    topics: Topics, real_db: str
) -> None:
    """``reorder_min_wait`` holds sign-ins that are old on arrival (partitions of one send can be appended
    moments apart), counted from when each record was known to be in its partition's log. Records that a
    poll returns after an earlier fetch showed the log's end past them wait that much less; records
    appended since wait the whole hold."""
    hold = 30.0
    partitions, geo, pipeline, _ = _pipeline(topics, real_db, batch_size=2, reorder_min_wait="30s")
    month_ago = int(time.time()) - 30 * 86400

    def signins(first: int, n: int) -> list[bytes]:
        return [
            orjson.dumps({"user": "u", "ip": "81.2.69.142", "timestamp": month_ago + i, "event_id": f"e{i}"})
            for i in range(first, first + n)
        ]

    def step() -> None:  # (the loop's steps up to the batch: poll, note the log ends, decode)
        polled: dict[Any, list[Any]] = {}
        while not polled:
            polled = pipeline._poll(1000)
        pipeline._note_log_ends()
        pipeline._decode(polled)

    try:
        pipeline.start(partitions)
        produce(topics.bootstrap, topics.input, signins(0, 6), [b"u"] * 6)  # (one account: one partition)
        step()  # two of them; the fetch brought all six, and the log's end
        first, _ = pipeline.buffer.snapshot()  # (two: the batch size)
        assert first.due == pytest.approx(first.arrived + hold, abs=0.05)
        time.sleep(0.5)
        step()  # two more, from that fetch: in the log since before the first two came
        third = pipeline.buffer.snapshot()[2]
        assert third.arrived - first.arrived >= 0.5
        assert third.due == pytest.approx(first.due, abs=0.05)
        step()  # (the last two of the first send)
        produce(topics.bootstrap, topics.input, signins(6, 2), [b"u"] * 2)
        time.sleep(0.5)
        step()  # appended after the last look at the log's end: the whole hold
        late = pipeline.buffer.snapshot()[6]
        assert late.event.event_id == "e6"
        assert late.due == pytest.approx(late.arrived + hold, abs=0.05)
    finally:
        pipeline.close()
        geo.close()


def test_a_backlog_goes_without_its_hold_once_every_partition_has_delivered_newer_sign_ins(
    topics: Topics, real_db: str
) -> None:
    """The hold guards against a partition that looks caught up before its share of a send is in. A
    sign-in that every partition has already passed (each delivered a newer one) needs no such trust:
    it is evaluated at once; those ahead of the slowest partition still wait."""
    partitions, geo, pipeline, _ = _pipeline(topics, real_db, reorder_min_wait="30s")
    users: dict[int, str] = {}
    n = 0
    while len(users) < partitions:  # an account on each partition
        users.setdefault(keyed_partition(f"user-{n}".encode(), partitions), f"user-{n}")
        n += 1
    month_ago = int(time.time()) - 30 * 86400
    # Partition p: sign-ins at p and 100 + p seconds. Every partition has delivered one at 100 or later,
    # so the first six (0-5) are behind all of them; the second six (100-105) are not, but for the first.
    values, keys = [], []
    for p, user in sorted(users.items()):
        for at in (p, 100 + p):
            values.append(
                orjson.dumps(
                    {"user": user, "ip": "81.2.69.142", "timestamp": month_ago + at, "event_id": f"{at}"}
                )
            )
            keys.append(utf8(user))
    stop = threading.Event()
    try:
        pipeline.start(partitions)
        produce(topics.bootstrap, topics.input, values, keys)
        while len(pipeline.buffer) < len(values):  # (the loop's steps, without the batch)
            polled = pipeline._poll(1000)
            pipeline._note_log_ends()
            pipeline._decode(polled)
        pipeline._batch({}, stop)
        still = sorted(h.event.event_id for h in pipeline.buffer.snapshot())
        assert still == [str(100 + p) for p in range(1, partitions)]
    finally:
        pipeline.close()
        geo.close()

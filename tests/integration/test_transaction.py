"""The pipeline's transactions on a real broker, in-process (to see the requests kafka-python makes)."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import orjson
import pytest
from kafka.partitioner import DefaultPartitioner

from detector.app import build_engine, open_geoip, prepare_topics
from detector.config import resolve
from detector.kafka import Pipeline, utf8
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
    """The requests kafka-python's transaction manager enqueues (its debug log), transaction by
    transaction: a transaction begins with the move from state READY (2) to IN_TRANSACTION (3)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.transactions: list[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message == "Transition from state 2 to 3":
            self.transactions.append([])
        elif message.startswith("Enqueuing transactional request ") and self.transactions:
            self.transactions[-1].append(message.split()[3].split("(")[0])


def test_each_transaction_adds_its_partitions_in_one_request_and_alerts_keep_kafkas_partition(
    topics: Topics, real_db: str, catalogue: Catalogue
) -> None:
    t = Generator(catalogue, seed=31).generate(150, "clear")
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
        },
        environ={},
        command="run",
    )
    partitions = prepare_topics(settings)
    geo = open_geoip(settings)
    store = PartitionedStore(geo.locate, settings.state_cache_size, partitions)
    pipeline = Pipeline(settings, build_engine(settings, geo, store=store), Metrics(), Health())
    requests = Requests()
    manager_log = logging.getLogger("kafka.producer.transaction_manager")
    level = manager_log.level
    manager_log.addHandler(requests)
    manager_log.setLevel(logging.DEBUG)
    stop = threading.Event()
    runner = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    try:
        pipeline.start(partitions)
        runner.start()
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

    writing = [r for r in requests.transactions if "AddPartitionsToTxnRequest" in r]
    assert len(writing) >= 4, requests.transactions
    for enqueued in writing:  # one request for all of a transaction's partitions, never a second
        assert enqueued.count("AddPartitionsToTxnRequest") == 1, enqueued
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

"""Kafka adapter: a consumer group in, a transactional producer out, a dead-letter topic for bad input.

One loop, one thread:

    poll a batch -> decode (bad records -> DLQ) -> engine.process -> in ONE transaction: the DLQ records,
    the alerts, and the consumed offsets (send_offsets_to_transaction) -> commit -> engine.commit

The engine's state changes for a batch are applied only after its transaction commits. On an abortable
error the transaction is aborted, the batch's changes are dropped, and the consumer is rewound to the
batch's first offsets, so the batch is redone from scratch: exactly-once from input offsets to alerts
for readers with ``isolation_level=read_committed``. With transactions off, alerts are flushed and
acknowledged before the offsets are committed (at-least-once; ``alert_id`` lets readers drop repeats).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import socket
import threading
import time
import uuid
import zlib
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import errors as kerr
from kafka.admin import NewTopic
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata, TopicPartition

from detector import __version__, kafkarecords, logs
from detector.codec import decode_internal, encode_alert, encode_internal
from detector.engine import Engine
from detector.errors import BrokerError
from detector.formats import Normalizer
from detector.ingest import normalizer_from
from detector.metrics import Health, Metrics
from detector.model import SignIn
from detector.reorder import ReorderBuffer, route
from detector.security import explain_security_error, kafka_security
from detector.state import PartitionedStore

log = logging.getLogger("detector.kafka")

# A sign-in whose event time is older than this on arrival is part of a backlog, not live traffic.
FRESH_S = 60.0

# Errors after which the producer cannot go on: make a new one (init_transactions fences the old epoch).
_FATAL_PRODUCER = (
    kerr.ProducerFencedError,
    kerr.TransactionalIdAuthorizationFailedError,
    kerr.IllegalStateError,
    kerr.UnsupportedVersionError,
    kerr.InvalidProducerEpochError,
)


def client_options(settings: Any) -> dict[str, Any]:
    """Options shared by every client: where the brokers are, who we are, how we authenticate."""
    return {
        "bootstrap_servers": [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()],
        "client_id": f"impossible-travel-{__version__}",
        **kafka_security(settings),
    }


def brief(exc: BaseException, limit: int = 300) -> str:
    """An error in one short line (the client's messages can repeat whole requests and responses)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def describe_broker_error(exc: BaseException, settings: Any) -> str:
    """One line for an error from the Kafka client at start: refused credentials or an untrusted
    certificate when it is one of those, else unreachable or refused."""
    bootstrap = settings.bootstrap_servers
    explained = explain_security_error(exc, settings)
    if explained:
        return explained
    if isinstance(exc, kerr.KafkaTimeoutError | OSError) or "bootstrap" in str(exc).lower():
        return f"cannot reach Kafka at {bootstrap}: no broker answered ({brief(exc)})"
    return f"Kafka at {bootstrap} refused us: {brief(exc)}"


def connect_admin(settings: Any) -> KafkaAdminClient:
    """An admin client, or ``BrokerError`` with a clear message when the brokers cannot be reached."""
    timeout_ms = int(settings.startup_timeout * 1000)
    try:
        return KafkaAdminClient(
            **client_options(settings), request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
        )
    except (kerr.KafkaError, OSError) as exc:
        raise BrokerError(describe_broker_error(exc, settings)) from exc


def ensure_topics(
    admin: KafkaAdminClient, settings: Any, topics: dict[str, tuple[int, dict[str, str]]]
) -> None:
    """Create missing topics (when allowed) with the given partitions and configs."""
    try:
        existing = set(admin.list_topics())
    except (kerr.KafkaError, OSError) as exc:
        raise BrokerError(describe_broker_error(exc, settings)) from exc
    missing = [name for name in topics if name not in existing]
    if not missing:
        return
    if not settings.create_topics:
        raise BrokerError(f"topic(s) {', '.join(missing)} do not exist and create_topics is off")
    new = [
        NewTopic(name, topics[name][0], settings.topic_replication, topic_configs=topics[name][1])
        for name in missing
    ]
    try:
        admin.create_topics(new, timeout_ms=int(settings.startup_timeout * 1000))
    except kerr.TopicAlreadyExistsError:
        pass  # another instance created it meanwhile
    except (kerr.KafkaError, OSError) as exc:
        raise BrokerError(f"cannot create topics {', '.join(missing)}: {brief(exc)}") from exc
    logs.event(log, "topics created", topics=",".join(f"{t}[{topics[t][0]}]" for t in missing))


def wait_for_partitions(settings: Any, topic: str) -> None:
    """Return once the brokers' metadata shows the topic's partitions (a topic created a moment ago may
    not be visible yet, and a consumer that subscribes then would be assigned nothing for minutes)."""
    consumer = KafkaConsumer(**client_options(settings))
    try:
        deadline = time.monotonic() + settings.startup_timeout
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                raise BrokerError(f"topic {topic} has no partitions in the brokers' metadata")
            time.sleep(0.1)
            consumer.topics()  # refresh the metadata
    finally:
        consumer.close()


@dataclass
class _Assignment(ConsumerRebalanceListener):
    """Rebalance callbacks run inside poll(); they only record what changed."""

    assigned: set[TopicPartition] = field(default_factory=set)
    changed: bool = False

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.assigned -= set(revoked)
        self.changed = True

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned |= set(assigned)
        self.changed = True


def input_topics(settings: Any) -> list[str]:
    return [t.strip() for t in settings.input_topic.split(",") if t.strip()]


def topic_normalizers(settings: Any) -> tuple[Normalizer, dict[str, Normalizer]]:
    """The default normalizer, and one per topic named in ``format`` (``topic=format,...``)."""
    default, per_topic = "auto", {}
    for part in settings.format.split(","):
        topic, _, fmt = part.strip().rpartition("=")
        if topic:
            per_topic[topic.strip()] = normalizer_from(settings, fmt.strip())
        else:
            default = fmt.strip()
    return normalizer_from(settings, default), per_topic


# Key of the records that carry stage 1's progress through the repartition topic (no account is empty).
MARKER_KEY = b""
# An input partition caught up this long (wall clock) no longer holds live traffic back in stage 2.
IDLE_AFTER_S = 2.0
# A backlog sign-in that reached stage 2 at time a no longer waits for an input partition whose owner
# reported it caught up (read to its end, nothing held) at a + this margin or later: whatever that
# partition had that is older came through before the report. The margin covers producers whose
# records to different partitions are appended milliseconds apart, and clocks of different hosts.
CAUGHT_UP_MARGIN_S = 1.0
# Markers go out when a promise changes, and at least this often.
MARKER_EVERY_S = 1.0
# A poll of live traffic, at most FRESH_FETCH_MAX records (a backlog's polls are larger), polls again
# for what came in since its records were fetched (see Pipeline._poll): for up to FRESH_FETCH_MS, about
# a round trip to the broker while records keep coming, the whole of it only when none come.
FRESH_FETCH_MS = 5
FRESH_FETCH_MAX = 500
# Between tries of a transactional request (README, Performance: the latency of the Kafka path).
TXN_RETRY_BACKOFF_MS = 2
# Records up to this size (key and value) are written as whole record batches (kafkarecords); larger
# ones, far rarer, go through send()'s checks (a record over the producer's max_request_size is refused
# there at once).
DIRECT_MAX_BYTES = 100_000


def internal_topics(settings: Any) -> tuple[str, str]:
    """The repartition topic (sign-ins keyed by account) and the state changelog of a group."""
    return f"{settings.group_id}-signins-by-account", f"{settings.group_id}-state-changelog"


def utf8(user: str) -> bytes:
    """An account as a record key (an account read from a key may hold surrogates: kept as they were)."""
    return user.encode("utf-8", "surrogatepass")


def account_partition(user: str, partitions: int) -> int:
    """The partition that owns an account in the repartition topic and the changelog. CRC-32 (in C)
    rather than the Java client's murmur2, which kafka-python computes in Python at 12 us a call."""
    return zlib.crc32(utf8(user)) % partitions


def keyed_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java's and kafka-python's) picks for a keyed record:
    murmur2 of the key. Alerts are sent to it explicitly, so that their partition is known up front."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class Outputs:
    """What one batch produces, all in its transaction."""

    alerts: list[Any]
    bad: list[tuple[Any, str]]
    to_partition: list[tuple[SignIn, int]]
    changes: dict[int, tuple[list[bytes], list[bytes]]]  # changelog partition: (keys, packed states)
    tombstones: list[tuple[str, int]]
    markers: list[tuple[int, bytes]]


def topic_partitions(settings: Any, topic: str) -> int:
    consumer = KafkaConsumer(**client_options(settings))
    try:
        return len(consumer.partitions_for_topic(topic) or ()) or 1
    finally:
        consumer.close()


def transactional_id(settings: Any) -> str:
    """Stable per instance when ``instance_id`` is set, so a restart fences its predecessor at once."""
    if settings.instance_id:
        return f"{settings.group_id}-{settings.instance_id}"
    return f"{settings.group_id}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class Pipeline:
    """The streaming detector: ``run(stop)`` until ``stop`` is set.

    Two stages in one consumer group, one consumer and one transaction per batch (the design of Kafka
    Streams' sub-topologies):

    1. repartition: sign-ins from the input topic(s), whose keys are anything, are decoded and written
       to ``<group>-signins-by-account`` keyed (and partitioned) by account. Skipped with
       ``input_keyed_by_account``, when producers already key by account.
    2. detect: sign-ins of an account arrive on one partition of that topic (or of the keyed input);
       each partition's account state lives in this process while it owns the partition, and every
       change is written to ``<group>-state-changelog`` (compacted, same partition) in the batch's
       transaction. A partition assigned here is paused, its state restored from the changelog by a
       separate consumer outside the group, then resumed; a revoked one's state is dropped.

    Everything a batch produces (repartitioned sign-ins, dead letters, alerts, state changes,
    tombstones) and the consumed offsets of both stages commit in one transaction.
    """

    def __init__(
        self,
        settings: Any,
        engine: Engine,
        metrics: Metrics,
        health: Health,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self.engine = engine
        self.store: PartitionedStore = engine.store  # type: ignore[assignment]
        self.metrics = metrics
        self.health = health
        self.clock = clock
        self.topics = input_topics(settings)
        self.keyed = bool(settings.input_keyed_by_account)
        self.by_account, self.changelog = internal_topics(settings)
        # Where each account's sign-ins are read from, partition by partition, for stage 2.
        self.state_topics = set(self.topics) if self.keyed else {self.by_account}
        self.partitions = 1  # of the state topics; set by start()
        # Per input topic: its format (``format = topic=okta,...``), else the default (auto-detected).
        self.normalizer, self.normalizers = topic_normalizers(settings)
        self.transactional = bool(settings.transactions)
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self.assignment = _Assignment()
        self._txn_id = transactional_id(settings) if self.transactional else None
        self._committing = False
        # Event-time ordering across partitions (see detector.reorder): before repartitioning (the input's
        # partitions are out of step with each other), and before detection (the repartition topic's
        # partitions are written by several processes). With keyed input the first is the second.
        self.buffer = ReorderBuffer(settings.reorder_window, settings.reorder_max_wait)
        # Stage 2 waits for every input partition's progress (see ``_markers``): longer when an upstream
        # process has died, until its partitions' new owner reports for them.
        self.state_buffer = (
            self.buffer if self.keyed else ReorderBuffer(0.0, max(settings.reorder_max_wait, 60.0))
        )
        # Per repartition partition: input partition -> its promises (strict, live, caught up at); see _markers.
        self._upstream: dict[int, dict[tuple[str, int], tuple[float, float, float]]] = {}
        self._input_partitions: list[tuple[str, int]] = []
        self._last_marker: list[Any] | None = None
        self._next_marker = 0.0
        self._caught_up_since: dict[TopicPartition, float] = {}
        self._known_end: dict[TopicPartition, int] = {}  # input partitions' ends, asked of the broker
        self._ends_asked: dict[TopicPartition, list[tuple[float, int]]] = {}  # (asked at, end)
        self._caught_at: dict[TopicPartition, float] = {}  # see _caught_up_at
        self._owned: set[TopicPartition] = set()
        self._next: dict[TopicPartition, int] = {}
        self._newest: dict[TopicPartition, float] = {}
        # Per owned partition: (when this process saw it, the log end then), the ends ascending; see _in_log_since.
        self._log_ends: dict[TopicPartition, list[tuple[float, int]]] = {}
        self._assigned_at = time.monotonic()
        self._tombstones: list[tuple[str, int]] = []
        self._committed: dict[TopicPartition, int] = {}  # the offsets of the last committed batch
        self._next_idle_check = time.monotonic()
        self._rejoins_when_empty = 0
        self._ever_assigned = False
        self._next_sweep = time.monotonic() + settings.state_ttl_check
        # Called between batches (hot reload of the GeoIP database and the exceptions file).
        self.reloader: Callable[[], None] = lambda: None

    # -- clients -----------------------------------------------------------------------------------

    def _new_consumer(self) -> KafkaConsumer:
        s = self.s
        options: dict[str, Any] = {
            **client_options(s),
            "group_id": s.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": s.auto_offset_reset,
            "isolation_level": "read_committed",
            "max_poll_records": s.batch_size,
            "fetch_max_wait_ms": 100,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 2_000,
            "max_poll_interval_ms": 300_000,
            "request_timeout_ms": 30_000,
            "reconnect_backoff_max_ms": 2_000,
            # New partitions of the input topic are picked up within this.
            "metadata_max_age_ms": 30_000,
        }
        if s.instance_id:
            options["group_instance_id"] = s.instance_id
        consumer = KafkaConsumer(**options)
        kafkarecords.install(consumer)
        consumer.subscribe(self._subscription(), listener=self.assignment)
        return consumer

    def _new_producer(self) -> KafkaProducer:
        options: dict[str, Any] = {
            **client_options(self.s),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            # A batch's changelog (thousands of records of about 130 bytes) in a few record batches, not
            # tens of 16 KiB (kafka-python's default): the sender's Python costs per record batch.
            "batch_size": 256 * 1024,
            # A transaction begun while the broker still writes the last one's markers is refused
            # (CONCURRENT_TRANSACTIONS) and retried after this: kafka-python's 100 ms default was most of
            # the latency's tail (README, Performance). Lower still for that retry alone, below.
            "retry_backoff_ms": 10,
            "max_block_ms": 10_000,
            "request_timeout_ms": 10_000,
            "delivery_timeout_ms": 30_000,
            "reconnect_backoff_max_ms": 2_000,
        }
        if self.transactional:
            options["transactional_id"] = self._txn_id
            options["transaction_timeout_ms"] = int(self.s.transaction_timeout * 1000)
        producer = KafkaProducer(**options)
        if self.transactional:
            # The sender thread sleeps this long before it sends a transactional request again, the
            # refused AddPartitionsToTxn above included (its own config: produce retries and metadata
            # keep the 10 ms).
            producer._sender.config["retry_backoff_ms"] = TXN_RETRY_BACKOFF_MS
            producer.init_transactions()
        return producer

    def start(self, partitions: int | None = None) -> None:
        """Connect both clients; fails fast (``BrokerError``) when Kafka cannot be reached."""
        if partitions is not None:
            self.partitions = partitions
        try:
            self.producer = self._new_producer()
            self.consumer = self._new_consumer()
        except (kerr.KafkaError, OSError) as exc:
            self.close()
            raise BrokerError(describe_broker_error(exc, self.s)) from exc
        logs.event(
            log,
            "connected",
            bootstrap=self.s.bootstrap_servers,
            input=self.s.input_topic,
            by_account="(input is keyed by account)" if self.keyed else self.by_account,
            changelog=self.changelog,
            partitions=self.partitions,
            group=self.s.group_id,
            transactions=self.transactional,
            transactional_id=self._txn_id,
        )

    def _reset_producer(self, stop: threading.Event) -> None:
        """Replace a producer in an unusable state; retry until the brokers answer or we are stopped."""
        if self.producer is not None:
            with contextlib.suppress(Exception):
                self.producer.close(timeout=1)
            self.producer = None
        backoff = 0.5
        while not stop.is_set():
            try:
                self.producer = self._new_producer()
                logs.event(log, "producer reconnected")
                return
            except (kerr.KafkaError, OSError) as exc:
                self.metrics.broker_errors.labels(type(exc).__name__).inc()
                logs.event(log, "producer cannot connect yet", logging.WARNING, error=type(exc).__name__)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                self.consumer.close(autocommit=False)
            self.consumer = None
        if self.producer is not None:
            with contextlib.suppress(Exception):
                self.producer.close(timeout=3)
            self.producer = None

    # -- the loop ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        if self.consumer is None:
            self.start()
        assert self.consumer is not None
        while not stop.is_set():
            self.health.tick()
            self.reloader()
            timeout = self.s.poll_timeout
            for due in (self.buffer.next_due(), self.state_buffer.next_due()):
                if due is not None:
                    timeout = min(timeout, max(0.0, due - time.monotonic()))
            try:
                polled = self._poll(int(timeout * 1000))
            except (kerr.KafkaError, OSError) as exc:
                self.metrics.broker_errors.labels(type(exc).__name__).inc()
                logs.event(log, "poll failed; retrying", logging.WARNING, error=brief(exc))
                stop.wait(1.0)
                continue
            self._note_log_ends()
            if self.assignment.changed:
                gained = self._on_assignment(stop)
                # Records fetched before the change: of partitions no longer ours, or of ones just
                # assigned, which are read again from their committed offsets (see _seek_committed).
                polled = {
                    tp: records
                    for tp, records in polled.items()
                    if tp in self.assignment.assigned and tp not in gained
                }
            self._rejoin_if_left_out()
            self._sweep()
            if polled or len(self.buffer) or len(self.state_buffer) or self._tombstones:
                self._batch(polled, stop)
            elif time.monotonic() >= self._next_idle_check:
                self._next_idle_check = time.monotonic() + 1.0
                if self._idle_positions():
                    self._batch({}, stop)
        logs.event(log, "stopping: closing consumer and producer")

    def _poll(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        """A poll, and when it brings live traffic (a few records, at most ``FRESH_FETCH_MAX``), one more
        of up to ``FRESH_FETCH_MS``.

        kafka-python sends the next fetch as soon as a poll returns, so the records a poll returns were
        fetched at the start of the batch before: those that came in while it was evaluated and
        committed wait for the fetch this poll sends, one more batch. The second poll takes them now.
        Behind a backlog (large polls) the wait would only slow the catching up."""
        assert self.consumer is not None
        polled = self.consumer.poll(timeout_ms=timeout_ms)
        got = sum(len(records) for records in polled.values())
        room = self.s.batch_size - got
        if 0 < got <= FRESH_FETCH_MAX and room > 0:
            for tp, records in self.consumer.poll(timeout_ms=FRESH_FETCH_MS, max_records=room).items():
                polled.setdefault(tp, []).extend(records)
        return polled

    def _note_log_ends(self) -> None:
        """Each owned partition's end as the last fetch reported it, when it grew: from then on every
        record below it is known to have been in the log."""
        assert self.consumer is not None
        now = time.monotonic()
        for tp in self.consumer.assignment():  # (the client's own: ``highwater`` refuses any other)
            end = self.consumer.highwater(tp)
            if end is not None:
                ends = self._log_ends.setdefault(tp, [])
                if not ends or end > ends[-1][1]:
                    ends.append((now, end))

    def _in_log_since(self, tp: TopicPartition, offset: int, default: float) -> float:
        """The earliest time this process knew the record at ``offset`` to be in the log (a log end seen
        past it), or ``default`` when that is earlier or unknown. Ends at or below ``offset`` are
        forgotten: records are read in offset order (one read again, after a batch is undone, gets a
        later time than it could: it waits longer, never less)."""
        ends = self._log_ends.get(tp)
        if not ends:
            return default
        k = 0
        while k < len(ends) and ends[k][1] <= offset:
            k += 1
        del ends[:k]
        return min(ends[0][0], default) if ends else default

    def _rejoin_if_left_out(self) -> None:
        """kafka-python now and then assigns a member that joined before its metadata showed the topics
        no partition, and no rebalance follows (dpkp/kafka-python#2377). A process with none a few
        seconds after an assignment joins the group again, at most three times: a true stand-by (more
        processes than partitions) costs the group three extra rebalances at start, no more."""
        if (
            self._owned
            or not self._ever_assigned
            or self._rejoins_when_empty >= 3
            or time.monotonic() - self._assigned_at < 5.0
        ):
            return
        assert self.consumer is not None
        self._rejoins_when_empty += 1
        self._assigned_at = time.monotonic()
        logs.event(log, "no partition assigned; joining the group again", attempt=self._rejoins_when_empty)
        self.consumer.unsubscribe()
        self.consumer.subscribe(self._subscription(), listener=self.assignment)

    def _subscription(self) -> list[str]:
        return [*self.topics, *([] if self.keyed else [self.by_account])]

    def _state_partitions(self, tps: set[TopicPartition]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic in self.state_topics}

    def _on_assignment(self, stop: threading.Event) -> set[TopicPartition]:
        """Act on what the rebalance callbacks recorded (they run inside poll and only record);
        returns the partitions newly assigned."""
        assert self.consumer is not None
        self.assignment.changed = False
        self._ever_assigned = True
        assigned = set(self.assignment.assigned)
        revoked = self._owned - assigned
        if revoked:
            # Their new owner re-reads them from the committed offsets, held sign-ins included.
            self.buffer.drop_sources(revoked)
            self.state_buffer.drop_sources(revoked)
            for tp in revoked:
                self._next.pop(tp, None)
                self._newest.pop(tp, None)
                self._log_ends.pop(tp, None)
                self._committed.pop(tp, None)
                self._known_end.pop(tp, None)
                self._ends_asked.pop(tp, None)
                self._caught_at.pop(tp, None)
                if tp.topic == self.by_account:
                    self._upstream.pop(tp.partition, None)
        gained_tps = assigned - self._owned
        if gained_tps:
            self._seek_committed(gained_tps)
        lost = self._state_partitions(revoked) - self._state_partitions(assigned)
        for p in sorted(lost):
            dropped = self.store.drop(p)
            logs.event(log, "state of a revoked partition dropped", partition=p, accounts=dropped)
        gained = self._state_partitions(assigned) - set(self.store.parts)
        if gained:
            paused = [tp for tp in assigned if tp.topic in self.state_topics and tp.partition in gained]
            self.consumer.pause(*paused)
            try:
                self._restore(sorted(gained), stop)
            finally:
                self.consumer.resume(*paused)
        self._owned = assigned
        self._assigned_at = time.monotonic()
        parts = sorted(assigned)
        self.health.partitions = len(parts)
        self.metrics.assigned_partitions.set(len(parts))
        self.metrics.state_partitions.set(len(self.store.parts))
        self.metrics.consumer_lag.clear()
        logs.event(
            log,
            "partitions assigned",
            count=len(parts),
            partitions=",".join(f"{tp.topic}[{tp.partition}]" for tp in parts),
        )
        return gained_tps

    def _seek_committed(self, tps: set[TopicPartition]) -> None:
        """Read newly assigned partitions from the group's committed offsets. kafka-python keeps its
        in-memory position for a partition assigned again after a revocation, but what this process
        held from there was dropped with the revocation: it would be skipped for ever."""
        assert self.consumer is not None
        for tp in sorted(tps):
            try:
                offset = self.consumer.committed(tp, timeout_ms=int(self.s.commit_timeout * 1000))
            except (kerr.KafkaError, AssertionError) as exc:
                # Unknown: read it all again rather than skip; duplicates are recognised by event id.
                logs.event(
                    log,
                    "committed offset unknown; reading the partition from its start",
                    logging.WARNING,
                    partition=f"{tp.topic}[{tp.partition}]",
                    error=brief(exc),
                )
                self.consumer.seek_to_beginning(tp)
                continue
            if offset is not None:
                self.consumer.seek(tp, offset)
            elif self.s.auto_offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek_to_end(tp)

    def _restore(self, partitions: list[int], stop: threading.Event) -> None:
        """Read the changelog partitions to their end (committed records only) into the state store."""
        started = time.monotonic()
        for p in partitions:
            self.store.assign(p)
        tps = [TopicPartition(self.changelog, p) for p in partitions]
        reader = KafkaConsumer(
            **client_options(self.s),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_poll_records=20_000,
            fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=16 << 20,
        )
        kafkarecords.install(reader)
        records = 0
        try:
            reader.assign(tps)
            reader.seek_to_beginning(*tps)
            ends = reader.end_offsets(tps)
            todo = {tp for tp in tps if ends.get(tp, 0) > 0}
            while todo and not stop.is_set():
                for tp, batch in reader.poll(timeout_ms=500).items():
                    self.store.parts[tp.partition].put_packed_many(
                        [(record.key.decode("utf-8", "surrogatepass"), record.value) for record in batch]
                    )
                    records += len(batch)
                todo = {tp for tp in todo if reader.position(tp) < ends[tp]}
        finally:
            reader.close()
        seconds = time.monotonic() - started
        self.metrics.restore_seconds.observe(seconds)
        accounts = sum(len(self.store.parts[p]) for p in partitions)
        logs.event(
            log,
            "state restored from the changelog",
            partitions=",".join(map(str, partitions)),
            records=records,
            accounts=accounts,
            seconds=round(seconds, 3),
        )

    def _sweep(self) -> None:
        """Now and then: drop accounts idle past the TTL (in event time), with changelog tombstones."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + self.s.state_ttl_check
        newest = self.engine.tally.newest_event_time
        if newest > 0:
            gone = self.store.expire(newest - self.s.state_ttl)
            if gone:
                self._tombstones += gone
                logs.event(log, "idle accounts expired", accounts=len(gone))

    def _decode(self, polled: dict[TopicPartition, list[Any]]) -> list[tuple[Any, str]]:
        """Input records into ``buffer``, repartitioned ones into ``state_buffer``; returns the records
        that are not sign-ins."""
        bad: list[tuple[Any, str]] = []
        arrived = time.monotonic()
        # Sign-ins that are already old on arrival come in bursts (a backlog, a replayed stream) where
        # partitions can be milliseconds out of step: those wait a moment; fresh ones go at once. The
        # moment counts from when the record was known to be in the log, where that was before it
        # came: the partitions' shares of a send are all in their logs a moment after it, so the end of
        # a backlog that was already there waits for nothing.
        old_before = self.clock() - FRESH_S
        for tp, records in polled.items():
            since = self._in_log_since(tp, records[-1].offset, arrived)  # (for all: offsets ascend)
            hold = max(0.0, since + self.s.reorder_min_wait - arrived)
            self._next[tp] = self._position(tp, records[-1].offset + 1)
            newest = self._newest.get(tp, float("-inf"))
            if tp.topic == self.by_account:  # already checked by stage 1
                upstream = self._upstream.setdefault(tp.partition, {})
                for record in records:
                    if record.key == MARKER_KEY:
                        for topic, partition, strict, live, caught in orjson.loads(record.value):
                            upstream[(topic, partition)] = (
                                math.inf if strict is None else strict,
                                math.inf if live is None else live,
                                -math.inf if caught is None else caught,
                            )
                        continue
                    event = decode_internal(record.value)
                    self.state_buffer.add(
                        event, tp, record.offset, arrived, hold if event.time < old_before else 0.0
                    )
                    newest = max(newest, event.time)
                self._newest[tp] = newest
                continue
            normalizer = self.normalizers.get(tp.topic, self.normalizer)
            values = [r.value if r.value is not None else b"" for r in records]
            signins, rejected = normalizer.triage(values)
            add, add_run = self.buffer.add, self.buffer.add_run
            k = 0
            while True:
                # Runs of records that are one canonical sign-in each (nearly all): as normalizer.many
                # has them; the run stops at each record left to the loop body.
                k, newer = add_run(signins, k, records, tp, arrived, hold, old_before)
                newest = max(newest, newer)
                if k == len(records):
                    break
                record, error = records[k], rejected.get(k)
                k += 1
                reasons = [] if error is None else [error.reason]  # (triage's: records would say so too)
                for outcome in normalizer.records(record.value or b"") if error is None else ():
                    if outcome.error is not None:
                        reasons.append(outcome.error.reason)
                    for event in outcome.signins:
                        add(event, tp, record.offset, arrived, hold if event.time < old_before else 0.0)
                        newest = max(newest, event.time)
                if record.value is None:
                    reasons = ["empty: no value"]
                if reasons:  # the message goes to the DLQ once, with its first reason and a count
                    more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
                    bad.append((record, reasons[0] + more))
            self._newest[tp] = newest
        return bad

    def _position(self, tp: TopicPartition, fallback: int) -> int:
        """The consumer's position: past the records returned and past transaction markers after them
        (committing only the last record's offset + 1 would leave a transactional topic's group one
        marker short of its end for ever)."""
        assert self.consumer is not None
        try:
            return max(fallback, int(self.consumer.position(tp, timeout_ms=100)))
        except (kerr.KafkaError, AssertionError, TypeError, ValueError):
            return fallback

    def _read_to(self, tp: TopicPartition) -> int:
        """Where reading ``tp`` has got to: past what was decoded, or the consumer's position."""
        return self._next[tp] if tp in self._next else self._position(tp, -1)

    def _idle_positions(self) -> bool:
        """Positions that moved past markers alone since the last commit (nothing held there)."""
        held = self.buffer.oldest_offsets()
        if self.state_buffer is not self.buffer:
            held.update(self.state_buffer.oldest_offsets())
        moved = False
        for tp in self.assignment.assigned:
            if tp in held or tp not in self._committed:
                continue
            position = self._position(tp, self._committed[tp])
            if position > self._committed[tp]:
                self._next[tp] = position
                moved = True
        return moved

    def _markers(self, now: float) -> list[tuple[int, bytes]]:
        """Stage 1's progress, for stage 2 wherever it runs: to every repartition partition, a record
        with, per input partition this process owns, two event times up to which all its sign-ins are
        in (sent before the record, in the same transaction), and a wall-clock time before which all
        its records are in. ``strict``: the newest sign-in seen there (producers write in time order:
        an older one coming later is late), or less while some are still held here. ``live``: the
        same, but nothing once it has been idle 2 s, so that a quiet partition does not hold live
        traffic back. ``caught``: see ``_caught_up_at``; so that a sign-in does not wait for a
        partition that had nothing more to give when it arrived. Sent when they change, and every
        second."""
        assert self.consumer is not None
        held = self.buffer.oldest_times()
        promises = []
        positions: dict[TopicPartition, int] = {}
        for tp in sorted(self.assignment.assigned):
            if tp.topic not in self.topics:
                continue
            highwater = self.consumer.highwater(tp)
            if highwater is None:  # nothing fetched there yet (an empty partition): the broker's word
                highwater = self._known_end.get(tp)
            position = positions[tp] = self._read_to(tp)
            caught_up = highwater is not None and position >= highwater
            if not caught_up:
                self._caught_up_since.pop(tp, None)
            quiet = now - self._caught_up_since.setdefault(tp, now) if caught_up else 0.0
            strict = max(self._newest.get(tp, 0.0), 0.0)
            live = math.inf if quiet >= IDLE_AFTER_S else strict
            if tp in held:
                strict = live = min(strict, held[tp] - 1e-6)
            promises.append([tp.topic, tp.partition, strict, None if math.isinf(live) else live, None])
        changed = [p[:4] for p in promises]
        if not promises or (changed == self._last_marker and now < self._next_marker):
            return []
        self._last_marker, self._next_marker = changed, now + MARKER_EVERY_S
        self._caught_up_at(promises, positions)
        value = orjson.dumps(promises)
        return [(p, value) for p in range(self.partitions)]

    def _caught_up_at(self, promises: list[list[Any]], positions: dict[TopicPartition, int]) -> None:
        """Per input partition, the latest wall-clock time T such that every record appended before T
        has been read and forwarded (nothing before it still held here): the partition's end is asked
        of the broker at each marker, and T is the time of the latest answer that the partition's
        progress has passed. The consumer's own idea of the end comes from its last fetch, which may
        predate records already there; and under steady traffic a partition is rarely at its end at
        the very moment, but has always passed where the end was a second ago."""
        assert self.consumer is not None
        tps = [TopicPartition(p[0], p[1]) for p in promises]
        asked_at = self.clock()
        try:
            ends = self.consumer.end_offsets(tps, timeout_ms=2000)
        except (kerr.KafkaError, AssertionError, ValueError):
            ends = {}
        self._known_end.update(ends)
        held = self.buffer.oldest_offsets()
        for tp, promise in zip(tps, promises, strict=True):
            asked = self._ends_asked.setdefault(tp, [])
            if tp in ends:
                asked.append((asked_at, ends[tp]))
            done = min(positions[tp], held.get(tp, positions[tp]))
            passed = [t for t, end in asked if done >= end]
            if passed:
                self._caught_at[tp] = max(passed)
                asked[:] = [(t, end) for t, end in asked if done < end]
            promise[4] = self._caught_at.get(tp)

    def _upstream_watermark(self) -> tuple[Callable[[float], float], float]:
        """Stage 2's watermarks: the least progress any input partition has reported over the
        repartition partitions this process owns (+inf when it owns none), ``live``, and ``strict`` as a
        function of when a sign-in arrived (partitions caught up since then do not count)."""
        if not self._input_partitions and self.consumer is not None:
            self._input_partitions = [
                (t, p) for t in self.topics for p in sorted(self.consumer.partitions_for_topic(t) or ())
            ]
        live = math.inf
        gates: list[tuple[float, float]] = []  # (caught up at, strict)
        for tp in self.assignment.assigned:
            if tp.topic == self.by_account:
                upstream = self._upstream.get(tp.partition, {})
                for ip in self._input_partitions:
                    s, lv, caught = upstream.get(ip, (-math.inf, -math.inf, -math.inf))
                    live = min(live, lv)
                    gates.append((caught, s))
        gates.sort()
        caughts = [c for c, _ in gates]
        lowest = list(itertools.accumulate((s for _, s in gates), min))
        to_wall = self.clock() - time.monotonic()

        def strict(arrived: float) -> float:
            k = bisect_left(caughts, arrived + to_wall + CAUGHT_UP_MARGIN_S)
            return lowest[k - 1] if k else math.inf

        return strict, live

    def _watermark(self, topics: set[str]) -> tuple[float, float]:
        """Lowest newest-event-time among the partitions of ``topics`` that still have records to
        deliver; +inf when all have caught up. A partition not fetched yet counts as behind a moment.
        And the *settled* mark: the lowest newest-event-time among all of them, caught up or not."""
        assert self.consumer is not None
        mark = settled = float("inf")
        for tp in self.assignment.assigned:
            if tp.topic not in topics:
                continue
            settled = min(settled, self._newest.get(tp, float("-inf")))
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                behind = time.monotonic() - self._assigned_at < 2.0
            else:
                position = self._next.get(tp)
                if position is None:
                    try:
                        position = self.consumer.position(tp, timeout_ms=100)
                    except (kerr.KafkaError, AssertionError):
                        position = None
                behind = position is None or position < highwater
            if behind:
                mark = min(mark, self._newest.get(tp, float("-inf")))
        return mark, settled  # (settled <= mark: it is taken over every partition that mark is)

    def _commit_offsets(self) -> dict[TopicPartition, int]:
        """Per owned partition: the next offset to read, but never past a sign-in still held."""
        held = self.buffer.oldest_offsets()
        if self.state_buffer is not self.buffer:
            held.update(self.state_buffer.oldest_offsets())  # different topics: no overlap
        return {
            tp: min(held.get(tp, offset), offset)
            for tp, offset in self._next.items()
            if tp in self.assignment.assigned
        }

    def _batch(self, polled: dict[TopicPartition, list[Any]], stop: threading.Event) -> None:
        started = time.monotonic()
        assert self.consumer is not None
        first = {tp: records[0].offset for tp, records in polled.items()}
        snapshots = self.buffer.snapshot(), self.state_buffer.snapshot()
        saved = dict(self._next), dict(self._newest), dict(self._caught_at)
        bad = self._decode(polled)
        now_m = time.monotonic()
        to_partition: list[tuple[SignIn, int]] = []
        markers: list[tuple[int, bytes]] = []
        if not self.keyed:  # stage 1: in event-time order across the input's partitions, by account
            n = self.partitions
            mark, settled = self._watermark(set(self.topics))
            released = self.buffer.release(mark, now_m, settled)
            to_partition = [(e, account_partition(e.user, n)) for e in released]
            markers = self._markers(now_m)
            strict, live = self._upstream_watermark()
            held = self.state_buffer.release_held(live, now_m, strict, self.clock() - FRESH_S)
        else:
            mark, settled = self._watermark(self.state_topics)
            held = self.state_buffer.release_held(mark, now_m, settled=settled)
        tombstones, self._tombstones = self._tombstones, []
        after = self._commit_offsets()
        unchanged = all(self._committed.get(tp) == offset for tp, offset in after.items())
        if not (held or bad or tombstones or to_partition or markers) and unchanged:
            # Nothing to write or commit: a poll held whole (a backlog waiting for its slowest
            # partition) costs no transaction.
            self._observe_poll(polled)
            return
        events = route(held, self.store.routes)
        result = self.engine.process(events, [reason for _, reason in bad])
        changes = self.store.changelog(result.changes)
        out = Outputs(result.alerts, bad, to_partition, changes, tombstones, markers)
        self._committing = False
        try:
            if self.transactional:
                self._commit_transaction(out, after)
            else:
                self._commit_at_least_once(out, after)
        except (kerr.KafkaError, OSError) as exc:
            if not self._recover(exc, first, after, stop):
                self.buffer.restore(snapshots[0])
                if self.state_buffer is not self.buffer:
                    self.state_buffer.restore(snapshots[1])
                self._next, self._newest, self._caught_at = saved
                self._ends_asked.clear()
                self._tombstones = tombstones + self._tombstones
                self.store.routes.clear()
                return
        self.engine.commit(result)
        self.store.routes.clear()
        self._committed.update(after)
        now = self.clock()
        m = self.metrics
        self._observe_poll(polled)
        m.dlq.inc(len(bad))
        m.changelog.inc(len(result.changes))
        m.tombstones.inc(len(tombstones))
        m.repartitioned.inc(len(to_partition))
        for alert in result.alerts:
            m.alert_latency.observe(max(0.0, now - alert.current.time))
        m.processing_latency.observe(time.monotonic() - started)
        m.last_commit.set(now)

    def _observe_poll(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """A poll's metrics: its size, what is held, and each polled partition's lag."""
        assert self.consumer is not None
        m = self.metrics
        m.held.set(len(self.buffer) + (len(self.state_buffer) if self.state_buffer is not self.buffer else 0))
        if not polled:
            return
        m.batch_size.observe(sum(len(r) for r in polled.values()))
        for tp in polled:
            with contextlib.suppress(Exception):
                highwater = self.consumer.highwater(tp)
                if highwater is not None:
                    m.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - self._next[tp]))

    def _outputs(self, out: Outputs) -> list[Any]:
        """Send everything a batch produces; returns the send futures."""
        assert self.producer is not None
        producer = self.producer
        direct = kafkarecords.direct_batches(producer)
        # A partition's records in the order given: those under DIRECT_MAX_BYTES without headers (most)
        # as whole record batches, a partition at a time; others through send().
        groups: dict[tuple[str, int], tuple[list[bytes | None], list[bytes | None]]] = {}
        sends: list[tuple[str, int | None, bytes | None, bytes | None, Any]] = []
        sent_to: set[tuple[str, int | None]] = set()
        futures: list[Any] = []
        records = self._records(out)
        # The changelog (most of what a batch writes) by partition, as it comes: a partition's keys and
        # states appended at once where all fit, after its tombstones; else a record at a time, below.
        bulk: list[tuple[int, list[bytes], list[bytes]]] = []
        for part, (keys, values) in out.changes.items():
            if direct and keys and max(map(len, keys)) + max(map(len, values)) <= DIRECT_MAX_BYTES:
                bulk.append((part, keys, values))
            else:
                records += [(self.changelog, part, k, v, None) for k, v in zip(keys, values, strict=True)]
        for record in records:
            topic, p, k, v, h = record
            whole = (
                direct and p is not None and h is None and len(k or b"") + len(v or b"") <= DIRECT_MAX_BYTES
            )
            if (topic, p) in (sent_to if whole else groups):  # (rare) the other way holds earlier ones
                futures += self._send_all(groups, sends)
                groups, sends, sent_to = {}, [], set()
            if whole:
                group = groups.get((topic, p))  # type: ignore[arg-type]
                if group is None:
                    group = groups[(topic, p)] = ([], [])  # type: ignore[index]
                group[0].append(k)
                group[1].append(v)
            else:
                sends.append(record)
                sent_to.add((topic, p))
        for part, keys, values in bulk:
            if (self.changelog, part) in sent_to:  # (rare) as above
                futures += self._send_all(groups, sends)
                groups, sends, sent_to = {}, [], set()
            group = groups.setdefault((self.changelog, part), ([], []))
            group[0].extend(keys)
            group[1].extend(values)
        return futures + self._send_all(groups, sends)

    def _send_all(
        self,
        groups: dict[tuple[str, int], tuple[list[bytes | None], list[bytes | None]]],
        sends: list[tuple[str, int | None, bytes | None, bytes | None, Any]],
    ) -> list[Any]:
        """Queue each partition's group as whole record batches, then the rest through send()."""
        assert self.producer is not None
        producer = self.producer
        if self.transactional:
            # Each partition a transaction writes must be added to it (AddPartitionsToTxn) before its records
            # go out; kafka-python adds what the first send() found, then the rest in another round trip
            # the commit waits for. Declared here, they go in one request (but for dead letters', which
            # Kafka's partitioner places, as it did: rare).
            add = producer._transaction_manager.maybe_add_partition_to_transaction
            for topic, p in {*groups, *((topic, p) for topic, p, *_ in sends if p is not None)}:
                add(TopicPartition(topic, p))
        for topic in {topic for topic, _ in groups}:
            producer.partitions_for(topic)  # (each topic's partitions known, as send() makes sure)
        futures: list[Any] = []
        for (topic, p), (keys, values) in groups.items():
            futures += kafkarecords.append_records(producer, TopicPartition(topic, p), keys, values)
        for topic, partition, k, v, h in sends:
            futures.append(producer.send(topic, value=v, key=k, partition=partition, headers=h))
        return futures

    def _records(self, out: Outputs) -> list[tuple[str, int | None, bytes | None, bytes | None, Any]]:
        """(topic, partition, key, value, headers) of everything a batch produces; the partition is None
        where Kafka's partitioner picks it (dead letters keep their original key)."""
        assert self.producer is not None
        records: list[tuple[str, int | None, bytes | None, bytes | None, Any]] = []
        for record, reason in out.bad:
            headers = [
                ("reason", reason.encode("utf-8", "backslashreplace")),
                ("source_topic", record.topic.encode()),
                ("source_partition", str(record.partition).encode()),
                ("source_offset", str(record.offset).encode()),
                ("detector_version", __version__.encode()),
            ]
            records.append((self.s.dlq_topic, None, record.key, record.value, headers))
        for event, p in out.to_partition:
            records.append((self.by_account, p, utf8(event.user), encode_internal(event), None))
        for p, value in out.markers:
            records.append((self.by_account, p, MARKER_KEY, value, None))
        # Tombstones (accounts idle past the TTL) go before the batch's changes (``_outputs``): an account
        # that expired and signed in again since is restored with its new state.
        for user, p in out.tombstones:
            records.append((self.changelog, p, utf8(user), None, None))
        if out.alerts:
            n = len(self.producer.partitions_for(self.s.alert_topic))
            for alert in out.alerts:
                key = utf8(alert.user)
                value = encode_alert(alert, self.s.alert_ipv4_prefix, self.s.alert_ipv6_prefix)
                records.append((self.s.alert_topic, keyed_partition(key, n), key, value, None))
        return records

    def _commit_transaction(self, out: Outputs, after: dict[TopicPartition, int]) -> None:
        assert self.producer is not None and self.consumer is not None
        self.producer.begin_transaction()
        self._outputs(out)
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in after.items()}
        # Not waited for: its requests (AddOffsetsToTxn, TxnOffsetCommit) go before the EndTxn queued
        # next, which fails if they do; waiting cost the commit a handoff between threads.
        self.producer._transaction_manager.send_offsets_to_transaction(
            offsets, self.consumer.group_metadata()
        )
        self._committing = True
        _txn(self.producer, "begin_commit", self.s.commit_timeout)
        self.metrics.transactions.labels("committed").inc()

    def _commit_at_least_once(self, out: Outputs, after: dict[TopicPartition, int]) -> None:
        assert self.producer is not None and self.consumer is not None
        futures = self._outputs(out)
        self.producer.flush(timeout=self.s.commit_timeout)
        for future in futures:
            future.get(timeout=self.s.commit_timeout)  # raises when the broker did not acknowledge
        self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in after.items()})

    def _recover(
        self,
        exc: BaseException,
        first: dict[TopicPartition, int],
        after: dict[TopicPartition, int],
        stop: threading.Event,
    ) -> bool:
        """After a failed commit: abort (or replace the producer), then find out whether the batch's
        offsets were committed after all (a commit that timed out may still have completed). Returns True
        when the batch counts as committed; otherwise the consumer is rewound to redo it."""
        self.metrics.broker_errors.labels(type(exc).__name__).inc()
        ambiguous = self._committing or not self.transactional
        if self.transactional:
            try:
                if ambiguous or isinstance(exc, _FATAL_PRODUCER):
                    raise exc
                assert self.producer is not None
                _txn(self.producer, "begin_abort", self.s.commit_timeout)
            except Exception:
                # init_transactions on the new producer completes or aborts whatever the old one left.
                self._reset_producer(stop)
        committed = ambiguous and self._offsets_committed(after, stop)
        if not committed:
            if self.transactional:
                self.metrics.transactions.labels("aborted").inc()
            assert self.consumer is not None
            for tp, offset in first.items():
                if tp in self.assignment.assigned:
                    with contextlib.suppress(kerr.KafkaError, AssertionError, ValueError):
                        self.consumer.seek(tp, offset)
        logs.event(
            log,
            "batch committed after all" if committed else "batch not committed; it will be redone",
            logging.WARNING,
            error=brief(exc),
        )
        return committed

    def _offsets_committed(self, after: dict[TopicPartition, int], stop: threading.Event) -> bool:
        """Ask the group coordinator (retrying while it is away) whether ``after`` is committed."""
        assert self.consumer is not None
        while not stop.is_set():
            try:
                return all(self.consumer.committed(tp) == offset for tp, offset in after.items())
            except (kerr.KafkaError, OSError) as exc:
                logs.event(
                    log, "cannot read committed offsets yet", logging.WARNING, error=type(exc).__name__
                )
                stop.wait(1.0)
        return False


def _txn(producer: KafkaProducer, method: str, timeout_s: float) -> None:
    """A transaction's end (``begin_commit``, ``begin_abort``) with a deadline: the public calls wait
    without end while the brokers are away, which would hold up shutdown. Uses the transaction manager
    directly (what the public calls wrap)."""
    result = getattr(producer._transaction_manager, method)()
    producer._sender.wakeup()
    if not result.wait(timeout_ms=int(timeout_s * 1000)):
        raise kerr.KafkaTimeoutError(f"{method} did not finish within {timeout_s:g} s")

"""Kafka record batches written and read a batch at a time, under kafka-python's producer and consumer.

kafka-python handles every record in Python: about 16 us a record written (the accumulator's
``append``, the batch builder, a future each) and 8 us a record read (the batch iterator, a
``ConsumerRecord`` each). In the Kafka path those were most of the cost beyond the engine's (README,
Performance). Here a batch's records for one partition become whole record batches in one call, and a
fetched batch's records become ``ConsumerRecord`` s in one call: in C (``_speedups.record_batches`` and
``decode_records``), or in Python through kafka-python's own builder and reader where C is not built.

Both hook into kafka-python's internals (3.x): ``append_records`` puts ready-made ``ProducerBatch`` es
into the accumulator, which the sender thread drains, numbers and sends as its own; ``install``
replaces the fetcher's per-partition record iterator. Each is used only where the client has the
shape it was written against (``direct_batches``, ``install``), and otherwise the client's own path.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.errors import CorruptRecordError, IllegalStateError
from kafka.producer.future import FutureRecordMetadata
from kafka.record.default_records import DefaultRecordBase, DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import calc_crc32c
from kafka.structs import TopicPartition

try:  # (kafka-python 3.x; before, a ProducerBatch was made elsewhere: its own path then, see direct_batches)
    from kafka.producer.producer_batch import ProducerBatch
except ImportError:  # pragma: no cover
    ProducerBatch = None

from detector.model import SPEEDUPS

HEADER = DefaultRecordBase.HEADER_STRUCT
_CRC_AT, _ATTRIBUTES_AT = DefaultRecordBase.CRC_OFFSET, DefaultRecordBase.ATTRIBUTES_OFFSET
_CRC = struct.Struct(">I")


def record_batches(
    keys: list[bytes | None], values: list[bytes | None], max_bytes: int
) -> list[tuple[bytearray, int]]:
    """The records (key, value; no headers) as record batch bodies, each after a blank header and with
    its record count: a batch takes records while it stays within ``max_bytes``, and always its first.
    Each record's timestamp delta is 0 (they share their batch's timestamp, see ``PackedRecords``)."""
    if SPEEDUPS is not None:
        found: list[tuple[bytearray, int]] = SPEEDUPS.record_batches(keys, values, max_bytes)
        return found
    return _record_batches(keys, values, max_bytes)


def _record_batches(
    keys: list[bytes | None], values: list[bytes | None], max_bytes: int
) -> list[tuple[bytearray, int]]:
    """``record_batches``' twin: kafka-python's own builder, its header left blank."""
    if len(keys) != len(values):  # (the C's error)
        raise TypeError("record_batches(keys, values, max_bytes): two lists of one length")
    batches: list[list[Any]] = []  # [builder, records in it]
    for key, value in zip(keys, values, strict=True):
        if not batches or batches[-1][0].append(batches[-1][1], 0, key, value, []) is None:
            builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, max_bytes)
            builder.append(0, 0, key, value, [])  # (a batch's first record always goes in)
            batches.append([builder, 0])
        batches[-1][1] += 1
    return [(builder._buffer, count) for builder, count in batches]


class PackedRecords:
    """A record batch written whole, as kafka-python's ``MemoryRecordsBuilder`` is to its sender: the
    producer's state (id, epoch, first sequence, transactional) is given when the sender drains it,
    and ``close`` writes the header and its checksum then."""

    __slots__ = ("_buffer", "_closed", "_count", "_state", "_timestamp")

    def __init__(self, buffer: bytearray, count: int, timestamp_ms: int) -> None:
        self._buffer, self._count, self._timestamp = buffer, count, timestamp_ms
        self._state: tuple[int, int, int, bool] = (-1, -1, -1, False)
        self._closed = False

    def append(self, timestamp: Any, key: Any, value: Any, headers: Any = None) -> None:
        return None  # full: nothing is added to a batch written whole

    def set_producer_state(
        self, producer_id: int, producer_epoch: int, base_sequence: int, is_transactional: bool
    ) -> None:
        if self._closed:  # (as MemoryRecordsBuilder: a batch sent once keeps its sequence on a retry)
            raise IllegalStateError("Trying to set producer state of an already closed batch.")
        self._state = (producer_id, producer_epoch, base_sequence, bool(is_transactional))

    @property
    def producer_id(self) -> int:
        return self._state[0]

    @property
    def producer_epoch(self) -> int:
        return self._state[1]

    @property
    def base_sequence(self) -> int:
        return self._state[2]

    def close(self) -> None:
        if self._closed:
            return
        producer_id, epoch, sequence, transactional = self._state
        buffer = self._buffer
        HEADER.pack_into(
            buffer, 0, 0, len(buffer) - DefaultRecordBase.AFTER_LEN_OFFSET, 0, 2, 0,
            DefaultRecordBase.TRANSACTIONAL_MASK if transactional else 0,
            self._count - 1, self._timestamp, self._timestamp, producer_id, epoch, sequence, self._count,
        )  # fmt: skip
        _CRC.pack_into(buffer, _CRC_AT, calc_crc32c(memoryview(buffer)[_ATTRIBUTES_AT:]))
        self._closed = True

    def records(self) -> MemoryRecords:
        assert self._closed
        return MemoryRecords(self._buffer)

    def buffer(self) -> bytearray:
        assert self._closed
        return self._buffer

    def size_in_bytes(self) -> int:
        return len(self._buffer)

    def compression_rate(self) -> float:
        return 1.0

    def is_full(self) -> bool:
        return True

    def next_offset(self) -> int:
        return self._count


def direct_batches(producer: Any) -> bool:
    """Whether ``append_records`` can serve this producer: kafka-python's accumulator as 3.x has it,
    uncompressed record batches of format v2."""
    accumulator = getattr(producer, "_accumulator", None)
    config = getattr(accumulator, "config", {})
    return (
        ProducerBatch is not None
        and all(
            hasattr(accumulator, name)
            for name in ("_batches", "_tp_lock", "_incomplete", "_appends_in_progress")
        )
        and config.get("compression_attrs") == 0
        and config.get("message_version") == 2
    )


def append_records(
    producer: Any, tp: TopicPartition, keys: list[bytes | None], values: list[bytes | None]
) -> list[Any]:
    """Queue the records (keys and values, bytes or None) for one partition as whole record batches of
    up to the producer's ``batch_size``, and wake its sender; returns a future for each batch (its
    ``get`` raises when the broker refused it). The partition must already be in the producer's
    metadata and, in a transaction, added to it (as ``send`` makes sure)."""
    accumulator = producer._accumulator
    now, timestamp = time.monotonic(), int(time.time() * 1000)
    batches = [
        ProducerBatch(tp, PackedRecords(buffer, count, timestamp), now=now)
        for buffer, count in record_batches(keys, values, accumulator.config["batch_size"])
    ]
    futures = []
    accumulator._appends_in_progress.increment()
    try:
        with accumulator._tp_lock(tp):
            if accumulator._closed:
                raise IllegalStateError("RecordAccumulator is closed")
            queue = accumulator._batches[tp]
            for batch in batches:
                future = FutureRecordMetadata(batch.produce_future, 0, timestamp, None, -1, -1, -1)
                batch._record_futures.append(future)
                futures.append(future)
                queue.append(batch)
                accumulator._incomplete.add(batch)
    finally:
        accumulator._appends_in_progress.decrement()
    producer._sender.wakeup()
    return futures


class PartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's records of one fetched partition, each v2 batch's records made in one call."""

    def _unpack_records(
        self, tp: TopicPartition, records: Any, key_deserializer: Any, value_deserializer: Any
    ) -> Iterator[Any]:
        # As kafka-python's own (3.x): aborted transactions and control batches skipped, every batch's
        # checksum checked; each batch's records decoded at once (the iteration still one at a time:
        # ``take`` stops where max_poll_records says, and the next fetch offset follows).
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset {batch.base_offset} failed crc check"
                )
            if batch.magic != 2:  # (brokers before 4.0 may hold older formats)
                for record in batch:
                    if self.check_crcs and not record.validate_crc():
                        raise CorruptRecordError(
                            f"Record for partition {self.topic_partition} at offset {record.offset} failed crc check"
                        )
                    self.next_fetch_offset = record.offset + 1
                    yield _consumer_record(record, tp, -1)
                batch = records.next_batch()
                continue
            self.leader_epoch = batch.leader_epoch
            if self.isolation_level == 1 and batch.has_producer_id():  # READ_COMMITTED
                self._consume_aborted_transactions_up_to(batch.last_offset)
                if self._contains_abort_marker(batch):
                    self.aborted_producer_ids.discard(batch.producer_id)
                elif self._is_batch_aborted(batch):
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
            if batch.is_control_batch:
                self.next_fetch_offset = batch.next_offset
                batch = records.next_batch()
                continue
            decoded = decode_batch(batch, tp, self.leader_epoch)
            self.records_read += len(decoded)
            self.bytes_read += batch.size_in_bytes
            for record in decoded:
                self.next_fetch_offset = record.offset + 1
                yield record
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()


def decode_batch(batch: DefaultRecordBatch, tp: TopicPartition, leader_epoch: int) -> list[Any]:
    """A v2 batch's records as the fetcher's ``ConsumerRecord`` s (no deserializers)."""
    if SPEEDUPS is None:
        return _decode_batch(batch, tp, leader_epoch)
    batch._maybe_uncompress()
    try:
        found: list[Any] = SPEEDUPS.decode_records(
            batch._buffer, batch._pos, batch.records_count, batch.base_offset, batch.first_timestamp,
            batch.max_timestamp, batch.timestamp_type == DefaultRecordBase.LOG_APPEND_TIME,
            tp.topic, tp.partition, leader_epoch, ConsumerRecord,
        )  # fmt: skip
    except ValueError as exc:
        raise CorruptRecordError(
            f"Record batch for partition {tp} at offset {batch.base_offset}: {exc}"
        ) from exc
    return found


def _decode_batch(batch: DefaultRecordBatch, tp: TopicPartition, leader_epoch: int) -> list[Any]:
    """``decode_batch``'s twin: kafka-python's own reader, each record as its fetcher makes it."""
    return [_consumer_record(record, tp, leader_epoch) for record in batch]


def _consumer_record(record: Any, tp: TopicPartition, leader_epoch: int) -> Any:
    headers = record.headers
    return ConsumerRecord(
        tp.topic, tp.partition, leader_epoch, record.offset, record.timestamp, record.timestamp_type,
        record.key, record.value, headers, record.checksum,
        -1 if record.key is None else len(record.key), -1 if record.value is None else len(record.value),
        sum(len(k.encode("utf-8")) + (len(v) if v is not None else 0) for k, v in headers) if headers else -1,
    )  # fmt: skip


def install(consumer: Any) -> bool:
    """Have the consumer's fetcher make its records with ``PartitionRecords``, where it has the shape
    of kafka-python 3.x's and no deserializers; whether it does."""
    fetcher = getattr(consumer, "_fetcher", None)
    config = getattr(consumer, "config", {})
    own = getattr(Fetcher, "PartitionRecords", None)
    if (
        fetcher is None
        or own is None
        or not hasattr(own, "_unpack_records")
        or not hasattr(own, "_consume_aborted_transactions_up_to")
        or config.get("key_deserializer") is not None
        or config.get("value_deserializer") is not None
    ):
        return False
    fetcher.PartitionRecords = PartitionRecords
    return True

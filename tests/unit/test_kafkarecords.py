"""Kafka record batches written and read whole (detector/kafkarecords.py): the same bytes as
kafka-python's own builder, and the same ConsumerRecords as its own reader. On the broker:
tests/integration/test_transaction.py."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c
from kafka.structs import TopicPartition

from detector import kafkarecords, model

needs_c = pytest.mark.skipif(model.SPEEDUPS is None, reason="detector/_speedups.c is not built (make setup)")
TP = TopicPartition("signins", 3)

field = st.none() | st.binary(max_size=40) | st.binary(min_size=100, max_size=400)
records = st.lists(st.tuples(field, field), max_size=60)
headers = st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=12)), max_size=3)


def built(
    rows: list[tuple[bytes | None, bytes | None]], state: tuple[int, int, int, bool], timestamp: int
) -> bytes:
    """kafka-python's own batch of these records (one), with this producer state."""
    producer_id, epoch, sequence, transactional = state
    builder = DefaultRecordBatchBuilder(2, 0, transactional, producer_id, epoch, sequence, 1 << 30)
    for offset, (key, value) in enumerate(rows):
        builder.append(offset, timestamp, key, value, [])
    return bytes(builder.build())


@needs_c
@settings(max_examples=150, deadline=None)
@given(records, st.integers(min_value=0, max_value=3000))
def test_record_batches_in_c_are_its_python_twins(
    rows: list[tuple[bytes | None, bytes | None]], max_bytes: int
) -> None:
    """The same batches, split at the same records (within max_bytes, each at least one record)."""
    keys, values = [k for k, _ in rows], [v for _, v in rows]
    assert model.SPEEDUPS is not None
    made = model.SPEEDUPS.record_batches(keys, values, max_bytes)
    assert made == kafkarecords._record_batches(keys, values, max_bytes)
    assert sum(count for _, count in made) == len(rows)
    assert all(len(buffer) <= max(max_bytes, 61) or count == 1 for buffer, count in made)


@settings(max_examples=100, deadline=None)
@given(
    records.filter(bool),
    st.sampled_from([(-1, -1, -1, False), (4_000_017, 3, 1_999, True), (77, 0, 0, False)]),
)
def test_a_packed_batch_closed_is_the_batch_kafka_python_builds(
    rows: list[tuple[bytes | None, bytes | None]], state: tuple[int, int, int, bool]
) -> None:
    """Header, checksum and records byte for byte, with the producer state the sender gives it."""
    keys, values = [k for k, _ in rows], [v for _, v in rows]
    ((buffer, count),) = kafkarecords.record_batches(keys, values, 1 << 30)
    packed = kafkarecords.PackedRecords(buffer, count, 1_732_700_000_123)
    assert packed.size_in_bytes() == len(built(rows, state, 1_732_700_000_123))  # (known before it is closed)
    packed.set_producer_state(*state)
    packed.close()
    assert bytes(packed.buffer()) == built(rows, state, 1_732_700_000_123)
    assert (packed.producer_id, packed.producer_epoch, packed.base_sequence) == state[:3]
    assert packed.next_offset() == len(rows) and packed.is_full()
    assert [r.value for r in next(iter(packed.records()))] == values
    with pytest.raises(Exception, match="closed"):
        packed.set_producer_state(*state)


def batch_of(
    rows: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    log_append: bool,
    gzip: bool = False,
) -> bytes:
    """A batch with headers and timestamps that move, at base offset 1000 (as a broker stores it)."""
    builder = DefaultRecordBatchBuilder(2, 1 if gzip else 0, False, -1, -1, -1, 1 << 30)
    for offset, (key, value, hs) in enumerate(rows):
        builder.append(offset, 1_700_000_000_000 + 37 * offset, key, value, hs)
    buffer = builder.build()
    struct.pack_into(">q", buffer, 0, 1000)
    if log_append:
        buffer[22] |= 0x08  # attributes (low byte): LogAppendTime
        struct.pack_into(">I", buffer, 17, calc_crc32c(bytes(buffer[21:])))  # (its checksum again)
    return bytes(buffer)


@needs_c
@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(field, field, headers), min_size=1, max_size=40), st.booleans(), st.booleans())
def test_a_batch_decoded_in_c_is_what_kafka_pythons_reader_makes(
    rows: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    log_append: bool,
    gzip: bool,
) -> None:
    """Every field of every ConsumerRecord: offsets, timestamps of either type, keys and values (None
    too), headers and their sizes; a compressed batch's too."""
    data = batch_of(rows, log_append, gzip)
    made = kafkarecords.decode_batch(DefaultRecordBatch(data), TP, 5)
    assert made == kafkarecords._decode_batch(DefaultRecordBatch(data), TP, 5)
    assert [type(r) for r in made] == [kafkarecords.ConsumerRecord] * len(rows)
    assert [r.offset for r in made] == list(range(1000, 1000 + len(rows)))


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(field, field, headers), min_size=1, max_size=8), st.data())
def test_a_damaged_batch_decoded_in_c_is_refused_or_read_as_kafka_python_reads_it(
    rows: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]], data: st.DataObject
) -> None:
    """A byte changed or the batch cut short: CorruptRecordError, never a crash or a read past its end;
    where the bytes still make records, the ones kafka-python's reader makes."""
    buffer = bytearray(batch_of(rows, False))
    at = data.draw(st.integers(min_value=61, max_value=len(buffer) - 1))
    if data.draw(st.booleans()):
        buffer[at] = data.draw(st.integers(min_value=0, max_value=255))
    else:
        del buffer[at:]
    try:
        made = kafkarecords.decode_batch(DefaultRecordBatch(buffer), TP, 5)
    except CorruptRecordError:
        return
    assert made == kafkarecords._decode_batch(DefaultRecordBatch(buffer), TP, 5)


def test_an_empty_list_makes_no_batch_and_bad_fields_are_refused() -> None:
    assert kafkarecords.record_batches([], [], 100) == []
    with pytest.raises(TypeError):
        kafkarecords.record_batches([b"k"], [], 100)
    if model.SPEEDUPS is not None:
        with pytest.raises(TypeError):
            model.SPEEDUPS.record_batches(["text"], [b"v"], 100)


def test_the_fetchers_record_iterator_gives_what_kafka_pythons_gives() -> None:
    """``PartitionRecords`` over a fetch of an old-format (v1) batch and two v2 batches, from its first
    offset and from one inside a batch, taken whole and a few at a time: the same records, and the
    same next fetch offset, as kafka-python's own."""
    from kafka.consumer.fetcher import Fetcher
    from kafka.record.legacy_records import LegacyRecordBatchBuilder
    from kafka.record.memory_records import MemoryRecords

    legacy = LegacyRecordBatchBuilder(1, 0, 1 << 20)
    for offset in range(3):
        legacy.append(offset, 1_700_000_000_000 + offset, b"k%d" % offset, b"old %d" % offset)
    rows = [(b"a", b"one", []), (None, b"two", [("h", b"x")]), (b"c", None, [])]
    second = bytearray(batch_of(rows, False))
    struct.pack_into(">q", second, 0, 1003)  # (its base offset)
    data = bytes(legacy.build()) + batch_of(rows, True) + bytes(second)  # (offsets 0-2, 1000-1002, 1003-1005)
    for fetch_offset, take in [(0, None), (1001, None), (0, 2), (1000, 4)]:
        ours = kafkarecords.PartitionRecords(fetch_offset, TP, MemoryRecords(data))
        theirs = Fetcher.PartitionRecords(fetch_offset, TP, MemoryRecords(data))
        assert ours.take(take) == theirs.take(take)
        assert ours.next_fetch_offset == theirs.next_fetch_offset
        if take is not None:  # (the rest; a drained one is not taken from again)
            assert ours.take() == theirs.take() and ours.next_fetch_offset == theirs.next_fetch_offset
        assert not ours and not theirs

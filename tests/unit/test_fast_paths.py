"""The C implementations the hot paths rely on are the ones in use: a missing one costs no error, only
a silent slowdown of one or two orders of magnitude."""

from __future__ import annotations


def test_kafka_python_checksums_record_batches_in_c() -> None:
    # CRC-32C over every record batch produced or fetched: pure Python takes 0.3 s a megabyte.
    from kafka.record import util

    assert util.crc32c_c is not None, "pip install crc32c (a dependency in pyproject.toml)"
    assert util._crc32c is util.crc32c_c
    assert util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283  # the CRC-32C check value

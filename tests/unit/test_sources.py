"""Replay's line reader: lines read a block at a time give what reading a line at a time gave."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from detector.app import _batches
from detector.model import SPEEDUPS
from detector.sources import Line, LineReader, LineRun

BOM = b"\xef\xbb\xbf"


def by_readline(data: bytes, max_line_bytes: int) -> list[tuple[int, bytes, bool, int]]:
    """The reader as it was: ``readline`` with a limit, a line at a time (the reference)."""
    fh, limit, out, number = io.BytesIO(data), max_line_bytes + 2, [], 0
    while raw := fh.readline(limit):
        number += 1
        if number == 1 and raw.startswith(BOM):
            raw = raw[3:]
        if raw.endswith(b"\n") or len(raw) < limit:
            out.append((number, raw.rstrip(b"\r\n"), False, 0))
            continue
        length, head = len(raw), raw
        while not raw.endswith(b"\n"):
            raw = fh.readline(1 << 20)
            if not raw:
                break
            length += len(raw)
        out.append((number, head, True, length))
    return out


def read(path: Path, max_line_bytes: int, block_size: int) -> list[Line]:
    return list(LineReader([str(path)], max_line_bytes, block_size=block_size))


pieces = st.lists(
    st.one_of(
        st.sampled_from([b"\n", b"\r\n", b"\r", b"{}", b'{"user":"a"}', b"\n\n", BOM]),
        st.binary(max_size=12),
        st.integers(1, 40).map(lambda n: b"x" * n),
    ),
    max_size=40,
)


@settings(max_examples=500, deadline=None)
@given(pieces, st.integers(1, 16), st.integers(1, 9))
def test_lines_read_a_block_at_a_time_are_those_read_a_line_at_a_time(
    parts: list[bytes], max_line_bytes: int, block_size: int
) -> None:
    data = b"".join(parts)
    # (Not a BOM before a first line that does not fit in one readline: the reference then took the
    # line's first bytes, less the BOM, for a whole line, and the rest for the next. See below.)
    assume(not data.startswith(BOM) or len(data.split(b"\n", 1)[0]) + 1 <= max_line_bytes + 2)
    reader = LineReader([], max_line_bytes, block_size=block_size)
    got = [(x.number, x.raw, x.too_long, x.length) for x in reader._lines(io.BytesIO(data), "in")]
    assert got == by_readline(data, max_line_bytes)


def test_an_over_long_line_keeps_only_its_head_and_its_length(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    huge = b"y" * (3 << 20)
    path.write_bytes(gzip.compress(b'{"a":1}\n' + huge + b"\r\n" + b'{"b":2}'))  # (the last without \n)
    lines = read(path, 1000, 1 << 16)
    assert [(x.number, x.raw, x.too_long, x.length) for x in lines] == [
        (1, b'{"a":1}', False, 0),
        (2, huge[:1002], True, len(huge) + 2),
        (3, b'{"b":2}', False, 0),
    ]


def test_a_bom_before_an_over_long_first_line_is_not_part_of_it(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(BOM + b"z" * 50 + b"\n" + BOM + b"{}\n")  # (a BOM is removed from the first line only)
    lines = read(path, 8, 7)
    assert [(x.number, x.raw, x.too_long, x.length) for x in lines] == [
        (1, b"z" * 10, True, 51),
        (2, BOM + b"{}", False, 0),
    ]


def _expanded(items: list[Line | LineRun]) -> list[tuple[str, int, bytes, bool, int, bool]]:
    lines = [x for item in items for x in (item.lines() if isinstance(item, LineRun) else [item])]
    return [(x.origin, x.number, x.raw, x.too_long, x.length, x.document) for x in lines]


@settings(max_examples=300, deadline=None)
@given(pieces, st.integers(1, 16), st.integers(1, 9), st.integers(1, 7))
def test_runs_of_lines_are_the_lines_and_batches_cut_them_exactly(
    parts: list[bytes], max_line_bytes: int, block_size: int, batch_size: int
) -> None:
    """Replay reads runs of ordinary lines (``LineReader.runs``): the same lines, numbers and flags as
    reading a ``Line`` at a time, for any block size; and cut into batches of ``batch_size`` lines, a run
    split where a batch ends, the batches hold those lines in order, all full but the last."""
    reader = LineReader([], max_line_bytes, block_size=block_size)
    data = b"".join(parts)
    expected = _expanded(list(reader._lines(io.BytesIO(data), "in")))
    runs = list(reader._lines(io.BytesIO(data), "in", runs=True))
    assert _expanded(runs) == expected
    batches = list(_batches(iter(runs), batch_size))
    assert [x for chunk, _ in batches for x in _expanded(chunk)] == expected
    assert [count for _, count in batches] == [len(_expanded(chunk)) for chunk, _ in batches]
    assert all(count == batch_size for _, count in batches[:-1]) and batches[-1][1] < batch_size


def test_runs_are_taken_where_a_block_holds_ordinary_lines(tmp_path: Path) -> None:
    """(So that the property above is not met by Lines alone.) Two files: each file's lines numbered
    from 1, CR LF endings stripped, an over-long line on its own."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(b"".join(b'{"n":%d}\r\n' % n for n in range(1, 1001)))
    b.write_bytes(b"{}\n" * 10 + b"x" * 100 + b"\n{}\n")
    items = list(LineReader([str(a), str(b)], 50, block_size=4096).runs())
    assert sum(len(x.raws) for x in items if isinstance(x, LineRun)) > 900
    assert _expanded(items) == _expanded(list(LineReader([str(a), str(b)], 50, block_size=4096)))
    got = _expanded(items)
    assert got[0] == (str(a), 1, b'{"n":1}', False, 0, False) and got[999][1:3] == (1000, b'{"n":1000}')
    assert got[1000][:2] == (str(b), 1) and got[1010][1:5] == (11, b"x" * 52, True, 101)


@pytest.mark.skipif(SPEEDUPS is None, reason="detector/_speedups.c is not built (make setup)")
@settings(max_examples=500)
@given(st.lists(st.sampled_from([b"\n", b"\r\n", b"a", b"{}", b"\x00", b"\xff" * 70]), max_size=60))
def test_a_block_is_split_in_c_as_bytes_split_splits_it(parts: list[bytes]) -> None:
    """``split_lines`` (the reader's split of each block, by memchr): empty blocks, a newline first or
    last, newlines in a row, NUL bytes."""
    block = b"".join(parts)
    assert SPEEDUPS.split_lines(block) == block.split(b"\n")
    with pytest.raises(TypeError):
        SPEEDUPS.split_lines(bytearray(block))

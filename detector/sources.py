"""Line sources for replay: JSON Lines files, gzip files, and standard input.

Lines are read with a length limit, so a file with a gigantic line (or none at all) costs bounded memory:
an over-long line is handed on as its first bytes with ``too_long`` set, and the rest is skipped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import IO, cast

import orjson

from detector.errors import SourceError
from detector.model import SPEEDUPS

_BOM = b"\xef\xbb\xbf"


class Line:
    """One line of input (or the whole file, when ``document``: one JSON document, a pretty-printed vendor
    export, rather than lines). A plain class: compiled, its constructor costs a tenth of a dataclass's."""

    __slots__ = ("document", "length", "number", "origin", "raw", "too_long")

    def __init__(
        self,
        origin: str,
        number: int,
        raw: bytes,
        too_long: bool = False,
        length: int = 0,
        document: bool = False,
    ) -> None:
        self.origin = origin
        self.number = number
        self.raw = raw
        self.too_long = too_long
        self.length = length
        self.document = document


class LineRun:
    """Consecutive ordinary lines of one input (none over-long, none a document): ``raws[k]`` is line
    ``first + k``, without its line ending. Replay reads these (``LineReader.runs``): a ``Line`` object
    for each line cost about as much as decoding it."""

    __slots__ = ("first", "origin", "raws")

    def __init__(self, origin: str, first: int, raws: list[bytes]) -> None:
        self.origin = origin
        self.first = first
        self.raws = raws

    def lines(self) -> list[Line]:
        return [Line(self.origin, self.first + k, raw) for k, raw in enumerate(self.raws)]

    def cut(self, start: int, stop: int) -> LineRun:
        """The run of its lines ``start`` to ``stop`` (positions in ``raws``)."""
        return LineRun(self.origin, self.first + start, self.raws[start:stop])


class LineReader:
    """Reads several inputs one after another; ``bytes_read()``/``bytes_total`` drive a progress bar."""

    def __init__(
        self,
        inputs: list[str],
        max_line_bytes: int,
        max_document_bytes: int = 256 << 20,
        block_size: int = 1 << 20,
    ) -> None:
        self.inputs = inputs
        self.block_size = block_size
        self.max_line_bytes = max_line_bytes
        self.max_document_bytes = max_document_bytes
        self.bytes_total = 0
        self._done_bytes = 0
        self._current: IO[bytes] | None = None
        for path in inputs:
            if path == "-":
                continue
            if os.path.isdir(path):
                raise SourceError(f"input is a directory: {path}")
            try:
                self.bytes_total += os.stat(path).st_size
            except FileNotFoundError:
                raise SourceError(f"input not found: {path}") from None
            except OSError as exc:
                raise SourceError(f"cannot read input {path}: {exc.strerror}") from None

    def bytes_read(self) -> int:
        """Bytes of the input files consumed so far (compressed bytes for .gz)."""
        current = self._current
        try:
            return self._done_bytes + (current.tell() if current is not None else 0)
        except (OSError, ValueError):
            return self._done_bytes

    def __iter__(self) -> Iterator[Line]:
        return cast("Iterator[Line]", self._read(runs=False))  # (without runs: only Lines)

    def runs(self) -> Iterator[Line | LineRun]:
        """The same lines as iterating gives, where consecutive ordinary lines of a block come as one
        ``LineRun`` (the rest, as ever, a ``Line`` each)."""
        return self._read(runs=True)

    def _read(self, runs: bool) -> Iterator[Line | LineRun]:
        for path in self.inputs:
            origin = "<stdin>" if path == "-" else path
            try:
                raw = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
            except OSError as exc:
                raise SourceError(f"cannot read input {path}: {exc.strerror or exc}") from None
            self._current = None if path == "-" else raw
            try:
                fh: IO[bytes] = raw
                if path != "-" and raw.peek(2)[:2] == b"\x1f\x8b":  # type: ignore[union-attr]
                    import gzip  # (here: most inputs are not compressed)

                    fh = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
                if path != "-" and self._is_document(fh):
                    yield Line(origin, 1, fh.read(self.max_document_bytes), document=True)
                else:
                    yield from self._lines(fh, origin, runs)
            except (OSError, EOFError) as exc:
                raise SourceError(f"{origin}: read failed: {exc}") from None
            finally:
                if path != "-":
                    self._done_bytes += os.fstat(raw.fileno()).st_size
                    self._current = None
                    raw.close()

    def _is_document(self, fh: IO[bytes]) -> bool:
        """A file whose first line is not a JSON value by itself but whose whole content is (a pretty-
        printed page). Anything else, a broken first line included, is read line by line."""
        first = fh.readline(self.max_line_bytes).strip().lstrip(_BOM)
        fh.seek(0)
        if first[:1] not in (b"{", b"["):
            return False
        try:
            orjson.loads(first)
            return False
        except orjson.JSONDecodeError:
            pass
        whole = fh.read(self.max_document_bytes + 1)
        fh.seek(0)
        if len(whole) > self.max_document_bytes:
            return False
        try:
            orjson.loads(whole.lstrip(_BOM))
            return True
        except orjson.JSONDecodeError:
            return False

    def _lines(self, fh: IO[bytes], origin: str, runs: bool = False) -> Iterator[Line | LineRun]:
        """The lines of ``fh``, read a block at a time and split in one call (a ``readline`` call a line
        was most of reading). A line of ``limit`` bytes or more (before its newline; the limit leaves
        room for a CR LF) is handed on as its first ``limit`` bytes, ``too_long``, with its length;
        only those are kept while the rest of it is skipped. With ``runs``, a block's lines after its
        first come as one ``LineRun`` when none of them is over-long."""
        limit = self.max_line_bytes + 2
        read1 = getattr(fh, "read1", None)  # (what is there, up to a block: standard input may be slow)
        read = read1 if read1 is not None else fh.read
        block_size = self.block_size
        number = 0
        pending = b""  # the start of a line not ended yet
        skipped = -1  # >= 0: that line is over-long (``pending`` holds its first bytes); its length
        while True:
            block = read(block_size)
            if not block:
                break
            if SPEEDUPS is not None and type(block) is bytes:
                pieces: list[bytes] = SPEEDUPS.split_lines(block)  # (block.split's loop, by memchr)
            else:
                pieces = block.split(b"\n")
            tail = pieces.pop()  # (after the block's last newline: a line not ended yet)
            # With runs, the block's lines after its first as one run, when none is over-long (the first
            # may end a line begun in the block before, or be the first line, after a BOM: a Line, as ever)
            # (no line of a block shorter than the limit can be over-long: max() took 2% of a replay)
            run = runs and len(pieces) > 1 and (len(block) < limit or max(map(len, pieces)) < limit)
            for piece in pieces[:1] if run else pieces:
                number += 1
                yield self._line(origin, number, pending, skipped, piece, 1)
                pending, skipped = b"", -1
            if run:
                rest = pieces[1:]
                if b"\r" in block:
                    rest = [piece.rstrip(b"\r\n") for piece in rest]
                yield LineRun(origin, number + 1, rest)
                number += len(rest)
            if skipped >= 0:
                skipped += len(tail)
            elif tail:
                pending += tail
                if len(pending) >= limit + len(_BOM):  # (kept whole until it may be over-long)
                    skipped, pending = len(pending), pending[: limit + len(_BOM)]
        if pending or skipped >= 0:  # the last line, without a newline
            yield self._line(origin, number + 1, pending, skipped, b"", 0)

    def _line(self, origin: str, number: int, pending: bytes, skipped: int, piece: bytes, ended: int) -> Line:
        """A line from the bytes before ``piece`` (``pending``, or the head of an over-long line of
        ``skipped`` bytes so far) and ``piece``; ``ended``: 1 if a newline followed."""
        limit = self.max_line_bytes + 2
        raw = pending + piece if pending else piece
        length = skipped + len(piece) if skipped >= 0 else len(raw)
        if number == 1 and raw.startswith(_BOM):
            raw, length = raw[3:], length - 3
        if length < limit:
            return Line(origin, number, raw.rstrip(b"\r\n"))
        return Line(origin, number, raw[:limit], too_long=True, length=length + ended)

"""A City database's records, decoded once and kept as columns in a file beside the database.

Why: reading a record costs about 23 us in maxminddb's C extension, which builds every field of it
(names in eight languages among them) although the detector uses five. A replay meets tens of thousands
of records it has not read before, so these reads were a fifth of its time. ``impossible-travel
geoip-index`` (run by ``make geoip``) reads every record that an address can reach once (those only
IPv6 addresses reach too: ``SearchTree.records``), and writes the fields the detector uses to
``<database>.index``. ``GeoIP`` then finds a batch's new records
in it, by the record offsets that its ``SearchTree`` walk gives (in the walk itself, where built in C).

The file names the database it was built from: size, build time, search tree shape, and a hash of the
first and last MiB. For any other file (a newer build, say) the index is ignored, with a warning, and
records are read from the database as before, so a stale index can never give a wrong answer.

Records with the same fields share one row of the place table: GeoLite2-City's 539,790 records
(510,481 that IPv4 addresses reach, 29,309 that only IPv6 addresses reach) hold 472,848 places.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from detector.model import SPEEDUPS, blake2b

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

SUFFIX = ".index"
_MAGIC = b"impossible-travel record index 1\n"
# (2: the fingerprint hashes 64 KiB at each end of the database, not 1 MiB; 3: the names' starts)
FORMAT = 3
# What the fingerprint reads of each end of the database: the tree's first nodes, the metadata.
_ENDS = 1 << 16
# Place of a record without coordinates; of an offset the index does not hold.
NO_POINT, ABSENT = -1, -2

# The fields of one record, as ``geoip.record_fields`` gives them: latitude, longitude, accuracy
# radius (km, None when the record has none), city name (English), country ISO code.
Fields = tuple[float, float, float | None, str | None, str | None]


def _aligned(size: int) -> int:
    """``size`` rounded up to a multiple of 64 bytes (each column starts on a cache line)."""
    return -(-size // 64) * 64


def index_path(db_path: str) -> str:
    return db_path + SUFFIX


def fingerprint(db_path: str, build_epoch: int, node_count: int, record_size: int) -> dict[str, object]:
    """What identifies a database file for its index, cheaply: 128 KiB read at every start, not the
    whole file (2 MiB took 10 ms of each replay's start)."""
    size = os.path.getsize(db_path)
    digest = blake2b(digest_size=16)
    with open(db_path, "rb") as fh:
        digest.update(fh.read(_ENDS))
        fh.seek(max(0, size - _ENDS))
        digest.update(fh.read(_ENDS))
    return {
        "format": FORMAT,
        "size": size,
        "build_epoch": build_epoch,
        "node_count": node_count,
        "record_size": record_size,
        "ends_blake2b": digest.hexdigest(),
    }


# Each column, in the file's order: its type there (numpy's name, little-endian) and in a memoryview
# (``struct``'s).
_TYPES = {
    "offsets": ("<i8", "q"),
    "places": ("<i4", "i"),
    "latitude": ("<f8", "d"),
    "longitude": ("<f8", "d"),
    "radius_km": ("<f8", "d"),
    "city": ("<i4", "i"),
    "country": ("<i4", "i"),
    "name_starts": ("<i4", "i"),  # where each name starts in the names' text, and where the last ends
}


# (a name of this module's for the type: the compiled dataclass looks its fields' types up here)
Column = memoryview


class Names:
    """The place names of a record index, each decoded when first asked for: the file holds them as one
    UTF-8 text and where each starts (splitting GeoLite2-City's 100,000 names took 12 ms of every start,
    and a replay meets a few thousand of them). ``decoded`` is shared with ``_speedups``'s twin of
    ``RecordIndex.fields`` (``index_locations``), which fills it alike."""

    def __init__(self, text: bytes | memoryview, starts: Column) -> None:
        self.text = text
        self.starts = starts
        self.decoded: list[str | None] = [None] * max(0, len(starts) - 1)

    @staticmethod
    def of(names: Sequence[str]) -> Names:
        encoded = [name.encode("utf-8") for name in names]
        starts = array("i", [0])
        for raw in encoded:
            starts.append(starts[-1] + len(raw))
        return Names(b"".join(encoded), _column(starts, "name_starts"))

    def __len__(self) -> int:
        return len(self.decoded)

    def __getitem__(self, k: int) -> str:
        name = self.decoded[k]
        if name is None:
            starts: Any = self.starts
            start, end = starts[k], starts[k + 1]
            if not 0 <= start <= end <= len(self.text):  # (as index_locations checks in C)
                raise ValueError("a place name past the names' text")
            name = self.decoded[k] = bytes(self.text[start:end]).decode("utf-8")
        return name


def _column(data: Any, name: str) -> Column:
    """A column as a typed memoryview over ``data`` (a file's mapped bytes, or a numpy array's)."""
    fmt: Any = _TYPES[name][1]  # (one of struct's formats; a str to mypy)
    return memoryview(data).cast("B").cast(fmt)


def _largest(column: Column) -> int:
    """The largest of an int32 column, -1 when empty (in C where built: max() takes 50 ms of a start)."""
    if SPEEDUPS is not None:
        found: int = SPEEDUPS.int32_max(column)
        return found
    return max(column, default=-1)


def _ascending(column: Column) -> bool:
    """Whether each item of an int32 column is at least the one before (in C where built)."""
    if SPEEDUPS is not None:
        found: bool = SPEEDUPS.int32_ascending(column)
        return found
    items: Any = column
    return all(a <= b for a, b in pairwise(items))


@dataclass(frozen=True)
class RecordIndex:
    """Record offset -> place, and the places as columns: typed memoryviews (of the mapped file, once
    saved), read an item at a time, so that opening a database needs no numpy."""

    offsets: Column  # int64, sorted: data-section offsets of the records
    places: Column  # int32: the record's row in the place columns, or NO_POINT
    latitude: Column  # float64
    longitude: Column  # float64
    radius_km: Column  # float64, NaN where the record has no accuracy radius
    city: Column  # int32 into names, -1 for none
    country: Column  # int32 into names, -1 for none
    names: Names
    meta: dict[str, object]

    def __len__(self) -> int:
        return len(self.offsets)

    def lookup(self, offsets: np.ndarray) -> np.ndarray:
        """The place of each record offset: a row, NO_POINT, or ABSENT (not in the index)."""
        import numpy as np

        known, places = np.asarray(self.offsets), np.asarray(self.places)
        i = np.minimum(np.searchsorted(known, offsets), len(known) - 1)
        return np.where(known[i] == offsets, places[i], ABSENT)

    def fields(self, places: Sequence[int]) -> list[Fields]:
        """The fields of each place (rows, not NO_POINT)."""
        # (typed Any: a memoryview's items are ints to mypy, whatever its format)
        lat: Any = self.latitude
        lon: Any = self.longitude
        rad: Any = self.radius_km
        city: Any = self.city
        country: Any = self.country
        names = self.names
        out: list[Fields] = []
        for row in places:
            radius: float = rad[row]
            c: int = city[row]
            k: int = country[row]
            out.append(
                (
                    lat[row],
                    lon[row],
                    None if radius != radius else radius,  # NaN: none
                    names[c] if c >= 0 else None,
                    names[k] if k >= 0 else None,
                )
            )
        return out

    @classmethod
    def from_records(
        cls, offsets: Sequence[int], fields: Sequence[Fields | None], meta: dict[str, object]
    ) -> RecordIndex:
        """Build from each record's offset and fields (None: a record without coordinates)."""
        import numpy as np

        rows: dict[Fields, int] = {}
        names: dict[str, int] = {}
        places = np.empty(len(offsets), np.int32)
        for k, f in enumerate(fields):
            places[k] = NO_POINT if f is None else rows.setdefault(f, len(rows))
        table = list(rows)

        def name(text: str | None) -> int:
            return -1 if text is None else names.setdefault(text, len(names))

        order = np.argsort(np.asarray(offsets, np.int64), kind="stable")
        columns = {
            "offsets": np.asarray(offsets, np.int64)[order],
            "places": places[order],
            "latitude": np.array([f[0] for f in table], np.float64),
            "longitude": np.array([f[1] for f in table], np.float64),
            "radius_km": np.array([np.nan if f[2] is None else f[2] for f in table], np.float64),
            "city": np.array([name(f[3]) for f in table], np.int32),
            "country": np.array([name(f[4]) for f in table], np.int32),
        }
        return cls(
            **{c: _column(np.ascontiguousarray(a, _TYPES[c][0]), c) for c, a in columns.items()},
            names=Names.of(list(names)),
            meta={**meta, "records": len(offsets), "places": len(table)},
        )

    def save(self, path: str) -> None:
        """Write atomically (a reader never sees half a file): a magic line, a JSON header naming each
        column's type and place, then the columns, each aligned for mapping in place."""
        columns = [getattr(self, c) for c in _TYPES if c != "name_starts"]
        columns += [self.names.starts, memoryview(self.names.text)]
        types = [dtype for dtype, _ in _TYPES.values()] + ["|u1"]
        layout: dict[str, tuple[str, int, int]] = {}
        at = 0
        for name, column, dtype in zip((*_TYPES, "names"), columns, types, strict=True):
            layout[name] = (dtype, at, len(column))
            at += _aligned(column.nbytes)
        header = json.dumps({"meta": self.meta, "columns": layout}).encode("utf-8")
        body_start = _aligned(len(_MAGIC) + 8 + len(header))
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC + len(header).to_bytes(8, "little") + header)
            for column, (_, offset, _) in zip(columns, layout.values(), strict=True):
                fh.seek(body_start + offset)
                fh.write(column.tobytes())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, expected: dict[str, object]) -> RecordIndex | None:
        """The index at ``path`` when it was built from the database ``expected`` describes; None when
        there is none, and (with a warning) when it is of another database or unreadable. The columns
        are the file's pages, mapped: nothing is read until used, and processes share them."""
        if not os.path.exists(path):
            return None
        try:
            with open(path, "rb") as fh:
                buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            if buffer[: len(_MAGIC)] != _MAGIC:
                raise ValueError("not a record index")
            size = int.from_bytes(buffer[len(_MAGIC) : len(_MAGIC) + 8], "little")
            header = json.loads(buffer[len(_MAGIC) + 8 : len(_MAGIC) + 8 + size].decode("utf-8"))
            meta = header["meta"]
            if {k: meta.get(k) for k in expected} != expected:
                log.warning(
                    "GeoIP record index %s was built from another database; reading records from the "
                    "database instead (build it again: impossible-travel geoip-index)",
                    path,
                )
                return None
            if sys.byteorder != "little":  # (the columns are little-endian, read in place as native)
                raise ValueError("this machine is big-endian")
            body_start = _aligned(len(_MAGIC) + 8 + size)
            layout = header["columns"]
            if set(layout) != {*_TYPES, "names"}:
                raise ValueError("not the columns of a record index")
            columns = {}
            text = memoryview(b"")
            for name, (dtype, offset, count) in layout.items():
                start, count = body_start + int(offset), int(count)
                if name == "names":  # (decoded a name at a time: Names)
                    if start + count > len(buffer):
                        raise ValueError("the names run past the end of the file")
                    text = memoryview(buffer)[start : start + count]
                    continue
                if dtype != _TYPES[name][0]:
                    raise ValueError(f"column {name} is {dtype}, not {_TYPES[name][0]}")
                width = int(dtype[2:])
                if start + count * width > len(buffer):
                    raise ValueError(f"column {name} runs past the end of the file")
                columns[name] = _column(memoryview(buffer)[start : start + count * width], name)
            starts: Any = columns.pop("name_starts")
            if len(starts) < 1 or starts[0] != 0 or starts[-1] != len(text):
                raise ValueError("the names' starts do not span their text")
            index = cls(**columns, names=Names(text, starts), meta=meta)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            log.warning(
                "GeoIP record index %s is unreadable (%s); reading records from the database", path, exc
            )
            return None
        rows = len(index.latitude)
        if not (
            len(index.offsets) == len(index.places) > 0
            and all(len(a) == rows for a in (index.longitude, index.radius_km, index.city, index.country))
            and _largest(index.places) < rows
            and max(_largest(index.city), _largest(index.country)) < len(index.names)
            and _ascending(index.names.starts)
        ):
            log.warning("GeoIP record index %s is inconsistent; reading records from the database", path)
            return None
        return index

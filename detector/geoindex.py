"""A City database's IPv4 records, decoded once and kept as columns in a file beside the database.

Why: reading a record costs about 23 us in maxminddb's C extension, which builds every field of it
(names in eight languages among them) although the detector uses five. A replay meets tens of thousands
of records it has not read before, so these reads were a fifth of its time. ``impossible-travel
geoip-index`` (run by ``make geoip``) reads every record that an IPv4 address can reach once, and
writes the fields the detector uses to ``<database>.index``. ``GeoIP`` then answers a batch's new
records with one numpy search over the record offsets that its ``SearchTree`` walk gives.

The file names the database it was built from: size, build time, search tree shape, and a hash of the
first and last MiB. For any other file (a newer build, say) the index is ignored, with a warning, and
records are read from the database as before, so a stale index can never give a wrong answer.

Records with the same fields share one row of the place table: GeoLite2-City's 510,481 IPv4 records
hold far fewer distinct places.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

SUFFIX = ".index"
_MAGIC = b"impossible-travel record index 1\n"
FORMAT = 1
# Not in any place name (checked when the file is written): joins the names into one array.
_SEPARATOR = "\x1f"
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
    """What identifies a database file for its index, cheaply (two MiB read, not the whole file)."""
    size = os.path.getsize(db_path)
    digest = hashlib.blake2b(digest_size=16)
    with open(db_path, "rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        digest.update(fh.read(1 << 20))
    return {
        "format": FORMAT,
        "size": size,
        "build_epoch": build_epoch,
        "node_count": node_count,
        "record_size": record_size,
        "ends_blake2b": digest.hexdigest(),
    }


@dataclass(frozen=True)
class RecordIndex:
    """Record offset -> place, and the places as columns."""

    offsets: np.ndarray  # int64, sorted: data-section offsets of the records
    places: np.ndarray  # int32: the record's row in the place columns, or NO_POINT
    latitude: np.ndarray  # float64
    longitude: np.ndarray  # float64
    radius_km: np.ndarray  # float64, NaN where the record has no accuracy radius
    city: np.ndarray  # int32 into names, -1 for none
    country: np.ndarray  # int32 into names, -1 for none
    names: tuple[str, ...]
    meta: dict[str, object]

    def __len__(self) -> int:
        return len(self.offsets)

    def lookup(self, offsets: np.ndarray) -> np.ndarray:
        """The place of each record offset: a row, NO_POINT, or ABSENT (not in the index)."""
        i = np.minimum(np.searchsorted(self.offsets, offsets), len(self.offsets) - 1)
        return np.where(self.offsets[i] == offsets, self.places[i], ABSENT)

    def fields(self, places: Sequence[int]) -> list[Fields]:
        """The fields of each place (rows, not NO_POINT), read column by column."""
        rows = np.asarray(places, np.int64)
        names = self.names
        return [
            (
                lat,
                lon,
                None if radius != radius else radius,
                names[c] if c >= 0 else None,
                names[k] if k >= 0 else None,
            )
            for lat, lon, radius, c, k in zip(
                self.latitude[rows].tolist(),
                self.longitude[rows].tolist(),
                self.radius_km[rows].tolist(),  # NaN: none
                self.city[rows].tolist(),
                self.country[rows].tolist(),
                strict=True,
            )
        ]

    @classmethod
    def from_records(
        cls, offsets: Sequence[int], fields: Sequence[Fields | None], meta: dict[str, object]
    ) -> RecordIndex:
        """Build from each record's offset and fields (None: a record without coordinates)."""
        rows: dict[Fields, int] = {}
        names: dict[str, int] = {}
        places = np.empty(len(offsets), np.int32)
        for k, f in enumerate(fields):
            places[k] = NO_POINT if f is None else rows.setdefault(f, len(rows))
        table = list(rows)

        def name(text: str | None) -> int:
            if text is None:
                return -1
            if _SEPARATOR in text:
                raise ValueError(f"a place name holds the separator \\x1f: {text!r}")
            return names.setdefault(text, len(names))

        order = np.argsort(np.asarray(offsets, np.int64), kind="stable")
        return cls(
            offsets=np.asarray(offsets, np.int64)[order],
            places=places[order],
            latitude=np.array([f[0] for f in table], np.float64),
            longitude=np.array([f[1] for f in table], np.float64),
            radius_km=np.array([np.nan if f[2] is None else f[2] for f in table], np.float64),
            city=np.array([name(f[3]) for f in table], np.int32),
            country=np.array([name(f[4]) for f in table], np.int32),
            names=tuple(names),
            meta={**meta, "records": len(offsets), "places": len(table)},
        )

    _COLUMNS = ("offsets", "places", "latitude", "longitude", "radius_km", "city", "country")

    def save(self, path: str) -> None:
        """Write atomically (a reader never sees half a file): a magic line, a JSON header naming each
        column's type and place, then the columns, each aligned for mapping in place."""
        names = _SEPARATOR.join(self.names).encode("utf-8")
        columns = [getattr(self, c) for c in self._COLUMNS] + [np.frombuffer(names, np.uint8)]
        layout, at = {}, 0
        for name, column in zip((*self._COLUMNS, "names"), columns, strict=True):
            layout[name] = [column.dtype.str, at, len(column)]
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
            body_start = _aligned(len(_MAGIC) + 8 + size)
            columns = {
                name: np.frombuffer(buffer, np.dtype(dtype), count, body_start + offset)
                for name, (dtype, offset, count) in header["columns"].items()
            }
            text = columns.pop("names").tobytes().decode("utf-8")
            index = cls(**columns, names=tuple(text.split(_SEPARATOR)) if text else (), meta=meta)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            log.warning(
                "GeoIP record index %s is unreadable (%s); reading records from the database", path, exc
            )
            return None
        rows = len(index.latitude)
        if not (
            len(index.offsets) == len(index.places) > 0
            and all(len(a) == rows for a in (index.longitude, index.radius_km, index.city, index.country))
            and int(index.places.max()) < rows
            and max(int(index.city.max(initial=-1)), int(index.country.max(initial=-1))) < len(index.names)
        ):
            log.warning("GeoIP record index %s is inconsistent; reading records from the database", path)
            return None
        return index

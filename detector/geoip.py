"""GeoIP adapter: a MaxMind-format City database behind a two-level cache.

Reads GeoIP2-City, GeoLite2-City, DB-IP's City Lite in MaxMind format, and the flat City layout of the
ip-location-db packages, through ``maxminddb`` (its C extension when installed). Only City databases are
accepted: an ASN or Country file would locate nothing and is refused at start.

Caching, so that repeated addresses cost almost nothing:

1. by address text (a dict hit, about 50 ns);
2. by the database's network: each answer is stored under the network that ``get_with_prefix_len``
   returned for it, and a new address is looked for in the networks already seen (one dict probe per
   prefix length in use) before the database is read.

3. by the database record: a batch's new addresses walk the database's search tree together
   (``SearchTree``: in C, IPv4 and IPv6; else IPv4 only, one bit per numpy step over the whole batch),
   which gives each the offset of its record; only a record not seen before is read (about 23 us
   each), and addresses that share it share the answer. A replay meets tens of thousands of new
   addresses a second: this was most of its GeoIP cost, so where the database's record index has been
   built (``geoindex``), each record is taken from it instead (its place, one Location a place), and a
   single new address is walked too (no read: a replay or a stream of IPv4 never opens maxminddb).

The caches are bounded; when full, the oldest quarter goes. Addresses in special-purpose ranges (private,
loopback, link-local, CGNAT, multicast, reserved, documentation, unspecified, ...) are never looked up.
"""

from __future__ import annotations

import ipaddress
import logging
import mmap
import os
import socket
import struct
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from itertools import islice
from typing import TYPE_CHECKING, Any

from detector.errors import GeoDatabaseError
from detector.geoindex import ABSENT, NO_POINT, Fields, RecordIndex, fingerprint, index_path
from detector.model import LOCATION_SLOTS, SPEEDUPS, DatabaseInfo, Location, new_database_info, new_location

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import numpy as np

    from detector.known import AsnDatabase

# Used when a record has coordinates but no accuracy radius (DB-IP Lite has none).
DEFAULT_ACCURACY_RADIUS_KM = 50.0
# A fix this wide, or without a city, only says "somewhere in this country or region".
COARSE_RADIUS_KM = 500.0
# Fewer new addresses than this in a batch are located one at a time (a tree walk has a fixed cost).
PREFETCH_MIN = 64

_SPECIAL_V4 = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation TEST-NET-2
        "203.0.113.0/24",  # documentation TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
]
_SPECIAL_V6 = [
    ipaddress.IPv6Network(n)
    for n in (
        "::/127",  # unspecified and loopback
        "::ffff:0:0/96",  # IPv4-mapped (normalised to IPv4 before we get here)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo, ORCHIDv2, ...)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
]


_SPECIAL_V4_STARTS = [int(n.network_address) for n in _SPECIAL_V4]
_SPECIAL_V4_ENDS = [int(n.broadcast_address) for n in _SPECIAL_V4]


def _network_table(networks: list[ipaddress.IPv4Network] | list[ipaddress.IPv6Network]) -> bytes:
    """Networks for the C walk (``SearchTree.locate_text``): each its address and its prefix length."""
    return b"".join([n.network_address.packed + bytes([n.prefixlen]) for n in networks])


_SPECIAL_V4_TABLE, _SPECIAL_V6_TABLE = _network_table(_SPECIAL_V4), _network_table(_SPECIAL_V6)
# What ``SearchTree.locate_text`` gives instead of a record's offset.
UNKNOWN, SPECIAL, LEFT = -1, -2, -3


def is_special(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for addresses that no database can place: not globally routed unicast."""
    if addr.version == 4:
        return _special_v4(int(addr))
    return any(addr in net for net in _SPECIAL_V6)


def _special_v4(value: int) -> bool:
    i = bisect_right(_SPECIAL_V4_STARTS, value) - 1
    return i >= 0 and value <= _SPECIAL_V4_ENDS[i]


def _special_v4_batch(values: np.ndarray) -> np.ndarray:
    """``_special_v4`` over an array of IPv4 addresses (integers)."""
    import numpy as np

    i = np.searchsorted(np.array(_SPECIAL_V4_STARTS, np.int64), values, side="right") - 1
    return (i >= 0) & (values <= np.array(_SPECIAL_V4_ENDS, np.int64)[np.maximum(i, 0)])


_MISS = object()
_NO_INDEX = b""  # (for the C walk: an index of no records)


def _dotted_quad(ip: str) -> bytes | None:
    """The 4 bytes of a plain IPv4 address (as ``inet_pton`` takes it), else None."""
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except (OSError, TypeError, ValueError):
        return None


# -- the database's metadata, read without maxminddb ------------------------------------------------
#
# Importing maxminddb is about 40 ms (its ``importlib.metadata`` alone half of it), a twentieth of a
# 200,000-line replay. With the record index (``geoindex``), a replay of IPv4 addresses reads no record
# through it: only the metadata, which is read here. maxminddb is opened when a record must be read.

_METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
_METADATA_MAX_SIZE = 128 * 1024  # (the format's bound: the marker is within the file's last 128 KiB)


@dataclass(frozen=True)
class Metadata:
    """What the detector uses of a MaxMind DB file's metadata."""

    node_count: int
    record_size: int
    ip_version: int
    database_type: str
    build_epoch: int


def read_metadata(path: str) -> Metadata:
    """The metadata of the MaxMind DB file at ``path``, as maxminddb reads it (a test holds them equal).
    ValueError for any file it does not take, valid or not: the caller then asks maxminddb, whose errors
    say what is wrong. OSError when the file cannot be read."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - _METADATA_MAX_SIZE))
        tail = fh.read()
    at = tail.rfind(_METADATA_MARKER)
    if at < 0:
        raise ValueError("no MaxMind DB metadata")
    try:
        meta, _ = _decode_value(tail, at + len(_METADATA_MARKER), depth=0)
    except (IndexError, struct.error) as exc:
        raise ValueError("truncated metadata") from exc
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a map")
    node_count, record_size, ip_version, database_type, build_epoch = [
        meta.get(k) for k in ("node_count", "record_size", "ip_version", "database_type", "build_epoch")
    ]
    if not (
        type(node_count) is int
        and type(record_size) is int
        and type(ip_version) is int
        and type(build_epoch) is int
        and isinstance(database_type, str)
    ):
        raise ValueError("metadata without its fields")
    tree_size = node_count * record_size // 4  # (two records a node)
    if ip_version not in (4, 6) or tree_size + 16 > size - (len(tail) - at):
        raise ValueError("metadata that does not fit the file")
    return Metadata(node_count, record_size, ip_version, database_type, build_epoch)


def _open_reader(path: str) -> Any:
    import maxminddb

    return maxminddb.open_database(path, maxminddb.MODE_AUTO)


def _invalid_database_error() -> type[Exception]:
    """maxminddb's error, imported when an error is met."""
    import maxminddb

    return maxminddb.InvalidDatabaseError


def _decode_value(data: bytes, at: int, depth: int) -> tuple[object, int]:
    """One value of the MaxMind DB data format at ``data[at]``: (value, where the next one starts).
    Pointers are not taken (metadata has none in the databases met: ValueError, and maxminddb reads it)."""
    if depth > 8:
        raise ValueError("metadata nested too deep")
    control = data[at]
    at += 1
    kind, size = control >> 5, control & 0x1F
    if kind == 0:  # extended: the type is in the next byte
        kind = 7 + data[at]
        at += 1
    if kind == 1:
        raise ValueError("a pointer in the metadata")
    if kind == 14:  # a boolean: the size is its value
        return bool(size), at
    if size >= 29:  # the size goes on in the next 1, 2 or 3 bytes
        extra = size - 28
        size = (29, 285, 65_821)[extra - 1] + int.from_bytes(data[at : at + extra], "big")
        at += extra
    end = at + size  # (of a map or an array, ``size`` entries: a byte each at least)
    if end > len(data):
        raise ValueError("truncated metadata")
    if kind == 7 or kind == 11:  # a map, an array: ``size`` entries
        items: list[object] = []
        for _ in range(size * (2 if kind == 7 else 1)):
            item, at = _decode_value(data, at, depth + 1)
            items.append(item)
        if kind == 11:
            return items, at
        keys = items[0::2]
        if not all(isinstance(key, str) for key in keys):
            raise ValueError("a map key that is not a string")
        return dict(zip(keys, items[1::2], strict=True)), at
    raw = data[at:end]
    if kind == 2:
        return raw.decode("utf-8"), end
    if kind in (5, 6, 9, 10):  # unsigned integers of 16, 32, 64 and 128 bits
        return int.from_bytes(raw, "big"), end
    if kind == 8:  # int32
        return int.from_bytes(raw, "big", signed=size == 4), end
    if kind == 3 and size == 8:
        return struct.unpack(">d", raw)[0], end
    if kind == 15 and size == 4:
        return struct.unpack(">f", raw)[0], end
    if kind == 4:
        return raw, end
    raise ValueError(f"metadata value of type {kind}")


class SearchTree:
    """A MaxMind DB's binary search tree, walked for many addresses at once (in C where built, else by
    numpy: the twins, which import it when first used, as does building the record index; a replay
    never imports numpy, about 70 ms of every start).

    The file is mapped read-only; each step reads, for every address still inside the tree, the record
    its next bit chooses (24, 28 or 32 bits: the format's three record sizes). An address's walk ends at
    the node count (not in the database) or past it (a pointer into the data section, whose offset names
    the record). Same answer as ``maxminddb``'s own walk; a test holds them equal on every record size."""

    def __init__(self, path: str, node_count: int, record_size: int, ip_version: int) -> None:
        if record_size not in (24, 28, 32):
            raise ValueError(f"unsupported record size {record_size}")
        with open(path, "rb") as fh:
            self.bytes = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._array: np.ndarray | None = None  # numpy's view of the mapping (``_bytes``), for the twins
        self.node_count = node_count
        self.record_size = record_size
        self.ip_version = ip_version
        self.node_bytes = record_size // 4
        start = 0
        if ip_version == 6:  # IPv4 lives under ::/96
            for _ in range(96):
                if start >= node_count:
                    break
                start = self._left(start)
        self.ipv4_start = start

    def _left(self, node: int) -> int:
        """The left record of ``node`` (IPv4's subtree of an IPv6 tree is 96 steps left from the root)."""
        b, base = self.bytes, node * self.node_bytes
        if self.record_size == 28:
            return ((b[base + 3] & 0xF0) << 20) | int.from_bytes(b[base : base + 3], "big")
        return int.from_bytes(b[base : base + self.record_size // 8], "big")

    def _bytes(self) -> np.ndarray:
        """The mapping as a numpy array (a plain one: np.memmap's own indexing costs a Python call a step)."""
        if self._array is None:
            import numpy as np

            self._array = np.frombuffer(self.bytes, np.uint8)
        return self._array

    def _records(self, nodes: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """The record of ``nodes[i]`` on side ``bits[i]`` (0 left, 1 right)."""
        import numpy as np

        b = self._bytes()
        base = nodes * self.node_bytes
        if self.record_size == 28:
            # Left: bytes 0-2 and the high nibble of byte 3; right: the low nibble of byte 3 and bytes 4-6.
            mid = b[base + 3].astype(np.int64)
            o = base + 4 * bits
            low = (b[o].astype(np.int64) << 16) | (b[o + 1].astype(np.int64) << 8) | b[o + 2]
            return low | np.where(bits == 0, (mid & 0xF0) << 20, (mid & 0x0F) << 24)
        size = self.record_size // 8
        o = base + size * bits
        value = np.zeros(len(nodes), np.int64)
        for k in range(size):
            value = (value << 8) | b[o + k]
        return value

    def find(self, addresses: np.ndarray) -> np.ndarray:
        """Data-section offsets of the records of IPv4 ``addresses`` (integers); -1 where none. In C
        where built (detector/_speedups.c), else by ``walk``."""
        import numpy as np

        if SPEEDUPS is None:
            return self.walk(addresses)
        packed = addresses.astype(">u4").tobytes()
        found = SPEEDUPS.tree_find(self.bytes, packed, self.node_count, self.record_size, self.ipv4_start)
        return np.frombuffer(found, np.int64)

    def locate_text(self, ips: list[str], index: RecordIndex | None) -> tuple[list[int], list[int]]:
        """For each address (text): the offset of its record, or UNKNOWN, SPECIAL (a special-purpose
        range), or LEFT (not taken here); and the record's place in ``index``, NO_POINT, or ABSENT (not
        in the index, or no index). In C where built: IPv4 and IPv6 addresses, parsed and walked. Else
        the IPv4 ones by ``find``, and IPv6 ones LEFT."""
        if SPEEDUPS is not None:
            raw_offsets, raw_rows = self.locate_raw(ips, index)
            return memoryview(raw_offsets).cast("q").tolist(), memoryview(raw_rows).cast("q").tolist()
        import numpy as np

        offsets = np.full(len(ips), LEFT, np.int64)
        quads = [_dotted_quad(ip) for ip in ips]
        taken = [k for k, quad in enumerate(quads) if quad is not None]
        packed = b"".join([quad for quad in quads if quad is not None])
        addresses = np.frombuffer(packed, ">u4").astype(np.int64)
        special = _special_v4_batch(addresses)
        offsets[taken] = np.where(special, SPECIAL, self.find(addresses))
        rows = np.full(len(ips), ABSENT, np.int64)
        if index is not None:
            known = offsets >= 0
            rows[known] = index.lookup(offsets[known])
        return offsets.tolist(), rows.tolist()

    def locate_raw(self, ips: list[str], index: RecordIndex | None) -> tuple[bytearray, bytearray]:
        """``locate_text``'s two lists as buffers of int64, in C (only where built)."""
        assert SPEEDUPS is not None
        found: bytearray
        rows: bytearray
        found, rows = SPEEDUPS.tree_locate(
            ips, self.bytes, self.node_count, self.record_size, self.ipv4_start, self.ip_version,
            _SPECIAL_V4_TABLE, _SPECIAL_V6_TABLE,
            index.offsets if index is not None else _NO_INDEX,
            index.places if index is not None else _NO_INDEX,
        )  # fmt: skip
        return found, rows

    def walk(self, addresses: np.ndarray) -> np.ndarray:
        """``find`` in numpy: one step (one bit) at a time, for every address still inside the tree."""
        import numpy as np

        n = len(addresses)
        node = np.full(n, self.ipv4_start, np.int64)
        values = addresses.astype(np.int64)
        active = np.flatnonzero(node < self.node_count)
        for shift in range(31, -1, -1):
            if not len(active):
                break
            nxt = self._records(node[active], (values[active] >> shift) & 1)
            node[active] = nxt
            active = active[nxt < self.node_count]
        # 16: the data section's separator. A walk still inside the tree after 32 bits has no record.
        return np.where(node > self.node_count, node - self.node_count - 16, -1)

    def records(self) -> tuple[np.ndarray, list[str]]:
        """Every record an address can reach, once: (offsets, the first address of one of its networks,
        as text), sorted by offset. The IPv4 subtree's, then, in an IPv6 tree, the rest of the tree's:
        the records only IPv6 addresses reach (the IPv4 subtree, which ::ffff:0:0/96 and 2002::/16 lead
        back to, left out). An IPv4 address is kept for a record that both reach."""
        import numpy as np

        offsets, high, low = self.leaves(self.ipv4_start, 32, skip=-1)  # (-1: no node)
        texts = [socket.inet_ntoa((h >> 32).to_bytes(4, "big")) for h in high.tolist()]
        if self.ip_version == 6:
            offsets6, high, low = self.leaves(0, 128, skip=self.ipv4_start)
            offsets = np.concatenate([offsets, offsets6])
            pairs = zip(high.tolist(), low.tolist(), strict=True)
            texts += [str(ipaddress.IPv6Address(h << 64 | lo)) for h, lo in pairs]
        unique, first = np.unique(offsets, return_index=True)  # (the first of each: IPv4 before IPv6)
        return unique, [texts[k] for k in first.tolist()]

    def leaves(self, start: int, bits: int, skip: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The records reached from node ``start`` within ``bits`` steps, a record for each network
        (repeats left in), and the first address of that network: its high and low 64 bits, the path
        from ``start`` most significant first. The tree is walked a level (one bit) at a time, all nodes
        at once; a node equal to ``skip`` is not entered."""
        import numpy as np

        n = self.node_count
        nodes = np.array([start], np.int64)
        high, low = np.zeros(1, np.uint64), np.zeros(1, np.uint64)
        offsets, highs, lows = [], [], []
        for depth in range(bits):
            inside = (nodes < n) & (nodes != skip)
            nodes, high, low = nodes[inside], high[inside], low[inside]
            if not len(nodes):
                break
            below: list[np.ndarray] = []
            below_high: list[np.ndarray] = []
            below_low: list[np.ndarray] = []
            for bit in (0, 1):
                found = self._records(nodes, np.full(len(nodes), bit, np.int64))
                h, lo = high, low
                if bit and depth < 64:
                    h = high | np.uint64(1 << (63 - depth))
                elif bit:
                    lo = low | np.uint64(1 << (127 - depth))
                inner, data = found < n, found > n
                below.append(found[inner])
                below_high.append(h[inner])
                below_low.append(lo[inner])
                offsets.append(found[data] - n - 16)
                highs.append(h[data])
                lows.append(lo[data])
            nodes, high, low = np.concatenate(below), np.concatenate(below_high), np.concatenate(below_low)
        if not offsets:
            return np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        return np.concatenate(offsets), np.concatenate(highs), np.concatenate(lows)


@dataclass
class GeoStats:
    """Counters read by the metrics adapter at scrape time (no cost on the hot path)."""

    misses: int = 0  # lookups that the address cache could not answer
    address_cache_hits: int = 0
    network_cache_hits: int = 0
    index_hits: int = 0  # addresses answered by the record index (``geoindex``) instead of a read
    database_reads: int = 0
    special: int = 0
    unknown: int = 0
    errors: int = 0

    @property
    def lookups(self) -> int:
        return self.address_cache_hits + self.misses

    @property
    def cache_hits(self) -> int:
        return self.address_cache_hits + self.network_cache_hits


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class GeoIP:
    """A City database, opened once, answering ``locate(ip) -> Location | None``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cache_size: int = 262_144,
        default_radius_km: float = DEFAULT_ACCURACY_RADIUS_KM,
        coarse_radius_km: float = COARSE_RADIUS_KM,
        asn: AsnDatabase | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.cache_size = max(16, cache_size)
        self.default_radius_km = default_radius_km
        self.coarse_radius_km = coarse_radius_km
        self.asn = asn
        self.stats = GeoStats()
        self._reader: Any = None  # (opened when a record must be read: ``_db``)
        self._meta, self.database, self._stat = self._open(self.path)
        self._tree = self._search_tree(self.path, self._meta)
        self.index = self._record_index()
        if self.index is None:
            self._db()  # every new record is read from it: opened once, before any worker is forked
        self._by_address: dict[str, Location | None] = {}
        self._by_record: dict[int, Location | None] = {}
        self._by_place: dict[int, Location | None] = {}
        self._prefetched: dict[str, Location | None] = {}
        self._by_network: dict[tuple[int, int, int], Location | None] = {}
        self._prefix_lengths: Counter[tuple[int, int]] = Counter()
        self._told_ipv4_only = False  # (warned that IPv6 addresses get no location)

    def reload_if_changed(self) -> bool:
        """Take a replaced database file without a restart (replace it by renaming a complete file over
        it). True when a new build is in use; a file that cannot be opened leaves the old one in use and
        raises ``GeoDatabaseError``."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        if (st.st_ino, st.st_size, st.st_mtime_ns) == self._stat:
            return False
        meta, database, stat = self._open(self.path)
        old, self._reader = self._reader, None
        self._meta, self.database, self._stat = meta, database, stat
        self._tree = self._search_tree(self.path, meta)
        self.index = self._record_index()
        if self.index is None:
            self._db()
        self._by_address.clear()
        self._by_record.clear()
        self._by_place.clear()
        self._prefetched.clear()
        self._by_network.clear()
        self._prefix_lengths.clear()
        if old is not None:
            old.close()
        return True

    # -- opening ---------------------------------------------------------------------------------

    @staticmethod
    def _open(path: str) -> tuple[Metadata, DatabaseInfo, tuple[int, int, int]]:
        """The file's metadata, read here (``read_metadata``) or, for a file that reader does not take,
        by maxminddb, whose error says why a file is not a MaxMind DB."""
        if not os.path.exists(path):
            raise GeoDatabaseError(f"GeoIP database not found: {path} (run `make geoip`, or pass --geoip-db)")
        if os.path.isdir(path):
            raise GeoDatabaseError(f"GeoIP database is a directory, not a file: {path}")
        try:
            st = os.stat(path)
            try:
                meta = read_metadata(path)
            except ValueError:
                with _open_reader(path) as reader:
                    m = reader.metadata()
                meta = Metadata(
                    m.node_count, m.record_size, m.ip_version, str(m.database_type), m.build_epoch
                )
        except PermissionError as exc:
            raise GeoDatabaseError(f"GeoIP database is not readable: {path}: {exc.strerror}") from exc
        except (_invalid_database_error(), ValueError, OSError) as exc:
            raise GeoDatabaseError(f"not a MaxMind DB file: {path}: {exc}") from exc
        db_type = meta.database_type
        if "city" not in db_type.lower() and "enterprise" not in db_type.lower():
            raise GeoDatabaseError(
                f"not a City database: {path} is of type {db_type!r}; "
                "use GeoIP2-City, GeoLite2-City or DB-IP City Lite"
            )
        info = new_database_info(db_type, int(meta.build_epoch), path)
        return meta, info, (st.st_ino, st.st_size, st.st_mtime_ns)

    def _db(self) -> Any:
        """maxminddb's reader of the file, opened (and the module imported) when first needed."""
        if self._reader is None:
            self._reader = _open_reader(self.path)
        return self._reader

    @staticmethod
    def _search_tree(path: str, meta: Metadata) -> SearchTree | None:
        try:
            return SearchTree(path, meta.node_count, meta.record_size, meta.ip_version)
        except (ValueError, OSError):
            return None  # one address at a time, through maxminddb

    def _record_index(self) -> RecordIndex | None:
        """This database's record index, when one was built from it (see ``geoindex``). Without an index
        file, nothing is read to fingerprint the database (every start, every replay worker)."""
        path = index_path(self.path)
        if self._tree is None or not os.path.exists(path):
            return None
        return RecordIndex.load(path, self._fingerprint())

    def _fingerprint(self) -> dict[str, object]:
        meta = self._meta
        return fingerprint(self.path, meta.build_epoch, meta.node_count, meta.record_size)

    def build_index(self, progress: Callable[[int, int], None] | None = None) -> RecordIndex:
        """Read every record an address can reach, once, into a ``RecordIndex`` (not saved)."""
        if self._tree is None:
            raise GeoDatabaseError(f"cannot index {self.path}: its search tree is not one numpy can walk")
        offsets, addresses = self._tree.records()
        get, fields = self._db().get, []
        for k, address in enumerate(addresses):
            record = get(address)
            fields.append(record_fields(record) if isinstance(record, dict) else None)
            if progress is not None and (k + 1) % 50_000 == 0:
                progress(k + 1, len(offsets))
        return RecordIndex.from_records(offsets.tolist(), fields, self._fingerprint())

    @property
    def uses_c_extension(self) -> bool:
        module = type(self._db()).__module__
        return module.startswith("maxminddb.extension") or module == "_maxminddb"

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self.asn is not None:
            self.asn.close()

    # -- lookups ---------------------------------------------------------------------------------

    def locate(self, ip: str) -> Location | None:
        """Location of a normalised address, or None (special range, or unknown to the database)."""
        found = self._by_address.get(ip, _MISS)
        if found is not _MISS:
            self.stats.address_cache_hits += 1
            return found  # type: ignore[return-value]
        self.stats.misses += 1
        found = self._prefetched.pop(ip, _MISS)
        if found is _MISS and self.index is not None:
            found = self._walked([ip])[0]  # (a walk of the tree and the index: no read, no maxminddb)
        if found is _MISS:
            found = self._with_asn(ip, self._locate_uncached(ip))
        return self._remember(ip, found)  # type: ignore[arg-type]

    def _remember(self, ip: str, found: Location | None) -> Location | None:
        """A new address's location, kept in the address cache (bounded)."""
        if len(self._by_address) >= self.cache_size:
            _evict_quarter(self._by_address)
        self._by_address[ip] = found
        return found

    def locate_many(self, ips: list[str]) -> list[Location | None]:
        """``locate`` of each, in order: the addresses met before from the cache (one lookup each), the
        new ones located together (``_walked``)."""
        cached, miss = self._by_address, _MISS
        found: list[Any]
        new: list[int]  # where the addresses not met before are
        if SPEEDUPS is not None:  # (the loop below, each lookup's cache misses fetched ahead)
            found, new = SPEEDUPS.get_each(cached, ips, miss)
        else:
            found, new = [], []
            for ip in ips:
                location = cached.get(ip, miss)
                if location is miss:
                    new.append(len(found))
                found.append(location)
        self.stats.address_cache_hits += len(ips) - len(new)
        if new:
            unique = list({ips[k] for k in new})
            if self._place_new(unique):
                # Each new address is in the cache now: the first time it is met here counted as a
                # miss, any other time as a hit (as ``locate`` would count them, one after another).
                self.stats.address_cache_hits += len(new) - len(unique)
                for k in new:
                    found[k] = cached[ips[k]]
                return found
            ready = dict(zip(unique, self._walked(unique), strict=True))
            # ``locate`` of each, less the lookup it would repeat (in a big dict, a new address); a new
            # address met twice in the batch is not in ``ready`` the second time (then a hit)
            for k in new:
                ip = ips[k]
                found[k] = self._take_walked(ip, ready.pop(ip, miss))
        return found

    def _take_walked(self, ip: str, walked: Any) -> Location | None:
        """A new address's location as ``_walked`` found it, counted and cached as ``locate`` would;
        ``locate`` itself for one the walk left (``_MISS``)."""
        if walked is _MISS:
            return self.locate(ip)
        self.stats.misses += 1
        return self._remember(ip, walked)

    def _place_new(self, ips: list[str]) -> bool:
        """Where compiled, with the record index, no ASN database, and room in the address cache for
        them all: every one of ``ips`` (new to it, each once) located and cached, as ``locate`` of each
        would, and True. Those the index places go in C (``_add_places``' ``rows_wanted``, then
        ``place_each``); the others (special ranges, unknown, read) by ``_walked``. Else False, and nothing done.

        (Over the first 100,000 lines of the benchmark's input, where most addresses are new, GeoIP
        was half of the engine's instructions, and 180M of its 441M were the compiled loops around
        the tree walk and the making of Locations: a set, a dict, a pop and a method call an address.)"""
        cached, index, tree = self._by_address, self.index, self._tree
        if (
            SPEEDUPS is None
            or index is None
            or tree is None
            or self.asn is not None
            or len(cached) + len(ips) > self.cache_size
        ):
            return False
        _, places = tree.locate_raw(ips, index)
        self._add_places(places)
        left: list[int] = SPEEDUPS.place_each(ips, places, self._by_place, cached)
        stats = self.stats
        stats.misses += len(ips) - len(left)
        stats.index_hits += len(ips) - len(left)
        if left:
            others = [ips[k] for k in left]
            for ip, walked in zip(others, self._walked(others), strict=True):
                self._take_walked(ip, walked)  # (the cache has room: nothing evicted)
        self._bound_record_caches()
        return True

    def _with_asn(self, ip: str, found: Location | None) -> Location | None:
        if found is not None and self.asn is not None:
            number, org, kind = self.asn.lookup(ip)
            if number is not None:
                found = replace(found, asn=number, asn_org=org, network=kind)
        return found

    def prefetch(self, ips: Iterable[str]) -> None:
        """Locate a batch's new addresses together (see ``SearchTree``), so that ``locate`` finds them
        ready. Same answers as one at a time; an address not taken here is located as ever."""
        cached = self._by_address
        new = [ip for ip in set(ips) if ip not in cached]
        # (what the last batch did not ask for after all goes)
        walked = zip(new, self._walked(new), strict=True)
        self._prefetched = {ip: found for ip, found in walked if found is not _MISS}

    def _walked(self, new: list[str]) -> list[Any]:
        """The location of each of ``new`` (addresses not in the cache, each once) by a walk of the
        search tree, all together, and the record index; ``_MISS`` for one left to ``_locate_uncached``.
        All of them without a tree, and for fewer than ``PREFETCH_MIN`` without the index (a read each
        then costs no more)."""
        tree = self._tree
        if tree is None or (len(new) < PREFETCH_MIN and self.index is None):
            return [_MISS] * len(new)
        offsets, places = tree.locate_text(new, self.index)
        self._add_places(places)
        by_record, by_place, stats = self._by_record, self._by_place, self.stats
        out: list[Any] = []
        for ip, offset, place in zip(new, offsets, places, strict=True):
            if place >= 0:  # the place of the record, from the index
                location = by_place[place]
                stats.index_hits += 1
            elif offset < 0:
                if offset == LEFT:
                    out.append(_MISS)  # (located one at a time)
                    continue
                location = None
                stats.special += offset == SPECIAL
                stats.unknown += offset == UNKNOWN
            elif place == NO_POINT:  # in the index: a record without coordinates
                location = None
                stats.index_hits += 1
                stats.unknown += 1
            elif offset in by_record:  # a record not in the index, read before for another address
                location = by_record[offset]
                stats.network_cache_hits += 1
            else:
                read = self._read(ip)
                if read is None:
                    out.append(_MISS)  # (the read failed: counted; one at a time will try again)
                    continue
                location = by_record[offset] = read[0]
            out.append(self._with_asn(ip, location) if self.asn is not None else location)
        self._bound_record_caches()
        return out

    def _bound_record_caches(self) -> None:
        """The caches of records and places cut back to their bound, once a batch has filled them."""
        for cache in (self._by_record, self._by_place):
            if len(cache) > self.cache_size:
                _evict_quarter(cache)

    def _add_places(self, places: list[int] | bytearray) -> None:
        """A location for each row of the record index not met before (one object per place, shared
        by all its records and addresses). ``places``: ``locate_text``'s, or ``locate_raw``'s buffer of
        int64 (its rows found in C)."""
        by_place = self._by_place
        rows: list[int]
        if SPEEDUPS is not None and isinstance(places, bytearray):
            rows = SPEEDUPS.rows_wanted(places, by_place)
        else:
            rows = list({p for p in places if p >= 0 and p not in by_place})
        if rows and self.index is not None:
            by_place.update(zip(rows, self._locations(self.index, rows), strict=True))

    def _locations(self, index: RecordIndex, rows: list[int]) -> list[Location | None]:
        """The Location of each row of the index (in C where built: 2-3 us a place less)."""
        if SPEEDUPS is not None:
            located: list[Location | None] = SPEEDUPS.index_locations(
                rows, index.latitude, index.longitude, index.radius_km, index.city, index.country,
                index.names.decoded, index.names.text, index.names.starts, self.default_radius_km,
                self.coarse_radius_km, self.database, Location, LOCATION_SLOTS,
            )  # fmt: skip
            return located
        return [self._location(fields) for fields in index.fields(rows)]

    def _read(self, ip: str) -> tuple[Location | None, int] | None:
        """One database read: the address's location and the prefix length of its network; None when
        the read failed."""
        self.stats.database_reads += 1
        try:
            record, plen = self._db().get_with_prefix_len(ip)
        except (_invalid_database_error(), ValueError, OSError):
            # The file was overwritten in place under the reader (replace it by renaming instead): no
            # location for now; the reload check takes the new file as soon as it is complete.
            self.stats.errors += 1
            return None
        found = self._to_location(record) if record else None
        if found is None:
            self.stats.unknown += 1
        return found, plen

    def _locate_uncached(self, ip: str) -> Location | None:
        if ":" in ip:
            addr = ipaddress.IPv6Address(ip.split("%", 1)[0])
            special, version, bits, value = is_special(addr), 6, 128, int(addr)
        else:
            value = int.from_bytes(socket.inet_aton(ip), "big")
            special, version, bits = _special_v4(value), 4, 32
        if special:
            self.stats.special += 1
            return None
        if version == 6 and self._meta.ip_version == 4:
            # An IPv4-only database (the ip-location-db packages ship one file a family), where
            # maxminddb refuses the lookup: an address it does not hold, not a failed read (the errors
            # counted say a file overwritten in place).
            if not self._told_ipv4_only:
                self._told_ipv4_only = True
                log.warning(
                    "GeoIP database %s holds IPv4 networks only: IPv6 addresses get no location", self.path
                )
            self.stats.unknown += 1
            return None
        for (v, plen), _ in self._prefix_lengths.most_common():
            if v == version:
                key = (version, value >> (bits - plen), plen)
                if key in self._by_network:
                    self.stats.network_cache_hits += 1
                    return self._by_network[key]
        read = self._read(ip)
        if read is None:
            return None
        found, plen = read
        if len(self._by_network) >= self.cache_size:
            for gone in _evict_quarter(self._by_network):
                self._prefix_lengths[(gone[0], gone[2])] -= 1
            self._prefix_lengths += Counter()  # drop lengths no longer in use
        self._by_network[(version, value >> (bits - plen), plen)] = found
        self._prefix_lengths[(version, plen)] += 1
        return found

    def _to_location(self, record: dict[str, Any]) -> Location | None:
        return self._location(record_fields(record))

    def _location(self, fields: Fields | None) -> Location | None:
        if fields is None:
            return None
        lat, lon, radius, city, country = fields
        radius_km = radius if radius is not None and radius > 0 else self.default_radius_km
        coarse = city is None or radius_km >= self.coarse_radius_km
        return new_location(lat, lon, radius_km, country, city, coarse, self.database)


def record_fields(record: dict[str, Any]) -> Fields | None:
    """The fields the detector uses of a City record, in either layout; None without coordinates."""
    loc = record.get("location")
    if isinstance(loc, dict):  # MaxMind GeoIP2 layout
        lat, lon = loc.get("latitude"), loc.get("longitude")
        radius = loc.get("accuracy_radius")
        city = _text((record.get("city") or {}).get("names", {}).get("en"))
        country = _text((record.get("country") or {}).get("iso_code"))
    else:  # flat layout (ip-location-db)
        lat, lon, radius = record.get("latitude"), record.get("longitude"), None
        city = _text(record.get("city"))
        country = _text(record.get("country_code"))
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    return (
        float(lat),
        float(lon),
        float(radius) if isinstance(radius, int | float) else None,
        city,
        country,
    )


def _evict_quarter(cache: dict[Any, Any]) -> list[Any]:
    """Drop the oldest quarter of an insertion-ordered dict; return the dropped keys."""
    gone = list(islice(iter(cache), max(1, len(cache) // 4)))
    for key in gone:
        del cache[key]
    return gone

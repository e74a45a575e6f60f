"""The GeoIP adapter against small City databases built with mmdb-writer and read by the real reader."""

from __future__ import annotations

import ipaddress
import json
import os
import pickle
import random
from array import array
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector import geoindex
from detector.errors import GeoDatabaseError
from detector.geoindex import index_path
from detector.geoip import (
    DEFAULT_ACCURACY_RADIUS_KM,
    LEFT,
    SPECIAL,
    UNKNOWN,
    GeoIP,
    Metadata,
    _decode_value,
    read_metadata,
)
from detector.model import SPEEDUPS, Alert, DatabaseInfo, Location, Visit, new_alert, new_location
from detector.testing import PLACES, Place, build_asn_db, build_city_db, ip_in
from tests.conftest import IN_CI


def test_locates_cities_with_radius_country_city_and_build(city_db: str) -> None:
    geo = GeoIP(city_db)
    loc = geo.locate("81.2.69.10")
    assert loc is not None
    assert (loc.latitude, loc.longitude, loc.accuracy_radius_km) == (51.5074, -0.1278, 10.0)
    assert (loc.country, loc.city, loc.coarse) == ("GB", "London", False)
    assert loc.database is not None and loc.database.database_type == "GeoLite2-City"
    assert abs(loc.database.build_epoch - os.stat(city_db).st_mtime) < 3600
    v6 = geo.locate("2a02:c7f::1")
    assert v6 is not None and v6.city == "London"


@given(
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.floats(0.5, 5000),
    st.none() | st.text(max_size=3),
    st.none() | st.text(max_size=12),
    st.booleans(),
)
def test_new_location_is_the_location_the_constructor_builds(
    lat: float, lon: float, radius: float, country: str | None, city: str | None, coarse: bool
) -> None:
    database = DatabaseInfo("GeoLite2-City", 1_700_000_000, "/x.mmdb")
    made = Location(lat, lon, radius, country, city, coarse, database)
    fast = new_location(lat, lon, radius, country, city, coarse, database)
    assert fast == made and hash(fast) == hash(made) and repr(fast) == repr(made)
    assert fast.place == made.place  # (not compared by ==)
    assert pickle.loads(pickle.dumps(fast)) == made


@given(
    st.floats(allow_nan=False),
    st.none() | st.floats(0, 1e6),
    st.lists(st.text(max_size=5), max_size=3),
    st.booleans(),
)
def test_new_alert_is_the_alert_the_constructor_builds(
    distance: float, speed: float | None, reasons: list[str], late: bool
) -> None:
    london = new_location(51.5, -0.12, 20.0, "GB", "London", False, None)
    a, b = (
        Visit("e1", "203.0.113.9", 1_700_000_000.0, london),
        Visit("e2", "2001:db8::1", 1_700_000_060.5, None),
    )
    values = (
        "id",
        "user",
        1.5,
        "high",
        "medium",
        distance,
        distance / 2,
        60.5,
        speed,
        speed,
        a,
        b,
        900.0,
        100.0,
    )
    made = Alert(*values, reasons=tuple(reasons), late=late)
    fast = new_alert(*values, tuple(reasons), late)
    assert fast == made and repr(fast) == repr(made) and fast.rule == "impossible_travel" and fast.extra == {}
    assert fast.extra is not new_alert(*values, (), late).extra  # (each its own)
    assert pickle.loads(pickle.dumps(fast)) == made


def test_country_level_fix_is_coarse_and_missing_radius_gets_the_default(city_db: str) -> None:
    geo = GeoIP(city_db)
    us = geo.locate("8.8.8.8")
    assert us is not None and us.coarse and us.city is None and us.accuracy_radius_km == 1000
    ch = geo.locate(ip_in("9.9.9.0/24"))
    assert ch is not None and ch.accuracy_radius_km == DEFAULT_ACCURACY_RADIUS_KM and not ch.coarse
    assert GeoIP(city_db, default_radius_km=7).locate(ip_in("9.9.9.0/24")).accuracy_radius_km == 7  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "ip",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "100.127.255.254",
        "224.0.0.1",
        "239.1.1.1",
        "240.0.0.1",
        "255.255.255.255",
        "0.0.0.0",
        "192.0.2.1",
        "198.51.100.7",
        "203.0.113.9",
        "198.18.0.1",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "2001:db8::1",
        "3fff::1",
        "100::1",
    ],
)
def test_special_ranges_are_never_looked_up(city_db: str, ip: str) -> None:
    geo = GeoIP(city_db)
    assert geo.locate(ip) is None
    assert geo.stats.special == 1 and geo.stats.database_reads == 0


def test_unknown_addresses_and_records_without_coordinates_have_no_location(city_db: str) -> None:
    geo = GeoIP(city_db)
    assert geo.locate("45.1.2.3") is None  # not in the database
    assert geo.locate("11.2.3.4") is None  # known network, no coordinates
    assert geo.stats.unknown == 2


def test_repeated_addresses_and_networks_come_from_the_cache(city_db: str) -> None:
    geo = GeoIP(city_db)
    first = geo.locate("2.200.1.1")
    assert geo.stats.database_reads == 1
    assert geo.locate("2.200.1.1") is first
    assert geo.stats.address_cache_hits == 1
    # Another address of the same /16 network: no database read, same answer.
    assert geo.locate("2.200.77.5") is first
    assert geo.stats.network_cache_hits == 1 and geo.stats.database_reads == 1


def test_caches_are_bounded(city_db: str) -> None:
    geo = GeoIP(city_db, cache_size=16)
    for host in range(200):
        geo.locate(f"45.0.{host}.1")
        geo.locate(ip_in("2.200.0.0/16", host))
    assert len(geo._by_address) <= 16 and len(geo._by_network) <= 16
    assert geo.locate("2.200.0.10") is not None


def test_flat_layout_of_ip_location_db(tmp_path: Path) -> None:
    path = build_city_db(str(tmp_path / "flat.mmdb"), PLACES, database_type="city ipv4", layout="flat")
    loc = GeoIP(path).locate("81.2.69.10")
    assert loc is not None and loc.city == "London" and loc.country == "GB"
    assert loc.accuracy_radius_km == DEFAULT_ACCURACY_RADIUS_KM


def test_refuses_missing_unreadable_garbage_and_non_city_databases(tmp_path: Path) -> None:
    with pytest.raises(GeoDatabaseError, match="not found"):
        GeoIP(tmp_path / "nope.mmdb")
    with pytest.raises(GeoDatabaseError, match="directory"):
        GeoIP(tmp_path)
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(GeoDatabaseError, match="not a MaxMind DB"):
        GeoIP(garbage)
    asn = build_city_db(
        str(tmp_path / "asn.mmdb"),
        [],
        database_type="GeoLite2-ASN",
        extra={"81.2.69.0/24": {"autonomous_system_number": 1}},
    )
    with pytest.raises(GeoDatabaseError, match=r"not a City database.*GeoLite2-ASN"):
        GeoIP(asn)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.mmdb"
        locked.write_bytes(Path(asn).read_bytes())
        locked.chmod(0)
        with pytest.raises(GeoDatabaseError, match="not readable"):
            GeoIP(locked)


def _metadata_by_maxminddb(path: str) -> Metadata:
    import maxminddb

    with maxminddb.open_database(path) as reader:
        m = reader.metadata()
    return Metadata(m.node_count, m.record_size, m.ip_version, m.database_type, m.build_epoch)


def test_the_metadata_is_read_as_maxminddb_reads_it(tmp_path: Path, real_db: str) -> None:
    paths = [
        real_db,
        build_city_db(str(tmp_path / "flat.mmdb"), PLACES, database_type="city ipv4", layout="flat"),
        build_asn_db(str(tmp_path / "asn.mmdb"), {"81.2.69.0/24": (64500, "Example")}),
    ]
    for path in paths:
        assert read_metadata(path) == _metadata_by_maxminddb(path)
    # (each record size, in both layouts: _city_db_with_record_size)


_MMDB_VALUES = st.recursive(
    st.text()
    | st.binary()
    | st.booleans()
    | st.integers(0, 2**16 - 1).map(lambda v: ("u16", v))
    | st.integers(0, 2**32 - 1).map(lambda v: ("u32", v))
    | st.integers(0, 2**64 - 1).map(lambda v: ("u64", v))
    | st.integers(0, 2**128 - 1).map(lambda v: ("u128", v))
    | st.integers(-(2**31), 2**31 - 1).map(lambda v: ("i32", v))
    | st.floats(allow_nan=False).map(lambda v: ("f64", v))
    | st.floats(width=32, allow_nan=False).map(lambda v: ("f32", v)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _for_the_writer(value: object) -> object:
    import mmdb_writer as w

    kinds = {"u16": w.MmdbU16, "u32": w.MmdbU32, "u64": w.MmdbU64, "u128": w.MmdbU128, "i32": w.MmdbI32}
    kinds |= {"f64": w.MmdbF64, "f32": w.MmdbF32}
    if isinstance(value, tuple):
        return kinds[value[0]](value[1])
    if isinstance(value, list):
        return [_for_the_writer(v) for v in value]
    if isinstance(value, dict):
        return {k: _for_the_writer(v) for k, v in value.items()}
    return value


@given(_MMDB_VALUES, st.text(max_size=300))
def test_the_metadata_decoder_reads_what_maxminddb_reads(value: object, long_text: str) -> None:
    """Every type of the data format but pointers, and each size encoding (texts past 29 and 285 bytes)."""
    from maxminddb.decoder import Decoder
    from mmdb_writer import Encoder

    for v in (value, long_text, {"k": "\u00e9" * 33_000 + long_text}):  # (and past 65,821 bytes)
        data = Encoder(cache=False).encode(_for_the_writer(v))
        assert _decode_value(data, 0, depth=0) == Decoder(data).decode(0)
    # int32s shorter than 4 bytes, which the writer does not make (extended type 1: 8, int32)
    for data in (b"\x02\x01\xff\xff", b"\x03\x01\x80\x00\x01", b"\x04\x01\xff\xff\xff\xfe"):
        assert _decode_value(data, 0, depth=0) == Decoder(data).decode(0)


def test_a_file_the_metadata_reader_refuses_is_opened_by_maxminddb(
    city_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(path: str) -> Metadata:
        raise ValueError("not taken here")

    monkeypatch.setattr("detector.geoip.read_metadata", refused)
    geo = GeoIP(city_db)
    assert geo._meta == _metadata_by_maxminddb(city_db)
    assert geo.locate("81.2.69.10").city == "London"  # type: ignore[union-attr]


def test_uses_the_c_extension_when_installed(city_db: str) -> None:
    try:
        import maxminddb.extension  # noqa: F401
    except ImportError:
        pytest.skip("maxminddb C extension not installed")
    assert GeoIP(city_db).uses_c_extension


def _one_at_a_time(path: str, ips: list[str]) -> list[object]:
    """The reference: each address read from the database by maxminddb, one at a time (no index)."""
    geo = GeoIP(path)
    geo.index = None
    return [geo.locate(ip) for ip in ips]


def _together(path: str, ips: list[str]) -> tuple[list[object], GeoIP]:
    geo = GeoIP(path)
    geo.prefetch(ips)
    return [geo.locate(ip) for ip in ips], geo


def _mixed_addresses(count: int, seed: int) -> list[str]:
    """Addresses in and around the test networks, special ranges, and anywhere at all."""
    rng = random.Random(seed)
    networks = [ipaddress.ip_network(p.network) for p in PLACES if p.network.count(".") == 3]
    ips = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.5:
            net = rng.choice(networks)
            ips.append(str(net[rng.randrange(net.num_addresses)]))
        elif kind < 0.6:
            ips.append(f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}")
        else:
            ips.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
    return ips


def test_batch_lookup_gives_what_one_at_a_time_gives(city_db: str) -> None:
    ips = _mixed_addresses(3000, seed=1)
    together, geo = _together(city_db, ips)
    assert together == _one_at_a_time(city_db, ips)
    assert sum(loc is not None for loc in together) > 1000  # the walk found the test networks
    # Addresses that share a record were read once: far fewer reads than located addresses.
    assert 0 < geo.stats.database_reads < 20 and geo.stats.network_cache_hits > 1000


def test_locate_many_gives_and_counts_what_locate_of_each_gives(city_db: str) -> None:
    """In batches that repeat addresses, within one batch and across them, and mix in IPv6 ones."""
    ips = [*_mixed_addresses(1500, seed=5), "2a02:c7f::1", "::1"]
    random.Random(6).shuffle(ips)
    batches = [ips[:700] * 2, ips[500:], ips[:100]]  # (the first twice over, then some met before)
    many, each = GeoIP(city_db), GeoIP(city_db)
    for batch in batches:
        each.prefetch(batch)
        assert many.locate_many(batch) == [each.locate(ip) for ip in batch]
    assert many.stats == each.stats and many.stats.address_cache_hits > 1000
    assert many.stats.network_cache_hits > 500  # (the new ones were located together)


def _without_record_of(geo: GeoIP, ip: str) -> None:
    """Take the record of ``ip`` out of ``geo``'s record index, as an index built by an older release
    leaves a record out (its addresses are then read from the database)."""
    assert geo.index is not None
    offset = geo._tree.locate_text([ip], geo.index)[0][0]  # type: ignore[union-attr]
    keep = [k for k, o in enumerate(geo.index.offsets) if o != offset]
    assert len(keep) == len(geo.index) - 1
    offsets = array("q", [geo.index.offsets[k] for k in keep])
    places = array("i", [geo.index.places[k] for k in keep])
    geo.index = replace(geo.index, offsets=memoryview(offsets), places=memoryview(places))


@pytest.mark.parametrize("cache_size", [262_144, 1_000])
def test_locate_many_with_the_record_index_gives_and_counts_what_locate_of_each_gives(
    tmp_path: Path, cache_size: int
) -> None:
    """With the record index, a batch's new addresses go into the cache together (``_place_new``,
    where ``_speedups`` is built): the same locations and the same counts as ``locate`` of each, for
    addresses the index places, special and unknown ones, a record without coordinates, IPv6 ones, and a
    record the index lacks (read). With a cache too small for a batch's new addresses, the batches that
    do not fit go the old way, in between those that do (the counts then differ from one at a time's,
    as they always did: each evicts at other moments)."""
    path = build_city_db(str(tmp_path / "city.mmdb"))
    many, each = _indexed(path), GeoIP(path)
    for geo in (many, each):
        geo.cache_size = cache_size
        _without_record_of(geo, "5.6.7.1")  # (Amsterdam's)
    ips = [
        *_mixed_addresses(3000, seed=8),
        *(f"11.{k}.0.1" for k in range(50)),  # a record without coordinates
        *(f"5.6.7.{k}" for k in range(60)),  # the record the index lacks
        *(f"2a02:c7f::{k:x}" for k in range(1, 40)),
        "2a02:c7f::1%eth0",  # (a zone id: not walked in C)
        "::1",
    ]
    random.Random(9).shuffle(ips)
    batches = [ips[:1200] * 2, ips[1000:2000], ips[900:], ips[:100]]
    for batch in batches:
        each.prefetch(batch)
        assert many.locate_many(batch) == [each.locate(ip) for ip in batch]
        assert len(many._by_address) <= cache_size
    if cache_size > len(ips):
        assert asdict(many.stats) == asdict(each.stats)
    assert many.stats.index_hits > 500 and many.stats.unknown > 50 and many.stats.special > 100
    assert 0 < many.stats.database_reads < 5  # (Amsterdam's record, read once; the zone id's)
    assert {loc.city for loc in many._by_address.values() if loc} >= {"Amsterdam", "London", None}
    if SPEEDUPS is not None:
        fresh = _indexed(path)
        fresh.cache_size = cache_size
        # (a batch that fits, then one that does not whenever the cache is small)
        assert fresh._place_new(ips[:600]) and fresh._place_new(ips[600:1200]) == (cache_size > 1200)


@pytest.mark.skipif(SPEEDUPS is None, reason="detector/_speedups.c is not built (make setup)")
@settings(max_examples=200)
@given(
    st.lists(st.integers(-3, 12), max_size=80),
    st.dictionaries(st.integers(0, 12), st.integers(), max_size=8),
)
def test_rows_wanted_and_place_each_in_c_do_what_their_loops_would(
    places: list[int], known: dict[int, int]
) -> None:
    """The two C loops of ``_place_new``, against the loops they stand for."""
    buffer = array("q", places)
    wanted = list(dict.fromkeys(p for p in places if p >= 0 and p not in known))
    assert SPEEDUPS.rows_wanted(buffer, known) == wanted
    keys = [f"10.0.0.{k}" for k in range(len(places))]
    by_place = {**known, **{row: -row for row in wanted}}
    into: dict[str, int] = {"9.9.9.9": 1}
    left = SPEEDUPS.place_each(keys, buffer, by_place, into)
    assert left == [k for k, p in enumerate(places) if p < 0]
    assert into == {"9.9.9.9": 1, **{keys[k]: by_place[p] for k, p in enumerate(places) if p >= 0}}
    # A place that ``by_place`` lacks, a place for each key, buffers of int64 only.
    if wanted:
        with pytest.raises(KeyError):
            SPEEDUPS.place_each(keys, buffer, known, {})
    with pytest.raises(ValueError, match="a place for each key"):
        SPEEDUPS.place_each([*keys, "10.1.1.1"], buffer, by_place, {})
    with pytest.raises(TypeError, match="int64"):
        SPEEDUPS.rows_wanted(b"\x00" * 9, known)


class _SameHash(str):
    """A key of a str subclass, every one with the same hash: each lookup of one walks a probe chain."""

    def __hash__(self) -> int:
        return 7


class _Unequal:
    """A key whose comparison fails, as a dict lookup that meets it must."""

    def __hash__(self) -> int:
        return hash("81.2.69.10")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("not comparable")


_KEYS = st.one_of(
    st.sampled_from([f"81.2.69.{i}" for i in range(40)]),
    st.text(max_size=6),  # (non-ASCII ones among them)
    st.integers(-3, 3),
    st.builds(_SameHash, st.sampled_from("abc")),
)


def _twin_of_get_each(
    mapping: dict[Any, Any], keys: list[Any], default: object
) -> tuple[list[Any], list[int]]:
    """``locate_many``'s loop over its address cache where ``_speedups`` is not built."""
    values = [mapping.get(key, default) for key in keys]
    return values, [k for k, value in enumerate(values) if value is default]


@pytest.mark.skipif(SPEEDUPS is None, reason="detector/_speedups.c is not built (make setup)")
@settings(max_examples=300)
@given(st.dictionaries(_KEYS, st.integers(), max_size=300), st.lists(_KEYS, max_size=60), st.data())
def test_each_lookup_in_c_finds_what_the_dict_finds(
    mapping: dict[Any, Any], keys: list[Any], data: st.DataObject
) -> None:
    """``get_each`` (the address cache's lookups, each one's cache misses fetched a few keys ahead) on
    dicts of str keys only and of mixed ones, of 1- and 2-byte slots, with deleted entries, keys of one
    hash, and keys given as new str objects (whose hash is not yet computed)."""
    for key in (
        data.draw(st.lists(st.sampled_from(sorted(mapping, key=repr)), max_size=20)) if mapping else []
    ):
        mapping.pop(key, None)  # (deleted entries: dummies in the table)
    keys = [key.encode().decode() if type(key) is str else key for key in keys]
    default = object()
    assert SPEEDUPS.get_each(mapping, keys, default) == _twin_of_get_each(mapping, keys, default)


@pytest.mark.skipif(SPEEDUPS is None, reason="detector/_speedups.c is not built (make setup)")
def test_each_lookup_in_c_in_a_big_dict_and_its_errors() -> None:
    """A dict of 4-byte slots (an address cache's size), as many keys as a batch; and what a failing
    comparison raises, and a dict that is not one, are refused as the dict would."""
    rng = random.Random(3)
    addresses = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(200_000)]
    mapping = {ip: k for k, ip in enumerate(addresses[:100_000])}
    keys = [ip.encode().decode() for ip in rng.sample(addresses, 8192)]
    default = object()
    values, missing = SPEEDUPS.get_each(mapping, keys, default)
    assert (values, missing) == _twin_of_get_each(mapping, keys, default)
    assert 0 < len(missing) < len(keys)
    with pytest.raises(RuntimeError, match="not comparable"):
        SPEEDUPS.get_each({"81.2.69.10": 1}, ["a"] * 20 + [_Unequal()], default)
    with pytest.raises(TypeError, match="get_each"):
        SPEEDUPS.get_each(Counter(mapping), keys, default)


def _city_db_with_record_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_size: int, layout: str = "geoip2"
) -> str:
    # mmdb-writer picks the smallest size that fits; the real databases use 28 (GeoLite2) or others.
    from mmdb_writer import TreeWriter

    fit = TreeWriter._adjust_record_size

    def forced(self: TreeWriter) -> None:
        fit(self)
        self.record_size = record_size
        self.data_offset = self.record_size * 2 / 8 * self._node_counter

    with monkeypatch.context() as m:
        m.setattr(TreeWriter, "_adjust_record_size", forced)
        path = build_city_db(str(tmp_path / f"city-{record_size}-{layout}.mmdb"), layout=layout)
    assert _metadata_by_maxminddb(path).record_size == record_size
    assert read_metadata(path) == _metadata_by_maxminddb(path)
    return path


def _walks_agree(path: str, ips: list[str]) -> np.ndarray:
    """The search tree's walk in C (where built) and in numpy give the same record to every address."""
    tree = GeoIP(path)._tree
    assert tree is not None
    addresses = np.array([int(ipaddress.IPv4Address(ip)) for ip in ips], np.int64)
    walked = tree.walk(addresses)
    assert tree.find(addresses).tolist() == walked.tolist()
    return walked


@pytest.mark.parametrize("record_size", [24, 28, 32])
def test_batch_lookup_on_every_record_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_size: int
) -> None:
    path = _city_db_with_record_size(tmp_path, monkeypatch, record_size)
    ips = _mixed_addresses(1000, seed=record_size)
    assert _together(path, ips)[0] == _one_at_a_time(path, ips)
    walked = _walks_agree(path, [*(ip for ip in ips if ":" not in ip), "0.0.0.0", "255.255.255.255"])
    assert (walked >= 0).sum() > 100 and (walked == -1).sum() > 10


def test_the_tree_walks_agree_on_the_real_database(real_db: str) -> None:
    rng = random.Random(11)
    walked = _walks_agree(real_db, [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(20000)])
    assert (walked >= 0).sum() > 5000 and (walked == -1).sum() > 1000


def test_batch_lookup_on_the_real_database(real_db: str) -> None:
    rng = random.Random(7)
    ips = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(5000)]
    together, geo = _together(real_db, ips)
    assert together == _one_at_a_time(real_db, ips)
    assert sum(loc is not None for loc in together) > 2000
    assert geo._meta.record_size == 28


def test_batch_lookup_leaves_ipv6_and_few_addresses_to_the_single_path(city_db: str) -> None:
    geo = GeoIP(city_db)
    geo.prefetch([ip_in("2a02:c7f::/32"), ip_in("81.2.69.0/24")])
    assert geo.stats.database_reads == 0  # nothing done ahead
    assert geo.locate(ip_in("2a02:c7f::/32")).city == "London"  # type: ignore[union-attr]


def _addresses_around_special_ranges() -> list[str]:
    """The first and last address of every special-purpose network, and the addresses just outside."""
    from detector.geoip import _SPECIAL_V4, _SPECIAL_V6

    ips = []
    for net in [*_SPECIAL_V4, *_SPECIAL_V6]:
        first, last, address = int(net.network_address), int(net.broadcast_address), type(net.network_address)
        around = (first - 1, first, first + 1, last - 1, last, last + 1)
        ips += [str(address(a)) for a in around if 0 <= a < 2**net.max_prefixlen]
    return ips


def _mixed_v6(count: int, seed: int) -> list[str]:
    """IPv6 addresses in the test networks, in 6to4 space, and anywhere in global unicast."""
    rng = random.Random(seed)
    networks = [ipaddress.ip_network(p.network) for p in PLACES if ":" in p.network]
    ips = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.4:
            net = rng.choice(networks)
            ips.append(str(net[rng.randrange(min(net.num_addresses, 2**64))]))
        elif kind < 0.6:
            ips.append(str(ipaddress.IPv6Address((0x2002 << 112) | (rng.getrandbits(32) << 80))))
        else:
            ips.append(str(ipaddress.IPv6Address((0x2 << 124) | rng.getrandbits(124))))
    return ips


def test_batch_lookup_takes_ipv6_and_special_ranges_as_one_at_a_time_does(city_db: str) -> None:
    """The C walk (where built) parses and walks IPv6 addresses too, and knows the special ranges."""
    ips = [*_mixed_v6(1500, seed=8), *_addresses_around_special_ranges(), *_mixed_addresses(500, seed=9)]
    together, geo = _together(city_db, ips)
    assert together == _one_at_a_time(city_db, ips)
    assert sum(loc is not None and loc.city == "London" for loc in together) > 200
    if SPEEDUPS is not None:  # every one of them taken by the walk: few reads, none one at a time
        assert geo.stats.database_reads < 20 and geo.stats.special > 50


def test_batch_lookup_of_ipv6_on_the_real_database(real_db: str) -> None:
    ips = _mixed_v6(5000, seed=10)
    together, geo = _together(real_db, ips)
    assert together == _one_at_a_time(real_db, ips)
    assert sum(loc is not None for loc in together) > 1000
    if SPEEDUPS is not None and geo.index is not None:  # 6to4 addresses reach IPv4 records: indexed
        assert geo.stats.index_hits > 500


def test_the_walk_in_c_locates_text_as_its_python_twin(tmp_path: Path, real_db: str) -> None:
    """``SearchTree.locate_text``: the C parse-and-walk and the numpy one agree on IPv4 addresses and on
    what is not an address; the C one takes IPv6 too, where the twin leaves it."""
    from detector import geoip as geoip_module

    if SPEEDUPS is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")
    odd = [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        " 1.2.3.4",
        "1.2.3.4\x00",
        "fe80::1%eth0",
        "x" * 80,
        "\ud800",
    ]
    for geo in (_indexed(build_city_db(str(tmp_path / "city.mmdb"))), GeoIP(real_db)):
        tree = geo._tree
        assert tree is not None
        ips = [
            *_mixed_addresses(3000, seed=12),
            *_addresses_around_special_ranges(),
            *_mixed_v6(300, 13),
            *odd,
        ]
        offsets, places = map(np.array, tree.locate_text(ips, geo.index))
        try:
            geoip_module.SPEEDUPS = None
            twin_offsets, twin_places = map(np.array, tree.locate_text(ips, geo.index))
        finally:
            geoip_module.SPEEDUPS = SPEEDUPS
        v6 = np.array([":" in ip for ip in ips])
        assert offsets[~v6].tolist() == twin_offsets[~v6].tolist()
        assert places[~v6].tolist() == twin_places[~v6].tolist()
        assert (twin_offsets[v6] == LEFT).all() and (offsets[v6] != LEFT).sum() == v6.sum() - 1  # (%eth0)
        assert (offsets[-len(odd) :] == LEFT).all() and (offsets >= 0).sum() > 1000
        assert {int(o) for o in offsets} >= {UNKNOWN, SPECIAL, LEFT}
        assert geo.index is not None and (places >= 0).sum() > 1000  # (the record index: `make geoip`)


def test_batch_lookup_with_an_asn_database(city_db: str, tmp_path: Path) -> None:
    from detector.known import AsnDatabase
    from detector.testing import build_asn_db

    asn_db = build_asn_db(str(tmp_path / "asn.mmdb"), {"81.2.69.0/24": (16509, "AMAZON-02")})
    ips = _mixed_addresses(2000, seed=3)

    def geo() -> GeoIP:
        return GeoIP(city_db, asn=AsnDatabase(asn_db, {"hosting": [16509]}))

    together = geo()
    together.prefetch(ips)
    found = [together.locate(ip) for ip in ips]
    one = geo()
    assert found == [one.locate(ip) for ip in ips]
    assert any(loc is not None and loc.network == "hosting" and loc.asn == 16509 for loc in found)


# -- the record index (detector.geoindex) ---------------------------------------------------------------


def _indexed(path: str) -> GeoIP:
    """The database at ``path`` with its record index built and saved beside it, opened again."""
    built = GeoIP(path).build_index()
    built.save(index_path(path))
    geo = GeoIP(path)
    assert geo.index is not None and len(geo.index) == len(built)
    return geo


@pytest.mark.parametrize(("record_size", "layout"), [(24, "geoip2"), (28, "geoip2"), (32, "flat")])
def test_record_index_gives_what_reading_the_database_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_size: int, layout: str
) -> None:
    path = _city_db_with_record_size(tmp_path, monkeypatch, record_size, layout)
    geo = _indexed(path)
    ips = _mixed_addresses(3000, seed=record_size)
    geo.prefetch(ips)
    found = [geo.locate(ip) for ip in ips]
    assert found == _one_at_a_time(path, ips)
    assert [f.place for f in found if f] == [f.place for f in _one_at_a_time(path, ips) if f]
    assert sum(loc is not None for loc in found) > 1000
    # Every record came from the index: it holds every record an IPv4 address reaches.
    assert geo.stats.database_reads == 0 and geo.stats.index_hits > 0
    # One at a time too: a walk of the tree, no read (and maxminddb never opened).
    alone = GeoIP(path)
    assert [alone.locate(ip) for ip in ips] == found
    assert alone.stats.database_reads == 0 and alone._reader is None
    # With caches too small for the test's places, batch after batch (evicting as they go).
    small = GeoIP(path)
    small.cache_size = 4  # (below the smallest setting, to evict among the test's few places)
    sizes = []
    for start in range(0, len(ips), 500):
        small.prefetch(ips[start : start + 500])
        sizes.append(len(small._by_place))
        assert [small.locate(ip) for ip in ips[start : start + 500]] == found[start : start + 500]
    # A batch's walk grew it past the bound, and it was cut back: it never held every place the
    # batches met. (A single address walked with an index cuts it back too.)
    assert 4 < max(sizes) < len(geo._by_place)
    # A radius-less record gets the default radius of the settings in use, not of the build.
    if layout == "geoip2":
        wide = GeoIP(path, default_radius_km=7)
        wide.prefetch(ips)
        assert wide.locate(ip_in("9.9.9.0/24")).accuracy_radius_km == 7  # type: ignore[union-attr]


def test_record_index_holds_every_record_an_address_reaches(tmp_path: Path) -> None:
    """IPv6 networks too: one in a place no IPv4 network has (its record only IPv6 addresses reach),
    and one deep in the tree (a /96 beside a /32 of another place: past the address's first 64 bits)."""
    import maxminddb

    only_v6 = [
        Place("2a01:e34::/32", 43.2965, 5.3698, 20, "FR", "Marseille"),
        Place("2a01:e35:1:2:3:4::/96", 45.7640, 4.8357, 5, "FR", "Lyon"),
    ]
    path = build_city_db(str(tmp_path / "city.mmdb"), places=[*PLACES, *only_v6])
    geo = _indexed(path)
    with maxminddb.open_database(path) as reader:
        networks = [net for net, _ in reader]
    ips = [str(net[k]) for net in networks for k in (0, 1, net.num_addresses - 1)]
    assert any(":" in ip for ip in ips) and any("." in ip for ip in ips)
    geo.prefetch(ips)
    found = [geo.locate(ip) for ip in ips]
    assert found == _one_at_a_time(path, ips)
    assert {"Marseille", "Lyon", "London"} <= {loc.city for loc in found if loc is not None}
    if SPEEDUPS is not None:  # (without the C walk, IPv6 addresses are read one at a time)
        assert geo.stats.database_reads == 0 and geo.stats.index_hits > 0


@pytest.mark.parametrize("indexed", [False, True])
def test_an_ipv4_only_database_places_no_ipv6_address_and_reads_for_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, indexed: bool
) -> None:
    """maxminddb refuses an IPv6 lookup in an IPv4-only database: an address it does not hold
    (unknown, with a warning once), not a failed read (`detector_geoip_errors_total` says a database
    file overwritten in place). Remembered by address, as any answer."""
    path = build_city_db(str(tmp_path / "ipv4.mmdb"), ip_version=4)
    geo = _indexed(path) if indexed else GeoIP(path)
    assert geo._meta.ip_version == 4
    ips = ["2a02:c7f::1", ip_in("81.2.69.0/24"), "2a02:c7f::2", "2a02:c7f::1", "::1"]
    for _ in range(2):
        geo.prefetch(ips)
        found = [geo.locate(ip) for ip in ips]
        assert [f.city if f else None for f in found] == [None, "London", None, None, None]
    assert geo.stats.errors == 0 and geo.stats.unknown == 2 and geo.stats.special == 1
    assert geo.stats.database_reads == (0 if indexed else 1)  # (London: from the index, or one read)
    assert [r.message for r in caplog.records].count(
        f"GeoIP database {path} holds IPv4 networks only: IPv6 addresses get no location"
    ) == 1


def test_record_index_of_another_database_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "city.mmdb")
    _indexed(build_city_db(path))
    # A new build renamed over the old one: London has moved.
    moved = [p if p.city != "London" else replace(p, latitude=p.latitude + 1) for p in PLACES]
    os.replace(build_city_db(str(tmp_path / "new.mmdb"), moved), path)
    geo = GeoIP(path)
    assert geo.index is None
    assert "built from another database" in caplog.text
    ips = _mixed_addresses(1000, seed=5)
    geo.prefetch(ips)
    assert [geo.locate(ip) for ip in ips] == _one_at_a_time(path, ips)
    assert geo.stats.database_reads > 0 and geo.stats.index_hits == 0


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_record_index_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    path = build_city_db(str(tmp_path / "city.mmdb"))
    _indexed(path)
    data = Path(index_path(path)).read_bytes()
    bad = {"garbage": b"\x00" * 4096, "truncated": data[: len(data) // 2], "empty": b""}[damage]
    Path(index_path(path)).write_bytes(bad)
    geo = GeoIP(path)
    assert geo.index is None and "record index" in caplog.text
    assert geo.locate(ip_in("81.2.69.0/24")).city == "London"  # type: ignore[union-attr]


@pytest.mark.parametrize("column", ["places", "city", "country", "name_starts"])
def test_record_index_pointing_past_its_rows_or_names_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, column: str
) -> None:
    """A place past the place rows, or a name past the names: the index is inconsistent (the checks on
    opening it, in C where built)."""
    path = build_city_db(str(tmp_path / "city.mmdb"))
    _indexed(path)
    data = bytearray(Path(index_path(path)).read_bytes())
    size = int.from_bytes(data[len(geoindex._MAGIC) : len(geoindex._MAGIC) + 8], "little")
    header = json.loads(data[len(geoindex._MAGIC) + 8 : len(geoindex._MAGIC) + 8 + size])
    _, offset, count = header["columns"][column]
    last = count - (2 if column == "name_starts" else 1)  # (a name's start past the next one's)
    at = geoindex._aligned(len(geoindex._MAGIC) + 8 + size) + offset + 4 * last
    data[at : at + 4] = (10_000_000).to_bytes(4, "little")
    Path(index_path(path)).write_bytes(bytes(data))
    geo = GeoIP(path)
    assert geo.index is None and "is inconsistent" in caplog.text
    assert geo.locate(ip_in("81.2.69.0/24")).city == "London"  # type: ignore[union-attr]


def test_the_places_made_in_c_are_the_twins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_db: str
) -> None:
    """``GeoIP._locations``: each row of the record index as ``RecordIndex.fields`` and ``_location``
    make it, field for field (every row of a test database of each layout, 20,000 of GeoLite2-City's,
    with a default radius and a coarse threshold of their own)."""
    from detector import geoip as geoip_module

    if SPEEDUPS is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")
    flat = _city_db_with_record_size(tmp_path, monkeypatch, 24, "flat")
    for geo in (_indexed(build_city_db(str(tmp_path / "city.mmdb"))), _indexed(flat), GeoIP(real_db)):
        assert geo.index is not None
        rows = random.Random(3).sample(range(len(geo.index.latitude)), min(20_000, len(geo.index.latitude)))
        for default, coarse in ((DEFAULT_ACCURACY_RADIUS_KM, 500.0), (7, 20.0)):
            geo.default_radius_km, geo.coarse_radius_km = default, coarse
            made = geo._locations(geo.index, rows)
            try:
                geoip_module.SPEEDUPS = None
                twin = geo._locations(geo.index, rows)
            finally:
                geoip_module.SPEEDUPS = SPEEDUPS
            assert made == twin and [m.place for m in made] == [t.place for t in twin]  # type: ignore[union-attr]
            assert {type(m.accuracy_radius_km) for m in made} == {type(t.accuracy_radius_km) for t in twin}  # type: ignore[union-attr]
        assert any(m.coarse for m in made) and not all(m.coarse for m in made)  # type: ignore[union-attr]
    with pytest.raises(IndexError):
        geo._locations(geo.index, [len(geo.index.latitude)])


@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=50))
def test_the_largest_of_a_column_in_c_is_its_twins(values: list[int]) -> None:
    if SPEEDUPS is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")
    column = memoryview(array("i", values))
    assert SPEEDUPS.int32_max(column) == max(column, default=-1) == max(values, default=-1)
    ascending = values == sorted(values)
    assert SPEEDUPS.int32_ascending(column) is ascending
    assert SPEEDUPS.int32_ascending(memoryview(array("i", sorted(values)))) is True
    geoindex_module = geoindex
    try:
        geoindex_module.SPEEDUPS = None
        assert geoindex._ascending(column) is ascending
    finally:
        geoindex_module.SPEEDUPS = SPEEDUPS


def test_record_index_names_are_read_one_at_a_time_and_kept(tmp_path: Path) -> None:
    """Saved and mapped again, the names are decoded only as places ask for them, once each (the same
    str for every place of a city), in C as in its twin; any text, the empty one too."""
    names = ["London", "Zürich", "", "Saint-Étienne", "東京", "a\x1fb"]
    made = geoindex.Names.of(names)
    assert [made[k] for k in range(len(names))] == names
    path = build_city_db(str(tmp_path / "city.mmdb"))
    geo = _indexed(path)
    assert geo.index is not None and geo.index.names.decoded.count(None) == len(geo.index.names) > 0
    geo.prefetch([ip_in("81.2.69.0/24", 1), ip_in("81.2.69.0/24", 2)])
    one, two = geo.locate(ip_in("81.2.69.0/24", 1)), geo.locate(ip_in("81.2.69.0/24", 2))
    assert one is not None and two is not None and one.city == "London" and one.city is two.city
    decoded = [name for name in geo.index.names.decoded if name is not None]
    assert "London" in decoded and len(decoded) < len(geo.index.names)


def test_record_index_of_the_real_database(real_db: str) -> None:
    """`make geoip` builds it; every record of GeoLite2-City answers as a read does, IPv6 ones too."""
    geo = GeoIP(real_db)
    if geo.index is None:
        if IN_CI:
            pytest.fail("make geoip must build the record index")
        pytest.skip("no record index: run `make geoip`")
    assert len(geo.index) > 500_000
    rng = random.Random(11)
    ips = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(20_000)]
    geo.prefetch(ips)
    found = [geo.locate(ip) for ip in ips]
    assert found == _one_at_a_time(real_db, ips)
    assert sum(loc is not None for loc in found) > 15_000
    assert geo.stats.database_reads == 0 and geo.stats.index_hits > 5_000
    if SPEEDUPS is None:
        return  # (IPv6 addresses are read one at a time without the C walk)
    # IPv6: addresses anywhere, and one in each of 5,000 networks whose record no IPv4 address reaches
    assert geo._tree is not None
    offsets, firsts = geo._tree.records()
    ipv4_reach = set(geo._tree.leaves(geo._tree.ipv4_start, 32, skip=-1)[0].tolist())
    only_v6 = [ip for offset, ip in zip(offsets.tolist(), firsts, strict=True) if offset not in ipv4_reach]
    assert len(only_v6) > 20_000 and all(":" in ip for ip in only_v6)
    ips = _mixed_v6(5000, seed=12) + random.Random(12).sample(only_v6, 5000)
    geo.prefetch(ips)
    found = [geo.locate(ip) for ip in ips]
    assert found == _one_at_a_time(real_db, ips)
    assert sum(loc is not None for loc in found) > 5_000
    assert geo.stats.database_reads == 0

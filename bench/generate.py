"""Deterministic, realistic canonical sign-in logs for the benchmarks, generated fast.

    python -m bench.generate --events 1000000 --accounts 100000 [--seed 1] [--out FILE]

The output is JSON Lines of canonical sign-ins (``schemas/signin-event.schema.json``: ``user``, ``ip``,
``timestamp``, ``event_id``, ``outcome``) in global time order, as a log export delivers them, over
``--days`` (30) from 2024-03-04. Every public address comes from a pool of about 100,000 distinct IPv4
addresses that the real City database places in a city (random addresses, special-purpose ranges
skipped, kept when the database gives a city and a radius under 500 km); cities are those of the pool.

The mix, per account (accounts' activity is skewed: a few sign in far more often than most):

- a home city with 1-3 home addresses (the first used most), sign-ins at least 30 minutes apart and
  typically hours or days apart;
- commuters (25% of accounts): about a third of their sign-ins from one or two addresses of a city
  30-250 km away;
- flyers (15%): one trip to a city 1,500 km or more away, at airliner speed (elapsed >= distance /
  700 km/h + 1 h each way), one to three sign-ins there, then home again;
- impossible trips (0.2% of sign-ins, residents and commuters): a sign-in from a city 2,500 km or more
  from home 1-30 minutes after the previous one; the next one is plausible again;
- failures (3%, a third of them from an address anywhere in the world), private addresses (1%,
  10.x.x.x), re-delivered duplicates (0.5%: the same line again 1 s to 10 min later);
- timestamps RFC 3339: 60% whole seconds with ``Z``, 30% milliseconds with ``Z``, 10% local time with
  an offset such as ``+05:30``; event ids are uuid-shaped hex.

The same parameters and database build give the same bytes. Files are cached in ``.cache/bench/``
under a name made of the parameters (and a ``.meta.json`` beside them with counts), so reruns are
instant. ``pool()`` (the addresses) is cached there too. ``messy`` and ``with_ipv6`` make copies of a
file with some lines broken, and with a quarter of its public addresses as IPv6 ones in the same
places (the benchmark's dual-stack slice).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
DEFAULT_DB = ROOT / ".cache" / "geoip" / "GeoLite2-City.mmdb"

# Bump when the output of the same parameters changes (the cache keys include them).
VERSION = 2
POOL_VERSION = 1
START = 1709510400  # 2024-03-04T00:00:00Z
HOUR = 3600.0
MIN_GAP_S = 30 * 60.0  # consecutive sign-ins of one account: at least this far apart (but trips)

KINDS = ("resident", "commuter", "flyer")
KIND_SHARES = (0.60, 0.25, 0.15)
COMMUTE_SHARE = 0.35  # of a commuter's sign-ins, from the work city
COMMUTE_KM = (30.0, 250.0)
FLIGHT_MIN_KM = 1500.0
AIRLINER_KMH = 700.0
IMPOSSIBLE_SHARE = 0.002
IMPOSSIBLE_MIN_KM = 2500.0
FAILURE_SHARE = 0.03
FAILURE_FAR_SHARE = 1 / 3
PRIVATE_SHARE = 0.01
DUPLICATE_SHARE = 0.005
SECONDS_SHARE, MILLIS_SHARE = 0.60, 0.30  # the rest: local time with an offset
OFFSETS_MIN = np.array([330, -300, 60, 120, -480, 540, 600, -180, 480, 345])

FIRST = [
    "amelia",
    "olivia",
    "isla",
    "ava",
    "mia",
    "noah",
    "oliver",
    "george",
    "arthur",
    "leo",
    "jack",
    "harry",
    "sofia",
    "lucas",
    "mateo",
    "emma",
    "hannah",
    "lena",
    "yuki",
    "hiro",
    "wei",
    "min",
    "ana",
    "joao",
    "fatima",
    "omar",
    "aisha",
    "ivan",
    "olga",
    "pierre",
    "chloe",
    "anna",
    "lars",
    "ingrid",
    "priya",
    "arjun",
    "kemi",
    "tunde",
    "carlos",
    "lucia",
]
LAST = [
    "smith",
    "jones",
    "taylor",
    "brown",
    "williams",
    "wilson",
    "johnson",
    "davies",
    "patel",
    "wright",
    "khan",
    "mueller",
    "schmidt",
    "garcia",
    "martinez",
    "rossi",
    "bianchi",
    "dubois",
    "martin",
    "silva",
    "santos",
    "tanaka",
    "suzuki",
    "wang",
    "li",
    "chen",
    "kim",
    "park",
    "nguyen",
    "singh",
    "kumar",
    "okafor",
    "adeyemi",
    "ivanov",
    "petrov",
    "novak",
    "kowalski",
    "jensen",
    "hansen",
]
DOMAINS = ("agency.example", "gov.example", "dept.example", "ministry.example")


def user_name(n: int) -> str:
    """A realistic, unique account name for account number ``n``."""
    first = FIRST[n % len(FIRST)]
    last = LAST[(n // len(FIRST)) % len(LAST)]
    return f"{first}.{last}.{n:06d}@{DOMAINS[n % len(DOMAINS)]}"


def uuid_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uuid-shaped ids (8-4-4-4-12 lowercase hex) as an array of 36-byte strings, vectorised."""
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16)
    hexdig = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    digits = np.empty((n, 32), dtype=np.uint8)
    digits[:, 0::2] = hexdig[raw >> 4]
    digits[:, 1::2] = hexdig[raw & 15]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for start, stop, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        out[:, at : at + stop - start] = digits[:, start:stop]
    return out.view("S36").ravel()


def ipv4_texts(values: np.ndarray) -> list[str]:
    """Dotted-quad text of IPv4 addresses given as integers."""
    pack = struct.Struct("!I").pack
    return [socket.inet_ntoa(pack(v)) for v in values.tolist()]


def _iso(ms: np.ndarray, unit: str) -> np.ndarray:
    """RFC 3339 text (no zone) of epoch milliseconds, to the second or the millisecond."""
    return np.datetime_as_string(ms.astype("datetime64[ms]"), unit=unit)


def haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


# -- the address pool ------------------------------------------------------------------------------


@dataclass
class Pool:
    """Public IPv4 addresses the database places in a city, grouped by city (arrays, CSR layout)."""

    ip: np.ndarray  # uint32, one per address
    city: np.ndarray  # int32 city index of each address
    city_lat: np.ndarray
    city_lon: np.ndarray
    city_country: np.ndarray  # "GB", ...
    members: np.ndarray  # address indices ordered by city
    first: np.ndarray  # members[first[c] : first[c] + size[c]] are city c's addresses
    size: np.ndarray

    @classmethod
    def build(
        cls, ip: np.ndarray, city: np.ndarray, lat: np.ndarray, lon: np.ndarray, cc: np.ndarray
    ) -> Pool:
        members = np.argsort(city, kind="stable").astype(np.int64)
        size = np.bincount(city, minlength=len(lat)).astype(np.int64)
        first = np.concatenate(([0], np.cumsum(size)[:-1])).astype(np.int64)
        return cls(ip, city, lat, lon, cc, members, first, size)

    def texts(self) -> list[str]:
        return ipv4_texts(self.ip)


def _db_tag(db: str) -> str:
    """The database's identity for cache keys: its build time and size (same on every clone)."""
    import maxminddb

    with maxminddb.open_database(db) as reader:
        build = reader.metadata().build_epoch
    return f"{build}-{os.path.getsize(db)}"


def pool(db: str | os.PathLike[str] = DEFAULT_DB, count: int = 100_000, seed: int = 7) -> Pool:
    """``count`` distinct public IPv4 addresses located in a city by ``db`` (cached)."""
    db = os.fspath(db)
    path = CACHE / f"pool-{count}-s{seed}-v{POOL_VERSION}-{_db_tag(db)}.npz"
    if path.exists():
        z = np.load(path)
        return Pool.build(z["ip"], z["city"], z["city_lat"], z["city_lon"], z["city_country"])
    import maxminddb

    from detector.geoip import COARSE_RADIUS_KM, is_special

    rng = np.random.default_rng([seed, 0x9001])
    seen: set[int] = set()
    ips: list[int] = []
    keys: list[tuple[str, str, float, float]] = []
    with maxminddb.open_database(db) as reader:
        get = reader.get
        pack = struct.Struct("!I").pack
        while len(ips) < count:
            for value in rng.integers(1 << 24, 0xE0000000, 65536, dtype=np.uint64).tolist():
                if value in seen or is_special(ipaddress.IPv4Address(value)):
                    continue
                seen.add(value)
                record = get(socket.inet_ntoa(pack(value)))
                if not isinstance(record, dict):
                    continue
                loc, city = record.get("location"), record.get("city")
                if not loc or not city or loc.get("latitude") is None or loc.get("longitude") is None:
                    continue
                if loc.get("accuracy_radius", 50) >= COARSE_RADIUS_KM:
                    continue
                name = (city.get("names") or {}).get("en") or str(city.get("geoname_id", "?"))
                cc = (record.get("country") or {}).get("iso_code") or "??"
                ips.append(value)
                keys.append((cc, name, float(loc["latitude"]), float(loc["longitude"])))
                if len(ips) == count:
                    break
    index: dict[tuple[str, str, float, float], int] = {}
    for key in sorted(set(keys)):
        index[key] = len(index)
    ordered = sorted(index, key=index.__getitem__)
    arrays = {
        "ip": np.array(ips, dtype=np.uint32),
        "city": np.array([index[k] for k in keys], dtype=np.int32),
        "city_lat": np.array([k[2] for k in ordered]),
        "city_lon": np.array([k[3] for k in ordered]),
        "city_country": np.array([k[0] for k in ordered]),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return Pool.build(*arrays.values())


def _nearby(p: Pool, homes: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """For each home city, a random city ``low``-``high`` km away (the home itself when none is found).

    Candidates come from the home's 2-degree grid cell and its eight neighbours; rejection sampling,
    vectorised over all homes at once."""
    cell_lat = np.floor(p.city_lat / 2).astype(np.int64)
    cell_lon = np.floor(p.city_lon / 2).astype(np.int64)
    key = cell_lat * 1000 + cell_lon
    order = np.argsort(key, kind="stable")
    skey = key[order]
    uniq, inverse = np.unique(homes, return_inverse=True)
    around = np.array([d * 1000 + e for d in (-1, 0, 1) for e in (-1, 0, 1)])
    keys = key[uniq][:, None] + around[None, :]
    lo = np.searchsorted(skey, keys)
    count = np.searchsorted(skey, keys, side="right") - lo
    cum = np.cumsum(count, axis=1)
    found = uniq.copy()
    todo = np.arange(len(uniq))
    for _ in range(64):
        if not len(todo):
            break
        r = (rng.random(len(todo)) * cum[todo, -1]).astype(np.int64)
        cell = (r[:, None] >= cum[todo]).sum(axis=1)
        cand = order[lo[todo, cell] + r - (cum[todo, cell] - count[todo, cell])]
        home = uniq[todo]
        d = haversine_km(p.city_lat[home], p.city_lon[home], p.city_lat[cand], p.city_lon[cand])
        ok = (d >= low) & (d <= high)
        found[todo[ok]] = cand[ok]
        todo = todo[~ok]
    return found[inverse]


def _far_ips(p: Pool, lat: np.ndarray, lon: np.ndarray, rng: np.random.Generator, km: float) -> np.ndarray:
    """For each point, a random pool address at least ``km`` away (rejection sampling, vectorised)."""
    out = rng.integers(0, len(p.ip), len(lat))
    todo = np.arange(len(lat))
    for _ in range(200):
        c = p.city[out[todo]]
        d = haversine_km(lat[todo], lon[todo], p.city_lat[c], p.city_lon[c])
        todo = todo[d < km]
        if not len(todo):
            break
        out[todo] = rng.integers(0, len(p.ip), len(todo))
    return out


def _member(p: Pool, city: np.ndarray, u: np.ndarray) -> np.ndarray:
    """An address of each city, picked by uniform numbers ``u`` in [0, 1)."""
    return p.members[p.first[city] + (u * p.size[city]).astype(np.int64)]


# -- the events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    events: int = 1_000_000  # lines, duplicates included
    accounts: int = 100_000
    seed: int = 1
    ips: int = 100_000
    days: int = 30

    def name(self, db: str) -> str:
        return (
            f"signins-e{self.events}-a{self.accounts}-s{self.seed}-ip{self.ips}-d{self.days}"
            f"-v{VERSION}-{_db_tag(db)}.jsonl"
        )


def generate(spec: Spec, db: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the sign-ins of ``spec`` to ``out``; returns counts of what was generated."""
    db = os.fspath(db)
    p = pool(db, spec.ips)
    rng = np.random.default_rng([spec.seed, spec.accounts, spec.events, VERSION])
    span = spec.days * 86400.0
    n_dup = round(spec.events * DUPLICATE_SHARE)
    n = spec.events - n_dup  # distinct events
    a_count = spec.accounts

    # Accounts: activity, kind, home city and addresses, work city, flight destination.
    weight = rng.lognormal(0.0, 0.8, a_count)
    weight /= weight.sum()
    # Every account signs in at least once when there are enough events for that; otherwise each event
    # is a different account's (as many accounts as there can be).
    if n >= a_count:
        counts = 1 + rng.multinomial(n - a_count, weight)
    else:
        counts = np.zeros(a_count, dtype=np.int64)
        counts[rng.choice(a_count, n, replace=False)] = 1
    kind = rng.choice(len(KINDS), a_count, p=KIND_SHARES)
    home_city = p.city[rng.integers(0, len(p.ip), a_count)]  # weighted by the city's share of addresses
    home_ips = np.stack([_member(p, home_city, rng.random(a_count)) for _ in range(3)], axis=1)
    n_home = rng.choice([1, 2, 3], a_count, p=[0.45, 0.35, 0.20])
    home_lat, home_lon = p.city_lat[home_city], p.city_lon[home_city]
    commuter = kind == 1
    work_city = home_city.copy()
    work_city[commuter] = _nearby(p, home_city[commuter], rng, *COMMUTE_KM)
    work_ips = np.stack([_member(p, work_city, rng.random(a_count)) for _ in range(2)], axis=1)
    flyer = kind == 2
    dest_ip = _far_ips(p, home_lat, home_lon, rng, FLIGHT_MIN_KM)
    dest_city = p.city[dest_ip]
    flight_km = haversine_km(home_lat, home_lon, p.city_lat[dest_city], p.city_lon[dest_city])

    # Events, grouped by account in time order.
    acct = np.repeat(np.arange(a_count), counts)
    offs = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.arange(n) - offs[acct]
    # Times uniform over the span, at least MIN_GAP_S apart: sorted uniforms over the span less the
    # gaps, plus the gaps. Trips below then stretch or shorten the gaps they need.
    room = np.maximum(span - (counts - 1) * MIN_GAP_S, HOUR)
    u = rng.random(n) * room[acct]
    u = u[np.lexsort((u, acct))] + pos * MIN_GAP_S
    start = offs[acct]  # index of each event's account's first event
    gap = np.diff(u, prepend=0.0)
    gap[pos == 0] = u[pos == 0]
    pick = rng.random(n)
    slot = np.minimum(np.where(pick < 0.7, 0, np.where(pick < 0.9, 1, 2)), n_home[acct] - 1)
    ip = home_ips[acct, slot]
    at_work = commuter[acct] & (rng.random(n) < COMMUTE_SHARE)
    ip[at_work] = work_ips[acct[at_work], (rng.random(int(at_work.sum())) < 0.3).astype(np.int64)]
    special = np.zeros(n, dtype=bool)  # events that a failure or a private address must not replace

    # Flights: one trip per flyer with two sign-ins or more.
    trips = np.nonzero(flyer & (counts >= 2))[0]
    t_start = offs[trips] + 1 + (rng.random(len(trips)) * (counts[trips] - 1)).astype(np.int64)
    t_len = np.minimum(rng.integers(1, 4, len(trips)), offs[trips] + counts[trips] - t_start)
    fly_s = flight_km[trips] / AIRLINER_KMH * HOUR + HOUR
    gap[t_start] = np.maximum(gap[t_start], fly_s + rng.random(len(trips)) * 3 * HOUR)
    for step in range(3):
        on = step < t_len
        idx = t_start[on] + step
        ip[idx] = _member(p, dest_city[trips[on]], rng.random(len(idx)))
        special[idx] = True
    back = t_start + t_len
    home_again = back < offs[trips] + counts[trips]
    gap[back[home_again]] = np.maximum(
        gap[back[home_again]], fly_s[home_again] + rng.random(int(home_again.sum())) * 3 * HOUR
    )

    # Impossible trips: a far sign-in minutes after the previous one, then a plausible return.
    cands = np.nonzero((pos >= 1) & ~flyer[acct])[0]
    n_imp = min(len(cands), round(n * IMPOSSIBLE_SHARE))
    imp = np.sort(rng.choice(cands, n_imp, replace=False))
    keep = np.ones(len(imp), dtype=bool)
    keep[1:] = np.diff(imp) > 2  # never two in a row in one account
    imp = imp[keep]
    imp_ip = _far_ips(p, home_lat[acct[imp]], home_lon[acct[imp]], rng, IMPOSSIBLE_MIN_KM)
    c = p.city[imp_ip]
    imp_km = haversine_km(home_lat[acct[imp]], home_lon[acct[imp]], p.city_lat[c], p.city_lon[c])
    ip[imp] = imp_ip
    gap[imp] = 60.0 + rng.random(len(imp)) * 29 * 60.0
    nxt = imp + 1
    same = (nxt < n) & (acct[np.minimum(nxt, n - 1)] == acct[imp])
    gap[nxt[same]] = np.maximum(
        gap[nxt[same]], imp_km[same] / AIRLINER_KMH * HOUR + HOUR + rng.random(int(same.sum())) * HOUR
    )
    special[imp] = True
    special[imp - 1] = True

    # Event times: per-account running sums of the gaps.
    csum = np.cumsum(gap)
    t = csum - (csum - gap)[start]
    t_ms = np.round((START + t) * 1000).astype(np.int64)

    # Failures (some from anywhere: password spraying) and private addresses.
    ip_value = p.ip[ip].astype(np.int64)
    free = np.nonzero(~special)[0]
    n_fail = min(len(free), round(n * FAILURE_SHARE))
    n_priv = min(len(free) - n_fail, round(n * PRIVATE_SHARE))
    chosen = rng.permutation(free)[: n_fail + n_priv]
    fail, priv = chosen[:n_fail], chosen[n_fail:]
    failed = np.zeros(n, dtype=bool)
    failed[fail] = True
    far_fail = fail[rng.random(len(fail)) < FAILURE_FAR_SHARE]
    ip_value[far_fail] = p.ip[rng.integers(0, len(p.ip), len(far_fail))]
    ip_value[priv] = (10 << 24) | rng.integers(0, 1 << 24, len(priv))

    # Timestamps: whole seconds Z, milliseconds Z, local time with an offset.
    form = rng.random(n)
    whole = form < SECONDS_SHARE
    millis = (form >= SECONDS_SHARE) & (form < SECONDS_SHARE + MILLIS_SHARE)
    offset = ~(whole | millis)
    t_ms[whole | offset] = t_ms[whole | offset] // 1000 * 1000
    stamps = np.empty(n, dtype=object)
    stamps[whole] = np.char.add(_iso(t_ms[whole], "s"), "Z").tolist()
    stamps[millis] = np.char.add(_iso(t_ms[millis], "ms"), "Z").tolist()
    off_min = OFFSETS_MIN[rng.integers(0, len(OFFSETS_MIN), int(offset.sum()))]
    local = t_ms[offset] + off_min * 60_000
    suffix = np.array(
        [f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}" for m in off_min.tolist()]
    )
    stamps[offset] = np.char.add(_iso(local, "s"), suffix).tolist() if len(suffix) else []

    # Delivery order: event time, each duplicate again 1 s to 10 min after its original.
    dup = rng.choice(n, n_dup, replace=False) if n_dup else np.zeros(0, dtype=np.int64)
    deliver = np.concatenate((t_ms, t_ms[dup] + rng.integers(1000, 600_000, n_dup)))
    which = np.concatenate((np.arange(n), dup))[np.argsort(deliver, kind="stable")]

    # Render in that order, a small chunk at a time (orjson's output kept in bulk is slow to allocate).
    uniq, inverse = np.unique(ip_value, return_inverse=True)
    ip_text = ipv4_texts(uniq.astype(np.uint32))
    names = [user_name(i) for i in range(a_count)]
    ids = uuid_ids(rng, n)
    rows = zip(
        stamps[which].tolist(),
        acct[which].tolist(),
        inverse[which].tolist(),
        failed[which].tolist(),
        ids[which].astype("U36").tolist(),
        strict=True,
    )
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb", buffering=1 << 20) as fh:
        while chunk := list(islice(rows, 512)):
            fh.write(
                b"".join(
                    [
                        dumps(
                            {
                                "timestamp": ts,
                                "user": names[a],
                                "ip": ip_text[i],
                                "outcome": "failure" if f else "success",
                                "event_id": e,
                            },
                            option=newline,
                        )
                        for ts, a, i, f, e in chunk
                    ]
                )
            )
    os.replace(tmp, out)
    public = ~np.isin(np.arange(n), priv)
    return {
        "lines": int(spec.events),
        "distinct_events": int(n),
        "duplicates": int(n_dup),
        "accounts": int((counts > 0).sum()),
        "accounts_by_kind": {k: int(((kind == i) & (counts > 0)).sum()) for i, k in enumerate(KINDS)},
        "distinct_public_ips": len(np.unique(ip_value[public])),
        "pool_ips": len(p.ip),
        "pool_cities": len(p.city_lat),
        "flights": len(trips),
        "impossible_trips": len(imp),
        "failures": int(n_fail),
        "private_addresses": int(n_priv),
        "offset_timestamps": int(offset.sum()),
        "first_time": str(np.datetime64(int(t_ms.min()), "ms")) + "Z",
        "last_time": str(np.datetime64(int(t_ms.max()), "ms")) + "Z",
        "spec": asdict(spec),
    }


def ensure(spec: Spec, db: str | os.PathLike[str] = DEFAULT_DB) -> tuple[Path, dict[str, Any]]:
    """The cached file of ``spec`` (generated when missing) and its counts."""
    db = os.fspath(db)
    path = CACHE / spec.name(db)
    meta_path = path.with_suffix(".meta.json")
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    started = time.perf_counter()
    meta = generate(spec, db, path)
    meta["generated_in_s"] = round(time.perf_counter() - started, 2)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return path, meta


def prefix(path: Path, lines: int, skip: int = 0) -> Path:
    """The first ``lines`` lines of a cached file (after the first ``skip``), as a file of its own
    (cached)."""
    out = path.with_name(path.stem + (f".from{skip}" if skip else "") + f".head{lines}.jsonl")
    if not out.exists():
        tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            for i, line in enumerate(src):
                if i >= skip + lines:
                    break
                if i >= skip:
                    dst.write(line)
        os.replace(tmp, out)
    return out


# What ``messy`` puts in place of a line, in turn: the faults of real exports, each a reject with a reason.
BROKEN: tuple[tuple[bytes, bytes], ...] = (
    (b'"ip":"', b'"ip":"unknown","was":"'),  # an address the exporter did not have
    (b'"timestamp":"2024-0', b'"timestamp":"2024-1'),  # a month that is none (13, 14)
    (b"", b""),  # cut short (see below)
    (b'"user":', b'"account":'),  # a field under another name
    (b'"outcome":"', b'"outcome":"pending","was":"'),  # an outcome that is neither
)


def messy(path: Path, every: int) -> Path:
    """The file with one line in ``every`` broken (each fault of ``BROKEN`` in turn), cached: the
    replay of real exports, which carry some lines that cannot be read."""
    out = path.with_name(path.stem + f".messy{every}-v1.jsonl")
    if not out.exists():
        tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            for i, line in enumerate(src):
                if i % every == every - 1:
                    old, new = BROKEN[(i // every) % len(BROKEN)]
                    line = line.replace(old, new, 1) if old else line[: len(line) // 2] + b"\n"
                dst.write(line)
        os.replace(tmp, out)
    return out


def with_ipv6(path: Path, db: str | os.PathLike[str] = DEFAULT_DB, every: int = 4) -> tuple[Path, int]:
    """The file with one public IPv4 address in ``every`` (picked by a hash of its text) replaced, on
    each line it is on, by an IPv6 address that the database places in the same place (city, country,
    coordinates), where it has one, cached: sign-ins from dual-stack networks. Returns the file and how
    many addresses were replaced."""
    from zlib import crc32

    from detector.geoip import GeoIP

    out = path.with_name(path.stem + f".ipv6-{every}-v1.jsonl")
    meta = out.with_suffix(".meta.json")
    if out.exists() and meta.exists():
        return out, int(json.loads(meta.read_text())["replaced"])
    geo = GeoIP(db)
    tree = geo._tree
    if tree is None or tree.ip_version != 6:
        raise SystemExit(f"{db}: not an IPv6 database")
    # The first address of every IPv6 network of the database (the IPv4 subtree left out), by place.
    _, high, low = tree.leaves(0, 128, skip=tree.ipv4_start)
    firsts = [h << 64 | lo for h, lo in zip(high.tolist(), low.tolist(), strict=True)]
    by_place: dict[str, list[int]] = {}
    for first, found in zip(
        firsts, geo.locate_many([str(ipaddress.IPv6Address(v)) for v in firsts]), strict=True
    ):
        if found is not None and not found.coarse:
            by_place.setdefault(found.place, []).append(first)
    with open(path, "rb") as fh:
        texts = {orjson.loads(line)["ip"] for line in fh}
    picked = sorted(ip for ip in texts if "." in ip and crc32(ip.encode()) % every == 0)
    chosen: dict[str, str] = {}
    for ip, found in zip(picked, geo.locate_many(picked), strict=True):
        networks = by_place.get(found.place) if found is not None else None
        if networks:
            h = crc32(ip.encode(), 1) << 32 | crc32(ip.encode(), 2)
            first = networks[h % len(networks)]
            # an interface id from the hash, where that stays in the place (else the network's first address)
            host = str(ipaddress.IPv6Address(first | h))
            inside = geo.locate(host)
            chosen[ip] = (
                host
                if inside is not None and inside.place == found.place
                else str(ipaddress.IPv6Address(first))
            )
    geo.close()
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for line in src:
            event = orjson.loads(line)
            v6 = chosen.get(event["ip"])
            dst.write(line if v6 is None else orjson.dumps({**event, "ip": v6}) + b"\n")
    meta.write_text(json.dumps({"replaced": len(chosen), "every": every}))
    os.replace(tmp, out)
    return out, len(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=Spec.events, help="lines, duplicates included")
    parser.add_argument("--accounts", type=int, default=Spec.accounts)
    parser.add_argument("--seed", type=int, default=Spec.seed)
    parser.add_argument("--ips", type=int, default=Spec.ips, help="size of the public address pool")
    parser.add_argument("--days", type=int, default=Spec.days)
    parser.add_argument("--geoip-db", default=str(DEFAULT_DB))
    parser.add_argument("--out", help="write here (default: the cache, .cache/bench/)")
    args = parser.parse_args(argv)
    spec = Spec(args.events, args.accounts, args.seed, args.ips, args.days)
    started = time.perf_counter()
    if args.out:
        meta = generate(spec, args.geoip_db, args.out)
        path = Path(args.out)
    else:
        path, meta = ensure(spec, args.geoip_db)
    print(json.dumps(meta, indent=2), file=sys.stderr)
    print(f"{path} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

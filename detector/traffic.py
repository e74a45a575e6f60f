"""Deterministic, realistic sign-in traffic with ground truth, over a real GeoIP City database.

Used by the tests, the ``make run`` demo, the benchmarks and ``tune``. The same seed and database give
the same events and labels, byte for byte.

Every account follows one scenario. Its truth comes from what the scenario does (who was where, when),
never from running the detector:

clear-cut (``profile="clear"``):
  resident      signs in from home, on one or two addresses, hours apart
  commuter      alternates between two nearby cities, hours apart
  flyer         flies to a far city at airliner speed and back
  impossible    signs in from home, then from a city thousands of km away minutes later (one alert)
  far_failure   fails to sign in from far away between successful home sign-ins (failures never move)
nuanced (``profile="nuanced"``) adds:
  vpn_flipflop  alternates between home and a far VPN exit every few minutes (one alert, first hop)
  coarse_home   signs in from a country-level address of its own country (no alert: such an address is
                only known to be somewhere in the country, however far its centre point is from home)
  coarse_far    signs in from a country-level address of a far country minutes after home (one alert)
  late_impossible  the far sign-in of an impossible trip is delivered after a newer home sign-in
  late_plausible   a home sign-in is delivered after the account's flight (no alert)

Also mixed in, everywhere: private and CGNAT addresses (no location), re-delivered events, timestamps
with offsets, epoch seconds and milliseconds, seven fractional digits, IPv4-mapped IPv6 and ip:port
forms, and events without ``event_id``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import maxminddb
import numpy as np

from detector.codec import derive_event_id, normalise_ip
from detector.geo import haversine_km, haversine_km_batch
from detector.geoip import is_special

START = datetime(2024, 3, 4, tzinfo=UTC).timestamp()
HOUR = 3600.0
MINUTE = 60.0

CLEAR = {"resident": 40, "commuter": 15, "flyer": 15, "impossible": 20, "far_failure": 10}
NUANCED = {
    "resident": 20,
    "commuter": 8,
    "flyer": 10,
    "impossible": 10,
    "far_failure": 5,
    "vpn_flipflop": 12,
    "coarse_home": 14,
    "coarse_far": 7,
    "late_impossible": 7,
    "late_plausible": 7,
}
PROFILES = {"clear": CLEAR, "nuanced": NUANCED}

_PRIVATE = ["10.1.2.3", "192.168.1.20", "172.16.5.4", "100.64.12.7", "127.0.0.1", "fd00::15", "fe80::1"]


@dataclass(frozen=True, slots=True)
class Spot:
    """A public address and where the database puts it."""

    ip: str
    lat: float
    lon: float
    radius: float
    country: str
    city: str | None


@dataclass
class Catalogue:
    """Public addresses grouped by city (precise fixes) and by country (country-level fixes)."""

    cities: list[list[Spot]]
    coarse: dict[str, list[Spot]]
    _lat: np.ndarray = field(init=False, repr=False)
    _lon: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._lat = np.array([c[0].lat for c in self.cities])
        self._lon = np.array([c[0].lon for c in self.cities])

    @classmethod
    def from_database(cls, path: str, seed: int = 7, samples: int = 150_000) -> Catalogue:
        """Sample random IPv4 addresses and keep those the database places (deterministic)."""
        rng = random.Random(seed)
        reader = maxminddb.open_database(path)
        # Keyed by coordinates too: a country can have two towns of one name.
        by_city: dict[tuple[str, str, float, float], list[Spot]] = defaultdict(list)
        coarse: dict[str, list[Spot]] = defaultdict(list)
        seen_nets: set[tuple[int, int]] = set()
        import ipaddress

        try:
            for _ in range(samples):
                value = rng.getrandbits(32)
                addr = ipaddress.IPv4Address(value)
                if is_special(addr):
                    continue
                record, plen = reader.get_with_prefix_len(str(addr))
                if not record or (value >> (32 - plen), plen) in seen_nets:
                    continue
                seen_nets.add((value >> (32 - plen), plen))
                spot = _spot(str(addr), record) if isinstance(record, dict) else None
                if spot is None or not spot.country:
                    continue
                if spot.city and spot.radius <= 100:
                    by_city[(spot.country, spot.city, spot.lat, spot.lon)].append(spot)
                elif spot.city is None and spot.radius >= 500:
                    coarse[spot.country].append(spot)
        finally:
            reader.close()
        cities = [spots for _, spots in sorted(by_city.items())]
        return cls(cities=cities, coarse={k: v for k, v in sorted(coarse.items())})

    def distances_from(self, city: list[Spot]) -> np.ndarray:
        s = city[0]
        n = len(self.cities)
        return haversine_km_batch(np.full(n, s.lat), np.full(n, s.lon), self._lat, self._lon)


def _spot(ip: str, record: dict[str, Any]) -> Spot | None:
    loc = record.get("location")
    if isinstance(loc, dict):
        lat, lon, radius = loc.get("latitude"), loc.get("longitude"), loc.get("accuracy_radius", 50)
        city = (record.get("city") or {}).get("names", {}).get("en")
        country = (record.get("country") or {}).get("iso_code")
    else:
        lat, lon, radius = record.get("latitude"), record.get("longitude"), 50
        city, country = record.get("city") or None, record.get("country_code")
    if lat is None or lon is None:
        return None
    return Spot(ip, float(lat), float(lon), float(radius or 50), country or "", city)


@dataclass(slots=True)
class Event:
    """One generated sign-in, before rendering."""

    user: str
    ip: str
    time: float
    event_id: str | None
    success: bool = True
    spot: Spot | None = None

    def canonical_id(self) -> str:
        if self.event_id:
            return self.event_id
        return derive_event_id(self.user, normalise_ip(self.ip), self.time, self.success)


@dataclass
class Traffic:
    """Events in delivery order, rendered as canonical JSON objects, and the expected alerts."""

    events: list[dict[str, Any]]
    labels: list[dict[str, str]]
    scenarios: dict[str, str]


class Generator:
    """Builds ``Traffic`` for a number of accounts following a profile's scenario mix."""

    def __init__(self, catalogue: Catalogue, seed: int = 1, start: float = START, span_s: float = 2 * 86400):
        if len(catalogue.cities) < 20:
            raise ValueError("the GeoIP database placed too few cities to generate traffic")
        self.cat = catalogue
        self.rng = random.Random(seed)
        self.start = start
        self.span = span_s
        self._serial = 0
        self._far_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- places ------------------------------------------------------------------------------------

    def city(self) -> int:
        return self.rng.randrange(len(self.cat.cities))

    def _ranked(self, home: int) -> tuple[np.ndarray, np.ndarray]:
        if home not in self._far_cache:
            d = self.cat.distances_from(self.cat.cities[home])
            self._far_cache[home] = (d, np.argsort(d))
        return self._far_cache[home]

    def city_between(self, home: int, low_km: float, high_km: float) -> int | None:
        d, _ = self._ranked(home)
        idx = np.nonzero((d >= low_km) & (d <= high_km))[0]
        return int(self.rng.choice(list(idx))) if len(idx) else None

    def ip(self, city: int) -> Spot:
        return self.rng.choice(self.cat.cities[city])

    # -- events ------------------------------------------------------------------------------------

    def _id(self, user: str) -> str:
        self._serial += 1
        return f"ev-{self._serial:07d}"

    def emit(
        self,
        out: list[Event],
        user: str,
        spot_or_ip: Spot | str,
        t: float,
        success: bool = True,
        with_id: bool = True,
    ) -> Event:
        spot = spot_or_ip if isinstance(spot_or_ip, Spot) else None
        ip = spot.ip if spot else str(spot_or_ip)
        # Whole seconds: every rendering (epoch seconds included) then says exactly the same instant.
        ev = Event(user, ip, float(round(t)), self._id(user) if with_id else None, success, spot)
        out.append(ev)
        return ev

    def _sprinkle(self, out: list[Event], user: str, t: float) -> None:
        """A sign-in with no location (VPN client, office NAT, IPv6 link-local) now and then."""
        if self.rng.random() < 0.25:
            self.emit(out, user, self.rng.choice(_PRIVATE), t + self.rng.uniform(60, 600))

    def _home_run(
        self,
        out: list[Event],
        user: str,
        spots: list[Spot],
        t: float,
        n: int,
        gap: tuple[float, float] = (1 * HOUR, 8 * HOUR),
    ) -> tuple[float, Event]:
        last: Event | None = None
        for _ in range(n):
            last = self.emit(out, user, self.rng.choice(spots), t, with_id=self.rng.random() < 0.8)
            self._sprinkle(out, user, t)
            t += self.rng.uniform(*gap)
        assert last is not None
        return t, last

    def scenario(
        self, kind: str, user: str
    ) -> tuple[list[Event], list[tuple[str, str]], list[tuple[Event, float]]]:
        """Events of one account, expected alert pairs, and (event, delivery delay) for late deliveries."""
        out: list[Event] = []
        expect: list[tuple[str, str]] = []
        late: list[tuple[Event, float]] = []
        rng = self.rng
        home = self.city()
        home_spots = rng.sample(self.cat.cities[home], k=min(2, len(self.cat.cities[home])))
        t = self.start + rng.uniform(0, 12 * HOUR)

        if kind == "resident":
            t, _ = self._home_run(out, user, home_spots, t, rng.randint(3, 10))
            if rng.random() < 0.3:
                self.emit(out, user, home_spots[0], t, success=False)

        elif kind == "commuter":
            work = self.city_between(home, 40, 300) or home
            for i in range(rng.randint(4, 10)):
                city = home if i % 2 == 0 else work
                self.emit(out, user, self.ip(city) if city == work else rng.choice(home_spots), t)
                t += rng.uniform(2 * HOUR, 10 * HOUR)

        elif kind == "flyer":
            dest = self.city_between(home, 1500, 12000)
            t, last = self._home_run(out, user, home_spots, t, rng.randint(1, 3))
            if dest is not None:
                assert last.spot is not None
                d = haversine_km(
                    last.spot.lat, last.spot.lon, self.cat.cities[dest][0].lat, self.cat.cities[dest][0].lon
                )
                t = last.time + d / 600.0 * HOUR + rng.uniform(1 * HOUR, 3 * HOUR)
                away = self.ip(dest)
                for _ in range(rng.randint(1, 3)):
                    self.emit(out, user, away, t)
                    t += rng.uniform(1 * HOUR, 5 * HOUR)
                t += d / 600.0 * HOUR + 1 * HOUR
                self._home_run(out, user, home_spots, t, rng.randint(1, 2))

        elif kind == "impossible":
            dest = self._far(home)
            t, last = self._home_run(out, user, home_spots, t, rng.randint(1, 4))
            t = last.time + rng.uniform(1 * MINUTE, 30 * MINUTE)
            if rng.random() < 0.3:  # a sign-in without location in between changes nothing
                self.emit(out, user, rng.choice(_PRIVATE), (last.time + t) / 2)
            far = self.emit(out, user, self.ip(dest), t)
            expect.append((last.canonical_id(), far.canonical_id()))
            for _ in range(rng.randint(0, 2)):  # the intruder (or the traveller) stays there
                t += rng.uniform(10 * MINUTE, 2 * HOUR)
                self.emit(out, user, self.ip(dest), t)

        elif kind == "far_failure":
            t, last = self._home_run(out, user, home_spots, t, rng.randint(1, 3), gap=(30 * MINUTE, 2 * HOUR))
            for _ in range(rng.randint(1, 3)):
                self.emit(
                    out, user, self.ip(self._far(home)), last.time + rng.uniform(60, 900), success=False
                )
            self._home_run(out, user, home_spots, last.time + 20 * MINUTE, rng.randint(1, 3))

        elif kind == "vpn_flipflop":
            dest = self._far(home, 800)
            exit_spot = self.ip(dest)
            t, last = self._home_run(out, user, home_spots, t, rng.randint(1, 3))
            t = last.time + rng.uniform(2 * MINUTE, 10 * MINUTE)
            prev = last
            for hop in range(rng.randint(4, 8)):
                ev = self.emit(out, user, exit_spot if hop % 2 == 0 else home_spots[0], t)
                if hop == 0:
                    expect.append((prev.canonical_id(), ev.canonical_id()))
                t += rng.uniform(1 * MINUTE, 6 * MINUTE)

        elif kind in ("coarse_home", "coarse_far"):
            # A country-level address says "somewhere in this country": from the account's own country it
            # is no evidence of travel, even when the country's centre is far from home; from a far
            # country minutes later it is.
            country = self.cat.cities[home][0].country
            here = home_spots[0]
            if kind == "coarse_home":
                pool = self.cat.coarse.get(country, [])
            else:
                pool = [
                    s
                    for c, spots in self.cat.coarse.items()
                    if c != country
                    for s in spots
                    if haversine_km(s.lat, s.lon, here.lat, here.lon) - s.radius - here.radius > 2500
                ]
            t, last = self._home_run(out, user, home_spots, t, rng.randint(1, 3))
            if pool:
                t = last.time + rng.uniform(5 * MINUTE, 40 * MINUTE)
                ev = self.emit(out, user, rng.choice(pool), t)
                if kind == "coarse_far":
                    expect.append((last.canonical_id(), ev.canonical_id()))
                else:
                    self._home_run(
                        out, user, home_spots, t + rng.uniform(10 * MINUTE, 1 * HOUR), rng.randint(1, 2)
                    )

        elif kind == "late_impossible":
            dest = self._far(home)
            t, last = self._home_run(out, user, home_spots, t, rng.randint(1, 3))
            t0 = last.time
            far = self.emit(out, user, self.ip(dest), t0 + rng.uniform(5 * MINUTE, 15 * MINUTE))
            after = self.emit(out, user, home_spots[0], t0 + rng.uniform(20 * MINUTE, 30 * MINUTE))
            expect.append((last.canonical_id(), far.canonical_id()))
            # delivered after the newer home sign-in
            late.append((far, (after.time - far.time) + rng.uniform(30, 90)))

        elif kind == "late_plausible":
            dest = self.city_between(home, 1500, 9000)
            t, last = self._home_run(out, user, home_spots, t, rng.randint(1, 2))
            if dest is not None:
                home2 = self.emit(out, user, home_spots[0], last.time + rng.uniform(10 * MINUTE, 30 * MINUTE))
                spot = self.ip(dest)
                d = haversine_km(home_spots[0].lat, home_spots[0].lon, spot.lat, spot.lon)
                self.emit(out, user, spot, home2.time + d / 600.0 * HOUR + 2 * HOUR)
                late.append((home2, d / 600.0 * HOUR + 3 * HOUR))
        else:
            raise ValueError(f"unknown scenario {kind}")
        return out, expect, late

    def _far(self, home: int, low_km: float = 2000) -> int:
        dest = self.city_between(home, low_km, 20000)
        if dest is None:
            dest = int(self._ranked(home)[1][-1])
        return dest

    # -- rendering ---------------------------------------------------------------------------------

    def render(self, ev: Event) -> dict[str, Any]:
        """The canonical JSON object, in one of the many forms real producers write."""
        rng = self.rng
        out: dict[str, Any] = {
            "user": ev.user,
            "ip": _ip_form(rng, ev.ip),
            "timestamp": _time_form(rng, ev.time),
        }
        if ev.event_id:
            out["event_id"] = ev.event_id
        if not ev.success:
            out["outcome"] = "failure"
        elif rng.random() < 0.3:
            out["outcome"] = "success"
        if rng.random() < 0.2:
            out["app"] = rng.choice(["Outlook", "Teams", "VPN", "Portal"])
        return out

    def generate(self, accounts: int, profile: str = "clear", duplicates: float = 0.03) -> Traffic:
        mix = PROFILES[profile]
        kinds = [k for k, w in mix.items() for _ in range(w)]
        self.rng.shuffle(kinds)  # every scenario early on, even for a few accounts
        deliveries: list[tuple[float, int, dict[str, Any]]] = []
        labels: list[dict[str, str]] = []
        scenarios: dict[str, str] = {}
        order = 0
        for n in range(accounts):
            kind = kinds[n % len(kinds)]
            user = _user_name(self.rng, n)
            scenarios[user] = kind
            events, expect, late = self.scenario(kind, user)
            delay = {id(e): d for e, d in late}
            for ev in events:
                doc = self.render(ev)
                order += 1
                deliveries.append((ev.time + delay.get(id(ev), 0.0), order, doc))
                if self.rng.random() < duplicates:  # at-least-once delivery repeats it, a little later
                    order += 1
                    again = doc if ev.event_id else self.render(ev)
                    deliveries.append((ev.time + self.rng.uniform(1, 600), order, again))
            labels += [{"user": user, "previous": a, "current": b, "scenario": kind} for a, b in expect]
        deliveries.sort(key=lambda d: (d[0], d[1]))
        return Traffic([d[2] for d in deliveries], labels, scenarios)


def _user_name(rng: random.Random, n: int) -> str:
    first = [
        "ana",
        "ben",
        "chloe",
        "dev",
        "eva",
        "farid",
        "gina",
        "hugo",
        "ines",
        "jon",
        "kemi",
        "liam",
        "mei",
    ]
    return f"{first[n % len(first)]}.{n:05d}@{rng.choice(['gov.example', 'agency.example', 'dept.example'])}"


def _ip_form(rng: random.Random, ip: str) -> str:
    r = rng.random()
    if ":" in ip or r < 0.8:
        return ip
    if r < 0.9:
        return f"::ffff:{ip}"
    return f"{ip}:{rng.randint(1024, 65535)}"


def _time_form(rng: random.Random, t: float) -> str | int | float:
    r = rng.random()
    dt = datetime.fromtimestamp(round(t), UTC)
    if r < 0.5:
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if r < 0.7:
        minutes = rng.choice([-480, -300, 60, 120, 330, 540, 600])
        local = dt.astimezone(timezone(timedelta(minutes=minutes)))
        return local.isoformat()
    if r < 0.8:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")  # Entra writes seven fractional digits
    if r < 0.9:
        return round(t)
    return round(t) * 1000


def write_jsonl(path: str, rows: Iterable[dict[str, Any]]) -> int:
    import orjson

    n = 0
    with open(path, "wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row) + b"\n")
            n += 1
    return n


@dataclass(frozen=True)
class Score:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else 1.0


def score(alerts: Iterable[dict[str, Any]], labels: Iterable[dict[str, str]]) -> Score:
    """Match alerts to labels by account and the pair of event ids (in either order)."""
    expected = {(lb["user"], frozenset((lb["previous"], lb["current"]))) for lb in labels}
    found = {(a["user"], frozenset((a["previous"]["event_id"], a["current"]["event_id"]))) for a in alerts}
    tp = len(expected & found)
    return Score(tp, len(found - expected), len(expected - found))


__all__ = ["Catalogue", "Generator", "Score", "Traffic", "score", "write_jsonl"]

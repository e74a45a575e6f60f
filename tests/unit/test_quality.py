"""Detection quality beyond the published logic: accuracy, country-level fixes, known networks, travel
exceptions, repeats, database updates. Against small real databases (mmdb-writer, read by maxminddb)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from detector.engine import Engine, TrustedNetworks
from detector.errors import ConfigError
from detector.geoip import GeoIP
from detector.known import AsnDatabase, ExceptionsFile, parse_exceptions
from detector.model import Location, SignIn, Visit
from detector.rules import Policy, TravelException, evaluate, measure, pattern
from detector.state import MemoryStore
from detector.testing import PLACES, FakeClock, Place, build_asn_db, build_city_db

T0 = 1_709_287_200.0
LONDON, READING, NEW_YORK, PARIS, AMSTERDAM = (
    "81.2.69.10",
    "81.2.70.10",
    "4.7.5.10",
    "2.16.117.10",
    "5.6.7.10",
)
US_COUNTRY = "8.8.8.8"  # country-level fix: the US centre, radius 1000 km
TOKYO = "1.21.128.10"


def signin(ip: str, minutes: float, eid: str, user: str = "alice") -> SignIn:
    return SignIn(user, ip, T0 + minutes * 60, eid)


def engine(db: str, policy: Policy | None = None, **kw: object) -> Engine:
    return Engine(policy or Policy(), GeoIP(db), MemoryStore(), FakeClock(), **kw)  # type: ignore[arg-type]


def run(eng: Engine, *events: SignIn) -> list:
    return eng.run(list(events))


# -- GeoIP accuracy and country-level fixes ----------------------------------------------------------


def test_decision_uses_distance_net_of_both_radii_and_reports_both(city_db: str) -> None:
    # London (r 10) -> Paris (r 20): 344 km raw, 314 km net. 25 min: 825 km/h raw... net 754: no alert at 800.
    eng = engine(city_db, Policy(max_speed_kmh=800))
    assert run(eng, signin(LONDON, 0, "a"), signin(PARIS, 25, "b")) == []
    eng = engine(city_db, Policy(max_speed_kmh=700))
    (alert,) = run(eng, signin(LONDON, 0, "a"), signin(PARIS, 25, "b"))
    assert alert.net_distance_km == pytest.approx(alert.distance_km - 30)
    assert alert.net_speed_kmh < alert.speed_kmh


def test_country_level_fix_in_the_same_country_is_no_evidence(city_db: str) -> None:
    eng = engine(city_db)
    assert run(eng, signin(NEW_YORK, 0, "a"), signin(US_COUNTRY, 10, "b")) == []
    assert eng.tally.suppressed_by["country_level"] == 1


def test_country_level_fix_abroad_alerts_with_low_confidence_and_lower_severity(city_db: str) -> None:
    (alert,) = run(engine(city_db), signin(LONDON, 0, "a"), signin(US_COUNTRY, 10, "b"))
    assert alert.confidence == "low"
    assert alert.severity == "medium"  # far over the threshold (high), lowered one step
    assert any("country-level location" in r and "8.8.8.8" in r for r in alert.reasons)
    precise = run(engine(city_db), signin(LONDON, 0, "a"), signin(NEW_YORK, 10, "b"))[0]
    assert precise.confidence == "high" and precise.severity == "high"


def test_wide_radius_lowers_confidence_never_raises(tmp_path: Path) -> None:
    wide = Place("7.7.7.0/24", 32.7767, -96.7970, 1000, "US", "Dallas")
    db = build_city_db(str(tmp_path / "c.mmdb"), (*PLACES, wide))
    (alert,) = run(engine(db), signin(LONDON, 0, "a"), signin("7.7.7.7", 10, "b"))
    assert alert.confidence == "medium" and alert.severity == "medium"
    assert any("wide accuracy radius" in r for r in alert.reasons)


# -- known networks --------------------------------------------------------------------------------


@pytest.fixture
def asn_db(tmp_path: Path) -> str:
    return build_asn_db(
        str(tmp_path / "asn.mmdb"),
        {
            "4.7.5.0/24": (16509, "AMAZON-02"),  # hosting
            "1.21.128.0/24": (14593, "SPACEX-STARLINK"),  # satellite
            "2.16.117.0/24": (21928, "T-MOBILE-AS21928"),  # mobile
        },
    )


def geo_with_asn(city_db: str, asn_db: str) -> GeoIP:
    kinds = {"hosting": [16509], "satellite": [14593], "mobile": [21928]}
    return GeoIP(city_db, asn=AsnDatabase(asn_db, kinds))


def test_asn_lists_lower_or_suppress_with_a_reason(city_db: str, asn_db: str) -> None:
    eng = Engine(Policy(), geo_with_asn(city_db, asn_db), MemoryStore(), FakeClock())
    (hosting,) = run(eng, signin(LONDON, 0, "a"), signin(NEW_YORK, 10, "b"))
    assert hosting.confidence == "low" and hosting.severity == "medium"
    assert any("hosting/VPN network" in r and "AS16509 AMAZON-02" in r for r in hosting.reasons)
    assert run(eng, signin(LONDON, 0, "c", "bob"), signin(TOKYO, 10, "d", "bob")) == []
    assert eng.tally.suppressed_by["satellite"] == 1
    (mobile,) = run(eng, signin(LONDON, 0, "e", "carol"), signin(PARIS, 3, "f", "carol"))
    assert mobile.confidence == "medium"


def test_network_actions_are_configurable(city_db: str, asn_db: str) -> None:
    policy = Policy(network_actions={"hosting": "suppress", "satellite": "ignore", "mobile": "ignore"})
    eng = Engine(policy, geo_with_asn(city_db, asn_db), MemoryStore(), FakeClock())
    assert run(eng, signin(LONDON, 0, "a"), signin(NEW_YORK, 10, "b")) == []
    (sat,) = run(eng, signin(LONDON, 0, "c", "bob"), signin(TOKYO, 10, "d", "bob"))
    assert sat.confidence == "high"


def test_asn_database_must_be_an_asn_database(city_db: str) -> None:
    from detector.errors import GeoDatabaseError

    with pytest.raises(GeoDatabaseError, match="not an ASN database"):
        AsnDatabase(city_db)


def test_trusted_networks_never_count_as_travel(city_db: str) -> None:
    eng = engine(city_db, trusted=TrustedNetworks(["4.7.5.0/24", "2001:db8::/32"]))
    assert run(eng, signin(LONDON, 0, "a"), signin(NEW_YORK, 5, "b"), signin(LONDON, 10, "c")) == []
    assert eng.tally.by_result["trusted"] == 1
    state = eng.store.get("alice")
    assert state is not None and {v.ip for v in state.visits} == {LONDON}


# -- travel exceptions -----------------------------------------------------------------------------


def test_exceptions_suppress_until_their_end_and_only_to_their_countries(city_db: str) -> None:
    policy = Policy(exceptions={"alice": (TravelException(T0 + 3600, frozenset({"US"})),)})
    eng = engine(city_db, policy)
    assert run(eng, signin(LONDON, 0, "a"), signin(NEW_YORK, 10, "b")) == []  # GB (home) -> US: allowed
    assert eng.tally.suppressed_by["exception"] == 1
    assert len(run(eng, signin(TOKYO, 20, "c"))) == 1  # US -> JP: not in the exception
    late = engine(city_db, policy)
    assert len(run(late, signin(LONDON, 100, "d"), signin(NEW_YORK, 110, "e"))) == 1  # after "until"


def test_exceptions_file_parses_reloads_and_refuses_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "exceptions.csv"
    path.write_text("account,until,countries\nalice,2024-03-01T12:00:00Z,US;ca\nbob,1709287200,\n")
    f = ExceptionsFile(str(path))
    assert f.exceptions["alice"][0].countries == frozenset({"US", "CA"})
    assert f.exceptions["bob"][0] == TravelException(1709287200.0, frozenset())
    assert not f.reload_if_changed()
    time.sleep(0.01)
    path.write_text("account,until,countries\ncarol,2024-03-02T00:00:00Z,JP\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert f.reload_if_changed() and set(f.exceptions) == {"carol"}
    with pytest.raises(ConfigError, match=r":3: until"):
        parse_exceptions("account,until\nalice,2024-03-01T00:00:00Z\nbob,next tuesday\n", "x.csv")
    with pytest.raises(ConfigError, match="header"):
        parse_exceptions("alice,2024-03-01T00:00:00Z\n", "x.csv")


# -- repeats and patterns --------------------------------------------------------------------------


def test_vpn_flip_flop_is_one_alert_and_the_hops_are_counted(city_db: str) -> None:
    eng = engine(city_db)
    hops = [signin(LONDON if i % 2 == 0 else NEW_YORK, i * 3, f"e{i}") for i in range(8)]
    (alert,) = run(eng, *hops)
    assert (alert.previous.event_id, alert.current.event_id) == ("e0", "e1")
    assert eng.tally.suppressed_by["repeat"] == 6


def test_repeat_suppression_uses_nearness_and_its_window(city_db: str) -> None:
    # London -> Paris, then Reading (58 km from London) -> Paris: the same pair of places.
    events = [signin(LONDON, 0, "a"), signin(PARIS, 5, "b"), signin(READING, 60, "c"), signin(PARIS, 65, "d")]
    assert len(run(engine(city_db, Policy(max_speed_kmh=600)), *events)) == 1
    assert len(run(engine(city_db, Policy(max_speed_kmh=600, suppress_radius_km=10)), *events)) == 2
    assert len(run(engine(city_db, Policy(max_speed_kmh=600, suppress_window_s=1800)), *events)) == 2


def test_pattern_reason_when_the_history_alternates() -> None:
    lon = Location(51.5074, -0.1278, 10, "GB", "London")
    ams = Location(52.3676, 4.9041, 10, "NL", "Amsterdam")
    history = tuple(
        Visit(f"e{i}", "x" if i % 2 else "y", T0 + i * 600, ams if i % 2 else lon) for i in range(5)
    )
    text = pattern(measure(history[3], history[4]), history)
    assert text is not None and "switched between" in text and "4 times" in text
    assert pattern(measure(history[0], history[1]), history[:2]) is None


# -- event time ------------------------------------------------------------------------------------


def test_late_event_meets_its_neighbours_and_is_flagged(city_db: str) -> None:
    eng = engine(city_db)
    alerts = run(eng, signin(LONDON, 0, "a"), signin(LONDON, 30, "c"), signin(NEW_YORK, 10, "b"))
    (alert,) = alerts  # a -> b; b -> c is the same pair again
    assert (alert.previous.event_id, alert.current.event_id) == ("a", "b")
    assert alert.late and any("late event" in r for r in alert.reasons)
    assert eng.tally.late == 1
    state = eng.store.get("alice")
    assert state is not None and state.last is not None and state.last.event_id == "c"


# -- the database replaced while running -----------------------------------------------------------


def test_an_address_that_merely_moved_in_a_new_build_is_not_travel(tmp_path: Path) -> None:
    live = tmp_path / "live.mmdb"
    v1 = build_city_db(str(tmp_path / "v1.mmdb"), PLACES)
    moved = [
        p
        if p.network != "81.2.69.0/24"
        else replace(p, latitude=40.7128, longitude=-74.0060, country="US", city="New York")
        for p in PLACES
    ]
    time.sleep(1.1)  # a later build time
    v2 = build_city_db(str(tmp_path / "v2.mmdb"), moved)
    shutil.copy(v1, live)
    geo = GeoIP(live)
    eng = Engine(Policy(), geo, MemoryStore(), FakeClock())
    assert run(eng, signin(LONDON, 0, "a")) == []
    os.replace(shutil.copy(v2, tmp_path / "incoming.mmdb"), live)  # an atomic replace, as documented
    assert geo.reload_if_changed()
    assert geo.database.build_epoch > 0 and geo.locate(LONDON).city == "New York"  # type: ignore[union-attr]
    # 81.2.69.10 (London in v1, New York in v2), then a New York address 5 minutes later: no travel.
    assert run(eng, signin(NEW_YORK, 5, "b")) == []
    # Control: without the refresh of stored locations the same events would alert.
    stale = evaluate(
        eng.store.get("alice") and None,
        signin(LONDON, 0, "a"),
        Location(51.5074, -0.1278, 10, "GB", "London"),
        Policy(),
        T0,
    )
    assert evaluate(stale.state, signin(NEW_YORK, 5, "b"), geo.locate(NEW_YORK), Policy(), T0).alerts  # type: ignore[arg-type]
    assert not geo.reload_if_changed()


def test_a_broken_replacement_keeps_the_database_in_use(tmp_path: Path, city_db: str) -> None:
    from detector.errors import GeoDatabaseError

    live = tmp_path / "live.mmdb"
    shutil.copy(city_db, live)
    geo = GeoIP(live)
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"half a file")
    os.replace(broken, live)
    with pytest.raises(GeoDatabaseError):
        geo.reload_if_changed()
    assert geo.locate(LONDON) is not None and geo.database.build_epoch > 0

"""The pure rule, including the properties of the core issue, checked with generated inputs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.model import AccountState, Location, SignIn
from detector.rules import Policy, alert_id, evaluate, measure

POLICY = Policy()
T0 = 1_709_287_200.0

LONDON = Location(51.5074, -0.1278, 10, "GB", "London")
READING = Location(51.4543, -0.9781, 20, "GB", "Reading")
NEW_YORK = Location(40.7128, -74.0060, 20, "US", "New York")
PARIS = Location(48.8566, 2.3522, 20, "FR", "Paris")
TOKYO = Location(35.6762, 139.6503, 50, "JP", "Tokyo")
PLACES = {
    "81.2.69.10": LONDON,
    "81.2.70.10": READING,
    "4.7.5.10": NEW_YORK,
    "2.16.117.10": PARIS,
    "1.21.128.10": TOKYO,
}


def sign_in(ip: str, minutes: float, eid: str, user: str = "alice", success: bool = True) -> SignIn:
    return SignIn(user, ip, T0 + minutes * 60, eid, success)


def run(
    events: list[SignIn], policy: Policy = POLICY, places: dict[str, Location] = PLACES
) -> tuple[AccountState | None, list]:
    state: AccountState | None = None
    alerts = []
    for e in events:
        d = evaluate(state, e, places[e.ip], policy, now=T0)
        state = d.state
        alerts += d.alerts
    return state, alerts


def test_london_then_new_york_five_minutes_later_alerts_high() -> None:
    _, alerts = run([sign_in("81.2.69.10", 0, "a"), sign_in("4.7.5.10", 5, "b")])
    (a,) = alerts
    assert a.previous.event_id == "a" and a.current.event_id == "b"
    assert round(a.distance_km) == 5585
    assert a.net_distance_km == pytest.approx(a.distance_km - 30)
    assert a.elapsed_s == 300
    assert a.speed_kmh == pytest.approx(a.distance_km * 12)
    assert a.severity == "high"
    assert a.alert_id == alert_id("alice", "a", "b")
    assert any("threshold" in r for r in a.reasons)


def test_plausible_trips_do_not_alert() -> None:
    _, alerts = run(
        [
            sign_in("81.2.69.10", 0, "a"),
            sign_in("81.2.70.10", 60, "b"),  # Reading, an hour later
            sign_in("2.16.117.10", 300, "c"),  # Paris, four hours later
            sign_in("4.7.5.10", 300 + 9 * 60, "d"),  # New York, nine hours later
        ]
    )
    assert alerts == []


def test_same_instant_far_apart_is_infinite_speed() -> None:
    _, alerts = run([sign_in("81.2.69.10", 0, "a"), sign_in("2.16.117.10", 0, "b")])
    (a,) = alerts
    assert a.speed_kmh is None and a.net_speed_kmh is None and a.elapsed_s == 0
    assert a.severity == "high"


def test_thresholds_are_applied() -> None:
    events = [sign_in("81.2.69.10", 0, "a"), sign_in("2.16.117.10", 30, "b")]  # ~340 km in 30 min
    assert run(events)[1] == []
    assert len(run(events, Policy(max_speed_kmh=500))[1]) == 1
    assert run(events, Policy(max_speed_kmh=500, min_distance_km=400))[1] == []


def test_older_event_is_compared_but_never_replaces_the_newer_location() -> None:
    state, alerts = run([sign_in("81.2.69.10", 60, "a"), sign_in("4.7.5.10", 50, "b")])
    assert state is not None and state.last is not None and state.last.event_id == "a"
    (a,) = alerts
    assert (a.previous.event_id, a.current.event_id) == ("b", "a")  # ordered by event time
    assert a.elapsed_s == 600 and a.late


def test_duplicate_is_not_evaluated_again() -> None:
    events = [
        sign_in("81.2.69.10", 0, "a"),
        sign_in("4.7.5.10", 5, "b"),
        sign_in("4.7.5.10", 5, "b"),
        sign_in("81.2.69.10", 0, "a"),
    ]
    _, alerts = run(events)
    assert len(alerts) == 1


def test_failures_do_not_move_the_account() -> None:
    policy = Policy(evaluate_failures=True)
    state, alerts = run([sign_in("81.2.69.10", 0, "a"), sign_in("4.7.5.10", 5, "f", success=False)], policy)
    assert len(alerts) == 1  # compared when asked to ...
    assert state is not None and state.last is not None and state.last.event_id == "a"  # ... never moves


def test_same_ip_never_alerts_even_when_the_database_moved_it() -> None:
    moved = dict(PLACES)
    state, _ = run([sign_in("81.2.69.10", 0, "a")])
    d = evaluate(state, sign_in("81.2.69.10", 1, "b"), NEW_YORK, POLICY, now=T0)
    assert d.alerts == () and d.outcome == "same_ip"
    assert moved


@pytest.mark.parametrize("field", ["max_speed_kmh", "history_size", "recent_ids"])
def test_policy_refuses_nonsense(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Policy(**{field: 0})


# -- properties -------------------------------------------------------------------------------------

ips = st.sampled_from(sorted(PLACES))
minutes = st.integers(min_value=0, max_value=24 * 60)
events_strategy = st.lists(st.tuples(ips, minutes, st.booleans()), min_size=1, max_size=25).map(
    lambda xs: [sign_in(ip, m, f"e{i}", success=ok or i % 3 != 0) for i, (ip, m, ok) in enumerate(xs)]
)


@given(ips, ips, minutes, minutes)
def test_speed_is_symmetric_in_the_two_sign_ins(ip1: str, ip2: str, m1: int, m2: int) -> None:
    from detector.model import Visit

    a = Visit("a", ip1, T0 + m1 * 60, PLACES[ip1])
    b = Visit("b", ip2, T0 + m2 * 60, PLACES[ip2])
    ab, ba = measure(a, b), measure(b, a)
    assert ab.distance_km == pytest.approx(ba.distance_km)
    assert ab.elapsed_s == ba.elapsed_s
    assert (math.isinf(ab.speed_kmh) and math.isinf(ba.speed_kmh)) or ab.speed_kmh == pytest.approx(
        ba.speed_kmh
    )


@settings(max_examples=300)
@given(events_strategy, st.floats(0, 6000))
def test_never_alert_under_min_distance_or_from_the_same_ip(events: list[SignIn], min_km: float) -> None:
    _, alerts = run(events, Policy(min_distance_km=min_km))
    for a in alerts:
        assert a.net_distance_km >= min_km
        assert a.previous.ip != a.current.ip


@settings(max_examples=300)
@given(events_strategy, st.lists(st.tuples(st.integers(0, 100), st.integers(1, 10)), max_size=15))
def test_a_duplicate_never_alerts_twice(events: list[SignIn], repeats: list[tuple[int, int]]) -> None:
    """At-least-once delivery: any event may come again, a few events later (within the id memory)."""
    delivered = list(events)
    for which, later in repeats:
        original = events[which % len(events)]
        at = min(delivered.index(original) + later, len(delivered))
        delivered.insert(at, original)
    _, once = run(events)
    _, again = run(delivered)
    ids = [a.alert_id for a in again]
    assert len(ids) == len(set(ids))
    assert set(ids) == {a.alert_id for a in once}


@settings(max_examples=200)
@given(events_strategy)
def test_the_same_alert_is_never_raised_twice_even_beyond_the_id_memory(events: list[SignIn]) -> None:
    _, alerts = run(events + events + events, Policy(recent_ids=1))
    ids = [a.alert_id for a in alerts]
    assert len(ids) == len(set(ids))


@settings(max_examples=300)
@given(events_strategy)
def test_an_older_event_never_replaces_a_newer_location(events: list[SignIn]) -> None:
    state, _ = run(events)
    successes = [e for e in events if e.success]
    if not successes:
        return
    newest = max(e.time for e in successes)
    assert state is not None and state.last is not None and state.last.time == newest
    # The history stays in event-time order.
    times = [v.time for v in state.visits]
    assert times == sorted(times)


# -- the fast path is the rule ------------------------------------------------------------------------

from detector.rules import _append, _insert  # noqa: E402

places_with_runs = st.sampled_from([LONDON, READING, NEW_YORK, PARIS, TOKYO])


@settings(max_examples=300)
@given(
    st.lists(st.tuples(places_with_runs, st.integers(0, 3000), st.booleans()), min_size=1, max_size=40),
    st.integers(1, 10),
    st.sampled_from([600.0, 86400.0 * 7]),
)
def test_appending_equals_inserting(steps: list, size: int, window: float) -> None:
    """``_append`` (the fast path) keeps exactly what the full ``_insert`` keeps, after any mix of in-order
    and late inserts."""
    from detector.model import Visit

    policy = Policy(history_size=size, history_window_s=window)
    history: tuple = ()
    t = T0
    for n, (place, gap, late) in enumerate(steps):
        t += gap
        when = t - 5000 if late else t
        visit = Visit(f"e{n}", "x", when, place)
        if history and when >= history[-1].time:
            assert _append(history, visit, policy) == _insert(history, visit, policy)
        history = _insert(history, visit, policy)


@settings(max_examples=300)
@given(events_strategy)
def test_fast_path_decisions_equal_the_general_path(events: list[SignIn]) -> None:
    """Recording mode always takes the general path; its decisions must be the fast path's."""
    loosest = Policy(max_speed_kmh=1, min_distance_km=0)
    fast: AccountState | None = None
    general: AccountState | None = None
    for e in events:
        a = evaluate(fast, e, PLACES[e.ip], POLICY, T0)
        b = evaluate(general, e, PLACES[e.ip], POLICY, T0, record=loosest)
        assert (a.state, a.outcome, a.alerts, a.suppressed_by, a.late) == (
            b.state,
            b.outcome,
            b.alerts,
            b.suppressed_by,
            b.late,
        )
        fast, general = a.state, b.state

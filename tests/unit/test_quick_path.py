"""``Engine.process`` takes runs of a batch's common sign-ins in C where built (``_speedups.advance_run``):
its decisions, states and tallies are those of the loop it stands in for (the twin, run where it is not
built), over streams with every kind of sign-in the loop handles itself in between."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector import engine as engine_module
from detector.engine import Engine
from detector.model import (
    AccountState,
    DatabaseInfo,
    Location,
    SignIn,
    Visit,
    make,
    new_database_info,
    new_location,
)
from detector.rules import Policy
from detector.state import CompactStore, MemoryStore, PartitionedStore
from detector.statecodec import pack

T0 = 1_709_287_200.0
LONDON = Location(51.5074, -0.1278, 10, "GB", "London")
VENDOR = Location(51.5074, -0.1278, 10, "GB", "London", source="okta")
PLACES: dict[str, Location | None] = {
    "81.2.69.10": LONDON,
    "81.2.69.11": LONDON,  # another address, the same Location object
    "81.2.69.12": Location(51.51, -0.13, 10, "GB", "London"),  # another object, the same place
    "81.2.70.10": Location(51.4543, -0.9781, 20, "GB", "Reading"),
    "4.7.5.10": Location(40.7128, -74.0060, 20, "US", "New York"),
    "2.16.117.10": Location(48.8566, 2.3522, 20, "FR", "Paris"),
    "1.21.128.10": Location(35.6762, 139.6503, 50, "JP", "Tokyo"),
    "2a02:c7f::1": Location(51.5, -0.12, 800, "GB", None),  # coarse
    "45.1.2.3": None,  # unknown to the database
}
POLICIES = [
    Policy(),
    Policy(history_size=2, recent_ids=1, history_window_s=900.0, min_distance_km=0.0),
    Policy(evaluate_failures=True, history_size=3, max_speed_kmh=50.0),
]


class Places:
    """A resolver of fixed answers (the engine's GeoResolver protocol)."""

    database = DatabaseInfo("GeoLite2-City", 1_700_000_000, "/test.mmdb")

    def locate(self, ip: str) -> Location | None:
        return PLACES[ip]

    def locate_many(self, ips: list[str]) -> list[Location | None]:
        return [PLACES[ip] for ip in ips]


@st.composite
def streams(draw: st.DrawFn) -> list[list[SignIn]]:
    """Batches of sign-ins of a few accounts: mostly in order, some late, some delivered again, some
    failed, a few with the provider's proxy flag or location."""
    events: list[SignIn] = []
    t = T0
    for n in range(draw(st.integers(1, 120))):
        t += draw(st.sampled_from([0, 1, 30, 300, 3000, 40000]))
        if events and draw(st.integers(0, 9)) == 0:
            events.append(draw(st.sampled_from(events)))  # a re-delivery
            continue
        late = draw(st.integers(0, 9)) == 0
        kind = draw(st.integers(0, 19))
        events.append(
            SignIn(
                draw(st.sampled_from(["alice", "bob", "carol"])),
                draw(st.sampled_from(sorted(PLACES))),
                t - 5000 if late else t,
                f"e{n}",
                draw(st.integers(0, 5)) > 0,
                LONDON if kind == 0 else None,
                kind == 1,
            )
        )
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=6)))
    return [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]


def _replay(batches: list[list[SignIn]], policy: Policy) -> list[object]:
    engine = Engine(policy, Places(), MemoryStore(), clock=lambda: T0, use_vendor_location=True)
    seen: list[object] = []
    for batch in batches:
        result = engine.process(batch)
        seen.append((result.alerts, result.raised_at, result.changes, result.tally))
        engine.commit(result)
        # each alert raised by a sign-in of its pair, in batch order (not always the first place of that
        # sign-in: a re-delivery beyond the id memory is evaluated again)
        assert len(result.raised_at) == len(result.alerts) and result.raised_at == sorted(result.raised_at)
        for alert, at in zip(result.alerts, result.raised_at, strict=True):
            assert batch[at].user == alert.user
            assert batch[at].event_id in (alert.previous.event_id, alert.current.event_id)
    return seen


@pytest.mark.skipif(engine_module.SPEEDUPS is None, reason="detector/_speedups.c is not built (make setup)")
@settings(max_examples=200, deadline=None)
@given(streams(), st.sampled_from(POLICIES))
def test_the_quick_path_in_c_decides_as_the_loop_it_stands_for(
    batches: list[list[SignIn]], policy: Policy
) -> None:
    with_c = _replay(batches, policy)
    speedups = engine_module.SPEEDUPS
    try:
        engine_module.SPEEDUPS = None
        twin = _replay(batches, policy)
    finally:
        engine_module.SPEEDUPS = speedups
    assert with_c == twin


def _applied(batches: list[list[SignIn]], policy: Policy, at_once: bool, hot: int) -> list[object]:
    store = CompactStore(Places().locate, hot_size=hot)
    engine = Engine(
        policy, Places(), store, clock=lambda: T0, use_vendor_location=True, apply_at_once=at_once
    )
    seen: list[object] = []
    for batch in batches:
        result = engine.process(batch)
        engine.commit(result)
        # (packed: which accounts are packed may differ, and a state packed and back is the same only
        # as far as the packed form holds it: an address the database does not know keeps coordinates)
        seen.append((result.alerts, result.tally, sorted(pack(user, state) for user, state in store.items())))
    return seen


@settings(max_examples=200, deadline=None)
@given(streams(), st.sampled_from(POLICIES), st.integers(1, 4))
def test_an_engine_that_applies_at_once_ends_each_batch_as_one_that_commits(
    batches: list[list[SignIn]], policy: Policy, hot: int
) -> None:
    """Replay's engine writes each state into the store as it makes it: the same alerts, tallies and
    stored states after every batch, with accounts packed and unpacked on the way (``hot`` small). (The
    provider's locations as providers give them, which packing keeps exactly: the streams' stand-in,
    marked as the database's, would come back as an address the database no longer knows.)"""
    batches = [[e._replace(vendor_location=VENDOR) if e.vendor_location else e for e in b] for b in batches]
    assert _applied(batches, policy, True, hot) == _applied(batches, policy, False, hot)


def test_applying_at_once_needs_a_store_that_can_be_changed_in_place() -> None:
    with pytest.raises(TypeError, match="PartitionedStore cannot be changed in place"):
        Engine(Policy(), Places(), PartitionedStore(Places().locate), apply_at_once=True)


@pytest.mark.skipif(engine_module.SPEEDUPS is None, reason="detector/_speedups.c is not built (make setup)")
def test_the_states_made_in_c_stay_tracked_where_they_could_hold_a_cycle() -> None:
    """``advance_run`` untracks a new history or recent ids made from an untracked one (what ``make``
    would conclude, walking it): an account's history that holds a visit the collector tracks (here one
    holding a list) must stay tracked, or a cycle through it would never be collected."""
    import gc
    import weakref

    class Marker:
        pass

    class Here(Places):  # (a Location as GeoIP makes them: untracked, as it holds no container)
        def locate_many(self, ips: list[str]) -> list[Location | None]:
            return [here for _ in ips]

    db = new_database_info("GeoLite2-City", 1_700_000_000, "/test.mmdb")
    here = new_location(51.5074, -0.1278, 10.0, "GB", "London", False, db)
    box: list[object] = []
    odd = Visit("e-0", "81.2.69.10", T0 - 60, cast(Location, box))  # (a tuple made at run time: tracked)
    plain = make(Visit, "e-1", "81.2.69.10", T0 - 30, here)
    assert not gc.is_tracked(here) and not gc.is_tracked(plain)
    store = MemoryStore()
    store.put("alice", make(AccountState, (odd, plain), ("e-0", "e-1"), ()))
    store.put("bob", make(AccountState, (plain,), ("e-1",), ()))
    engine = Engine(Policy(), Here(), store, clock=lambda: T0)
    for user in ("alice", "bob"):
        engine.commit(engine.process([SignIn(user, "81.2.69.11", T0, "e-2", True)]))
    alice, bob = store.get("alice"), store.get("bob")
    assert alice is not None and bob is not None
    assert len(alice.visits) == 3 and gc.is_tracked(alice.visits) and gc.is_tracked(alice)
    assert not any(map(gc.is_tracked, (bob, bob.visits, bob.recent_ids)))  # (each made from settled ones)
    marker = Marker()
    gone = weakref.ref(marker)
    box += [alice, marker]
    del alice, odd, marker, box
    store.delete("alice")
    gc.collect()
    assert gone() is None


@pytest.mark.skipif(engine_module.SPEEDUPS is None, reason="detector/_speedups.c is not built (make setup)")
def test_a_state_is_changed_in_place_only_where_nothing_else_holds_it() -> None:
    """``advance_run`` renews an account's state object in place when the store's dict holds its only
    reference (replay); a state that anyone else holds (here the test) is left as it was, and a new one
    takes its place in the store."""
    store = MemoryStore()
    engine = Engine(Policy(evaluate_failures=True), Places(), store, clock=lambda: T0, apply_at_once=True)
    engine.run([SignIn("alice", "81.2.69.10", T0, "e-1", True)])
    held = store.get("alice")
    assert held is not None
    engine.run([SignIn("alice", "81.2.69.11", T0 + 60, "e-2", True)])
    assert [v.event_id for v in held.visits] == ["e-1"] and held.recent_ids == ("e-1",)
    now = store.get("alice")
    assert now is not held and [v.event_id for v in now.visits] == ["e-1", "e-2"]
    where = id(now)
    del now, held
    engine.run([SignIn("alice", "81.2.69.10", T0 + 120, "e-3", False)])  # (a failure: the ids only)
    engine.run([SignIn("alice", "81.2.69.10", T0 + 180, "e-4", True)])
    state = store.get("alice")
    assert state is not None and id(state) == where
    assert [v.event_id for v in state.visits] == ["e-1", "e-2", "e-4"]
    assert state.recent_ids == ("e-1", "e-2", "e-3", "e-4")


@pytest.mark.skipif(engine_module.SPEEDUPS is None, reason="detector/_speedups.c is not built (make setup)")
def test_a_state_changed_in_place_is_tracked_as_a_new_one_would_be() -> None:
    """A state renewed in place is tracked by the collector exactly when a state made of its new values
    would be (``make``): an untracked one that now holds a visit the collector tracks is tracked again,
    or a cycle through it would never be collected; one whose values all settle is untracked."""
    import gc
    import weakref

    class Marker:
        pass

    box: list[object] = []
    odd = Location(51.51, -0.13, 10, "GB", "London")  # (made by its class: tracked)
    object.__setattr__(odd, "network", box)  # (and now it holds a list)

    class Odd(Places):
        def __init__(self, odd: Location | None) -> None:
            self.odd = odd

        def locate_many(self, ips: list[str]) -> list[Location | None]:
            return [self.odd if ip == "81.2.69.12" else PLACES[ip] for ip in ips]

    db = new_database_info("GeoLite2-City", 1_700_000_000, "/test.mmdb")
    here = new_location(51.5074, -0.1278, 10.0, "GB", "London", False, db)
    store = MemoryStore()
    store.put("alice", make(AccountState, (make(Visit, "e-1", "81.2.69.10", T0 - 30, here),), ("e-1",), ()))
    assert not gc.is_tracked(store.get("alice"))
    resolver = Odd(odd)
    engine = Engine(Policy(), resolver, store, clock=lambda: T0, apply_at_once=True)
    where = id(store.get("alice"))
    engine.run([SignIn("alice", "81.2.69.12", T0, "e-2", True)])
    alice = store.get("alice")
    assert alice is not None and id(alice) == where and alice.visits[-1].location is odd
    assert gc.is_tracked(alice) and gc.is_tracked(alice.visits)
    marker = Marker()
    gone = weakref.ref(marker)
    box += [alice, marker]
    del alice, marker, box, odd
    resolver.odd = None
    store.delete("alice")
    gc.collect()
    assert gone() is None


@settings(max_examples=200, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.booleans(), st.floats(allow_nan=True, allow_infinity=True, width=32)), max_size=30
    ),
    evaluate_failures=st.booleans(),
    newest=st.floats(allow_nan=False, width=32),
)
def test_select_signins_in_c_is_the_loop(
    plan: list[tuple[bool, float]], evaluate_failures: bool, newest: float
) -> None:
    """``_speedups.select_signins`` picks, places and counts a batch's sign-ins as ``select_signins``
    does (failures anywhere in the batch, times out of order, NaN), and leaves to it what it is not sure of."""
    from collections import Counter

    from detector.model import SPEEDUPS

    if SPEEDUPS is None:
        pytest.skip("detector._speedups is not built here (`make setup`)")
    events = [SignIn(f"u{k % 3}", f"81.2.69.{k}", t, f"e{k}", ok) for k, (ok, t) in enumerate(plan)]
    twin = engine_module.select_signins(
        events, evaluate_failures, newest, engine_module.TrustedNetworks(), Counter()
    )
    ours = SPEEDUPS.select_signins(events, evaluate_failures, newest)
    assert ours is not None
    assert ours[:2] == twin[:2] and ours[3:] == twin[3:]
    assert ours[2] == twin[2] or (ours[2] != ours[2] and twin[2] != twin[2])  # (the newest; NaN is not)
    assert all(a is b for a, b in zip(ours[0], twin[0], strict=True))  # (the sign-ins themselves)
    if events:  # a time that is not a float, a success that is not a bool, a row that is not a SignIn
        for odd in (events[0]._replace(time=1), events[0]._replace(success=1), ("u", "81.2.69.1")):
            assert SPEEDUPS.select_signins([*events, odd], evaluate_failures, newest) is None

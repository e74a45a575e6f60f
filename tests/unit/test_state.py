"""The compact store behaves like a dict of states; the state codec loses nothing."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.model import AccountState, Alerted, Location, Visit
from detector.state import CompactStore, MemoryStore, PartitionedStore
from detector.statecodec import pack, unpack, user_of

LONDON = Location(51.5074, -0.1278, 10, "GB", "London")
NEW_YORK = Location(40.7128, -74.006, 20, "US", "New York", asn=16509, asn_org="AMAZON", network="hosting")
VENDOR = Location(35.6, 139.7, 50, "Japan", "Tokyo", source="okta")
PROXIED = Location(48.85, 2.35, 20, "FR", "Paris", network="hosting")  # flagged by the provider
BY_IP = {"81.2.69.10": LONDON, "4.7.5.10": NEW_YORK, "2.16.117.10": Location(48.85, 2.35, 20, "FR", "Paris")}


def locate(ip: str) -> Location | None:
    return BY_IP.get(ip)


# Event ids of every kind the codec packs differently: uuids (with dashes, lower or upper case), hex
# ids, and anything else.
event_ids = st.one_of(
    st.text(min_size=1, max_size=8),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.text("0123456789abcdef", min_size=1, max_size=300),
    st.text("0123456789abcdef-", min_size=36, max_size=36),
)
visits = st.builds(
    Visit,
    event_ids,
    st.sampled_from(sorted(BY_IP)),
    st.floats(6e8, 4e9),
    st.just(LONDON),
).map(lambda v: v._replace(location=locate(v.ip)))
states = st.builds(
    AccountState,
    st.lists(visits, max_size=8).map(tuple),
    st.lists(event_ids, max_size=16).map(tuple),
    st.lists(
        st.builds(
            Alerted,
            st.text("0123456789abcdef", min_size=32, max_size=32),
            st.floats(-90, 90),
            st.floats(-180, 180),
            st.floats(-90, 90),
            st.floats(-180, 180),
            st.floats(6e8, 4e9),
        ),
        max_size=3,
    ).map(tuple),
)


@settings(max_examples=300)
@given(st.text(min_size=1, max_size=40), states)
def test_pack_unpack_round_trip(user: str, state: AccountState) -> None:
    blob = pack(user, state)
    assert user_of(blob) == user
    assert unpack(blob, locate) == (user, state)


def test_vendor_and_proxy_locations_survive_and_a_forgotten_address_keeps_its_coordinates() -> None:
    state = AccountState(
        (
            Visit("a", "45.1.2.3", 1e9, VENDOR),
            Visit("b", "2.16.117.10", 1e9 + 1, PROXIED),
            Visit("c", "9.9.9.9", 1e9 + 2, LONDON),
        ),
        ("a", "b", "c", "z"),
    )
    _, back = unpack(pack("u", state), locate)
    assert back.visits[0].location == VENDOR
    assert back.visits[1].location.network == "hosting"
    lost = back.visits[2].location  # 9.9.9.9 is unknown now: the stored coordinates remain
    assert abs(lost.latitude - 51.5074) < 1e-4 and abs(lost.longitude + 0.1278) < 1e-4
    assert back.recent_ids == ("a", "b", "c", "z")


ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "put_many", "get", "get_many", "working_set", "delete"]),
        st.integers(0, 30),
        states,
    ),
    max_size=200,
)


@settings(max_examples=200)
@given(ops, st.integers(1, 5))
def test_compact_store_is_a_dict(operations: list, hot: int) -> None:
    store, model = CompactStore(locate, hot_size=hot), MemoryStore()
    for op, n, state in operations:
        user = f"user-{n}"
        if op == "put":
            store.put(user, state)
            model.put(user, state)
        elif op == "put_many":  # a batch's changes: this account and two after it
            changes = {f"user-{m}": state for m in (n, n + 1, n + 2)}
            store.put_many(changes)
            model.put_many(changes)
        elif op == "get":
            assert store.get(user) == model.get(user)
        elif op == "get_many":  # a batch's accounts: this one and two after it, some without state
            users = [f"user-{m}" for m in (n, n + 1, n + 2)]
            assert store.get_many(users) == model.get_many(users)
        elif op == "working_set":  # a batch changed in place (replay): read each, write the first
            users = [f"user-{m}" for m in (n, n + 1, n + 2)]
            held, expected = store.working_set(users), model.working_set(users)
            assert [held.get(u) for u in users] == [expected.get(u) for u in users]
            held[user] = expected[user] = state
            store.settle()
            assert len(store._hot) <= hot
        else:
            store.delete(user)
            model.delete(user)
        assert len(store) == len(model)
    assert dict(store.items()) == dict(model.items())


@settings(max_examples=200)
@given(ops, st.integers(3, 15))
def test_partitioned_store_is_a_dict(operations: list, hot: int) -> None:
    """Accounts over three partitions (a batch's changes span them), each partition's store small enough
    to pack: the same answers as one dict."""
    store, model = PartitionedStore(locate, hot_size=hot, partitions=3), MemoryStore()
    for op, n, state in operations:
        users = [f"user-{m}" for m in (n, n + 1, n + 2)]
        for m, u in zip((n, n + 1, n + 2), users, strict=True):
            store.routes[u] = m % 3
        if op in ("put", "working_set"):
            store.put(users[0], state)
            model.put(users[0], state)
        elif op == "put_many":
            changes = {u: state for u in users}
            store.put_many(changes)
            model.put_many(changes)
            assert all(len(part._hot) <= part.hot_size for part in store.parts.values())
        elif op == "get":
            assert store.get(users[0]) == model.get(users[0])
        elif op == "get_many":
            assert store.get_many(users) == model.get_many(users)
        else:
            store.delete(users[0])
            model.delete(users[0])
        assert len(store) == len(model)
    assert dict(store.items()) == dict(model.items())


@settings(max_examples=50)
@given(st.dictionaries(st.text(min_size=1, max_size=12), states, max_size=20))
def test_a_batchs_changelog_is_its_changes_packed_by_partition(changes: dict[str, AccountState]) -> None:
    store = PartitionedStore(locate, partitions=3)
    for n, user in enumerate(changes):
        store.routes[user] = n % 3
    records = store.changelog(changes)
    assert set(records) == {n % 3 for n in range(len(changes))}
    got: dict[str, AccountState] = {}
    for partition, (keys, blobs) in records.items():
        for key, blob in zip(keys, blobs, strict=True):
            user = key.decode("utf-8", "surrogatepass")
            assert store.routes[user] == partition
            assert unpack(blob, locate) == (user, changes[user])
            got[user] = changes[user]
    assert got == changes


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 12), states), max_size=12),
    st.lists(st.tuples(st.integers(0, 12), st.none() | states), max_size=40),
    st.integers(1, 5),
    st.integers(1, 9),
)
def test_restoring_a_changelog_is_applying_its_records_in_order(
    before: list[tuple[int, AccountState]],
    records: list[tuple[int, AccountState | None]],
    hot: int,
    poll: int,
) -> None:
    """Records restored a poll at a time (``put_packed_many``), over accounts the store holds (hot and
    packed) or not: each account ends with its last record's state, or none after a tombstone."""
    store, model = CompactStore(locate, hot_size=hot), MemoryStore()
    store.put_many({f"user-{n}": state for n, state in before})
    model.put_many({f"user-{n}": state for n, state in before})
    changelog = [(f"user-{n}", None if state is None else pack(f"user-{n}", state)) for n, state in records]
    for i in range(0, len(changelog), poll):
        store.put_packed_many(changelog[i : i + poll])
    for user, blob in changelog:
        if blob is None:
            model.delete(user)
        else:
            model.put(user, unpack(blob, locate)[1])
    assert len(store) == len(model)
    assert dict(store.items()) == dict(model.items())
    assert {user: store.get(user) for user in model._states} == model._states


def test_the_least_recently_active_are_packed_first_after_batches_updated_in_place() -> None:
    """While all fit, a batch updates the accounts it holds where they are (one dict operation); when
    packing is first needed, the accounts are packed by their newest sign-in, oldest first, as if each
    batch had moved them to the end."""

    def at(t: float) -> AccountState:
        return AccountState((Visit(f"e-{t}", "81.2.69.10", t, LONDON),))

    store = CompactStore(locate, hot_size=10)
    store.put_many({f"user-{n}": at(1000.0 + n) for n in range(8)})  # user-0 oldest ... user-7 newest
    store.put_many({"user-0": at(2000.0), "user-1": at(2001.0)})  # back (room for both: in place)
    assert list(store._hot)[:2] == ["user-0", "user-1"]
    for n in (8, 9, 10):  # the eleventh is one too many: the oldest tenth (one account) is packed
        store.put(f"user-{n}", at(2000.0 + n))
    hot = list(store._hot)
    assert "user-2" not in hot and hot[-5:] == ["user-0", "user-1", "user-8", "user-9", "user-10"]
    assert store.get("user-2") == at(1002.0) and len(store) == 11


def test_a_store_changed_in_place_packs_by_last_use_once_settled() -> None:
    """``working_set`` unpacks a batch's packed accounts into the recently used and, with anything packed,
    moves each to the end; the batch's new accounts may overfill it until ``settle`` packs the least
    recently used."""

    def at(t: float) -> AccountState:
        return AccountState((Visit(f"e-{t}", "81.2.69.10", t, LONDON),))

    store = CompactStore(locate, hot_size=8)
    held = store.working_set([f"user-{n}" for n in range(12)])
    for n in range(12):
        held[f"user-{n}"] = at(1000.0 + n)
    assert len(store._hot) == 12  # not packed yet
    store.settle()  # the oldest packed, a slice of hot_size // 8 at a time, down to hot_size
    assert list(store._hot) == [f"user-{n}" for n in range(4, 12)] and len(store) == 12
    held = store.working_set(["user-0", "user-5", "user-99"])  # packed, held, unknown
    assert list(held)[-2:] == ["user-0", "user-5"] and "user-99" not in held
    assert held["user-0"] == at(1000.0)
    held["user-0"] = at(2000.0)
    store.settle()
    assert list(store._hot) == [
        "user-6",
        "user-7",
        "user-8",
        "user-9",
        "user-10",
        "user-11",
        "user-0",
        "user-5",
    ]
    assert store.get("user-4") == at(1004.0) and store.get("user-0") == at(2000.0)


# Locations of every kind pack treats apart: GeoIP fixes (float fields, as GeoIP makes them), hosting by
# ASN or by the provider's flag, a vendor's, and one with an integer radius.
PACKED_LOCATIONS = [
    Location(51.5074, -0.1278, 10.0, "GB", "London"),
    Location(40.7128, -74.006, 20.0, "US", "New York", asn=16509, asn_org="AMAZON", network="hosting"),
    Location(48.85, 2.35, 20.0, "FR", "Paris", network="hosting"),
    Location(1e39, 0.0, 5.0),  # too large for the float32 copy: struct's error
    VENDOR,
    LONDON,
]
any_visits = st.builds(
    Visit,
    event_ids | st.sampled_from(["e\u00e9", "\ud800", "0" * 8 + "-0000-0000-0000-0000000000-0"]),
    st.sampled_from(["81.2.69.10", "2a02:c7f::1", "10.0.0.1\x00", "1.2.3.4.5", "x" * 20]),
    st.floats(6e8, 4e9),
    st.sampled_from(PACKED_LOCATIONS),
)
any_states = st.builds(
    AccountState,
    st.lists(any_visits, max_size=6).map(tuple),
    st.lists(event_ids, max_size=6).map(tuple),
    states.map(lambda s: s.alerted),
).map(lambda s: s._replace(recent_ids=s.recent_ids + tuple(v.event_id for v in s.visits[:2])))


@settings(max_examples=500)
@given(
    st.text(min_size=1, max_size=40)
    | st.just("\ud800")
    | st.text(alphabet="ab\u00e9", min_size=380, max_size=520),  # (past the C's first 512 bytes)
    any_states,
)
def test_pack_in_c_writes_the_bytes_of_its_python_twin(user: str, state: AccountState) -> None:
    from detector import statecodec

    if statecodec.SPEEDUPS is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")
    packed = statecodec.SPEEDUPS.pack_state(user, state)
    try:
        twin: bytes | None = statecodec._pack(user, state)
    except (ValueError, struct.error, OverflowError):
        twin = None  # what the twin refuses, the C leaves to it
    assert packed is None or packed == twin


@settings(max_examples=100)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=40), states | any_states), max_size=30))
def test_packing_many_is_packing_each(pairs: list[tuple[str, AccountState]]) -> None:
    """``pack_many`` (in C, each state fetched ahead; the states C leaves go to the twin) gives each
    state's ``pack``, in order; what the twin refuses it refuses too."""
    from detector import statecodec

    users, each = [u for u, _ in pairs], [s for _, s in pairs]
    try:
        expected = [statecodec._pack(u, s) for u, s in pairs]
    except (ValueError, struct.error, OverflowError) as refused:
        with pytest.raises(type(refused)):
            statecodec.pack_many(users, each)
        return
    assert statecodec.pack_many(users, each) == expected
    if statecodec.SPEEDUPS is not None:
        with pytest.raises(TypeError, match="one length"):
            statecodec.SPEEDUPS.pack_states(users, [*each, each[0] if each else AccountState()])


def test_pack_takes_the_common_state_in_c() -> None:
    from detector import statecodec

    if statecodec.SPEEDUPS is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")
    here = PACKED_LOCATIONS[0]
    state = AccountState(
        (
            Visit("0a1b2c3d-0000-4000-8000-00000000000f", "81.2.69.10", 1.7e9, here),
            Visit("ab12", "2a02:c7f::1", 1.8e9, here),
        ),
        ("0a1b2c3d-0000-4000-8000-00000000000f", "older", "ab12"),
        (),
    )
    packed = statecodec.SPEEDUPS.pack_state("alice", state)
    assert packed is not None and packed == statecodec._pack("alice", state) == pack("alice", state)
    assert unpack(packed, lambda ip: here) == ("alice", state)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "find", "remove"]),
            st.sampled_from([0, 1, 7, 1024, 2048, 0xFFFFFFFF, 0xFFFFFC00]),  # (marks that share slots)
            st.integers(0, 40),
        ),
        max_size=300,
    )
)
def test_the_index_in_c_is_its_python_twin(operations: list[tuple[str, int, int]]) -> None:
    """``_Index``'s probes in C (``_speedups.index_*``) and in Python: the same slots found, the same
    tables after each step (tombstones, growth past 1,024 entries, marks that collide included)."""
    from detector import state as state_module

    speedups = state_module.SPEEDUPS
    if speedups is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")

    def apply(index: Any, built: Any, op: str, mark: int, slot: int) -> int | None:
        state_module.SPEEDUPS = built
        try:
            if op == "add":
                index.add(mark, slot)
            elif op == "remove":
                index.remove(mark, slot)
            else:
                return int(index.find(mark, lambda s: s % 3 == slot % 3))
            return None
        finally:
            state_module.SPEEDUPS = speedups

    c, twin = state_module._Index(), state_module._Index()
    for op, mark, slot in operations * 8:  # (the table grows, and fills with removed entries)
        assert apply(c, speedups, op, mark, slot) == apply(twin, None, op, mark, slot)
        assert (c._marks, c._slots, c._used, c._mask) == (twin._marks, twin._slots, twin._used, twin._mask)


def test_a_state_that_cannot_be_packed_stays_where_it_was() -> None:
    """Packing the least recently used fails as a whole (here: more visits than the packed form
    counts), and loses none of them: each leaves the recently used only once all are packed."""
    here = PACKED_LOCATIONS[0]
    bad = AccountState(tuple(Visit(f"e{k}", "81.2.69.10", 1.7e9 + k, here) for k in range(300)))
    good = AccountState((Visit("e-1", "81.2.69.10", 1.8e9, here),), ("e-1",))
    store = CompactStore(locate, hot_size=1)
    store.put("bad", bad)
    with pytest.raises(ValueError):
        store.put("next", good)
    assert store.get("bad") == bad and store.get("next") == good


def _twin_stores(hot: int) -> tuple[Any, Any, Any]:
    """A store whose work goes through ``_speedups`` and one that runs the Python twins, and a call that
    runs a method of either with its own ``SPEEDUPS``."""
    from detector import state as state_module

    speedups = state_module.SPEEDUPS
    if speedups is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")

    def call(store: CompactStore, method: str, *args: Any) -> Any:
        state_module.SPEEDUPS = speedups if store is c else None
        try:
            return getattr(store, method)(*args)
        finally:
            state_module.SPEEDUPS = speedups

    c, twin = CompactStore(locate, hot_size=hot), CompactStore(locate, hot_size=hot)
    return c, twin, call


def _insides(store: CompactStore) -> tuple[Any, ...]:
    index = store._index
    return (
        list(store._hot.items()),
        bytes(store._arena),
        store._starts,
        store._sizes,
        store._free,
        (index._marks, index._slots, index._used),
    )


def _colliding_users() -> tuple[str, str]:
    """Two account names of one mark (the low 32 bits of their hash, this process's seed)."""
    seen: dict[int, str] = {}
    n = 0
    while True:
        user = f"first.last.{n}@agency.example"
        mark = hash(user) & 0xFFFFFFFF
        if mark in seen:
            return seen[mark], user
        seen[mark] = user
        n += 1


@settings(max_examples=150)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "put_many", "get", "working_set", "delete"]), st.integers(0, 30), states
        ),
        max_size=120,
    ),
    st.integers(1, 5),
)
def test_the_store_in_c_is_its_python_twin(operations: list, hot: int) -> None:
    """``CompactStore`` with ``_speedups`` (``warm``, ``place_blobs``, ``index_add_many``,
    ``index_rehash``) and with its Python twins: the same answers, and the same dict, arena, slots and
    index after every step. The accounts include two of one mark and a name that is no UTF-8 (C leaves
    its search to Python)."""
    c, twin, call = _twin_stores(hot)
    same_mark = _colliding_users()
    names = [*same_mark, "\ud800", "caf\u00e9"]
    for op, n, state in operations:
        user = names[n] if n < len(names) else f"user-{n}"
        batch = [user, names[(n + 1) % len(names)], f"user-{n + 2}"]
        answers = []
        for store in (c, twin):
            if op == "put":
                answers.append(call(store, "put", user, state))
            elif op == "put_many":
                answers.append(call(store, "put_many", {u: state for u in batch}))
            elif op == "get":
                answers.append(call(store, "get", user))
            elif op == "working_set":  # replay: a batch read, the first changed in place, then settled
                held = call(store, "working_set", batch)
                answers.append([held.get(u) for u in batch])
                held[user] = state
                call(store, "settle")
            else:
                answers.append(call(store, "delete", user))
        assert answers[0] == answers[1]
        assert _insides(c) == _insides(twin)


def test_a_big_slice_is_packed_in_chunks_and_found_again() -> None:
    """Past ``hot_size`` by more than one chunk of packing (256): every account is found again, and the
    store in C is its twin's throughout (the index grown on the way)."""
    c, twin, call = _twin_stores(4096)
    visits = {
        n: AccountState((Visit(f"e-{n}", "81.2.69.10", 1e9 + n, LONDON),), (f"e-{n}",)) for n in range(9000)
    }
    for start in range(0, 9000, 1000):
        users = [f"user-{n}" for n in range(start, start + 1000)]
        for store in (c, twin):
            held = call(store, "working_set", users)
            for n in range(start, start + 1000):
                held[f"user-{n}"] = visits[n]
            call(store, "settle")
        assert len(c._hot) <= 4096 and _insides(c) == _insides(twin)
    assert len(c._index._slots) > 1024  # (grown)
    back = call(c, "working_set", [f"user-{n}" for n in range(0, 9000, 7)])
    assert all(back[f"user-{n}"] == visits[n] for n in range(0, 9000, 7))


def test_a_partitioned_store_keeps_ready_as_many_accounts_as_it_is_given() -> None:
    """As many accounts as ``hot_size``, shared out among the partitions by hash (unevenly): none is
    packed. Each partition's size allows for the spread (``share_of_store``); a plain share of the
    setting left the fuller partitions packing and unpacking their least recently used."""
    import zlib
    from collections import Counter

    users = [f"first.last.{n}@agency.example" for n in range(6_000)]
    store = PartitionedStore(locate, hot_size=6_000, partitions=6)
    for user in users:
        store.routes[user] = zlib.crc32(user.encode()) % 6
    assert max(Counter(store.routes.values()).values()) > 6_000 // 6  # (the spread to allow for)
    ip = sorted(BY_IP)[0]
    state = AccountState((Visit("e-1", ip, 1.7e9, locate(ip)),), ("e-1",), ())
    store.put_many(dict.fromkeys(users, state))
    assert len(store) == 6_000
    assert all(part._all_hot() for part in store.parts.values())

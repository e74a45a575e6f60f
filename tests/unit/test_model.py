"""``model.make``: the hot path's named tuples, made in C where built, exactly as ``tuple.__new__``
makes them (and by its Python twin where not)."""

from __future__ import annotations

import math
import pickle
from collections import Counter
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from detector import model
from detector.model import AccountState, SignIn, Visit, make, new_location
from tests.conftest import IN_CI

LONDON = new_location(51.5, -0.12, 20.0, "GB", "London", False, None)
MAKERS = [pytest.param(model._make, id="python")]
if model.SPEEDUPS is not None:
    MAKERS.append(pytest.param(model.SPEEDUPS.make, id="c"))


def test_the_c_maker_is_the_one_in_use_when_built() -> None:
    if model.SPEEDUPS is None:
        if IN_CI:
            pytest.fail("`make setup` must build detector/_speedups.c")
        pytest.skip("detector/_speedups.c is not built (make setup)")
    assert make is model.SPEEDUPS.make


@pytest.mark.parametrize("maker", MAKERS)
def test_make_gives_what_tuple_new_gives(maker: object) -> None:
    cases = [
        (Visit, ("e-1", "81.2.69.10", 1710547193.735, LONDON)),
        (SignIn, ("alice", "81.2.69.10", 1.5, "e-1", False, None, True)),
        (AccountState, ((), ("e-1",), ())),
    ]
    for cls, fields in cases:
        made = maker(cls, *fields)  # type: ignore[operator]
        reference = tuple.__new__(cls, fields)
        assert type(made) is cls and made == reference and hash(made) == hash(reference)
        assert repr(made) == repr(reference) and pickle.loads(pickle.dumps(made)) == reference
        assert made._asdict() == reference._asdict()  # type: ignore[attr-defined]
    state = maker(AccountState, (maker(Visit, "e", "1.2.3.4", 2.0, LONDON),), ("e",), ())
    assert state.visits[0].location is LONDON and state.last.time == 2.0


@pytest.mark.parametrize("maker", MAKERS)
def test_make_refuses_what_is_not_a_tuple_type(maker: object) -> None:
    with pytest.raises(TypeError):
        maker(dict, "a")  # type: ignore[operator]


SLOTTED = [pytest.param(model._make_slotted, id="python")]
if model.SPEEDUPS is not None:
    SLOTTED.append(pytest.param(model.SPEEDUPS.make_slotted, id="c"))


@pytest.mark.parametrize("maker", SLOTTED)
def test_make_slotted_gives_the_object_the_dataclass_gives(maker: object) -> None:
    from detector.model import Location

    values = (48.85, 2.35, 20.0, "FR", "Paris", False, None, "geoip", 3215, "Orange", "mobile", "FR|Paris|49,2")  # fmt: skip
    made = maker(Location, model.LOCATION_SLOTS, *values)  # type: ignore[operator]
    reference = Location(*values)
    assert type(made) is Location and made == reference and hash(made) == hash(reference)
    assert repr(made) == repr(reference) and made.place == reference.place == "FR|Paris|49,2"
    assert pickle.loads(pickle.dumps(made)) == reference
    with pytest.raises(TypeError):
        maker(Location, model.LOCATION_SLOTS, *values[:-1])  # type: ignore[operator]


def test_the_c_makers_leave_to_the_garbage_collector_only_what_might_be_cyclic() -> None:
    """What holds only strings, numbers and the like is never walked by the cyclic collector (the state
    of every account; CPython itself untracks such a tuple, but only after walking it in each young
    generation); what holds a tracked container stays tracked, or a cycle through it would leak."""
    import gc
    import weakref

    if model.SPEEDUPS is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")
    c = model.SPEEDUPS
    db = model.new_database_info("GeoLite2-City", 1_700_000_000, "/db.mmdb")
    here = new_location(51.5, -0.12, 20.0, "GB", "London", False, db)
    visit = c.make(Visit, "e-1", "81.2.69.10", 1.0, here)
    state = c.make(AccountState, (visit,), tuple(["e-1"]), ())  # (a tuple made at run time is tracked)
    assert not any(map(gc.is_tracked, (db, here, visit, state, state.recent_ids)))
    line = b'{"timestamp":"2024-03-16T00:59:53Z","user":"alice","ip":"81.2.69.10","event_id":"e-1"}'
    signin = c.decode_canonical([line], 4096, 256, 256, 32, SignIn)[0]
    assert signin == SignIn("alice", "81.2.69.10", 1710550793.0, "e-1") and not gc.is_tracked(signin)

    class Marker:
        pass

    # A container among the values: a list, or an empty dict (the collector does not track a dict of
    # strings alone, until it holds a container). A cycle through the tuple is collected only if the
    # collector walks it: the marker, held in the cycle, is gone after a collection only then.
    for kind in (list, dict):
        box: Any = kind()
        assert gc.is_tracked(box) == (kind is list)
        held = c.make(AccountState, (visit,), ("e-1",), (box,))
        assert gc.is_tracked(held)
        marker = Marker()
        gone = weakref.ref(marker)
        if kind is list:
            box += [held, marker]
        else:
            box.update(back=held, marker=marker)
        del box, held, marker
        gc.collect()
        assert gone() is None


@given(
    st.floats(allow_nan=False) | st.floats(-1.1e9, 1.1e9),
    st.floats(-180.5, 180.5) | st.sampled_from([0.5, -0.5, 1.5, 2.5, -2.5, -0.0, 0.49999999999999994]),
    st.none() | st.text(max_size=3) | st.from_regex(r"[A-Z]{2}", fullmatch=True),
    st.none() | st.text(max_size=12) | st.text(st.characters(max_codepoint=127), max_size=12),
)
@example(51.5, -0.5, "GB", "London")  # (ties: to the even degree)
@example(float("inf"), float("-inf"), "", "")
@example(999_999_999.5, -0.0, "US", "")  # (C prints whole degrees below 10^9, Python's formatting above)
@example(-1e9, 0.5, "Z\u00fcrich", "?")
def test_place_key_in_c_is_its_python_twin(
    lat: float, lon: float, country: str | None, city: str | None
) -> None:
    if model.SPEEDUPS is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")
    assert model.SPEEDUPS.place_key(lat, lon, country, city) == model._place_key(lat, lon, country, city)
    assert model.SPEEDUPS.place_key(51, -1, "GB", None) == model._place_key(51, -1, "GB", None) == "GB||51,-1"


@given(st.lists(st.integers(0, 40)), st.dictionaries(st.sampled_from("abc"), st.integers(-3, 3)))
@example(list(range(41)) * 2, {})  # (more than 16 kinds)
def test_count_into_is_counter_update(picks: list[int], before: dict[str, int]) -> None:
    """The outcomes' count in C (by identity, up to 16 kinds, then one at a time) is Counter.update; equal
    texts that are different objects count as one key."""
    if model.SPEEDUPS is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")
    kinds = [f"kind-{k % 25}" for k in range(41)]  # (kinds k and k + 25: equal, not the same object)
    assert kinds[0] == kinds[25] and kinds[0] is not kinds[25]
    items = [kinds[k] for k in picks]
    ours, theirs = Counter(before), Counter(before)
    model.SPEEDUPS.count_into(ours, items)
    theirs.update(items)
    assert ours == theirs


@given(
    st.floats(-2e9, 4.2e9, allow_nan=False)
    | st.integers(-(2**31), 2**32).map(float)
    | st.integers(0, 4_200_000_000_000).map(lambda ms: ms / 1000)
)
@example(0.0)
@example(-0.5)
@example(-1e-6)
@example(4102444799.999999)
@example(1_700_000_000.9999995)
def test_utc_text_writes_the_instant_to_datetime_gives(epoch_s: float) -> None:
    """Written from the day and the seconds within it, as the datetime itself writes it (a cached date
    for each day met): the same text, fractions, rounding to the microsecond and days before 1970
    included."""
    dt = model.to_datetime(epoch_s)
    expected = dt.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{dt.microsecond:06d}".rstrip("0") if dt.microsecond else ""
    )
    assert model.utc_text(epoch_s) == expected + "Z"
    assert model.utc_text(epoch_s) == expected + "Z"  # (the second time from the cached day)


UTC_TEXT_END = 253_402_300_800  # 10000-01-01T00:00:00Z: utc_text in C writes the instants before it


@given(
    st.floats(-1e3, 2.6e11)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-10, 2_600_000_000_000)
    | st.integers()
)
@example(140_719.3404845)  # (x * 10^6 is exactly 140719340484.5: to the even microsecond, 4)
@example(1_700_000_000.9999995)  # (up to the next second)
@example(UTC_TEXT_END - 0.000001)
@example(UTC_TEXT_END - 0.0000004)  # (rounds to year 10000: the twin's)
@example(UTC_TEXT_END)
@example(-0.0)
@example(True)  # (not a plain int: the twin's)
def test_utc_text_in_c_is_its_python_twin(epoch_s: float) -> None:
    """Equal text for every instant it writes (1970 to 9999, from plain ints and floats); None for every
    other, which the Python twin then writes (or refuses)."""
    if model.SPEEDUPS is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")
    text = model.SPEEDUPS.utc_text(epoch_s)
    micros = epoch_s * 1_000_000
    finite = isinstance(micros, int) or math.isfinite(micros)
    if type(epoch_s) in (int, float) and finite and 0 <= round(micros) < UTC_TEXT_END * 1_000_000:
        assert text == model._utc_text(epoch_s)
    else:
        assert text is None

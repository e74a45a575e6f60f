"""``model.make``: the hot path's named tuples, made in C where built, exactly as ``tuple.__new__``
makes them (and by its Python twin where not)."""

from __future__ import annotations

import pickle

import pytest

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
    made = maker(Location, model._LOCATION_SLOTS, *values)  # type: ignore[operator]
    reference = Location(*values)
    assert type(made) is Location and made == reference and hash(made) == hash(reference)
    assert repr(made) == repr(reference) and made.place == reference.place == "FR|Paris|49,2"
    assert pickle.loads(pickle.dumps(made)) == reference
    with pytest.raises(TypeError):
        maker(Location, model._LOCATION_SLOTS, *values[:-1])  # type: ignore[operator]

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from geopy.distance import geodesic
from hypothesis import given
from hypothesis import strategies as st

from detector import geo
from detector.geo import (
    SCREEN_MARGIN,
    geodesic_km,
    geographiclib_km,
    haversine_km,
    haversine_km_batch,
    net_distance_km,
    speed_kmh,
)

lat = st.floats(-90, 90, allow_nan=False)
lon = st.floats(-180, 180, allow_nan=False)


def test_known_distances() -> None:
    # London (Charing Cross) - New York (City Hall): 5,585 km on the ellipsoid, 5,570 km on the sphere.
    assert round(geodesic_km(51.5074, -0.1278, 40.7128, -74.0060)) == 5585
    assert round(haversine_km(51.5074, -0.1278, 40.7128, -74.0060)) == 5570
    assert geodesic_km(10, 10, 10, 10) == 0
    assert math.isclose(haversine_km(0, 0, 0, 180), math.pi * 6371.0088, rel_tol=1e-9)


@given(lat, lon, lat, lon)
def test_batch_equals_scalar(a: float, b: float, c: float, d: float) -> None:
    batch = haversine_km_batch(np.array([a]), np.array([b]), np.array([c]), np.array([d]))
    assert math.isclose(batch[0], haversine_km(a, b, c, d), rel_tol=1e-9, abs_tol=1e-6)


@given(lat, lon, lat, lon)
def test_sphere_screen_never_drops_what_the_ellipsoid_keeps(a: float, b: float, c: float, d: float) -> None:
    exact = geodesic_km(a, b, c, d)
    assert haversine_km(a, b, c, d) * SCREEN_MARGIN >= exact - 1e-6


def test_net_distance_and_speed() -> None:
    assert net_distance_km(100, 30, 20) == 50
    assert net_distance_km(100, 80, 40) == 0
    assert speed_kmh(100, 3600) == 100
    assert speed_kmh(100, 0) == math.inf
    assert speed_kmh(0, 0) == 0


@given(lat, lon, lat, lon)
def test_geodesic_is_geopys_to_the_last_bit(a: float, b: float, c: float, d: float) -> None:
    # The detector calls geographiclib itself (importing geopy costs half a second at start); the
    # reported figures must still be exactly geopy's.
    assert geodesic_km(a, b, c, d) == geodesic((a, b), (c, d)).km


# Pairs where Karney's inverse takes each of its ways: the meridian, the equator, nearly antipodal points
# (the astroid start and the bisection of the Newton iteration), points a metre apart, GeoIP's rounded
# coordinates, signed zeros, the poles, longitudes past 180.
_EDGES = [
    0.0,
    -0.0,
    90.0,
    -90.0,
    180.0,
    -180.0,
    45.0,
    1e-300,
    -1e-300,
    89.99999999,
    360.0,
    -540.0,
    179.9999999,
]


def _pairs(n: int, seed: int) -> list[tuple[float, float, float, float]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        a, b = rng.uniform(-90, 90), rng.uniform(-180, 180)
        way = rng.randrange(6)
        if way == 0:
            pairs.append((a, b, rng.uniform(-90, 90), rng.uniform(-180, 180)))
        elif way == 1:  # nearly antipodal
            pairs.append((a, b, -a + rng.gauss(0, 0.5), b + 180 + rng.gauss(0, 0.5)))
        elif way == 2:  # on the equator or a meridian
            c = rng.choice([0.0, -0.0, 90.0, -90.0, a])
            pairs.append((c, b, rng.choice([0.0, c, -c, a]), rng.choice([0.0, 180.0, -180.0, b, -b])))
        elif way == 3:  # about a metre apart
            pairs.append((a, b, a + rng.gauss(0, 1e-5), b + rng.gauss(0, 1e-5)))
        elif way == 4:  # rounded as GeoIP's coordinates are
            digits = rng.choice([0, 1, 2, 4])
            c, d = rng.uniform(-90, 90), rng.uniform(-180, 180)
            pairs.append((round(a, digits), round(b, digits), round(c, digits), round(d, digits)))
        else:
            pairs.append(tuple(rng.choice(_EDGES) for _ in range(4)))  # type: ignore[arg-type]
    return pairs


def _same(x: float, y: float) -> bool:
    return (x == y and math.copysign(1, x) == math.copysign(1, y)) or (math.isnan(x) and math.isnan(y))


def test_geodesic_in_c_is_geographiclibs_to_the_last_bit() -> None:
    """The C copy of geographiclib's inverse (where built) gives its very figure, bit for bit, on each of
    its ways (300,000 pairs gave not one difference when it was written; 20,000 here)."""
    if geo.SPEEDUPS is None:
        pytest.skip("detector/_speedups.c is not built (make setup)")
    assert geo._geodesic() is geo.SPEEDUPS.geodesic_km
    for pair in _pairs(20_000, seed=6):
        assert _same(geodesic_km(*pair), geographiclib_km(*pair)), pair


@given(st.floats(allow_nan=False), st.floats(allow_nan=False), lat, lon)
def test_geodesic_in_c_is_geographiclibs_anywhere(a: float, b: float, c: float, d: float) -> None:
    """Even out of range (a latitude past 90 is NaN to geographiclib, a longitude past 180 wraps)."""
    assert _same(geodesic_km(a, b, c, d), geographiclib_km(a, b, c, d))

from __future__ import annotations

import math

import numpy as np
from geopy.distance import geodesic
from hypothesis import given
from hypothesis import strategies as st

from detector.geo import (
    SCREEN_MARGIN,
    geodesic_km,
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

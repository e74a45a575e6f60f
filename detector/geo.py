"""Distances on the Earth.

Two methods, for two jobs:

- ``haversine_km`` / ``haversine_km_batch``: the great circle on a sphere of the Earth's mean radius.
  Cheap, and vectorised over a batch with numpy; used to screen pairs of sign-ins.
- ``geodesic_km``: the WGS-84 ellipsoid (Karney's algorithm, through geographiclib as geopy calls it),
  exact to millimetres; used for every figure reported in an alert and for the final decision on pairs
  that the screen lets through.
  The sphere is off the ellipsoid by at most about 0.56 %, so screening with ``SCREEN_MARGIN`` can never
  drop a pair that the exact figure would alert on.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from detector.model import SPEEDUPS

if TYPE_CHECKING:
    import numpy as np

EARTH_MEAN_RADIUS_KM = 6371.0088
# WGS-84 as geopy states it (geopy.distance.ELLIPSOIDS["WGS-84"]): semi-major axis in km, flattening.
WGS84_A_KM = 6378.137
WGS84_F = 1 / 298.257223563
# Largest relative error of the spherical distance against WGS-84, with room to spare.
SCREEN_MARGIN = 1.01


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dphi = p2 - p1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_MEAN_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def haversine_km_batch(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Element-wise great-circle distances in km for arrays of degrees (one numpy pass)."""
    import numpy as np  # (here: the detector itself never needs numpy, and importing it takes 70 ms)

    p1 = np.radians(lat1)
    p2 = np.radians(lat2)
    a = np.sin((p2 - p1) * 0.5) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) * 0.5) ** 2
    return 2 * EARTH_MEAN_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def geodesic_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Distance in km on the WGS-84 ellipsoid: exactly what geopy's ``geodesic(...).km`` gives (the same
    geographiclib computation on the same ellipsoid in km; tests hold them equal). Where built, geographiclib's
    inverse copied to C operation for operation (``_speedups.geodesic_km``): about 1 us a pair, where its
    Python takes 50-90."""
    return _geodesic()(lat1, lon1, lat2, lon2)


def geographiclib_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """``geodesic_km`` by geographiclib itself (its Python): the twin of the C copy."""
    return float(_wgs84_km().Inverse(lat1, lon1, lat2, lon2, _DISTANCE)["s12"])


@functools.cache
def _geodesic() -> Callable[[float, float, float, float], float]:
    if SPEEDUPS is None:
        return geographiclib_km
    g = _wgs84_km()  # (its own constants, so that nothing is computed twice in two ways)
    SPEEDUPS.geodesic_setup(g.a, g.f, g._f1, g._ep2, g._n, g._b, g._etol2, g._A3x, g._C3x)
    fast: Callable[[float, float, float, float], float] = SPEEDUPS.geodesic_km
    return fast


_DISTANCE = 1025  # geographiclib's Geodesic.DISTANCE (an output mask)


@functools.cache
def _wgs84_km() -> Any:
    # geographiclib directly, imported when first needed: geopy computes its geodesic with it, but
    # importing geopy loads all its geocoders (half a second at every start that meets a candidate pair).
    from geographiclib.geodesic import Geodesic

    assert Geodesic.DISTANCE == _DISTANCE
    return Geodesic(WGS84_A_KM, WGS84_F)


def net_distance_km(distance_km: float, radius1_km: float, radius2_km: float) -> float:
    """Distance between the nearest points of two accuracy circles; 0 when they overlap."""
    return max(0.0, distance_km - radius1_km - radius2_km)


def speed_kmh(distance_km: float, elapsed_s: float) -> float:
    """Implied speed; infinite when the two sign-ins are at the same instant but apart."""
    if distance_km <= 0.0:
        return 0.0
    if elapsed_s <= 0.0:
        return math.inf
    return distance_km / (elapsed_s / 3600.0)

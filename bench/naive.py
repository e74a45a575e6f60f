"""The naive reference detector: what today's published rules do, written the obvious way.

Per event: ``json.loads``, geoip2 ``Reader.city()``, geopy ``geodesic``, a dict of each account's last
location. Alert when the speed from the last sign-in exceeds ``max_speed_kmh`` over at least
``min_distance_km`` (Panther: last sign-in, > 900 km/h). No accuracy radii, no event-time order, no
de-duplication, no special handling of country-level fixes or VPN flip-flops. Used as the baseline of
`make bench` and to show, in the tests, what the nuanced cases do to such logic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import geoip2.database
import geoip2.errors
from geopy.distance import geodesic


def _time(value: Any) -> float:
    if isinstance(value, int | float):
        return value / 1000 if value > 1e11 else float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def naive_alerts(
    lines: Iterable[bytes | str], db_path: str, max_speed_kmh: float = 900.0, min_distance_km: float = 100.0
) -> Iterator[dict[str, Any]]:
    reader = geoip2.database.Reader(db_path)
    last: dict[str, tuple[float, float, float, str]] = {}
    try:
        for line in lines:
            try:
                event = json.loads(line)
                if event.get("outcome", "success") != "success":
                    continue
                city = reader.city(event["ip"])
                lat, lon = city.location.latitude, city.location.longitude
                when = _time(event["timestamp"])
            except (ValueError, KeyError, TypeError, AttributeError, geoip2.errors.AddressNotFoundError):
                continue
            if lat is None or lon is None:
                continue
            user = event["user"]
            eid = event.get("event_id", "")
            if user in last:
                plat, plon, ptime, pid = last[user]
                km = geodesic((plat, plon), (lat, lon)).km
                hours = abs(when - ptime) / 3600
                speed = km / hours if hours else float("inf")
                if km >= min_distance_km and speed > max_speed_kmh:
                    yield {
                        "user": user,
                        "previous": {"event_id": pid},
                        "current": {"event_id": eid},
                        "distance_km": km,
                        "speed_kmh": speed,
                    }
            last[user] = (lat, lon, when, eid)
    finally:
        reader.close()

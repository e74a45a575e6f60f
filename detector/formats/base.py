"""What every native format adapter shares: path lookups, typed field access, the record -> sign-in
contract, and the reasons it raises."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from detector.codec import DEFAULT_LIMITS, Limits, derive_event_id, normalise_ip, parse_timestamp
from detector.errors import InvalidEvent
from detector.model import Location, SignIn, make


class NotASignIn(InvalidEvent):
    """A record of the format that is not a sign-in (a session end, a logout, another event)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"not a sign-in: {detail}")


_MISSING = object()
_STEPS: dict[str, list[str]] = {}


def path(record: Any, dotted: str, default: Any = None) -> Any:
    """``a.b.0.c`` inside nested dicts and lists; ``default`` when any step is missing."""
    value = record
    steps = _STEPS.get(dotted)
    if steps is None:  # (a few paths, the adapters' and the mapping's settings, each asked every record)
        steps = _STEPS[dotted] = dotted.split(".")
    for step in steps:
        if isinstance(value, dict):
            value = value.get(step, _MISSING)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return default
        if value is _MISSING:
            return default
    return default if value is None else value


@dataclass(frozen=True)
class Options:
    """Per-run options of the adapters."""

    limits: Limits = DEFAULT_LIMITS
    # Accuracy radius given to coordinates an identity provider reports itself.
    vendor_radius_km: float = 50.0


def text(value: Any, name: str, limit: int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"missing field: {name}")
    if len(value) > limit:
        raise InvalidEvent(f"bad {name}: longer than {limit} characters")
    return value


def build(
    user: Any,
    ip: Any,
    when: Any,
    success: bool,
    event_id: Any,
    options: Options,
    user_field: str = "user",
    ip_field: str = "ip",
    time_field: str = "timestamp",
    vendor: Location | None = None,
    proxy: bool = False,
) -> SignIn:
    """A validated SignIn from a native record's values (the same checks as canonical events)."""
    limits = options.limits
    account = text(user, user_field, limits.max_user_chars)
    address = text(ip, ip_field, 64)
    try:
        address = normalise_ip(address)
    except ValueError:
        raise InvalidEvent(f"bad ip: {ip_field} is not an IPv4 or IPv6 address") from None
    if when is None or when == "":
        raise InvalidEvent(f"missing field: {time_field}")
    time = parse_timestamp(when)
    eid = str(event_id) if event_id not in (None, "") else derive_event_id(account, address, time, success)
    if len(eid) > limits.max_field_chars:
        raise InvalidEvent("bad event_id: too long")
    return make(SignIn, account, address, time, eid, success, vendor, proxy)


def vendor_location(
    lat: Any, lon: Any, source: str, options: Options, country: Any = None, city: Any = None
) -> Location | None:
    """Coordinates an identity provider reports, when they are real numbers in range."""
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (lat, lon)
    ):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        return None
    return Location(
        float(lat),
        float(lon),
        options.vendor_radius_km,
        country if isinstance(country, str) and country else None,
        city if isinstance(city, str) and city else None,
        source=source,
    )


Adapter = Callable[[Mapping[str, Any], Options], list[SignIn]]

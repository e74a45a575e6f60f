"""The edge of the core: bytes in -> validated ``SignIn``; ``Alert`` -> compact JSON bytes out.

Everything that enters is checked here once (size, depth, UTF-8, types, ranges); what passes is trusted
inside. A record that fails raises ``InvalidEvent`` with a short reason meant for the rejects file, the
dead-letter topic and the ``reason`` label of a counter, so reasons come from a small fixed vocabulary
followed by detail after a colon.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from detector.errors import InvalidEvent
from detector.model import Alert, Location, SignIn, Visit, utc_text

# Accepted event times: anything outside is a broken clock or a broken record, not a sign-in.
MIN_TIME = 631152000.0  # 1990-01-01T00:00:00Z
MAX_TIME = 4102444800.0  # 2100-01-01T00:00:00Z
# Epoch numbers at or above this are milliseconds (as seconds it would be the year 5138).
_MILLIS_FROM = 1e11

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,12})?(?:[Zz]|[+-]\d{2}:?\d{2})\Z", re.ASCII
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one input record may be; anything larger is rejected, never parsed further."""

    max_event_bytes: int = 65536
    max_depth: int = 32
    max_user_chars: int = 512
    max_field_chars: int = 1024

    def __post_init__(self) -> None:
        if (
            self.max_event_bytes < 64
            or self.max_depth < 2
            or self.max_user_chars < 1
            or self.max_field_chars < 16
        ):
            raise ValueError("limits too small")


DEFAULT_LIMITS = Limits()


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, stopping as soon as ``limit`` is passed."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((child, d + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Parse one JSON document within the size and depth limits."""
    if len(raw) > limits.max_event_bytes:
        raise InvalidEvent(f"too large: {len(raw)} bytes > {limits.max_event_bytes}")
    if not raw.strip():
        raise InvalidEvent("empty")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent("not UTF-8") from None
        raise InvalidEvent(f"bad JSON: {str(exc).split(':', 1)[0]}") from None
    # Brackets in the text bound the depth from above; only a record with many of them is walked.
    if (
        raw.count(b"{") + raw.count(b"[") > limits.max_depth
        and _depth(value, limits.max_depth) > limits.max_depth
    ):
        raise InvalidEvent(f"too deeply nested: more than {limits.max_depth} levels")
    return value


@lru_cache(maxsize=1 << 16)
def normalise_ip(text: str) -> str:
    """Canonical text of an address: IPv4 dotted quad or compressed IPv6.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``, ``[2001:db8::1]:443`` and IPv4-mapped IPv6
    (``::ffff:1.2.3.4``, which becomes ``1.2.3.4``). Raises ``ValueError`` otherwise.
    """
    host = text.strip()
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :] if end > 0 else "x"
        if rest and not (rest[0] == ":" and _is_port(rest[1:])):
            raise ValueError("bad bracketed address")
        host = host[1:end]
    elif host.count(":") == 1:
        host, port = host.split(":")
        if not _is_port(port):
            raise ValueError("bad port")
    addr = ipaddress.ip_address(host)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _is_port(text: str) -> bool:
    return text.isdigit() and len(text) <= 5 and int(text) <= 65535


def parse_timestamp(value: object) -> float:
    """RFC 3339 text (any offset, any fractional digits) or epoch seconds/milliseconds -> epoch seconds UTC."""
    if isinstance(value, str):
        if len(value) > 64 or not _RFC3339.match(value):
            raise InvalidEvent("bad timestamp: not RFC 3339 with an offset")
        text = value.upper()
        if text[-1] != "Z" and text[-3] != ":":  # +0530 -> +05:30 for fromisoformat
            text = f"{text[:-2]}:{text[-2:]}"
        try:
            seconds = datetime.fromisoformat(text).timestamp()
        except ValueError:
            raise InvalidEvent("bad timestamp: impossible date or time") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise InvalidEvent("bad timestamp: not a finite number")
        if abs(seconds) >= _MILLIS_FROM:
            seconds /= 1000.0
    else:
        raise InvalidEvent("bad timestamp: must be a string or a number")
    if not MIN_TIME <= seconds < MAX_TIME:
        raise InvalidEvent("bad timestamp: outside 1990-2099")
    return seconds


def derive_event_id(user: str, ip: str, time: float, success: bool) -> str:
    """A stable id from what the event says, so that a re-delivery of an id-less event is recognised.

    Built from the normalised fields, so the same sign-in written with another offset or address form
    gets the same id."""
    text = f"{user}\x1f{ip}\x1f{round(time * 1_000_000)}\x1f{'s' if success else 'f'}"
    return "h:" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _text_field(obj: Mapping[str, Any], name: str, limit: int, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidEvent(f"missing field: {name}")
        return None
    if isinstance(value, int) and not isinstance(value, bool) and name == "event_id":
        value = str(value)
    if not isinstance(value, str):
        raise InvalidEvent(f"bad {name}: must be a string")
    if not value.strip():
        raise InvalidEvent(f"bad {name}: empty")
    if len(value) > limit:
        raise InvalidEvent(f"bad {name}: longer than {limit} characters")
    return value


def event_from_mapping(obj: object, limits: Limits = DEFAULT_LIMITS) -> SignIn:
    """Validate a parsed canonical event (schemas/signin-event.schema.json) into a ``SignIn``."""
    if not isinstance(obj, dict):
        raise InvalidEvent(f"not an object: {type(obj).__name__}")
    user = _text_field(obj, "user", limits.max_user_chars, True)
    ip_text = _text_field(obj, "ip", 64, True)
    assert user is not None and ip_text is not None
    try:
        ip = normalise_ip(ip_text)
    except ValueError:
        raise InvalidEvent("bad ip: not an IPv4 or IPv6 address") from None
    if "timestamp" not in obj or obj["timestamp"] is None:
        raise InvalidEvent("missing field: timestamp")
    time = parse_timestamp(obj["timestamp"])
    outcome = obj.get("outcome")
    if outcome is None:
        success = True
    elif isinstance(outcome, str) and outcome.lower() in ("success", "failure"):
        success = outcome.lower() == "success"
    else:
        raise InvalidEvent("bad outcome: must be success or failure")
    event_id = _text_field(obj, "event_id", limits.max_field_chars, False)
    if event_id is None:
        event_id = derive_event_id(user, ip, time, success)
    return SignIn(user=user, ip=ip, time=time, event_id=event_id, success=success)


def decode_event(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> SignIn:
    """One canonical JSON event (a line or a message value) -> ``SignIn``, or ``InvalidEvent``."""
    return event_from_mapping(parse_json(raw, limits), limits)


def reason_code(reason: str) -> str:
    """The fixed part of a reason (before any colon), fit for a metric label."""
    return reason.split(":", 1)[0]


# ---------------------------------------------------------------------------------------------------
# Output


def _visit_dict(v: Visit) -> dict[str, Any]:
    loc: Location = v.location
    out: dict[str, Any] = {
        "event_id": v.event_id,
        "ip": v.ip,
        "timestamp": utc_text(v.time),
        "latitude": loc.latitude,
        "longitude": loc.longitude,
        "accuracy_radius_km": loc.accuracy_radius_km,
        "country": loc.country,
        "city": loc.city,
        "location_source": loc.source,
    }
    return out


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """The alert as the JSON object of schemas/alert.schema.json."""
    db = alert.current.location.database or alert.previous.location.database
    out: dict[str, Any] = {
        "alert_id": alert.alert_id,
        "rule": alert.rule,
        "user": alert.user,
        "detected_at": utc_text(alert.detected_at),
        "severity": alert.severity,
        "confidence": alert.confidence,
        "speed_kmh": _round(alert.speed_kmh),
        "net_speed_kmh": _round(alert.net_speed_kmh),
        "distance_km": round(alert.distance_km, 3),
        "net_distance_km": round(alert.net_distance_km, 3),
        "elapsed_s": round(alert.elapsed_s, 6),
        "late": alert.late,
        "previous": _visit_dict(alert.previous),
        "current": _visit_dict(alert.current),
        "thresholds": {"max_speed_kmh": alert.max_speed_kmh, "min_distance_km": alert.min_distance_km},
        "geoip": {
            "database_type": db.database_type if db else None,
            "build_time": utc_text(db.build_epoch) if db else None,
        },
        "reasons": list(alert.reasons),
    }
    out.update(alert.extra)
    return out


def encode_alert(alert: Alert) -> bytes:
    """Compact JSON, no trailing newline."""
    return orjson.dumps(alert_to_dict(alert))

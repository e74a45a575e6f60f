"""The edge of the core: bytes in -> validated ``SignIn``; ``Alert`` -> compact JSON bytes out.

Everything that enters is checked here once (size, depth, UTF-8, types, ranges); what passes is trusted
inside. A record that fails raises ``InvalidEvent`` with a short reason meant for the rejects file, the
dead-letter topic and the ``reason`` label of a counter, so reasons come from a small fixed vocabulary
followed by detail after a colon.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from detector.errors import InvalidEvent, UnreadableRecord
from detector.model import SPEEDUPS, Alert, Location, SignIn, Visit, blake2b, make, utc_text

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
    """Parse one JSON document within the size and depth limits (else ``UnreadableRecord``)."""
    if len(raw) > limits.max_event_bytes:
        raise UnreadableRecord(f"too large: {len(raw)} bytes > {limits.max_event_bytes}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _not_json(raw, exc) from None
    # Brackets in the text bound the depth from above; only a record with many of them is walked.
    if (
        raw.count(b"{") + raw.count(b"[") > limits.max_depth
        and _depth(value, limits.max_depth) > limits.max_depth
    ):
        raise UnreadableRecord(f"too deeply nested: more than {limits.max_depth} levels")
    return value


def _not_json(raw: bytes, exc: orjson.JSONDecodeError) -> UnreadableRecord:
    """Why orjson refused ``raw`` (``exc``), in parse_json's words."""
    if not raw.strip():
        return UnreadableRecord("empty")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return UnreadableRecord("not UTF-8")
    return UnreadableRecord(f"bad JSON: {str(exc).split(':', 1)[0]}")


_inet_pton, _AF_INET = socket.inet_pton, int(socket.AF_INET)  # (looked up once, not at every address)


def normalise_ip(text: str) -> str:
    """Canonical text of an address: IPv4 dotted quad or compressed IPv6.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``, ``[2001:db8::1]:443`` and IPv4-mapped IPv6
    (``::ffff:1.2.3.4``, which becomes ``1.2.3.4``). Raises ``ValueError`` otherwise.
    """
    try:
        _inet_pton(_AF_INET, text)
        return text  # a dotted quad, already canonical: the common case, checked before any cache
    except OSError:
        normal = _normalise_other(text)
    if normal is None:
        raise ValueError("not an IPv4 or IPv6 address")
    return normal


@lru_cache(maxsize=1 << 16)
def _normalise_other(text: str) -> str | None:
    """The canonical text, or None: a bad address is cached too (logs repeat theirs: "-", "unknown"),
    where a raised error is not, and ``ipaddress`` takes two of its own to refuse one."""
    try:
        return _normalised(text)
    except ValueError:
        return None


def _normalised(text: str) -> str:
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
        if SPEEDUPS is not None:  # (the common shape in C: a vendor's records have a timestamp each)
            plain: float | None = SPEEDUPS.plain_stamp(value)
            if plain is not None:
                return plain
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
    return "h:" + blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _missing(name: str) -> InvalidEvent:
    return InvalidEvent(f"missing field: {name}")


def _text_field(obj: Mapping[str, Any], name: str, limit: int, required: bool) -> str | None:
    value = obj.get(name)
    if value.__class__ is str and 0 < len(value) <= limit and not value.isspace():
        return value  # the common case, with the fewest checks
    if value is None:
        if required:
            raise _missing(name)
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
        raise _missing("timestamp")
    time = parse_timestamp(obj["timestamp"])
    outcome = obj.get("outcome")
    if outcome is None or outcome == "success":
        success = True
    elif isinstance(outcome, str) and outcome.lower() in ("success", "failure"):
        success = outcome.lower() == "success"
    else:
        raise InvalidEvent("bad outcome: must be success or failure")
    event_id = _text_field(obj, "event_id", limits.max_field_chars, False)
    if event_id is None:
        event_id = derive_event_id(user, ip, time, success)
    return SignIn(user, ip, time, event_id, success)


def decode_batch(raws: Sequence[bytes], limits: Limits = DEFAULT_LIMITS) -> list[SignIn | InvalidEvent]:
    """``decode_event`` for many records at once, with the same result for each, faster.

    The common record (every field a plain string or number, the timestamp ``YYYY-MM-DDTHH:MM:SS[.f]``
    with ``Z`` or a ``+HH:MM`` offset)
    is checked inline and such timestamps are parsed together (``_seconds``); anything else goes through
    ``decode_event`` itself, so the two cannot disagree on what is valid. Where the C module is built,
    it takes the lines of the plainest shape first and leaves the others to this (see _speedups.c)."""
    if SPEEDUPS is None:
        return _decode_batch(raws, limits)
    fast: list[Any] = SPEEDUPS.decode_canonical(
        raws if type(raws) is list else list(raws),
        limits.max_event_bytes,
        limits.max_user_chars,
        limits.max_field_chars,
        limits.max_depth,
        SignIn,
    )
    if all_signins(fast):  # every line decoded, each with its event id: the common batch
        return fast
    left = []
    for i, signin in enumerate(fast):
        if signin is None:
            left.append(i)
        elif signin[3] is None:  # (3: event_id) the record has none: derived, as decode_event does
            user, ip, when, _, success, _, _ = signin
            fast[i] = make(
                SignIn, user, ip, when, derive_event_id(user, ip, when, success), success, None, False
            )
    if left:
        for i, result in zip(left, _decode_batch([raws[i] for i in left], limits), strict=True):
            fast[i] = result
    return fast


def _decode_batch(raws: Sequence[bytes], limits: Limits) -> list[SignIn | InvalidEvent]:
    out: list[SignIn | InvalidEvent] = [_PENDING] * len(raws)
    stamps: list[str] = []  # without their zone
    offsets: list[int] = []  # the zone's offset from UTC in seconds
    waiting: list[tuple[int, str, str, str | None, bool]] = []
    max_bytes, max_depth, max_user, max_field = (
        limits.max_event_bytes,
        limits.max_depth,
        limits.max_user_chars,
        limits.max_field_chars,
    )
    loads, norm = orjson.loads, normalise_ip
    for i, raw in enumerate(raws):
        obj = None
        if len(raw) <= max_bytes:
            try:
                obj = loads(raw)
            except orjson.JSONDecodeError as exc:  # decode_event's error, without parsing it again
                out[i] = _not_json(raw, exc)
                continue
        if type(obj) is dict and (_flat(obj) or raw.count(b"{") + raw.count(b"[") <= max_depth):
            user, ip, ts = obj.get("user"), obj.get("ip"), obj.get("timestamp")
            if user is None:  # (another format's record, most often: event_from_mapping's first check,
                out[i] = _missing("user")  # without raising it: a raise cost a vendor record 2.5 us)
                continue
            eid, outcome = obj.get("event_id"), obj.get("outcome")
            if (
                type(user) is str
                and 0 < len(user) <= max_user
                and not user.isspace()
                and type(ip) is str
                and len(ip) <= 64
                and type(ts) is str
                and (offset := _plain_stamp(ts)) is not None
                and (eid is None or (type(eid) is str and 0 < len(eid) <= max_field and not eid.isspace()))
                and (outcome is None or outcome == "success" or outcome == "failure")
            ):
                try:
                    address = norm(ip)
                except ValueError:
                    address = ""
                if address:
                    stamps.append(ts[:-1] if ts[-1] == "Z" else ts[:-6])
                    offsets.append(offset)
                    waiting.append((i, user, address, eid, outcome != "failure"))
                    continue
            out[i] = _mapped(obj, limits)  # (parsed as parse_json would: decode_event less the parse)
            continue
        out[i] = _decode_one(raw, limits)
    if waiting:
        for (i, user, address, eid, success), t in zip(waiting, _seconds(stamps, offsets), strict=True):
            if t is None or not MIN_TIME <= t < MAX_TIME:
                out[i] = _decode_one(raws[i], limits)
            else:
                eid = eid if eid is not None else derive_event_id(user, address, t, success)
                out[i] = make(SignIn, user, address, t, eid, success, None, False)
    return out


_PENDING = InvalidEvent("not decoded")
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def _seconds(stamps: list[str], offsets: list[int]) -> list[float | None]:
    """Each ``_plain_stamp`` timestamp (without its zone; ``offsets``, the zone's) in epoch seconds, as
    ``parse_timestamp`` has it; None for one that is no date (30 February...). Without the C decoder,
    every line comes here: numpy's datetime64 over the batch. With it, only the few it leaves (a broken
    line of many): one at a time, as importing numpy took 70 ms."""
    if SPEEDUPS is None:
        import numpy as np

        try:
            batch = np.array(stamps, dtype="datetime64[us]").astype(np.int64)
            batch -= np.array(offsets, dtype=np.int64) * 1_000_000
            seconds: list[float | None] = (batch / 1e6).tolist()
            return seconds
        except ValueError:  # one of them is no date: each on its own
            pass
    out: list[float | None] = []
    for stamp, offset in zip(stamps, offsets, strict=True):
        try:
            micros: int = (datetime.fromisoformat(stamp) - _EPOCH) // _MICROSECOND
        except ValueError:
            out.append(None)
            continue
        out.append((micros - offset * 1_000_000) / 1e6)
    return out


def objects(raws: Sequence[bytes], max_bytes: int) -> Sequence[int]:
    """The positions of the inputs that may be canonical records: a JSON object, within the size limit.
    (In C where built: ``range(len(raws))`` when all of them may, the common batch.)"""
    if SPEEDUPS is not None and type(raws) is list:
        positions: Sequence[int] | None = SPEEDUPS.objects(raws, max_bytes)
        if positions is not None:
            return positions
    return [i for i, raw in enumerate(raws) if raw.startswith(b"{") and len(raw) <= max_bytes]


def all_signins(rows: Sequence[object]) -> bool:
    """Whether every one of ``rows`` is a SignIn with its event id: a batch decoded whole. (In C where
    built: this loop compiled, and the ``None not in rows`` it replaces, cost 290 and 160 instructions
    a line.)"""
    if SPEEDUPS is not None and type(rows) is list:
        return bool(SPEEDUPS.all_made(rows, SignIn, 3))
    for row in rows:
        fields: Any = row  # (compiled, a SignIn's event id is read as a str: None would raise)
        if type(row) is not SignIn or fields[3] is None:
            return False
    return True


def _flat(obj: dict[str, Any]) -> bool:
    """No value is an object or an array (so the record is one level deep, whatever max_depth): the
    common record, checked without counting its brackets."""
    for value in obj.values():  # (a loop: compiled, a generator here cost more than parsing the line)
        kind = type(value)
        if kind is dict or kind is list:
            return False
    return True


def _plain_stamp(ts: str) -> int | None:
    """The offset in seconds of ``YYYY-MM-DDTHH:MM:SS[.f]`` followed by ``Z`` or ``+HH:MM``/``-HH:MM``,
    or None for any other shape. Without its zone, such a timestamp is parsed by numpy's datetime64 or
    ``datetime.fromisoformat`` (``_seconds``) exactly as ``parse_timestamp`` parses it (they check the
    digits and the ranges; the range of years is ours)."""
    n = len(ts)
    if ts[-1:] == "Z":
        n -= 1
        offset = 0
    elif n >= 25 and ts[-3] == ":" and ts[-6] in "+-" and ts[-5:-3].isdigit() and ts[-2:].isdigit():
        hours, minutes = int(ts[-5:-3]), int(ts[-2:])
        if hours > 23 or minutes > 59:
            return None
        offset = (hours * 3600 + minutes * 60) * (1 if ts[-6] == "+" else -1)
        n -= 6
    else:
        return None
    if (
        (n == 19 or (21 <= n <= 31 and ts[19] == "."))
        and ts[10] == "T"
        and ts[4] == "-" == ts[7]
        and ts[13] == ":" == ts[16]
    ):
        return offset
    return None


def _decode_one(raw: bytes, limits: Limits) -> SignIn | InvalidEvent:
    try:
        return decode_event(raw, limits)
    except InvalidEvent as exc:
        return exc


def _mapped(obj: dict[str, Any], limits: Limits) -> SignIn | InvalidEvent:
    try:
        return event_from_mapping(obj, limits)
    except InvalidEvent as exc:
        return exc


def decode_event(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> SignIn:
    """One canonical JSON event (a line or a message value) -> ``SignIn``, or ``InvalidEvent``."""
    return event_from_mapping(parse_json(raw, limits), limits)


def encode_internal(s: SignIn) -> bytes:
    """A validated sign-in for the stream's internal repartition topic (compact, decoded without checks)."""
    v = s.vendor_location
    vendor = (
        None if v is None else [v.latitude, v.longitude, v.accuracy_radius_km, v.country, v.city, v.source]
    )
    return orjson.dumps([s.user, s.ip, s.time, s.event_id, s.success, vendor, s.proxy])


def decode_internal(raw: bytes) -> SignIn:
    user, ip, time, event_id, success, vendor, proxy = orjson.loads(raw)
    location = (
        None
        if vendor is None
        else Location(vendor[0], vendor[1], vendor[2], vendor[3], vendor[4], source=vendor[5])
    )
    return SignIn(user, ip, float(time), event_id, bool(success), location, bool(proxy))


# Characters that must never reach a terminal or a log line raw: the C0 and C1 controls and DEL (a
# forged newline fakes a log line, an escape sequence rewrites the screen), the line and paragraph
# separators, and the bidirectional controls that make text display other than it reads.
_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_UNSAFE.update(
    {c: f"\\u{c:04x}" for c in (0x061C, 0x200E, 0x200F, *range(0x2028, 0x202F), *range(0x2066, 0x206A))}
)
# The same characters as UTF-8 inside JSON text, where orjson escapes only the C0 controls.
_JSON_UNSAFE = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xd8\x9c|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]")


def printable(value: object, limit: int | None = None) -> str:
    """Text safe to show: control characters escaped as ``\\xNN`` (``\\uNNNN``), cut after ``limit``
    characters (marked with ``...``)."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text if text.isprintable() else text.translate(_UNSAFE)


def _json_escape(match: re.Match[bytes]) -> bytes:
    return f"\\u{ord(match.group().decode('utf-8')):04x}".encode()


def escape_json_controls(data: bytes) -> bytes:
    """orjson output with the controls it leaves raw (DEL, C1, separators, bidi) written as ``\\uNNNN``:
    the same JSON value, but safe to print. (In valid UTF-8 these byte sequences are only ever those
    characters, and in JSON text characters other than ASCII only occur inside strings.)"""
    if b"\xe2" in data or b"\xc2" in data or b"\xd8" in data or b"\x7f" in data:  # (their first bytes)
        return _JSON_UNSAFE.sub(_json_escape, data)
    return data  # (the regex's scan took 7 us an alert)


def reason_code(reason: str) -> str:
    """The fixed part of a reason (before any colon), fit for a metric label."""
    return reason.split(":", 1)[0]


# ---------------------------------------------------------------------------------------------------
# Output


@lru_cache(maxsize=1 << 14)
def truncate_ip(ip: str, ipv4_prefix: int = 32, ipv6_prefix: int = 128) -> str:
    """The network address of ``ip`` at the given prefix length (``203.0.113.7``, 24 -> ``203.0.113.0``;
    ``2001:db8:1:2::5``, 48 -> ``2001:db8:1::``): still an address, no longer a host."""
    addr = ipaddress.ip_address(ip)
    bits = ipv4_prefix if addr.version == 4 else ipv6_prefix
    if not 0 <= bits <= addr.max_prefixlen:
        raise ValueError(f"prefix length {bits} out of range for IPv{addr.version}")
    if bits == addr.max_prefixlen:
        return ip
    return str(ipaddress.ip_network((addr, bits), strict=False).network_address)


def _visit_dict(v: Visit, ipv4_prefix: int = 32, ipv6_prefix: int = 128) -> dict[str, Any]:
    loc: Location = v.location
    ip, prefix = v.ip, None
    if ipv4_prefix < 32 or ipv6_prefix < 128:
        v6 = ":" in ip
        if (ipv6_prefix < 128) if v6 else (ipv4_prefix < 32):
            ip, prefix = truncate_ip(ip, ipv4_prefix, ipv6_prefix), ipv6_prefix if v6 else ipv4_prefix
    out: dict[str, Any] = {
        "event_id": v.event_id,
        "ip": ip,
        "timestamp": utc_text(v.time),
        "latitude": loc.latitude,
        "longitude": loc.longitude,
        "accuracy_radius_km": loc.accuracy_radius_km,
        "country": loc.country,
        "city": loc.city,
        "location_source": loc.source,
    }
    if prefix is not None:
        out["ip_prefix"] = prefix  # the address was truncated to this many bits
    return out


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def alert_to_dict(alert: Alert, ipv4_prefix: int = 32, ipv6_prefix: int = 128) -> dict[str, Any]:
    """The alert as the JSON object of schemas/alert.schema.json; addresses truncated to the prefix
    lengths (settings ``alert_ipv4_prefix``, ``alert_ipv6_prefix``) when shorter than a host's."""
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
        "previous": _visit_dict(alert.previous, ipv4_prefix, ipv6_prefix),
        "current": _visit_dict(alert.current, ipv4_prefix, ipv6_prefix),
        "thresholds": {"max_speed_kmh": alert.max_speed_kmh, "min_distance_km": alert.min_distance_km},
        "geoip": {
            "database_type": db.database_type if db else None,
            "build_time": utc_text(db.build_epoch) if db else None,
        },
        "reasons": list(alert.reasons),
    }
    out.update(alert.extra)
    return out


def encode_alert(alert: Alert, ipv4_prefix: int = 32, ipv6_prefix: int = 128) -> bytes:
    """Compact JSON, no trailing newline, every control character escaped (see ``alert_to_dict`` for
    the prefixes)."""
    return escape_json_controls(orjson.dumps(alert_to_dict(alert, ipv4_prefix, ipv6_prefix)))

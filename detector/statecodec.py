"""Account state <-> bytes: the packed form of idle accounts in memory, and the changelog value.

Compact and self-contained but for one thing: a visit located by the GeoIP database is stored by its
address (plus a coarse copy of its coordinates), and located again when unpacked. A database update in
between therefore gives the new build's location, which is exactly what the engine does with visits
located by an older build; the coarse copy is used only when the database no longer knows the address.
Locations an identity provider supplied are stored whole.

Layout (little-endian), version 1::

    u8 version | str user | f64 newest | u8 n_visits | visit* | u8 n_recent | recent* | u8 n_alerted | alerted*

``newest`` is the newest event time the state holds (0 when none): what a TTL sweep reads without
unpacking.
    visit    = f64 time | ip | event_id | u8 flags | f32 lat | f32 lon | f32 radius
               [ if flags & VENDOR: f64 lat | f64 lon | f64 radius | str country | str city | str source ]
    ip       = u8 4 + 4 bytes (IPv4) | u8 0 + str (anything else)
    event_id = u8 n + n bytes (an even-length lower-case hex id of n < 128 bytes)
             | u8 255 + 16 bytes (a lower-case uuid with dashes) | u8 0 + str
    recent   = u8 0x80|k (the event id of visit k) | u8 0 str event_id
    alerted  = 16 bytes alert id | f64 lat1 lon1 lat2 lon2 | f64 time
    str      = u16 length | utf-8 bytes (surrogates escaped)
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from detector.model import SPEEDUPS, AccountState, Alerted, Location, Visit

VERSION = 1
VENDOR = 1  # the location came from the identity provider, stored whole
PROXY = 2  # the provider flagged the address as a proxy: the network counts as hosting

_VISIT = struct.Struct("<Bfff")
_EXACT = struct.Struct("<ddd")
_TIME = struct.Struct("<d")
_ALERTED = struct.Struct("<16sddddd")
_LEN = struct.Struct("<H")

Locate = Callable[[str], Location | None]


def _str(out: bytearray, text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    out += _LEN.pack(len(raw))
    out += raw


def _ip(out: bytearray, ip: str) -> None:
    try:
        raw = socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        out.append(0)
        _str(out, ip)
        return
    out.append(4)
    out += raw


_HEX = frozenset("0123456789abcdef")
_UUID = 255


def _is_uuid(eid: str) -> bool:
    return (
        len(eid) == 36
        and eid[8] == eid[13] == eid[18] == eid[23] == "-"
        and _HEX.issuperset(eid.replace("-", ""))
    )


def _event_id(out: bytearray, eid: str) -> None:
    """Hex ids (uuids, hashes: the common kinds) in half the bytes."""
    if _is_uuid(eid):
        out.append(_UUID)
        out += bytes.fromhex(eid.replace("-", ""))
        return
    if 0 < len(eid) <= 500 and len(eid) % 2 == 0 and _HEX.issuperset(eid):
        out.append(len(eid) // 2 if len(eid) < 256 else 0)
        if len(eid) < 256:
            out += bytes.fromhex(eid)
            return
    else:
        out.append(0)
    _str(out, eid)


def pack(user: str, state: AccountState) -> bytes:
    """The packed form of an account's state (in C where built, for the common states: GeoIP-located
    visits and no remembered alert; ``_pack``, its twin, writes the others)."""
    if SPEEDUPS is not None:
        packed: bytes | None = SPEEDUPS.pack_state(user, state)
        if packed is not None:
            return packed
    return _pack(user, state)


def pack_many(users: list[str], states: list[AccountState]) -> list[bytes]:
    """``pack`` of each pair (in C where built, each state fetched toward the cache a few ahead: the
    accounts a store packs are the least recently used, each of their objects a cache miss)."""
    if SPEEDUPS is None:
        return [pack(user, state) for user, state in zip(users, states, strict=True)]
    packed: list[bytes | None] = SPEEDUPS.pack_states(users, states)
    return [_pack(users[k], states[k]) if p is None else p for k, p in enumerate(packed)]


def _pack(user: str, state: AccountState) -> bytes:
    out = bytearray((VERSION,))
    _str(out, user)
    out += _TIME.pack(newest_time(state))
    out.append(len(state.visits))
    for v in state.visits:
        loc = v.location
        vendor = loc.source != "geoip"
        flags = (VENDOR if vendor else 0) | (PROXY if loc.network == "hosting" and loc.asn is None else 0)
        out += _TIME.pack(v.time)
        _ip(out, v.ip)
        _event_id(out, v.event_id)
        out += _VISIT.pack(flags, loc.latitude, loc.longitude, loc.accuracy_radius_km)
        if vendor:
            out += _EXACT.pack(loc.latitude, loc.longitude, loc.accuracy_radius_km)
            _str(out, loc.country or "")
            _str(out, loc.city or "")
            _str(out, loc.source)
    ids = {v.event_id: k for k, v in enumerate(state.visits)}
    out.append(len(state.recent_ids))
    for eid in state.recent_ids:
        if eid in ids:
            out.append(0x80 | ids[eid])
        else:
            out.append(0)
            _str(out, eid)
    out.append(len(state.alerted))
    for e in state.alerted:
        out += _ALERTED.pack(bytes.fromhex(e.alert_id), e.lat1, e.lon1, e.lat2, e.lon2, e.time)
    return bytes(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def text(self) -> str:
        (n,) = _LEN.unpack_from(self.data, self.pos)
        start = self.pos + 2
        self.pos = start + n
        return self.data[start : self.pos].decode("utf-8", "surrogatepass")

    def ip(self) -> str:
        if self.byte() == 4:
            self.pos += 4
            return socket.inet_ntop(socket.AF_INET, self.data[self.pos - 4 : self.pos])
        return self.text()

    def event_id(self) -> str:
        n = self.byte()
        if n == _UUID:
            self.pos += 16
            h = self.data[self.pos - 16 : self.pos].hex()
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        if n:
            self.pos += n
            return self.data[self.pos - n : self.pos].hex()
        return self.text()

    def take(self, s: struct.Struct) -> tuple[Any, ...]:
        values = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return values


def newest_time(state: AccountState) -> float:
    times = [v.time for v in state.visits[-1:]] + [e.time for e in state.alerted]
    return max(times) if times else 0.0


def newest_of(data: bytes) -> float:
    """The newest event time of a packed state, without unpacking it."""
    (n,) = _LEN.unpack_from(data, 1)
    (t,) = _TIME.unpack_from(data, 3 + n)
    return float(t)


def user_of(data: bytes) -> str:
    """The account a packed state belongs to."""
    r = _Reader(data)
    if r.byte() != VERSION:
        raise ValueError("unknown state version")
    return r.text()


def unpack(data: bytes, locate: Locate) -> tuple[str, AccountState]:
    """(account, state); visits located by the database are located again with ``locate``."""
    r = _Reader(data)
    if r.byte() != VERSION:
        raise ValueError("unknown state version")
    user = r.text()
    r.take(_TIME)
    visits = []
    for _ in range(r.byte()):
        (time,) = r.take(_TIME)
        ip = r.ip()
        eid = r.event_id()
        flags, lat, lon, radius = r.take(_VISIT)
        loc: Location | None
        if flags & VENDOR:
            lat, lon, radius = r.take(_EXACT)
            country, city, source = r.text(), r.text(), r.text()
            loc = Location(
                float(lat), float(lon), float(radius), country or None, city or None, source=source
            )
        else:
            loc = locate(ip) or Location(float(lat), float(lon), float(radius))
        if flags & PROXY and loc.network is None:
            loc = replace(loc, network="hosting")
        visits.append(Visit(eid, ip, float(time), loc))
    recent = []
    for _ in range(r.byte()):
        b = r.byte()
        recent.append(visits[b & 0x7F].event_id if b & 0x80 else r.text())
    alerted = []
    for _ in range(r.byte()):
        aid, lat1, lon1, lat2, lon2, time = r.take(_ALERTED)
        alerted.append(
            Alerted(bytes(aid).hex(), float(lat1), float(lon1), float(lat2), float(lon2), float(time))
        )
    return user, AccountState(tuple(visits), tuple(recent), tuple(alerted))

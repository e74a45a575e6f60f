"""The detector's data: plain, immutable values shared by every layer.

Times are event times in epoch seconds (UTC) as floats: exact to the microsecond for any date this
detector accepts, and what the batched numpy arithmetic wants. ``utc_text`` and ``to_datetime`` give
the timezone-aware forms for output.

The values made once per event or per stored sign-in (``SignIn``, ``Visit``, ``AccountState``,
``Alerted``) are named tuples: as immutable as a frozen dataclass and about three times cheaper to
create, which is a measurable share of the hot path. On that path they are made with
``make(Cls, *every field, in order)``: a named tuple's own ``__new__`` is Python code, which costs more
than the tuple itself. The rarer ones are frozen, slotted dataclasses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

try:  # hashlib's blake2b itself, without hashlib: importing hashlib loads OpenSSL (4 ms of every start)
    from _blake2 import blake2b
except ImportError:  # (a Python without the module: hashlib's, whichever it has)
    from hashlib import blake2b  # noqa: F401 (used by codec, rules and geoindex)


def _speedups() -> Any:
    """detector/_speedups.c where `make setup` built it, else None (its Python twins then run)."""
    try:
        return importlib.import_module("detector._speedups")
    except ImportError:
        return None


SPEEDUPS = _speedups()


def _make(cls: type, *fields: Any) -> Any:
    return tuple.__new__(cls, fields)


# ``make(Cls, *fields)``: a named tuple from all its fields in order, as ``tuple.__new__(Cls, fields)``
# makes it (in C where built: a fifth of the cost, for the one or two each sign-in makes).
make: Callable[..., Any] = SPEEDUPS.make if SPEEDUPS is not None else _make

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(epoch_s: float) -> datetime:
    """Epoch seconds -> aware UTC datetime, rounded to the microsecond (no float artefacts)."""
    return _EPOCH + timedelta(microseconds=round(epoch_s * 1_000_000))


# The date of each day met (days since the epoch -> "YYYY-MM-DD"), bounded.
_DAYS: dict[int, str] = {}


def _utc_text(epoch_s: float) -> str:
    """RFC 3339 text in UTC with ``Z``; fractional seconds only when there are any: the instant
    ``to_datetime`` gives, written from its day (a datetime's ``strftime`` for each day, kept) and the
    seconds within it (strftime for every call took 5 us, six calls an alert and one a normalised line)."""
    micros = round(epoch_s * 1_000_000)
    seconds, fraction = divmod(micros, 1_000_000)
    day, second = divmod(seconds, 86_400)
    date = _DAYS.get(day)
    if date is None:
        if len(_DAYS) >= 4096:
            _DAYS.clear()
        date = _DAYS[day] = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
    text = f"{date}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
    if fraction:
        text += f".{fraction:06d}".rstrip("0")
    return text + "Z"


# ``utc_text(epoch_s)``: in C where built, for 1970 to 9999 (0.3 us where the Python takes 2).
if SPEEDUPS is not None:
    _UTC_TEXT: Callable[[float], str | None] = SPEEDUPS.utc_text

    def utc_text(epoch_s: float) -> str:
        return _UTC_TEXT(epoch_s) or _utc_text(epoch_s)

else:
    utc_text = _utc_text


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    """Which GeoIP database located an address: its type and build time (epoch seconds)."""

    database_type: str
    build_epoch: int
    path: str = ""


@dataclass(frozen=True, slots=True)
class Location:
    """Where an address is, as a circle: centre and accuracy radius.

    ``coarse`` marks a low-confidence fix: no city (a country-level fix: the point is the country's
    centre), or a radius so large that the point says little. ``source`` is "geoip" or the vendor that
    supplied the coordinates. ``asn``/``asn_org``/``network`` come from the optional ASN database;
    ``network`` names a configured kind of network (hosting, satellite, mobile) or is None.
    """

    latitude: float
    longitude: float
    accuracy_radius_km: float
    country: str | None = None
    city: str | None = None
    coarse: bool = False
    database: DatabaseInfo | None = None
    source: str = "geoip"
    asn: int | None = None
    asn_org: str | None = None
    network: str | None = None
    # Identity of the place for history and repeat logic (see rules.place_key); computed once, as
    # locations are shared by every address of a database network.
    place: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.place:
            object.__setattr__(
                self, "place", place_key(self.latitude, self.longitude, self.country, self.city)
            )

    @property
    def country_level(self) -> bool:
        """Only the country is known (no city): the point is a country centre, not the place."""
        return self.city is None and self.country is not None

    @property
    def label(self) -> str:
        """A short human name: "London, GB", "GB (country-level)", or coordinates."""
        if self.city and self.country:
            return f"{self.city}, {self.country}"
        if self.country:
            return f"{self.country} (country-level)" if self.coarse else self.country
        return f"{self.latitude:.2f},{self.longitude:.2f}"


def _place_key(latitude: float, longitude: float, country: str | None, city: str | None) -> str:
    return f"{country or '?'}|{city or ''}|{latitude:.0f},{longitude:.0f}"


# ``place_key(latitude, longitude, country, city)``: ``Location.place``, country, city and the centre to
# a degree (in C where built: 1.0 us where the f-string takes 1.5, for every place GeoIP meets).
place_key: Callable[[float, float, str | None, str | None], str] = (
    SPEEDUPS.place_key if SPEEDUPS is not None else _place_key
)


def _make_slotted(cls: type, slots: tuple[Any, ...], *values: Any) -> Any:
    if len(values) != len(slots):
        raise TypeError("make_slotted(cls, slots, *values): a value for each slot")
    obj: Any = object.__new__(cls)
    for slot, value in zip(slots, values, strict=True):
        slot.__set__(obj, value)
    return obj


# ``make_slotted(Cls, slots, *values)``: an object of a slotted class with each slot (its descriptor)
# set to its value, ``__init__`` not run. For ``new_location``: the frozen dataclass's ``__init__`` sets
# each field through ``object.__setattr__`` (about 6 us an object; GeoIP makes one for every place it
# meets), and one Python call of each slot's ``__set__`` still cost 15,000 instructions an object.
# Only for frozen classes: the C one leaves the object to the cyclic garbage collector only when one of
# its values might lead back to it (as ``make`` does for tuples), so its slots must never be set again.
make_slotted: Callable[..., Any] = SPEEDUPS.make_slotted if SPEEDUPS is not None else _make_slotted
LOCATION_SLOTS = tuple(getattr(Location, name) for name in Location.__slots__)  # (in field order)
_DATABASE_SLOTS = tuple(getattr(DatabaseInfo, name) for name in DatabaseInfo.__slots__)


def new_database_info(database_type: str, build_epoch: int, path: str) -> DatabaseInfo:
    """``DatabaseInfo(...)``, built as ``new_location`` builds a Location: so that the Locations that
    hold it are, like it, left alone by the cyclic garbage collector (see ``make_slotted``)."""
    return make_slotted(DatabaseInfo, _DATABASE_SLOTS, database_type, build_epoch, path)


def new_location(
    latitude: float,
    longitude: float,
    accuracy_radius_km: float,
    country: str | None,
    city: str | None,
    coarse: bool,
    database: DatabaseInfo | None,
) -> Location:
    """``Location(...)`` of a GeoIP fix (source "geoip", no ASN): the same object, built faster."""
    place = place_key(latitude, longitude, country, city)
    return make_slotted(
        Location, LOCATION_SLOTS, latitude, longitude, accuracy_radius_km, country, city, coarse, database,
        "geoip", None, None, None, place,
    )  # fmt: skip


class SignIn(NamedTuple):
    """One canonical sign-in event, validated: normalised IP, UTC epoch time, a stable event id."""

    user: str
    ip: str
    time: float
    event_id: str
    success: bool = True
    # Coordinates the identity provider itself reported, if any (used only when configured and the
    # GeoIP database has no location for the address).
    vendor_location: Location | None = None
    # The identity provider flagged the address as a proxy or anonymiser.
    proxy: bool = False

    @property
    def timestamp(self) -> datetime:
        return to_datetime(self.time)


class Visit(NamedTuple):
    """A located sign-in as remembered in an account's history."""

    event_id: str
    ip: str
    time: float
    location: Location


class Alerted(NamedTuple):
    """An alert remembered by its account: its id, both places, and the later sign-in's event time."""

    alert_id: str
    lat1: float
    lon1: float
    lat2: float
    lon2: float
    time: float


class AccountState(NamedTuple):
    """What the detector remembers of one account.

    ``visits``: recent located successful sign-ins, oldest first, at most the policy's history size.
    ``recent_ids``: event ids already evaluated, newest last, so that a re-delivery is not evaluated twice.
    ``alerted``: recent alerts: the same alert is never raised twice, and a repeat of a pair of places (a
    VPN flipping between two exits) stays quiet for a while.
    """

    visits: tuple[Visit, ...] = ()
    recent_ids: tuple[str, ...] = ()
    alerted: tuple[Alerted, ...] = ()

    @property
    def last(self) -> Visit | None:
        return self.visits[-1] if self.visits else None


@dataclass(frozen=True, slots=True)
class Alert:
    """An impossible-travel finding between two located sign-ins of one account (``previous`` is the
    earlier in event time)."""

    alert_id: str
    user: str
    detected_at: float
    severity: str
    confidence: str
    distance_km: float
    net_distance_km: float
    elapsed_s: float
    speed_kmh: float | None
    net_speed_kmh: float | None
    previous: Visit
    current: Visit
    max_speed_kmh: float
    min_distance_km: float
    reasons: tuple[str, ...] = ()
    late: bool = False
    rule: str = "impossible_travel"
    extra: dict[str, object] = field(default_factory=dict)


_ALERT_SLOTS = tuple(getattr(Alert, name) for name in Alert.__slots__)  # (in field order)


def new_alert(
    alert_id: str,
    user: str,
    detected_at: float,
    severity: str,
    confidence: str,
    distance_km: float,
    net_distance_km: float,
    elapsed_s: float,
    speed_kmh: float | None,
    net_speed_kmh: float | None,
    previous: Visit,
    current: Visit,
    max_speed_kmh: float,
    min_distance_km: float,
    reasons: tuple[str, ...],
    late: bool,
) -> Alert:
    """``Alert(...)`` of the impossible-travel rule, with no extra fields, built as ``new_location`` builds
    a Location: the frozen dataclass's ``__init__`` took 5 us an alert, this 0.5."""
    return make_slotted(
        Alert, _ALERT_SLOTS, alert_id, user, detected_at, severity, confidence, distance_km,
        net_distance_km, elapsed_s, speed_kmh, net_speed_kmh, previous, current, max_speed_kmh,
        min_distance_km, reasons, late, "impossible_travel", {},
    )  # fmt: skip

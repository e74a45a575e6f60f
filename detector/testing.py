"""Test doubles shipped with the package: a fake clock, a small City database builder, in-memory sinks.

``build_city_db`` needs the ``mmdb-writer`` package (a dev extra); nothing else here has dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1_709_251_200.0) -> None:  # 2024-03-01T00:00:00Z
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Place:
    """One network of a test database and where it is."""

    network: str
    latitude: float | None
    longitude: float | None
    radius_km: int | None
    country: str | None
    city: str | None

    def record(self, layout: str = "geoip2") -> dict[str, Any]:
        if layout == "flat":
            out: dict[str, Any] = {"country_code": self.country or "", "city": self.city or ""}
            if self.latitude is not None:
                out.update(latitude=_f64(self.latitude), longitude=_f64(self.longitude or 0.0))
            return out
        rec: dict[str, Any] = {}
        if self.country:
            rec["country"] = {"iso_code": self.country, "names": {"en": self.country}}
        if self.city:
            rec["city"] = {"names": {"en": self.city}}
        if self.latitude is not None:
            loc: dict[str, Any] = {"latitude": _f64(self.latitude), "longitude": _f64(self.longitude or 0.0)}
            if self.radius_km is not None:
                loc["accuracy_radius"] = self.radius_km
            rec["location"] = loc
        return rec


def _f64(value: float) -> Any:
    from mmdb_writer import MmdbF64

    return MmdbF64(value)


# Real cities at their real coordinates, on documentation-free public networks.
PLACES: tuple[Place, ...] = (
    Place("81.2.69.0/24", 51.5074, -0.1278, 10, "GB", "London"),
    Place("81.2.70.0/24", 51.4543, -0.9781, 20, "GB", "Reading"),  # 58 km from London
    Place("4.7.5.0/24", 40.7128, -74.0060, 20, "US", "New York"),
    Place("2.16.117.0/24", 48.8566, 2.3522, 20, "FR", "Paris"),
    Place("2.200.0.0/16", 52.5200, 13.4050, 5, "DE", "Berlin"),
    Place("1.21.128.0/24", 35.6762, 139.6503, 50, "JP", "Tokyo"),
    Place("1.42.0.0/22", -33.8688, 151.2093, 20, "AU", "Sydney"),
    Place("5.6.7.0/24", 52.3676, 4.9041, 10, "NL", "Amsterdam"),
    Place("8.8.0.0/16", 37.751, -97.822, 1000, "US", None),  # country-level fix: the US centre
    Place("9.9.9.0/24", 47.0, 8.0, None, "CH", "Lucerne"),  # no accuracy radius in the record
    Place("11.0.0.0/8", None, None, None, "US", None),  # known network, no coordinates
    Place("2a02:c7f::/32", 51.5074, -0.1278, 10, "GB", "London"),
    Place("2600:1700::/28", 40.7128, -74.0060, 20, "US", "New York"),
)


def _writer(database_type: str, description: str, ip_version: int = 6) -> Any:
    """An empty MaxMind DB writer: an IPv6 tree with IPv4 mapped in, as the real databases (or an
    IPv4-only tree, as the ip-location-db packages' IPv4 files)."""
    from mmdb_writer import MMDBWriter

    return MMDBWriter(
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type=database_type,
        languages=["en"],
        description=description,
    )


def build_city_db(
    path: str,
    places: Iterable[Place] = PLACES,
    database_type: str = "GeoLite2-City",
    layout: str = "geoip2",
    extra: Mapping[str, dict[str, Any]] | None = None,
    ip_version: int = 6,
) -> str:
    """Write a small MaxMind DB (IPv6 tree, IPv4 mapped in; with ``ip_version`` 4, an IPv4 tree and
    the IPv4 places only) that the real reader opens."""
    from netaddr import IPSet

    writer = _writer(database_type, "impossible-travel test database", ip_version)
    if ip_version == 4:
        places = [place for place in places if ":" not in place.network]
    for place in places:
        writer.insert_network(IPSet([place.network]), place.record(layout))
    for network, record in (extra or {}).items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(path)
    return path


def ip_in(network: str, host: int = 10) -> str:
    """An address inside a network of ``PLACES``."""
    import ipaddress

    return str(ipaddress.ip_network(network)[host])


def build_asn_db(
    path: str, networks: Mapping[str, tuple[int, str]], database_type: str = "GeoLite2-ASN"
) -> str:
    """A small ASN database in the GeoLite2-ASN layout (also DB-IP ASN Lite's)."""
    from netaddr import IPSet

    writer = _writer(database_type, "impossible-travel test ASN database")
    for network, (number, org) in networks.items():
        writer.insert_network(
            IPSet([network]), {"autonomous_system_number": number, "autonomous_system_organization": org}
        )
    writer.to_db_file(path)
    return path

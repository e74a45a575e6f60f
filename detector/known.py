"""Known networks and travel exceptions: an optional ASN database with lists of network kinds, and a
file of per-account travel exceptions reloaded when it changes.

ASN database: GeoLite2-ASN, or DB-IP ASN Lite / ip-location-db ASN in MaxMind format (the same
``autonomous_system_number`` / ``autonomous_system_organization`` fields). Each configured kind
(hosting, satellite, mobile) is a list of AS numbers; what a kind does to an alert is the policy's
business (``rules.Policy.network_actions``).

Exceptions file, CSV with a header line, one exception per line::

    account,until,countries
    alice@agency.example,2024-06-30T00:00:00Z,US CA
    bob@agency.example,2024-05-01T00:00:00Z,

``until`` is RFC 3339 (or epoch seconds); ``countries`` is optional, ISO codes separated by spaces or
semicolons (empty = anywhere).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from typing import Any

from detector.codec import parse_timestamp
from detector.errors import ConfigError, GeoDatabaseError, InvalidEvent
from detector.rules import TravelException

# Starting points, not authorities: well-known AS numbers. Extend or replace them in the settings.
DEFAULT_HOSTING_ASNS = (
    16509,
    14618,  # Amazon
    15169,
    396982,  # Google, Google Cloud
    8075,  # Microsoft
    14061,  # DigitalOcean
    16276,  # OVH
    24940,  # Hetzner
    63949,  # Linode (Akamai)
    20473,  # Vultr (Choopa)
    9009,  # M247
    60068,
    212238,  # Datacamp (CDN77)
    13335,  # Cloudflare (WARP)
)
DEFAULT_SATELLITE_ASNS = (
    14593,  # SpaceX Starlink
    7155,  # Viasat
    6621,  # Hughes Network Systems
)


def stat_key(path: str) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten (None when it is missing)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class AsnDatabase:
    """AS number and organisation of an address, cached by address."""

    def __init__(
        self, path: str, kinds: Mapping[str, Iterable[int]] | None = None, cache_size: int = 262_144
    ):
        if not os.path.isfile(path):
            raise GeoDatabaseError(f"ASN database not found: {path}")
        import maxminddb  # (here: 40 ms to import, and most runs have no ASN database)

        try:
            self._reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
            raise GeoDatabaseError(f"not a MaxMind DB file: {path}: {exc}") from exc
        db_type = str(self._reader.metadata().database_type)
        if "asn" not in db_type.lower():
            self._reader.close()
            raise GeoDatabaseError(
                f"not an ASN database: {path} is of type {db_type!r}; use GeoLite2-ASN or DB-IP ASN"
            )
        self.path = path
        self.database_type = db_type
        self.kind_of: dict[int, str] = {}
        for kind, numbers in (kinds or {}).items():
            for number in numbers:
                self.kind_of[int(number)] = kind
        self.cache_size = cache_size
        self._cache: dict[str, tuple[int | None, str | None]] = {}

    def lookup(self, ip: str) -> tuple[int | None, str | None, str | None]:
        """(AS number, organisation, configured kind) of an address; Nones when unknown."""
        found = self._cache.get(ip)
        if found is None:
            record = self._reader.get(ip)
            number = record.get("autonomous_system_number") if isinstance(record, dict) else None
            org = record.get("autonomous_system_organization") if isinstance(record, dict) else None
            found = (int(number) if isinstance(number, int) else None, org if isinstance(org, str) else None)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[ip] = found
        number, org = found
        return number, org, self.kind_of.get(number) if number is not None else None

    def close(self) -> None:
        self._reader.close()


def parse_exceptions(text: str, source: str) -> dict[str, tuple[TravelException, ...]]:
    """Exceptions from CSV text; a bad line is refused with its line number (the file is not half-used)."""
    import csv  # (here: most runs have no exceptions file)

    out: dict[str, list[TravelException]] = {}
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"account", "until"} <= {f.strip() for f in reader.fieldnames}:
        raise ConfigError(
            "exceptions_file", f"{source}: the first line must be the header account,until,countries"
        )
    for number, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        account = row.get("account", "")
        if not account:
            raise ConfigError("exceptions_file", f"{source}:{number}: no account")
        until_text: Any = row.get("until", "")
        try:
            until = parse_timestamp(
                float(until_text) if until_text.replace(".", "", 1).isdigit() else until_text
            )
        except InvalidEvent as exc:
            raise ConfigError("exceptions_file", f"{source}:{number}: until: {exc.reason}") from None
        countries = frozenset(c.upper() for c in row.get("countries", "").replace(";", " ").split() if c)
        out.setdefault(account, []).append(TravelException(until, countries))
    return {k: tuple(v) for k, v in out.items()}


class ExceptionsFile:
    """The exceptions file, re-read when it changes (a broken edit keeps the previous version)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._key = stat_key(path)
        if self._key is None:
            raise ConfigError("exceptions_file", f"file not found: {path}")
        self.exceptions = self._read()

    def _read(self) -> dict[str, tuple[TravelException, ...]]:
        with open(self.path, encoding="utf-8") as fh:
            return parse_exceptions(fh.read(), self.path)

    def reload_if_changed(self) -> bool:
        """True when the file changed and its new content was taken; raises ConfigError if it is broken."""
        key = stat_key(self.path)
        if key is None or key == self._key:
            return False
        self._key = key
        self.exceptions = self._read()
        return True

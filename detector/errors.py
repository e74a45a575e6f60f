"""Every error the detector raises on purpose derives from one root.

    DetectorError
    ├── ConfigError          a setting is invalid or missing (names the key)
    ├── InvalidEvent         an input record is not a valid sign-in (carries a short reason)
    │   └── UnreadableRecord the record is no JSON the detector reads, whatever format it was meant in
    ├── GeoDatabaseError     the GeoIP database is missing, unreadable or of the wrong kind
    ├── SourceError          an input file cannot be opened or read
    └── BrokerError          Kafka cannot be reached or refused us (keeps the client's error as cause)

Third-party errors are wrapped where they cross into our code, keeping the original as ``__cause__``.
"""

from __future__ import annotations


class DetectorError(Exception):
    """Root of the detector's own errors."""


class ConfigError(DetectorError):
    """A setting is invalid; ``key`` names it as the user wrote it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class InvalidEvent(DetectorError):
    """An input record is not a valid sign-in event; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnreadableRecord(InvalidEvent):
    """Empty, not UTF-8, bad JSON, too large or too deep (``codec.parse_json``): no format reads it."""


class GeoDatabaseError(DetectorError):
    """The GeoIP database cannot be used."""


class SourceError(DetectorError):
    """An input cannot be opened or read."""


class BrokerError(DetectorError):
    """Kafka is unreachable or refused a request."""

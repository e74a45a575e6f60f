"""Any other JSON source, through a mapping of dotted paths (a ``[mapping]`` table in the config file):

[mapping]
user = "auth.principal"
ip = "src.addr"
timestamp = "ts"
timestamp_format = "epoch_ms"   # rfc3339 (default; numbers are epoch seconds/ms), epoch_s, epoch_ms,
                                # or a strptime pattern such as "%d/%b/%Y:%H:%M:%S %z"
outcome = "auth.result"         # optional; absent = success
success_values = ["ok", "accepted"]
event_id = "request_id"         # optional
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from detector.errors import ConfigError, InvalidEvent
from detector.formats.base import Options, build, path
from detector.model import SignIn


@dataclass(frozen=True)
class FieldMapping:
    user: str
    ip: str
    timestamp: str
    timestamp_format: str = "rfc3339"
    outcome: str = ""
    success_values: tuple[str, ...] = ("success",)
    event_id: str = ""

    @classmethod
    def from_settings(cls, settings: Any) -> FieldMapping | None:
        if not (settings.mapping_user or settings.mapping_ip or settings.mapping_timestamp):
            return None
        for key in ("mapping_user", "mapping_ip", "mapping_timestamp"):
            if not getattr(settings, key):
                raise ConfigError(key, "a mapping needs user, ip and timestamp paths")
        fmt = settings.mapping_timestamp_format
        if fmt not in ("rfc3339", "epoch_s", "epoch_ms") and "%" not in fmt:
            raise ConfigError(
                "mapping_timestamp_format", f"{fmt!r}: use rfc3339, epoch_s, epoch_ms or a strptime pattern"
            )
        return cls(
            settings.mapping_user,
            settings.mapping_ip,
            settings.mapping_timestamp,
            fmt,
            settings.mapping_outcome,
            tuple(v.lower() for v in settings.mapping_success_values),
            settings.mapping_event_id,
        )

    def matches(self, record: Mapping[str, Any]) -> bool:
        return all(path(record, p) is not None for p in (self.user, self.ip, self.timestamp))

    def time(self, value: Any) -> Any:
        fmt = self.timestamp_format
        if fmt == "rfc3339":
            return value
        if fmt in ("epoch_s", "epoch_ms"):
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                raise InvalidEvent(f"bad timestamp: not {fmt}") from None
            return seconds / 1000 if fmt == "epoch_ms" else seconds
        try:
            dt = datetime.strptime(str(value), fmt)
        except ValueError:
            raise InvalidEvent(f"bad timestamp: does not match {fmt}") from None
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()

    def __call__(self, record: Mapping[str, Any], options: Options) -> list[SignIn]:
        success = True
        if self.outcome:
            success = str(path(record, self.outcome, "")).lower() in self.success_values
        return [
            build(
                path(record, self.user),
                path(record, self.ip),
                self.time(path(record, self.timestamp)),
                success,
                path(record, self.event_id) if self.event_id else None,
                options,
                self.user,
                self.ip,
                self.timestamp,
            )
        ]

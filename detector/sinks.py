"""File sinks for replay: alerts and rejects as JSON Lines (a path, or '-' for stdout; rejects may go
to '-' for stderr in `normalize`)."""

from __future__ import annotations

import sys
from typing import IO

import orjson

from detector.codec import encode_alert, escape_json_controls
from detector.errors import SourceError
from detector.model import Alert, SignIn, utc_text

RAW_KEEP = 1024


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdout.buffer
    try:
        return open(path, "wb")
    except OSError as exc:
        raise SourceError(f"cannot write {path}: {exc.strerror}") from None


class AlertFile:
    """One compact JSON alert per line; addresses truncated to ``ipv4_prefix``/``ipv6_prefix`` bits
    (settings ``alert_ipv4_prefix``, ``alert_ipv6_prefix``)."""

    def __init__(self, path: str, ipv4_prefix: int = 32, ipv6_prefix: int = 128) -> None:
        self.path = path
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self._fh = _open(path)
        self.written = 0

    def write(self, alerts: list[Alert]) -> None:
        if alerts:
            v4, v6 = self.ipv4_prefix, self.ipv6_prefix
            self._fh.write(b"".join(encode_alert(a, v4, v6) + b"\n" for a in alerts))
            self.written += len(alerts)
            if self.path == "-":
                self._fh.flush()

    def close(self) -> None:
        if self.path == "-":
            self._fh.flush()
        else:
            self._fh.close()


def raw_text(raw: bytes) -> str:
    """The first KiB of a rejected input as text (bytes that are not UTF-8 shown as \\x escapes)."""
    return raw[:RAW_KEEP].decode("utf-8", "backslashreplace")


class RejectsFile:
    """``{"file": ..., "line": N, "reason": "...", "raw": "<first 1 KiB>"}`` per rejected line
    (``"record": i`` added for the i-th record of a line or document holding several).

    ``raw`` is the input as it came (accounts and addresses included, whatever the privacy settings):
    the file is for whoever may read the input. Control characters are JSON-escaped, so printing the
    file (``normalize`` writes it to stderr by default) shows them as ``\\u...`` escapes."""

    def __init__(self, path: str, stream: IO[bytes] | None = None) -> None:
        self.path = "-" if stream is not None else path
        self._fh = stream if stream is not None else (_open(path) if path else None)
        self.written = 0

    def write(self, origin: str, line: int, reason: str, raw: bytes, record_index: int | None = None) -> None:
        """One rejected record; ``record_index`` is its place inside a line or document of several."""
        self.written += 1
        if self._fh is not None:
            record: dict[str, object] = {"file": origin, "line": line, "reason": reason, "raw": raw_text(raw)}
            if record_index:
                record["record"] = record_index
            self._fh.write(escape_json_controls(orjson.dumps(record)) + b"\n")

    def close(self) -> None:
        if self._fh is not None and self.path != "-":
            self._fh.close()
        elif self._fh is not None:
            self._fh.flush()


def signin_to_dict(s: SignIn) -> dict[str, object]:
    """A sign-in as a canonical event (schemas/signin-event.schema.json), for `normalize`."""
    out: dict[str, object] = {
        "user": s.user,
        "ip": s.ip,
        "timestamp": utc_text(s.time),
        "event_id": s.event_id,
        "outcome": "success" if s.success else "failure",
    }
    v = s.vendor_location
    if v is not None:
        out["vendor_location"] = {
            "latitude": v.latitude,
            "longitude": v.longitude,
            "country": v.country,
            "city": v.city,
            "source": v.source,
        }
    if s.proxy:
        out["proxy"] = True
    return out

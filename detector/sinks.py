"""File sinks for replay: alerts and rejects as JSON Lines (a path, or '-' for stdout)."""

from __future__ import annotations

import sys
from typing import IO

import orjson

from detector.codec import encode_alert
from detector.errors import SourceError
from detector.model import Alert

RAW_KEEP = 1024


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdout.buffer
    try:
        return open(path, "wb")
    except OSError as exc:
        raise SourceError(f"cannot write {path}: {exc.strerror}") from None


class AlertFile:
    """One compact JSON alert per line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh = _open(path)
        self.written = 0

    def write(self, alerts: list[Alert]) -> None:
        if alerts:
            self._fh.write(b"".join(encode_alert(a) + b"\n" for a in alerts))
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
    """``{"file": ..., "line": N, "reason": "...", "raw": "<first 1 KiB>"}`` per rejected line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh = _open(path) if path else None
        self.written = 0

    def write(self, origin: str, line: int, reason: str, raw: bytes) -> None:
        self.written += 1
        if self._fh is not None:
            record = {"file": origin, "line": line, "reason": reason, "raw": raw_text(raw)}
            self._fh.write(orjson.dumps(record) + b"\n")

    def close(self) -> None:
        if self._fh is not None and self.path != "-":
            self._fh.close()
        elif self._fh is not None:
            self._fh.flush()

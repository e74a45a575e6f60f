"""Logging set-up: one line per event of note, as text or JSON.

Untrusted text (account IDs, reasons quoting input, exception messages) is escaped so that control
characters never reach a terminal or a log file raw: a forged newline cannot fake a log line, an escape
sequence cannot rewrite the screen. In text lines a value with a space, a quote or an ``=`` is quoted, so
that it cannot fake a ``key=value`` field either.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from detector.codec import escape_json_controls, printable


def safe(value: object) -> str:
    """Text with control characters escaped (``\\x0a``, ``\\x1b``, ``\\u2028`` ...)."""
    return printable(value)


def _field(value: object) -> str:
    """A ``key=value`` value: escaped, and quoted when it holds a space, a quote or an ``=``."""
    text = printable(value)
    if text and not any(c in text for c in ' "='):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def _traceback(text: str) -> str:
    """A traceback keeps its line breaks; everything else in it is escaped."""
    return "\n".join(printable(line) for line in text.split("\n"))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{stamp}Z {record.levelname.lower():7s} {record.name}: {safe(record.getMessage())}"
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={_field(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + _traceback(self.formatException(record.exc_info))
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(
                {
                    k: v if isinstance(v, int | float | bool) or v is None else str(v)
                    for k, v in fields.items()
                }
            )
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # orjson escapes the C0 controls inside strings; DEL, C1, separators and bidi controls too here.
        return escape_json_controls(orjson.dumps(out, default=str)).decode()


class _OneLineForLibraries(logging.Filter):
    """The Kafka client logs tracebacks for errors it handles itself (a socket closed at shutdown, a
    broker gone away): keep its one-line message, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("detector"):
            if record.exc_info:
                exc = record.exc_info[1]
                record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
                record.args = None
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_OneLineForLibraries())
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Kafka client is chatty at INFO; its warnings and errors still come through.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))


def event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event of note with structured fields."""
    logger.log(level, message, extra={"fields": fields})

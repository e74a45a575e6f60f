"""Files -> sign-ins: lines (or whole documents) through the format normalizer, rejects with reasons.

Shared by ``replay``, ``tune`` and ``normalize``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, cast

from detector.codec import Limits, all_signins
from detector.config import ConfigError
from detector.errors import InvalidEvent
from detector.formats import FieldMapping, Normalizer, Options, SyslogClock
from detector.identity import AccountIds
from detector.model import SignIn
from detector.sinks import RejectsFile
from detector.sources import Line, LineRun


def limits_from(settings: Any) -> Limits:
    return Limits(
        max_event_bytes=settings.max_event_bytes,
        max_depth=settings.max_depth,
        max_user_chars=settings.max_user_chars,
    )


def normalizer_from(settings: Any, fmt: str | None = None) -> Normalizer:
    """The normalizer for one input format (``settings.format`` unless given), with the account
    normalisation and pseudonymisation of ``settings`` applied to every sign-in it gives."""
    fmt = fmt or settings.format
    accounts = AccountIds.from_settings(settings)
    if "=" in fmt:
        raise ConfigError("--format", "topic=format pairs are for `run`; give one format")
    try:
        return Normalizer(
            fmt,
            Options(limits_from(settings), settings.vendor_radius_km),
            FieldMapping.from_settings(settings),
            max_batch_bytes=settings.max_batch_bytes,
            accounts=accounts,
        )
    except ValueError as exc:
        raise ConfigError("--format", str(exc)) from None


class Ingest:
    """Decodes chunks of ``Line``s; every record becomes sign-ins or a reject with its reason."""

    def __init__(self, settings: Any, rejects: RejectsFile, clock: Any = time.time) -> None:
        self.settings = settings
        self.rejects = rejects
        self.clock = clock
        self.normalizer = normalizer_from(settings)
        self.limits = self.normalizer.limits
        self._origin: str | None = None
        self.assumptions: dict[str, str] = {}  # file -> what BSD syslog timestamps were taken to mean
        self.lines = 0
        self.records = 0

    def _file_changed(self, origin: str) -> None:
        self._record_assumption()
        self._origin = origin
        try:
            mtime: float | None = os.stat(origin).st_mtime if origin != "<stdin>" else None
        except OSError:
            mtime = None
        s = self.settings
        self.normalizer.syslog = SyslogClock.make(
            s.syslog_year or None, s.syslog_timezone, mtime, self.clock()
        )

    def _record_assumption(self) -> None:
        clock = self.normalizer.syslog
        if self._origin is not None and clock is not None and clock.used:
            why = (
                "given"
                if self.settings.syslog_year
                else ("the file's modification year" if self._origin != "<stdin>" else "the current year")
            )
            self.assumptions[self._origin] = (
                f"{clock.describe()} ({why}; set --syslog-year and --syslog-timezone)"
            )

    def finish(self) -> None:
        self._record_assumption()

    def decode(self, lines: Sequence[Line | LineRun]) -> tuple[list[SignIn], list[str]]:
        """Sign-ins of a chunk of lines (``Line``s, or runs of ordinary ones: ``LineReader.runs``), and the
        reasons of what was rejected (already written)."""
        batch: list[SignIn] = []
        reasons: list[str] = []
        start = 0
        while start < len(lines):  # a run of lines from one file at a time (its syslog clock)
            item = lines[start]
            origin = item.origin
            if origin != self._origin:
                self._file_changed(origin)
            if isinstance(item, LineRun):
                self._decode_raws(item, batch, reasons)
                start += 1
                continue
            end = start
            while end < len(lines) and isinstance(lines[end], Line) and lines[end].origin == origin:
                end += 1
            self._decode_run(cast("Sequence[Line]", lines[start:end]), batch, reasons)
            start = end
        return batch, reasons

    def _decode_raws(self, run: LineRun, batch: list[SignIn], reasons: list[str]) -> None:
        """``_decode_run`` of a run of ordinary lines, without a ``Line`` for each but those it rejects."""
        quick, rejected = self.normalizer.triage(run.raws)
        self.lines += len(quick)
        if all_signins(quick):  # every line one valid canonical record
            self.records += len(quick)
            batch += quick  # type: ignore[arg-type]
            return
        for k, signin in enumerate(quick):
            if signin is not None:
                self.records += 1
                batch.append(signin)
            elif k in rejected:
                self._reject(Line(run.origin, run.first + k, run.raws[k]), rejected[k], reasons)
            else:
                self._decode_slow(Line(run.origin, run.first + k, run.raws[k]), batch, reasons)

    def _decode_run(self, lines: Sequence[Line], batch: list[SignIn], reasons: list[str]) -> None:
        ordinary = [line for line in lines if not line.too_long and not line.document]
        quick, rejected = self.normalizer.triage([line.raw for line in ordinary])
        self.lines += len(lines)
        if len(ordinary) == len(lines) and all_signins(quick):  # every line one valid canonical record
            self.records += len(lines)
            batch += quick  # type: ignore[arg-type]
            return
        k = -1  # (the place of each ordinary line in ``quick``)
        for line in lines:
            if not line.too_long and not line.document:
                k += 1
                signin = quick[k]
                if signin is not None:  # the common case: one valid canonical record
                    self.records += 1
                    batch.append(signin)
                    continue
                if k in rejected:
                    self._reject(line, rejected[k], reasons)
                    continue
            self._decode_slow(line, batch, reasons)

    def _reject(self, line: Line, error: InvalidEvent, reasons: list[str]) -> None:
        """A line that ``Normalizer.triage`` rejected: as ``_decode_slow`` would have it."""
        self.records += 1
        self.rejects.write(line.origin, line.number, error.reason, line.raw, 0)
        reasons.append(error.reason)

    def _decode_slow(self, line: Line, batch: list[SignIn], reasons: list[str]) -> None:
        """A line that is not one valid canonical record: over-long, a document, another format, or bad."""
        normalizer, rejects = self.normalizer, self.rejects
        if line.too_long:
            limit = max(normalizer.limits.max_event_bytes, normalizer.max_batch_bytes)
            reason = f"too large: line of {line.length} bytes > {limit}"
            rejects.write(line.origin, line.number, reason, line.raw)
            reasons.append(reason)
            return
        for outcome in normalizer.records(line.raw, line.document):
            self.records += 1
            if outcome.error is None:
                batch.extend(outcome.signins)
            else:
                reason = outcome.error.reason
                rejects.write(line.origin, line.number, reason, outcome.raw or line.raw, outcome.index)
                reasons.append(reason)

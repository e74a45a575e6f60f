"""Native sign-in formats -> canonical ``SignIn``.

``Normalizer.records(raw)`` takes one line (replay), one message (Kafka) or one whole document (a
pretty-printed file), unwraps vendor pages (``{"value": [...]}``, ``{"records": [...]}``,
``{"Records": [...]}``, ``{"items": [...]}``, JSON arrays), detects the format of each record (unless
one is fixed) and yields, per record, either its sign-ins or the ``InvalidEvent`` that says why it has
none. Formats:

    canonical   schemas/signin-event.schema.json
    entra       Microsoft Entra ID: Graph signIn resources and Azure Monitor / Event Hub records
    okta        Okta System Log
    cloudtrail  AWS CloudTrail ConsoleLogin
    gworkspace  Google Workspace login activities
    sshd        OpenSSH server syslog lines
    mapping     any JSON, through configured dotted paths
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from detector.codec import (
    Limits,
    all_signins,
    decode_batch,
    event_from_mapping,
    objects,
    parse_json,
    printable,
)
from detector.errors import InvalidEvent, UnreadableRecord
from detector.formats.base import NotASignIn, Options
from detector.formats.cloudtrail import cloudtrail, is_cloudtrail
from detector.formats.entra import entra, is_graph, is_monitor
from detector.formats.gworkspace import gworkspace, is_gworkspace
from detector.formats.mapping import FieldMapping
from detector.formats.okta import is_okta, okta
from detector.formats.sshd import SyslogClock, looks_like_syslog, sshd
from detector.identity import AccountIds
from detector.model import SignIn

FORMATS = ("auto", "canonical", "entra", "okta", "cloudtrail", "gworkspace", "sshd", "mapping")
WRAPPERS = ("value", "records", "Records", "items")
# A reason quotes at most this much of the input (a field name, an event type...), escaped.
MAX_REASON_CHARS = 300

__all__ = ["FORMATS", "FieldMapping", "Normalizer", "NotASignIn", "Options", "Outcome", "SyslogClock"]


@dataclass
class Outcome:
    """One record's result: its sign-ins, or why it has none; ``index`` within its line or message."""

    index: int
    signins: list[SignIn] = field(default_factory=list)
    error: InvalidEvent | None = None
    raw: bytes = b""


def _canonical(record: Mapping[str, Any], options: Options) -> list[SignIn]:
    return [event_from_mapping(record, options.limits)]


def _is_canonical(record: Mapping[str, Any]) -> bool:
    return "user" in record and "ip" in record and "timestamp" in record


def _is_canonical_object(doc: Any) -> bool:
    return type(doc) is dict and _is_canonical(doc)


# ``_records`` before it has parsed the line.
_UNREAD = object()


def _clean(error: InvalidEvent) -> InvalidEvent:
    """The error with a reason safe for logs, headers and terminals: a reason may quote the input (an
    event type, a program name, field names), so control characters are escaped and its length bounded."""
    reason = error.reason
    if len(reason) > MAX_REASON_CHARS or not reason.isprintable():
        error.reason = printable(reason, MAX_REASON_CHARS)
        error.args = (error.reason,)
    return error


class Normalizer:
    """Turns lines, messages and documents of any supported format into sign-ins.

    Every sign-in leaves through ``accounts`` (account normalisation and pseudonymisation, see
    ``detector.identity``), and every reason is escaped: the one choke point for all commands."""

    def __init__(
        self,
        fmt: str = "auto",
        options: Options | None = None,
        mapping: FieldMapping | None = None,
        syslog: SyslogClock | None = None,
        max_batch_bytes: int = 16 << 20,
        accounts: AccountIds | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        if fmt == "mapping" and mapping is None:
            raise ValueError("the mapping format needs a [mapping] section")
        self.fmt = fmt
        self.options = options or Options()
        self.mapping = mapping
        self.syslog = syslog
        self.max_batch_bytes = max_batch_bytes
        self.accounts = accounts if accounts is not None and accounts.active else None
        self._fixed: dict[str, Callable[[Mapping[str, Any], Options], list[SignIn]]] = {
            "canonical": _canonical,
            "entra": entra,
            "okta": okta,
            "cloudtrail": cloudtrail,
            "gworkspace": gworkspace,
        }
        if mapping is not None:
            self._fixed["mapping"] = mapping

    @property
    def limits(self) -> Limits:
        return self.options.limits

    # -- detection -------------------------------------------------------------------------------

    def detect(self, record: Mapping[str, Any]) -> str | None:
        """The format of one record, by its fields (first match wins; canonical first)."""
        if _is_canonical(record):
            return "canonical"
        if is_monitor(record) or is_graph(record):
            return "entra"
        if is_okta(record):
            return "okta"
        if is_cloudtrail(record):
            return "cloudtrail"
        if is_gworkspace(record):
            return "gworkspace"
        if self.mapping is not None and self.mapping.matches(record):
            return "mapping"
        if "user" in record or "ip" in record or "timestamp" in record:
            return "canonical"  # a canonical event with fields missing: say which
        return None

    def record(self, record: Any) -> list[SignIn]:
        """The sign-ins of one parsed record (raises ``InvalidEvent``/``NotASignIn``)."""
        try:
            signins = self._record(record)
        except InvalidEvent as exc:
            raise _clean(exc) from None
        return self.accounts.apply(signins) if self.accounts is not None else signins

    def _record(self, record: Any, detected: str | None = None) -> list[SignIn]:
        """``detected``: the record's format where the caller has detected it already."""
        if not isinstance(record, dict):
            raise InvalidEvent(f"not an object: {type(record).__name__}")
        fmt = self.fmt if self.fmt not in ("auto", "sshd") else detected or self.detect(record)
        if fmt is None:
            keys = ", ".join(printable(k, 40) for k in sorted(record)[:6])
            raise InvalidEvent(f"unknown format: no known sign-in fields (keys: {keys})")
        try:
            return self._fixed[fmt](record, self.options)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as exc:
            # A field of a type or shape the adapter did not foresee: a reject with the reason, never a
            # crash (the fuzz test looks for these; each is fixed in its adapter when found).
            raise InvalidEvent(f"unreadable record: {fmt}, {type(exc).__name__}") from None

    def _finish(self, outcome: Outcome) -> Outcome:
        """The last step of every record: its sign-ins' accounts transformed, or its reason escaped."""
        if outcome.error is not None:
            _clean(outcome.error)
        elif self.accounts is not None and outcome.signins:
            outcome.signins = self.accounts.apply(outcome.signins)
        return outcome

    # -- lines, messages, documents --------------------------------------------------------------

    def many(self, raws: Sequence[bytes]) -> list[list[Outcome]]:
        """``records`` for many lines or messages: canonical ones decoded as one batch
        (``codec.decode_batch``), the others one by one. One list of outcomes per input, in order."""
        quick, rejected = self.triage(raws)
        return [
            [Outcome(0, [signin], raw=raw)]
            if signin is not None
            else [Outcome(0, error=rejected[i], raw=raw)]
            if i in rejected
            else list(self.records(raw))
            for i, (raw, signin) in enumerate(zip(raws, quick, strict=True))
        ]

    def quick(self, raws: Sequence[bytes]) -> list[SignIn | None]:
        """The sign-in of each input that is one (``triage``); None for any other input, which
        ``records`` must take."""
        return self.triage(raws)[0]

    def triage(self, raws: Sequence[bytes]) -> tuple[list[SignIn | None], dict[int, InvalidEvent]]:
        """The sign-in of each input that is one valid canonical record, decoded as one batch
        (``codec.decode_batch``), or one record of another format (``_settle``); None for the others.
        And, by position, those of the others that ``records`` would reject, with its reason: neither
        these nor the sign-ins need ``records`` (a broken line costs one more parse, not three)."""
        limits = self.limits
        out: list[SignIn | None] = [None] * len(raws)
        if self.fmt not in ("auto", "canonical"):
            return out, {}
        quick = objects(raws, limits.max_event_bytes)
        decoded = decode_batch(raws if len(quick) == len(raws) else [raws[i] for i in quick], limits)
        if len(decoded) == len(raws) and all_signins(decoded):  # all valid: the common case
            valid = cast("list[SignIn]", decoded)
            return cast(
                "list[SignIn | None]", valid if self.accounts is None else self.accounts.apply(valid)
            ), {}
        found, rejected = [], {}
        for i, result in zip(quick, decoded, strict=True):
            if not isinstance(result, InvalidEvent):
                found.append((i, result))
                continue
            settled = self._settle(raws[i], result)
            if isinstance(settled, InvalidEvent):
                rejected[i] = _clean(settled)
            elif settled is not None:
                found.append((i, settled))
        signins = [result for _, result in found]
        if self.accounts is not None:
            signins = self.accounts.apply(signins)
        for (i, _), signin in zip(found, signins, strict=True):
            out[i] = signin
        return out, rejected

    def _settle(self, raw: bytes, error: InvalidEvent) -> SignIn | InvalidEvent | None:
        """What ``records`` makes of a line (one that starts with "{", within the size limit) that
        ``decode_event`` refused with ``error``, where that is one sign-in or one reject: the same
        error when the line is no JSON (``parse_json``, which decode_event ran, refuses it again) or one
        canonical record (its fields are no other format's); the sign-in, or the reject, of one record
        of another format (an Entra or Okta export: as ``_records`` has it, less three parses and a
        raised error). None for the rest (a page of records, a record of no known format...)."""
        if isinstance(error, UnreadableRecord):  # (parse_json's, which records would run again)
            return error
        try:
            doc = parse_json(raw, self.limits)
        except InvalidEvent:
            return error
        if _is_canonical_object(doc):
            return error
        fmt = self.detect(doc) if self.fmt == "auto" and type(doc) is dict else None
        if fmt is None or fmt == "canonical":
            return None
        try:
            signins = self._record(doc, fmt)  # (what _records does with a record that is no page)
        except InvalidEvent as exc:
            return exc
        return signins[0] if len(signins) == 1 else None

    def records(self, raw: bytes, document: bool = False) -> Iterator[Outcome]:
        """One ``Outcome`` per record in a line, a message, or (``document``) a whole file."""
        for outcome in self._records(raw, document):
            yield self._finish(outcome)

    def _records(self, raw: bytes, document: bool) -> Iterator[Outcome]:
        limits = self.limits
        doc: Any = _UNREAD
        if (
            self.fmt in ("auto", "canonical")
            and not document
            and raw[:1] == b"{"
            and len(raw) <= limits.max_event_bytes
        ):
            # The common case first: one canonical event, valid or not (see ``_settle``).
            try:
                doc = parse_json(raw, limits)
                outcome = Outcome(0, self._record(doc), raw=raw) if _is_canonical_object(doc) else None
            except InvalidEvent as exc:
                outcome = Outcome(0, error=exc, raw=raw)
            if outcome is not None:
                yield outcome
                return
            # another format, or a page of records: the general path says which
        head = raw.lstrip()[:1]
        if head not in (b"{", b"[") and self.fmt in ("auto", "sshd") and head:
            yield self._text(raw)
            return
        big = len(raw) > limits.max_event_bytes
        try:
            if big:
                if not document and len(raw) > self.max_batch_bytes:
                    raise InvalidEvent(f"too large: {len(raw)} bytes > {self.max_batch_bytes}")
                doc = parse_json(
                    raw, Limits(len(raw), limits.max_depth, limits.max_user_chars, limits.max_field_chars)
                )
            elif doc is _UNREAD:
                doc = parse_json(raw, limits)
        except InvalidEvent as exc:
            yield Outcome(0, error=exc, raw=raw)
            return
        items = self._unwrap(doc)
        if items is None:
            if big:
                yield Outcome(
                    0, error=InvalidEvent(f"too large: {len(raw)} bytes > {limits.max_event_bytes}"), raw=raw
                )
                return
            items = [doc]
            wrapped = False
        else:
            wrapped = True
        for index, item in enumerate(items):
            item_raw = raw if not wrapped else b""
            try:
                if wrapped:
                    item_raw = orjson.dumps(item)
                    if len(item_raw) > limits.max_event_bytes:
                        raise InvalidEvent(
                            f"too large: record of {len(item_raw)} bytes > {limits.max_event_bytes}"
                        )
                yield Outcome(index, self._record(item), raw=item_raw)
            except InvalidEvent as exc:
                yield Outcome(index, error=exc, raw=item_raw)

    def _unwrap(self, doc: Any) -> list[Any] | None:
        """The records of a vendor page (a list of objects, or an object holding one under a wrapper
        key), or None when ``doc`` is not a page."""
        if isinstance(doc, list):
            if not doc or not all(isinstance(item, dict) for item in doc):
                return None
            out: list[Any] = []
            for item in doc:
                inner = self._unwrap(item)
                out.extend(inner if inner is not None else [item])
            return out
        if isinstance(doc, dict) and not _is_canonical(doc) and self.detect(doc) is None:
            lists = [k for k in WRAPPERS if isinstance(doc.get(k), list)]
            if len(lists) == 1 and all(isinstance(item, dict) for item in doc[lists[0]]):
                return list(doc[lists[0]]) or None
        return None

    def _text(self, raw: bytes) -> Outcome:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Outcome(0, error=InvalidEvent("not UTF-8"), raw=raw)
        if len(raw) > self.limits.max_event_bytes:
            return Outcome(
                0, error=InvalidEvent(f"too large: {len(raw)} bytes > {self.limits.max_event_bytes}"), raw=raw
            )
        if self.fmt == "sshd" or looks_like_syslog(line):
            if self.syslog is None:
                self.syslog = SyslogClock.make(None, "UTC", None, time.time())
            clock = self.syslog
            try:
                return Outcome(0, sshd(line.rstrip("\r\n"), self.options, clock), raw=raw)
            except InvalidEvent as exc:
                return Outcome(0, error=exc, raw=raw)
        try:
            parse_json(raw, self.limits)
        except InvalidEvent as exc:
            return Outcome(0, error=exc, raw=raw)
        return Outcome(0, error=InvalidEvent("bad JSON: not an object"), raw=raw)

"""OpenSSH server log lines (syslog / auth.log).

``Accepted <method> for USER from IP port N ...`` is a successful sign-in, ``Failed <method> for
[invalid user ]USER from IP port N ...`` a failed one; the program may be ``sshd`` or (OpenSSH 9.8+)
``sshd-session``. Other sshd messages and other programs' lines are not sign-ins.

Timestamps are either RFC 3339 (rsyslog's high-precision format) or BSD syslog ``Mar  1 10:00:00``,
which has no year and no zone: those come from ``SyslogClock`` (the options ``syslog_year`` and
``syslog_timezone``; by default the year the file was last modified and UTC). A BSD date that would lie
more than a day after the file was last written belongs to the year before (a log spanning New Year).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from detector.errors import ConfigError, InvalidEvent
from detector.formats.base import NotASignIn, Options, build
from detector.model import SignIn

_LINE = re.compile(
    r"^(?:<\d+>)?(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)"
    r"|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)\s+(?P<host>\S+)\s+(?P<prog>[\w./-]+?)(?:\[\d+\])?:\s?(?P<msg>.*)$"
)
_ACCEPTED = re.compile(r"^Accepted (?P<method>\S+) for (?P<user>.+?) from (?P<ip>\S+) port \d+")
_FAILED = re.compile(
    r"^Failed (?P<method>\S+) for (?:invalid user (?P<invalid>.*?)|(?P<user>.+?)) from (?P<ip>\S+) port \d+"
)
SSHD = {"sshd", "sshd-session"}


@dataclass
class SyslogClock:
    """The year and zone of BSD syslog timestamps, and the newest date a line may have. ``used`` tells
    whether any BSD timestamp needed them (so that the assumption can be reported)."""

    year: int
    zone: ZoneInfo
    not_after: float | None = None  # the file's modification time
    used: bool = False

    @classmethod
    def make(cls, year: int | None, zone: str, mtime: float | None, now: float) -> SyslogClock:
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError("syslog_timezone", f"unknown time zone {zone!r}") from None
        reference = mtime if mtime is not None else now
        return cls(year or datetime.fromtimestamp(reference, tz).year, tz, None if year else reference)

    def describe(self) -> str:
        return f"year {self.year} and zone {self.zone.key}"

    def bsd(self, text: str) -> float:
        self.used = True
        try:
            dt = datetime.strptime(f"{self.year} {text}", "%Y %b %d %H:%M:%S").replace(tzinfo=self.zone)
        except ValueError:
            raise InvalidEvent("bad timestamp: impossible date") from None
        if self.not_after is not None and dt.timestamp() > self.not_after + 86400:
            dt = dt.replace(year=dt.year - 1)
        return dt.timestamp()


def looks_like_syslog(line: str) -> bool:
    return _LINE.match(line) is not None


def sshd(line: str, options: Options, clock: SyslogClock) -> list[SignIn]:
    m = _LINE.match(line)
    if not m:
        raise InvalidEvent("bad syslog line: no timestamp, host and program")
    program = m.group("prog")
    if program not in SSHD:
        raise NotASignIn(f"{program} line")
    msg = m.group("msg")
    found = _ACCEPTED.match(msg)
    success = found is not None
    found = found or _FAILED.match(msg)
    if not found:
        raise NotASignIn(f"sshd: {msg.split(' ', 2)[0] if msg else 'empty'} message")
    ts = m.group("ts")
    when: float | str = clock.bsd(ts) if ts[0].isalpha() else ts.replace(" ", "T", 1)
    user = found.group("user") if success or found.group("invalid") is None else found.group("invalid")
    return [build(user, found.group("ip"), when, success, None, options, "user", "ip", "timestamp")]


__all__ = ["SyslogClock", "looks_like_syslog", "sshd"]

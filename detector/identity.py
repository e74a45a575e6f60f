"""Account identity: one person is one account (normalisation), and who it is stays private
(pseudonymisation).

Every sign-in passes ``AccountIds.apply`` right after it is decoded (in ``formats.Normalizer``, the one
choke point of replay, normalize, tune and the Kafka ``run``), so the account state, the changelog, the
repartition topic, alerts and logs only ever see what it returns:

- ``account_normalize``: ``off`` keeps the ID as given; ``trim`` strips surrounding white space;
  ``email`` also case-folds IDs shaped like e-mail addresses (``name@domain.tld``), which identity
  providers compare without case. Other IDs (``DOMAIN\\user``, Unix user names, AWS ARNs) keep their case:
  for them case may tell two accounts apart.
- ``pseudonymize_key`` (or ``pseudonymize_key_file``): the normalised ID is replaced by
  ``p:`` + the first 32 hex digits (128 bits) of HMAC-SHA256(key, ID). Stable for a key, so detection
  works exactly as on the raw IDs; without the key nobody can tell whose it is, nor test a guess. With
  the key an analyst re-identifies an alert's account: ``python -m detector pseudonym ACCOUNT...``.

An event id the detector derived itself (``h:`` + 32 hex digits, a hash of account, address, time and
outcome; see ``codec.derive_event_id``) would let anyone test a guessed account against an alert, so under
pseudonymisation it is replaced by a keyed hash of that same id: ``k:`` + 32 hex digits. It is still
computed from the original content, so re-deliveries of one sign-in keep one id.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from detector.errors import ConfigError
from detector.model import SignIn

MODES = ("off", "trim", "email")
MIN_KEY_BYTES = 16
PSEUDONYM_PREFIX = "p:"
KEYED_ID_PREFIX = "k:"
CACHE_SIZE = 1 << 16

# name@domain.tld: one @, no white space, no path or ARN separators in the name, a dotted domain.
_EMAIL = re.compile(r"[^@\s/\\:]+@[\w-]+(?:\.[\w-]+)+")
_DERIVED_ID = re.compile(r"h:[0-9a-f]{32}")


def looks_like_email(account: str) -> bool:
    return _EMAIL.fullmatch(account) is not None


def normalise_account(account: str, mode: str) -> str:
    """The account as ``mode`` (off, trim, email) makes it; never empty for an account the codec accepts
    (it refuses IDs that are only white space)."""
    if mode == "off":
        return account
    account = account.strip()
    if mode == "email" and looks_like_email(account):
        return account.casefold()
    return account


def _hmac32(key: bytes, message: bytes) -> str:
    """The first 32 hex digits of HMAC-SHA256 (OpenSSL's one-shot, about a microsecond)."""
    import hmac  # (here: it loads OpenSSL, 4 ms of every start, and most runs pseudonymise nothing)

    return hmac.digest(key, message, "sha256").hex()[:32]


class AccountIds:
    """The transform of account IDs (and of derived event ids) that every decoded sign-in goes through.

    ``active`` is False when it changes nothing (the default), and then it is not called at all."""

    def __init__(self, normalize: str = "off", key: bytes | None = None) -> None:
        if normalize not in MODES:
            raise ConfigError("account_normalize", f"{normalize!r}: use one of {', '.join(MODES)}")
        if key is not None and len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                "pseudonymize_key",
                f"too short: {len(key)} bytes; use at least {MIN_KEY_BYTES} (32 random bytes recommended)",
            )
        self.normalize = normalize
        self._key = key
        # Accounts recur: the answer for the recent ones is kept (the key is in memory anyway, so this
        # exposes nothing new to whoever can read the process's memory).
        self._cache: dict[str, str] = {}

    @property
    def active(self) -> bool:
        return self.normalize != "off" or self._key is not None

    @classmethod
    def from_settings(cls, settings: Any) -> AccountIds:
        return cls(getattr(settings, "account_normalize", "off") or "off", key_from(settings))

    def account(self, account: str) -> str:
        """What the detector stores, logs and publishes for ``account``."""
        found = self._cache.get(account)
        if found is None:
            found = normalise_account(account, self.normalize)
            if self._key is not None:
                found = PSEUDONYM_PREFIX + _hmac32(self._key, found.encode("utf-8", "surrogatepass"))
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[account] = found
        return found

    def event_id(self, event_id: str) -> str:
        """A derived (``h:``) event id keyed under pseudonymisation; any other id as it is."""
        if self._key is None or _DERIVED_ID.fullmatch(event_id) is None:
            return event_id
        return KEYED_ID_PREFIX + _hmac32(self._key, b"event_id\x1f" + event_id.encode("ascii"))

    def apply(self, signins: Sequence[SignIn]) -> list[SignIn]:
        """The sign-ins with the account (and a derived event id) transformed."""
        out = []
        for s in signins:
            user = self.account(s.user)
            event_id = s.event_id
            if self._key is not None and event_id.startswith("h:"):
                # Derived from the original account (by codec, or upstream by `normalize`), then keyed:
                # the same sign-in delivered twice keeps one id, and the id says nothing about the account.
                event_id = self.event_id(event_id)
            if user != s.user or event_id is not s.event_id:
                s = SignIn(user, s.ip, s.time, event_id, s.success, s.vendor_location, s.proxy)
            out.append(s)
        return out


def key_from(settings: Any) -> bytes | None:
    """The pseudonymisation key from ``pseudonymize_key`` or the file ``pseudonymize_key_file`` (not
    both); None when neither is set. A file's trailing newline is not part of the key."""
    text = getattr(settings, "pseudonymize_key", "") or ""
    path = getattr(settings, "pseudonymize_key_file", "") or ""
    if text and path:
        raise ConfigError(
            "pseudonymize_key", "give either pseudonymize_key or pseudonymize_key_file, not both"
        )
    if path:
        try:
            with open(path, "rb") as fh:
                key = fh.read(1 << 16)
        except OSError as exc:
            raise ConfigError("pseudonymize_key_file", f"cannot read {path}: {exc.strerror}") from None
        key = key.rstrip(b"\r\n")
        if not key:
            raise ConfigError("pseudonymize_key_file", f"{path} is empty")
        return key
    return text.encode("utf-8") if text else None


__all__ = ["AccountIds", "key_from", "looks_like_email", "normalise_account"]

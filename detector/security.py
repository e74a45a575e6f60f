"""Kafka client security (TLS and SASL) from settings, and TLS for the metrics server.

Secrets (``sasl_password``, ``ssl_password``) go to the client and to the broker only: never into a log
line, an error message or ``--print-config`` (``config.describe`` masks them).

The Kafka client retries a refused password or an untrusted certificate until its start-up timeout and
then reports only that no broker answered. So before the first client connects, ``kafka_security``
checks the configuration once against the brokers itself (``check_broker``: a TLS handshake with the
same context, then the SASL exchange) and turns a definite refusal into a one-line ``BrokerError`` that
says what is wrong, e.g. "Kafka at host:9094 refused the credentials for user alice (SCRAM-SHA-512)" or
"the TLS certificate of the broker at host:9094 is not trusted by ssl_cafile /etc/ca.pem". A broker
that cannot be reached is left to the client, which reports it as before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any

from detector import logs
from detector.errors import BrokerError, ConfigError

log = logging.getLogger("detector.security")

__all__ = [
    "check_broker",
    "client_tls_context",
    "explain_security_error",
    "kafka_security",
    "server_tls_context",
]

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def _readable(key: str, path: str) -> str:
    if not os.path.isfile(path):
        raise ConfigError(key, f"file not found: {path}")
    if not os.access(path, os.R_OK):
        raise ConfigError(key, f"file not readable: {path}")
    return path


# -- TLS contexts ---------------------------------------------------------------------------------


def _load_chain(
    context: ssl.SSLContext, certfile: str, keyfile: str, password: str, keys: tuple[str, str, str]
) -> None:
    """Load a certificate and its key, refusing bad files with the name of the setting at fault."""
    cert_key, key_key, password_key = keys
    _readable(cert_key, certfile)
    _readable(key_key, keyfile)
    # A callback, never None: without one OpenSSL would prompt on the terminal for an encrypted key.
    secret = password.encode()
    try:
        context.load_cert_chain(certfile, keyfile, password=lambda: secret)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "MISMATCH" in reason.upper():
            raise ConfigError(key_key, f"{keyfile} is not the key of {cert_key} {certfile}") from None
        if _encrypted(keyfile):
            why = "wrong" if password else "missing"
            raise ConfigError(
                password_key, f"cannot decrypt {key_key} {keyfile}: {why} {password_key}"
            ) from None
        raise ConfigError(
            cert_key, f"{certfile} and {keyfile} are not a PEM certificate and key ({reason})"
        ) from None


def _encrypted(keyfile: str) -> bool:
    try:
        with open(keyfile, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    return b"ENCRYPTED" in head


def client_tls_context(settings: Any) -> ssl.SSLContext:
    """The TLS context of every Kafka client: the broker's certificate checked against ``ssl_cafile``
    (else the system's CAs) and, unless ``ssl_check_hostname`` is off, against the broker's host name;
    a client certificate for mutual TLS when ``ssl_certfile`` is set."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = bool(settings.ssl_check_hostname)
    context.verify_mode = ssl.CERT_REQUIRED
    if settings.ssl_cafile:
        try:
            context.load_verify_locations(cafile=_readable("ssl_cafile", settings.ssl_cafile))
        except ssl.SSLError as exc:
            raise ConfigError(
                "ssl_cafile", f"{settings.ssl_cafile} holds no PEM certificate ({exc.reason or exc})"
            ) from None
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if settings.ssl_certfile or settings.ssl_keyfile:
        if not (settings.ssl_certfile and settings.ssl_keyfile):
            missing = "ssl_keyfile" if settings.ssl_certfile else "ssl_certfile"
            raise ConfigError(missing, "a client certificate needs both ssl_certfile and ssl_keyfile")
        _load_chain(
            context,
            settings.ssl_certfile,
            settings.ssl_keyfile,
            settings.ssl_password,
            ("ssl_certfile", "ssl_keyfile", "ssl_password"),
        )
    return context


def server_tls_context(
    certfile: str, keyfile: str, keys: tuple[str, str] = ("metrics_tls_certfile", "metrics_tls_keyfile")
) -> ssl.SSLContext | None:
    """A server context for HTTPS from a certificate and key (PEM), or None when neither is set; one
    without the other is a ``ConfigError`` naming the missing setting."""
    if not certfile and not keyfile:
        return None
    if not (certfile and keyfile):
        missing = keys[1] if certfile else keys[0]
        raise ConfigError(missing, f"HTTPS needs both {keys[0]} and {keys[1]}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, certfile, keyfile, "", (*keys, keys[1]))
    return context


# -- options for kafka-python ---------------------------------------------------------------------

_checked: set[tuple[Any, ...]] = set()
_checked_lock = threading.Lock()


def kafka_security(settings: Any, check: bool = True) -> dict[str, Any]:
    """kafka-python options for ``security_protocol``; refuses incomplete settings with the key's name.

    With TLS or SASL the first call for a configuration (in this process) also checks it against the
    brokers (``check_broker``), so that a wrong password or an untrusted certificate stops the start with
    a clear message instead of a time-out."""
    protocol = settings.security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in TLS_PROTOCOLS:
        options["ssl_context"] = client_tls_context(settings)
        options["ssl_check_hostname"] = bool(settings.ssl_check_hostname)
    if protocol in SASL_PROTOCOLS:
        if not settings.sasl_username:
            raise ConfigError("sasl_username", f"{protocol} needs sasl_username and sasl_password")
        if not settings.sasl_password:
            raise ConfigError("sasl_password", f"{protocol} needs sasl_username and sasl_password")
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    if check and protocol != "PLAINTEXT":
        key = tuple(
            getattr(settings, k, None)
            for k in (
                "bootstrap_servers",
                "security_protocol",
                "ssl_cafile",
                "ssl_certfile",
                "ssl_keyfile",
                "ssl_password",
                "ssl_check_hostname",
                "sasl_mechanism",
                "sasl_username",
                "sasl_password",
            )
        )
        with _checked_lock:
            if key not in _checked:
                check_broker(settings, options.get("ssl_context"))
                _checked.add(key)
    return options


# -- checking the configuration against a broker ---------------------------------------------------

# Kafka's error codes that the check tells apart (see org.apache.kafka.common.protocol.Errors).
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58
_SASL_HANDSHAKE, _SASL_AUTHENTICATE = 17, 36
_MAX_RESPONSE = 1 << 20  # the check's responses are small; a bigger one is not Kafka talking


class _Inconclusive(Exception):
    """The check could not tell (the broker is unreachable or hung up): leave it to the client."""


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for entry in bootstrap.split(","):
        host, _, port = entry.strip().rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


def check_broker(
    settings: Any, context: ssl.SSLContext | None = None, timeout_s: float | None = None
) -> None:
    """Connect to the first bootstrap server that answers as the clients will (TLS, then SASL) and
    raise ``BrokerError`` with a one-line reason when it refuses the configuration. Returns quietly
    when it accepts, or when no server can be reached (the client reports that)."""
    protocol = settings.security_protocol
    if protocol in TLS_PROTOCOLS and context is None:
        context = client_tls_context(settings)
    timeout = timeout_s if timeout_s is not None else min(float(settings.startup_timeout), 10.0)
    for host, port in _servers(settings.bootstrap_servers):
        try:
            _check_one(settings, host, port, context if protocol in TLS_PROTOCOLS else None, timeout)
        except (_Inconclusive, struct.error, KeyError, UnicodeDecodeError) as exc:  # not a Kafka answer
            log.debug("security check of %s:%d inconclusive: %s", host, port, exc)
            continue
        return


def _check_one(settings: Any, host: str, port: int, context: ssl.SSLContext | None, timeout: float) -> None:
    address = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise _Inconclusive(f"cannot connect: {exc}") from exc
    sock: socket.socket = raw
    try:
        if context is not None:
            try:
                sock = context.wrap_socket(raw, server_hostname=host.rstrip("."))
            except ssl.SSLCertVerificationError as exc:
                raise BrokerError(_untrusted(exc, settings, address, host)) from None
            except (ssl.SSLEOFError, ConnectionResetError) as exc:
                # A plaintext Kafka listener hangs up on a TLS hello (so does a broker shutting down).
                if _speaks_plain_kafka(host, port, timeout):
                    raise BrokerError(
                        f"the broker at {address} does not speak TLS on this port: check security_protocol "
                        f"({settings.security_protocol}) and the port"
                    ) from None
                raise _Inconclusive(f"TLS handshake: {exc}") from exc
            except ssl.SSLError as exc:
                raise BrokerError(_tls_failed(exc, settings, address)) from None
            except OSError as exc:
                raise _Inconclusive(f"TLS handshake: {exc}") from exc
        wire = _Wire(sock, settings, address)
        try:
            if settings.security_protocol in SASL_PROTOCOLS:
                _authenticate(wire, settings, address)
                how = f"user {settings.sasl_username} ({settings.sasl_mechanism})"
            else:
                _expect_no_sasl(wire, settings, address)
                how = "TLS"
        except _Inconclusive:
            if context is None and _speaks_tls(host, port, timeout):
                raise BrokerError(
                    f"the broker at {address} speaks TLS on this port: set security_protocol to "
                    f"{'SASL_SSL' if settings.security_protocol == 'SASL_PLAINTEXT' else 'SSL'}"
                ) from None
            raise
        logs.event(log, "broker accepts our security settings", broker=address, authenticated=how)
    finally:
        sock.close()


def _expect_no_sasl(wire: _Wire, settings: Any, address: str) -> None:
    """Without SASL: a listener that answers a SaslHandshake without ILLEGAL_SASL_STATE wants SASL (the
    request also makes a broker that refuses our client certificate say so: TLS 1.3 tells at the first
    read, not in the handshake)."""
    error, offered = _Reader(wire.call(_SASL_HANDSHAKE, 1, _string("PLAIN"))).handshake()
    if error != ILLEGAL_SASL_STATE:
        protocol = "SASL_SSL" if settings.security_protocol == "SSL" else "SASL_PLAINTEXT"
        raise BrokerError(
            f"the broker at {address} wants SASL ({', '.join(offered) or 'no mechanism offered'}): set "
            f"security_protocol to {protocol}, sasl_mechanism, sasl_username and sasl_password"
        )


def _speaks_plain_kafka(host: str, port: int, timeout: float) -> bool:
    """Whether the port answers a Kafka request in the clear."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            _Wire(sock, None, f"{host}:{port}").call(_SASL_HANDSHAKE, 1, _string("PLAIN"))
            return True
    except (_Inconclusive, BrokerError, OSError, struct.error):
        return False


def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether the port completes a TLS handshake (certificate not checked: only the protocol matters)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


class _Wire:
    """Just enough of Kafka's request framing for the check (non-flexible versions, header v1)."""

    def __init__(self, sock: socket.socket, settings: Any, address: str) -> None:
        self.sock, self.settings, self.address = sock, settings, address
        self.correlation = 0

    def call(self, api_key: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        client_id = b"impossible-travel-security-check"
        header = struct.pack(">hhih", api_key, version, self.correlation, len(client_id)) + client_id
        frame = header + body
        try:
            self.sock.sendall(struct.pack(">i", len(frame)) + frame)
            size = struct.unpack(">i", self._read(4))[0]
            if not 4 <= size <= _MAX_RESPONSE:
                raise _Inconclusive(f"not a Kafka response (size {size})")
            response = self._read(size)
        except ssl.SSLError as exc:  # TLS 1.3: a refused client certificate shows here
            raise BrokerError(_tls_failed(exc, self.settings, self.address)) from None
        except OSError as exc:
            raise _Inconclusive(f"request {api_key}: {exc}") from exc
        if struct.unpack(">i", response[:4])[0] != self.correlation:
            raise _Inconclusive("response out of order")
        return response[4:]

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionResetError("the broker closed the connection")
            data += chunk
        return data


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _authenticate(wire: _Wire, settings: Any, address: str) -> None:
    mechanism, user = settings.sasl_mechanism, settings.sasl_username
    body = wire.call(_SASL_HANDSHAKE, 1, _string(mechanism))
    error, offered = _Reader(body).handshake()
    if error == UNSUPPORTED_SASL_MECHANISM:
        raise BrokerError(
            f"Kafka at {address} does not offer SASL {mechanism} (it offers {', '.join(offered) or 'none'}): "
            "set sasl_mechanism to one of those"
        )
    if error == ILLEGAL_SASL_STATE:
        raise BrokerError(
            f"Kafka at {address} does not expect SASL on this listener: "
            f"check security_protocol ({settings.security_protocol}) and the port"
        )
    if error:
        raise _Inconclusive(f"SaslHandshake error {error}")
    exchange = sasl_exchange(mechanism, user, settings.sasl_password)
    token = next(exchange)
    while True:
        body = wire.call(_SASL_AUTHENTICATE, 1, struct.pack(">i", len(token)) + token)
        error, message, reply = _Reader(body).authenticate()
        if error == SASL_AUTHENTICATION_FAILED:
            raise BrokerError(refused_message(address, user, mechanism, message))
        if error:
            raise _Inconclusive(f"SaslAuthenticate error {error}")
        try:
            token = exchange.send(reply)
        except StopIteration:
            return
        except ValueError as exc:  # the broker could not prove it knows the password
            raise BrokerError(f"Kafka at {address} failed SCRAM server verification ({exc})") from None


def refused_message(address: str, user: str, mechanism: str, detail: str | None = None) -> str:
    """The one line for a refused sign-in (it names the user and mechanism, never the password)."""
    text = f"Kafka at {address} refused the credentials for user {user} ({mechanism})"
    if detail:
        text += f": {' '.join(detail.split())[:200]}"
    return text + "; check sasl_username, sasl_password and sasl_mechanism"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def _take(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def _str(self) -> str | None:
        n = self._take(">h")
        if n < 0:
            return None
        value = self.data[self.at : self.at + n].decode("utf-8", "replace")
        self.at += n
        return value

    def handshake(self) -> tuple[int, list[str]]:
        error, count = self._take(">h"), self._take(">i")
        return error, [self._str() or "" for _ in range(max(count, 0))]

    def authenticate(self) -> tuple[int, str | None, bytes]:
        error, message, n = self._take(">h"), self._str(), self._take(">i")
        return error, message, self.data[self.at : self.at + max(n, 0)]


# -- SASL PLAIN and SCRAM (RFC 4616, RFC 5802 / 7677) -------------------------------------------------


def sasl_exchange(
    mechanism: str, user: str, password: str, nonce: str | None = None
) -> Any:  # Generator[bytes, bytes, None]
    """The client side of a SASL exchange as a generator: yields what to send, is sent each reply;
    raises ValueError when the server's final message does not prove it knows the password."""
    if mechanism == "PLAIN":
        yield f"\0{user}\0{password}".encode()
        return
    digest: Callable[..., Any] = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}[mechanism]
    name = user.replace("=", "=3D").replace(",", "=2C")
    client_nonce = nonce or base64.b64encode(secrets.token_bytes(24)).decode()
    first_bare = f"n={name},r={client_nonce}"
    server_first = (yield f"n,,{first_bare}".encode()).decode()
    fields = dict(part.split("=", 1) for part in server_first.split(",") if "=" in part)
    server_nonce, salt, iterations = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
    if not server_nonce.startswith(client_nonce) or not 0 < iterations <= 1_000_000:
        raise ValueError("unexpected server-first message")
    salted = hashlib.pbkdf2_hmac(digest().name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    without_proof = f"c=biws,r={server_nonce}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(digest(client_key).digest(), auth_message, digest).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    server_final = (yield f"{without_proof},p={proof}".encode()).decode()
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_message, digest).digest()).decode()
    if not hmac.compare_digest(server_final.partition("v=")[2].split(",")[0], expected):
        raise ValueError("the server's signature is wrong")


# -- explaining failures ---------------------------------------------------------------------------


def _untrusted(exc: ssl.SSLCertVerificationError, settings: Any, address: str, host: str) -> str:
    reason = exc.verify_message or exc.reason or str(exc)
    code = exc.verify_code
    if code == 62 or "mismatch" in reason.lower():  # X509_V_ERR_HOSTNAME_MISMATCH / IP address mismatch
        return (
            f"the TLS certificate of the broker at {address} is not valid for the name {host} ({reason}); "
            "connect by a name the certificate lists (ssl_check_hostname is on)"
        )
    if code in (18, 19, 20, 21, 2):  # self-signed, self-signed in chain, unknown issuer
        where = (
            f"ssl_cafile {settings.ssl_cafile}"
            if settings.ssl_cafile
            else "the system's CAs (set ssl_cafile)"
        )
        return f"the TLS certificate of the broker at {address} is not trusted by {where} ({reason})"
    return f"the TLS certificate of the broker at {address} was refused: {reason}"


def _tls_failed(exc: ssl.SSLError, settings: Any, address: str) -> str:
    reason = (exc.reason or str(exc)).upper()
    if "CERTIFICATE_REQUIRED" in reason:
        return f"the broker at {address} requires a client certificate: set ssl_certfile and ssl_keyfile"
    if any(word in reason for word in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN")):
        return (
            f"the broker at {address} refused our client certificate {settings.ssl_certfile} ({exc.reason})"
        )
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
        return (
            f"the broker at {address} does not speak TLS on this port ({exc.reason}): "
            f"check security_protocol ({settings.security_protocol}) and the port"
        )
    return f"TLS with the broker at {address} failed: {exc.reason or exc}"


def explain_security_error(exc: BaseException, settings: Any) -> str | None:
    """A one-line reason for a security failure surfacing from the Kafka client (an authentication
    error, a certificate that failed verification), or None when ``exc`` is not one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if isinstance(current, ssl.SSLCertVerificationError):
            hosts = [host for host, _ in _servers(settings.bootstrap_servers)]
            return _untrusted(current, settings, settings.bootstrap_servers, hosts[0] if hosts else "?")
        if name in ("SaslAuthenticationFailedError", "AuthenticationFailedError"):
            return refused_message(
                settings.bootstrap_servers, settings.sasl_username, settings.sasl_mechanism
            )
        if "CERTIFICATE_VERIFY_FAILED" in str(current):
            where = f"ssl_cafile {settings.ssl_cafile}" if settings.ssl_cafile else "the system's CAs"
            return f"the TLS certificate of the broker at {settings.bootstrap_servers} failed verification against {where}"
        current = current.__cause__ or current.__context__
    return None

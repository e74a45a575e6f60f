"""Kafka client security options (TLS and SASL) from settings. Secrets are passed to the client only."""

from __future__ import annotations

import os
from typing import Any

from detector.errors import ConfigError


def _readable(key: str, path: str) -> str:
    if not os.path.isfile(path):
        raise ConfigError(key, f"file not found: {path}")
    if not os.access(path, os.R_OK):
        raise ConfigError(key, f"file not readable: {path}")
    return path


def kafka_security(settings: Any) -> dict[str, Any]:
    """kafka-python options for ``security_protocol``; refuses incomplete settings with the key's name."""
    protocol = settings.security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        if settings.ssl_cafile:
            options["ssl_cafile"] = _readable("ssl_cafile", settings.ssl_cafile)
        if settings.ssl_certfile or settings.ssl_keyfile:
            if not (settings.ssl_certfile and settings.ssl_keyfile):
                raise ConfigError(
                    "ssl_certfile", "a client certificate needs both ssl_certfile and ssl_keyfile"
                )
            options["ssl_certfile"] = _readable("ssl_certfile", settings.ssl_certfile)
            options["ssl_keyfile"] = _readable("ssl_keyfile", settings.ssl_keyfile)
            if settings.ssl_password:
                options["ssl_password"] = settings.ssl_password
        options["ssl_check_hostname"] = bool(settings.ssl_check_hostname)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        if not settings.sasl_username or not settings.sasl_password:
            raise ConfigError("sasl_username", f"{protocol} needs sasl_username and sasl_password")
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    return options

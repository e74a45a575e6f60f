"""Okta System Log events (the API returns pages as JSON arrays).

A sign-in is ``eventType`` ``user.session.start``; other events (``user.session.end``, SSO to an app,
MFA steps) are not. User ``actor.alternateId``, IP ``client.ipAddress`` (else the first of
``request.ipChain``), time ``published``, outcome ``outcome.result``: SUCCESS and ALLOW are successes;
FAILURE, DENY and CHALLENGE (an attempt from that address that got no session) are failures; SKIPPED
and UNKNOWN say neither, and are not sign-ins.
Okta's own geolocation is ``client.geographicalContext.geolocation.{lat,lon}``; a proxy flag
(``securityContext.isProxy``) marks the address as an anonymiser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detector.formats.base import NotASignIn, Options, build, path, vendor_location
from detector.model import SignIn

SUCCESS = {"SUCCESS", "ALLOW"}
FAILURE = {"FAILURE", "DENY", "CHALLENGE"}


def is_okta(record: Mapping[str, Any]) -> bool:
    return "eventType" in record and "published" in record


def okta(record: Mapping[str, Any], options: Options) -> list[SignIn]:
    event_type = record.get("eventType")
    if event_type != "user.session.start":
        raise NotASignIn(f"Okta eventType {event_type}")
    result = str(path(record, "outcome.result", "")).upper()
    if result not in SUCCESS | FAILURE:
        raise NotASignIn(
            f"Okta user.session.start with outcome {result or 'missing'}: no session issued or refused"
        )
    ip = path(record, "client.ipAddress") or path(record, "request.ipChain.0.ip")
    geo = path(record, "client.geographicalContext", {})
    vendor = (
        vendor_location(
            path(geo, "geolocation.lat"),
            path(geo, "geolocation.lon"),
            "okta",
            options,
            path(geo, "country"),
            path(geo, "city"),
        )
        if isinstance(geo, dict)
        else None
    )
    return [
        build(
            path(record, "actor.alternateId"),
            ip,
            record.get("published"),
            result in SUCCESS,
            record.get("uuid"),
            options,
            "actor.alternateId",
            "client.ipAddress",
            "published",
            vendor,
            path(record, "securityContext.isProxy") is True,
        )
    ]

"""Microsoft Entra ID sign-ins.

Two shapes of the same data:

- Graph ``signIn`` resources (``/auditLogs/signIns``; pages wrap them in ``{"value": [...]}``): user
  ``userPrincipalName`` (``userId`` as fallback), IP ``ipAddress``, time ``createdDateTime`` (UTC, up to
  seven fractional digits), outcome ``status.errorCode`` (0 = success), vendor geo
  ``location.geoCoordinates`` (may be ``{}``) and ``location.{city,countryOrRegion}``.
- Azure Monitor diagnostic records (Event Hub, storage; ``{"records": [...]}`` or one a line): the same
  fields under ``properties``; ``callerIpAddress`` and ``time`` at the top; ``resultType`` a string ("0"
  = success); ``category`` tells interactive (SignInLogs), non-interactive, service principal and
  managed identity sign-ins. Service principals and managed identities have no user: their account is
  ``servicePrincipalId``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detector.errors import InvalidEvent
from detector.formats.base import Options, build, path, vendor_location
from detector.model import SignIn

SIGNIN_CATEGORIES = {
    "SignInLogs",
    "NonInteractiveUserSignInLogs",
    "ServicePrincipalSignInLogs",
    "ManagedIdentitySignInLogs",
}


def is_graph(record: Mapping[str, Any]) -> bool:
    if str(record.get("@odata.type", "")).endswith("signIn"):
        return True
    return "createdDateTime" in record and ("userPrincipalName" in record or "userId" in record)


def is_monitor(record: Mapping[str, Any]) -> bool:
    if str(record.get("category", "")) in SIGNIN_CATEGORIES:
        return True
    return isinstance(record.get("properties"), dict) and (
        "callerIpAddress" in record or "resourceId" in record or "operationName" in record
    )


def _account(props: Mapping[str, Any]) -> Any:
    # Not appId: in a user's sign-in it names the application used, not who signed in.
    for key in ("userPrincipalName", "userId", "servicePrincipalId"):
        value = props.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _geo(props: Mapping[str, Any], options: Options) -> Any:
    loc = props.get("location")
    loc = loc if isinstance(loc, dict) else {}
    coords = loc.get("geoCoordinates")
    coords = coords if isinstance(coords, dict) else {}
    return vendor_location(
        coords.get("latitude"),
        coords.get("longitude"),
        "entra",
        options,
        loc.get("countryOrRegion"),
        loc.get("city"),
    )


def graph(record: Mapping[str, Any], options: Options) -> list[SignIn]:
    code = path(record, "status.errorCode", 0)
    return [
        build(
            _account(record),
            record.get("ipAddress"),
            record.get("createdDateTime"),
            str(code) == "0",
            record.get("id"),
            options,
            "userPrincipalName",
            "ipAddress",
            "createdDateTime",
            _geo(record, options),
        )
    ]


def monitor(record: Mapping[str, Any], options: Options) -> list[SignIn]:
    category = record.get("category")
    if category is not None and (not isinstance(category, str) or category not in SIGNIN_CATEGORIES):
        raise InvalidEvent(f"wrong kind: Entra {category} record, not a sign-in log")
    props = record.get("properties") or {}
    if not isinstance(props, dict):
        props = {}
    result = record.get("resultType")
    if result is None:
        result = path(props, "status.errorCode", 0)
    ip = record.get("callerIpAddress") or props.get("ipAddress")
    when = props.get("createdDateTime") or record.get("time")
    return [
        build(
            _account(props),
            ip,
            when,
            str(result).strip() == "0",
            props.get("id") or record.get("correlationId"),
            options,
            "properties.userPrincipalName",
            "callerIpAddress",
            "properties.createdDateTime",
            _geo(props, options),
        )
    ]


def entra(record: Mapping[str, Any], options: Options) -> list[SignIn]:
    return monitor(record, options) if is_monitor(record) else graph(record, options)

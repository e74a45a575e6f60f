"""Google Workspace login activities (Admin SDK Reports API; pages wrap them in ``items[]``).

One activity: user ``actor.email``, IP ``ipAddress``, time ``id.time``, and ``events[]``: each
``login_success`` is a successful sign-in and each ``login_failure`` a failed one; logouts, challenges
and warnings (suspicious login, leaked password, ...) are not sign-ins. Parameters are
``{name, value|boolValue|intValue|multiValue}`` lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detector.errors import InvalidEvent
from detector.formats.base import NotASignIn, Options, build, path
from detector.model import SignIn

OUTCOMES = {"login_success": True, "login_failure": False}


def is_gworkspace(record: Mapping[str, Any]) -> bool:
    return (
        isinstance(record.get("id"), dict)
        and "time" in record["id"]
        and isinstance(record.get("events"), list)
    )


def parameter(event: Mapping[str, Any], name: str) -> Any:
    """The value of a named parameter of an activity's event, whatever its type field."""
    for p in event.get("parameters") or []:
        if isinstance(p, dict) and p.get("name") == name:
            for key in ("value", "boolValue", "intValue", "multiValue"):
                if key in p:
                    return p[key]
    return None


def gworkspace(record: Mapping[str, Any], options: Options) -> list[SignIn]:
    app = path(record, "id.applicationName")
    if app not in (None, "login"):
        raise InvalidEvent(f"wrong kind: Google Workspace {app} activity, not a login activity")
    events = [e for e in record.get("events") or [] if isinstance(e, dict)]
    logins = [
        (i, e) for i, e in enumerate(events) if isinstance(e.get("name"), str) and e["name"] in OUTCOMES
    ]
    if not logins:
        names = ", ".join(str(e.get("name")) for e in events) or "no events"
        raise NotASignIn(f"Google Workspace {names}")
    qualifier = path(record, "id.uniqueQualifier")
    out = []
    for n, (i, event) in enumerate(logins):
        eid = qualifier if n == 0 or qualifier is None else f"{qualifier}#{i}"
        out.append(
            build(
                path(record, "actor.email"),
                record.get("ipAddress"),
                path(record, "id.time"),
                OUTCOMES[event["name"]],
                eid,
                options,
                "actor.email",
                "ipAddress",
                "id.time",
            )
        )
    return out

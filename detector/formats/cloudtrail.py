"""AWS CloudTrail console sign-ins (log files wrap events in ``{"Records": [...]}``).

A sign-in is ``eventName`` ``ConsoleLogin``. User ``userIdentity.arn`` (assumed roles: the session ARN),
else ``userIdentity.userName`` (failed IAM sign-ins may have no ARN), IP ``sourceIPAddress``, time
``eventTime``, outcome ``responseElements.ConsoleLogin`` (Success / Failure). A ``sourceIPAddress`` that
is a service name ("AWS Internal", "signin.amazonaws.com") is not an address, and a failure whose user
name AWS masked (HIDDEN_DUE_TO_SECURITY_REASONS: a mistyped name) names no account: both rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detector.errors import InvalidEvent
from detector.formats.base import NotASignIn, Options, build, path
from detector.model import SignIn

# What AWS writes as userName when a failed sign-in named a user that does not exist.
MASKED = "HIDDEN_DUE_TO_SECURITY_REASONS"


def is_cloudtrail(record: Mapping[str, Any]) -> bool:
    return (
        "eventName" in record
        and "eventTime" in record
        and ("eventSource" in record or "userIdentity" in record)
    )


def cloudtrail(record: Mapping[str, Any], options: Options) -> list[SignIn]:
    name = record.get("eventName")
    if name != "ConsoleLogin":
        raise NotASignIn(f"CloudTrail eventName {name}")
    result = path(record, "responseElements.ConsoleLogin")
    user = path(record, "userIdentity.arn") or path(record, "userIdentity.userName")
    if user == MASKED:
        raise InvalidEvent("missing field: userIdentity: no ARN, and AWS masked the user name (mistyped)")
    return [
        build(
            user,
            record.get("sourceIPAddress"),
            record.get("eventTime"),
            result == "Success",
            record.get("eventID"),
            options,
            "userIdentity.arn",
            "sourceIPAddress",
            "eventTime",
        )
    ]

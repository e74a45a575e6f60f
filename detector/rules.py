"""The detection rule: a pure function of (account state, sign-in, policy) -> (new state, alerts).

No I/O and no clock: the time of detection is passed in. The same function serves replay and the
stream, so a result seen in one is the result the other gives.

How one located sign-in X is judged against an account's history (its last located sign-ins, oldest
first):

1. An event id already seen for the account is a re-delivery: nothing changes, nothing is said again.
2. X is placed in the history by event time. Its neighbours are the sign-in just before it and, when X
   is late (older than the newest stored one), the sign-in just after it. X is compared with each
   neighbour, never with a sign-in it did not follow or precede.
3. A pair is travel only when the addresses differ. Its distance is the WGS-84 geodesic between the two
   centres, less both accuracy radii (never below 0). It alerts when that net distance is at least
   ``min_distance_km`` and the implied speed exceeds ``max_speed_kmh`` (same instant = infinite speed).
4. A location pair already alerted for the account within ``suppress_window_s`` is a repeat: counted,
   not alerted again.
5. X joins the history in time order (a late X never displaces the newest). The newest few sign-ins
   are kept as they are; before them, a run of sign-ins from one place keeps only its first and last,
   so a small history reaches back over many distinct places.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Literal

from detector.geo import SCREEN_MARGIN, geodesic_km, haversine_km, net_distance_km, speed_kmh
from detector.model import AccountState, Alert, Location, SignIn, Visit, utc_text

Outcome = Literal["first", "plausible", "alert", "duplicate", "suppressed", "same_ip", "failure_checked"]

SEVERITIES = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class Policy:
    """Thresholds and limits of the rule. Every field is a setting (see ``detector.config``)."""

    max_speed_kmh: float = 900.0
    min_distance_km: float = 100.0
    # Failed sign-ins never move an account; when this is on they are still compared with its history.
    evaluate_failures: bool = False
    history_size: int = 8
    history_window_s: float = 7 * 86400.0
    recent_ids: int = 16
    suppress_window_s: float = 6 * 3600.0
    # Multiples of the speed threshold at which severity becomes medium and high.
    medium_ratio: float = 2.0
    high_ratio: float = 5.0

    def __post_init__(self) -> None:
        checks = {
            "max_speed_kmh": self.max_speed_kmh > 0,
            "min_distance_km": self.min_distance_km >= 0,
            "history_size": self.history_size >= 1,
            "history_window_s": self.history_window_s > 0,
            "recent_ids": self.recent_ids >= 1,
            "suppress_window_s": self.suppress_window_s >= 0,
            "medium_ratio": 1.0 <= self.medium_ratio <= self.high_ratio,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{key}: out of range ({getattr(self, key)!r})")


@dataclass(frozen=True, slots=True)
class Decision:
    """What ``evaluate`` concluded for one sign-in."""

    state: AccountState
    outcome: Outcome
    alerts: tuple[Alert, ...] = ()
    suppressed: int = 0
    late: bool = False
    notes: tuple[str, ...] = field(default=())


def place_key(loc: Location) -> str:
    """Identity of a place for history and suppression: the city (or country) and a ~100 km grid cell,
    so that two towns of one name stay apart."""
    return f"{loc.country or '?'}|{loc.city or ''}|{loc.latitude:.0f},{loc.longitude:.0f}"


def alert_id(user: str, earlier_event_id: str, later_event_id: str) -> str:
    """Deterministic: the same account and pair of events always give the same id."""
    digest = hashlib.blake2b(
        "\x1f".join((user, earlier_event_id, later_event_id)).encode("utf-8", "surrogatepass"),
        digest_size=16,
    )
    return digest.hexdigest()


def severity_for(net_speed: float, policy: Policy) -> str:
    ratio = net_speed / policy.max_speed_kmh
    if ratio >= policy.high_ratio:
        return "high"
    if ratio >= policy.medium_ratio:
        return "medium"
    return "low"


@dataclass(frozen=True, slots=True)
class Travel:
    """The figures for one pair of located sign-ins, earlier first."""

    earlier: Visit
    later: Visit
    distance_km: float
    net_distance_km: float
    elapsed_s: float

    @property
    def speed_kmh(self) -> float:
        return speed_kmh(self.distance_km, self.elapsed_s)

    @property
    def net_speed_kmh(self) -> float:
        return speed_kmh(self.net_distance_km, self.elapsed_s)


def measure(a: Visit, b: Visit) -> Travel:
    """Exact figures for a pair (geodesic distance, net of both accuracy radii), ordered by time."""
    earlier, later = (a, b) if a.time <= b.time else (b, a)
    la, lb = earlier.location, later.location
    distance = geodesic_km(la.latitude, la.longitude, lb.latitude, lb.longitude)
    net = net_distance_km(distance, la.accuracy_radius_km, lb.accuracy_radius_km)
    return Travel(earlier, later, distance, net, later.time - earlier.time)


def could_be_impossible(a: Visit, b: Visit, policy: Policy) -> bool:
    """Cheap screen on the sphere, generous by ``SCREEN_MARGIN``: False means the exact figures cannot
    alert, so the (slow) geodesic is computed only for the few pairs that might."""
    la, lb = a.location, b.location
    upper = haversine_km(la.latitude, la.longitude, lb.latitude, lb.longitude) * SCREEN_MARGIN
    net_upper = upper - la.accuracy_radius_km - lb.accuracy_radius_km
    return (
        net_upper >= policy.min_distance_km
        and speed_kmh(net_upper, abs(b.time - a.time)) > policy.max_speed_kmh
    )


def is_impossible(travel: Travel, policy: Policy) -> bool:
    return travel.net_distance_km >= policy.min_distance_km and travel.net_speed_kmh > policy.max_speed_kmh


def judge(a: Visit, b: Visit, policy: Policy) -> Travel | None:
    """The exact figures of the pair when it is impossible travel, else None."""
    if not could_be_impossible(a, b, policy):
        return None
    travel = measure(a, b)
    return travel if is_impossible(travel, policy) else None


def _fmt_speed(v: float) -> str:
    return "infinite (same instant)" if math.isinf(v) else f"{v:,.0f} km/h"


def _fmt_elapsed(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def explain(travel: Travel, policy: Policy, history: tuple[Visit, ...]) -> list[str]:
    """Human-readable facts behind an alert, most important first."""
    la, lb = travel.earlier.location, travel.later.location
    ratio = travel.net_speed_kmh / policy.max_speed_kmh
    reasons = [
        f"{_fmt_speed(travel.net_speed_kmh)} net of accuracy radii"
        + ("" if math.isinf(ratio) else f", {ratio:.1f}x")
        + f" the {policy.max_speed_kmh:g} km/h threshold",
        f"{la.label} -> {lb.label}: {travel.distance_km:,.0f} km apart, "
        f"{travel.net_distance_km:,.0f} km net of accuracy radii "
        f"{la.accuracy_radius_km:g} km and {lb.accuracy_radius_km:g} km",
        f"{_fmt_elapsed(travel.elapsed_s)} between sign-ins "
        f"({utc_text(travel.earlier.time)} and {utc_text(travel.later.time)})",
    ]
    known_countries = {v.location.country for v in history if v.location.country}
    new_country = lb.country if travel.later is not travel.earlier else None
    if new_country and known_countries and new_country not in known_countries:
        reasons.append(f"first sign-in from {new_country} in the account's recent history")
    return reasons


def _with_id(ids: tuple[str, ...], event_id: str, limit: int) -> tuple[str, ...]:
    ids = (*ids, event_id)
    return ids[-limit:] if len(ids) > limit else ids


# The newest sign-ins are kept as they came: a late event is usually late by minutes, and must meet its
# true neighbours. Older runs at one place are cut down to their ends.
RAW_TAIL = 4


def _insert(history: tuple[Visit, ...], visit: Visit, policy: Policy) -> tuple[Visit, ...]:
    """Add a visit in time order; keep the newest ``history_size`` within the window; before the raw tail,
    drop the middle of any run of consecutive visits at one place (a comparison needs only its ends)."""
    i = bisect_right([v.time for v in history], visit.time)
    visits = [*history[:i], visit, *history[i:]]
    keys = [place_key(v.location) for v in visits]
    tail = len(visits) - RAW_TAIL
    newest = visits[-1].time
    kept = [
        v
        for j, v in enumerate(visits)
        if newest - v.time <= policy.history_window_s
        and not (0 < j < tail and keys[j - 1] == keys[j] == keys[j + 1])
    ]
    return tuple(kept[-policy.history_size :])


def _recently_alerted(alerted: list[tuple[str, str, float]], key: str, at: float, policy: Policy) -> bool:
    return any(k == key and abs(at - t) <= policy.suppress_window_s for _, k, t in alerted)


def _pair_key(t: Travel) -> str:
    a, b = sorted((place_key(t.earlier.location), place_key(t.later.location)))
    return f"{a}~{b}"


def evaluate(
    state: AccountState | None,
    sign_in: SignIn,
    location: Location,
    policy: Policy,
    now: float,
) -> Decision:
    """Judge one located sign-in of an account; see the module docstring for the rule."""
    state = state or AccountState()
    if sign_in.event_id in state.recent_ids or any(v.event_id == sign_in.event_id for v in state.visits):
        return Decision(state, "duplicate")

    visit = Visit(sign_in.event_id, sign_in.ip, sign_in.time, location)
    history = state.visits
    i = bisect_right([v.time for v in history], sign_in.time)
    late = i < len(history)
    neighbours = [history[i - 1]] if i > 0 else []
    if late:
        neighbours.append(history[i])

    alerts: list[Alert] = []
    alerted = list(state.alerted)
    suppressed = 0
    same_ip_only = bool(neighbours)
    repeated = False
    for other in neighbours:
        if other.ip == visit.ip:
            continue
        same_ip_only = False
        travel = judge(other, visit, policy)
        if travel is None:
            continue
        aid = alert_id(sign_in.user, travel.earlier.event_id, travel.later.event_id)
        if any(a == aid for a, _, _ in alerted):
            repeated = True  # this very alert was raised before: a re-delivery beyond the id memory
            continue
        key = _pair_key(travel)
        if _recently_alerted(alerted, key, travel.later.time, policy):
            suppressed += 1
            continue
        alerted.append((aid, key, travel.later.time))
        alerts.append(_make_alert(aid, sign_in.user, travel, policy, history, now, late))

    recent = _with_id(state.recent_ids, sign_in.event_id, policy.recent_ids)
    newest_time = max(sign_in.time, history[-1].time if history else sign_in.time)
    keep = max(policy.suppress_window_s, policy.history_window_s)
    alerted = [entry for entry in alerted if newest_time - entry[2] <= keep]
    new_history = _insert(history, visit, policy) if sign_in.success else history
    new_state = AccountState(new_history, recent, tuple(alerted))

    outcome: Outcome
    if alerts:
        outcome = "alert"
    elif repeated:
        outcome = "duplicate"
    elif suppressed:
        outcome = "suppressed"
    elif not neighbours:
        outcome = "first"
    elif same_ip_only:
        outcome = "same_ip"
    elif not sign_in.success:
        outcome = "failure_checked"
    else:
        outcome = "plausible"
    return Decision(new_state, outcome, tuple(alerts), suppressed, late)


def _make_alert(
    aid: str, user: str, travel: Travel, policy: Policy, history: tuple[Visit, ...], now: float, late: bool
) -> Alert:
    net_speed = travel.net_speed_kmh
    reasons = explain(travel, policy, history)
    if late:
        reasons.append(
            "late event: arrived after a newer sign-in and was compared with its neighbours in time"
        )
    return Alert(
        alert_id=aid,
        user=user,
        detected_at=now,
        severity=severity_for(net_speed, policy),
        confidence="high",
        distance_km=travel.distance_km,
        net_distance_km=travel.net_distance_km,
        elapsed_s=travel.elapsed_s,
        speed_kmh=None if math.isinf(travel.speed_kmh) else travel.speed_kmh,
        net_speed_kmh=None if math.isinf(net_speed) else net_speed,
        previous=travel.earlier,
        current=travel.later,
        max_speed_kmh=policy.max_speed_kmh,
        min_distance_km=policy.min_distance_km,
        reasons=tuple(reasons),
        late=late,
    )

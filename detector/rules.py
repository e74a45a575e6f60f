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
   centres, less both accuracy radii (never below 0). It is impossible when that net distance is at
   least ``min_distance_km`` and the implied speed exceeds ``max_speed_kmh`` (same instant = infinite).
4. An impossible pair is still not alerted when the evidence does not hold: a country-level fix (no
   city: the point is only the country's centre) in the same country as the other sign-in; a network
   whose kind is configured to suppress (satellite and in-flight by default); an account's travel
   exception. Such pairs are counted by reason.
5. An impossible pair near a pair already alerted for the account within ``suppress_window_s`` (both
   ends within ``suppress_radius_km``, either way round) is a repeat: counted, not alerted again.
6. What remains is an alert. Severity grows with the speed's ratio to the threshold; each doubtful
   element (country-level fix, very wide radius, hosting/VPN or mobile network) lowers the confidence
   and the severity by one step, never raises them; the reasons say which.
7. X joins the history in time order (a late X never displaces the newest). The newest few sign-ins
   are kept as they are; before them, a run of sign-ins from one place keeps only its first and last,
   so a small history reaches back over many distinct places.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType
from typing import Literal, NamedTuple

from detector.geo import SCREEN_MARGIN, geodesic_km, haversine_km, net_distance_km, speed_kmh
from detector.model import (
    AccountState,
    Alert,
    Alerted,
    Location,
    SignIn,
    Visit,
    blake2b,
    make,
    new_alert,
    utc_text,
)

Outcome = Literal["first", "plausible", "alert", "duplicate", "suppressed", "same_ip", "failure_checked"]

SEVERITIES = ("low", "medium", "high")
CONFIDENCES = ("low", "medium", "high")
NETWORK_ACTIONS = ("suppress", "lower", "ignore")
DEFAULT_NETWORK_ACTIONS: Mapping[str, str] = MappingProxyType(
    {"hosting": "lower", "satellite": "suppress", "mobile": "lower"}
)
_NETWORK_NAMES = {"hosting": "hosting/VPN", "satellite": "satellite or in-flight", "mobile": "mobile carrier"}


@dataclass(frozen=True, slots=True)
class TravelException:
    """An account may travel until ``until`` (epoch seconds), to ``countries`` (empty = anywhere)."""

    until: float
    countries: frozenset[str] = frozenset()


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
    suppress_radius_km: float = 200.0
    # Multiples of the speed threshold at which severity becomes medium and high.
    medium_ratio: float = 2.0
    high_ratio: float = 5.0
    # A radius this wide says little about where the sign-in was: lower confidence.
    coarse_radius_km: float = 500.0
    # What to do when a sign-in comes from a network of a configured kind: suppress, lower, ignore.
    network_actions: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_NETWORK_ACTIONS))
    # Per-account travel exceptions.
    exceptions: Mapping[str, tuple[TravelException, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "max_speed_kmh": self.max_speed_kmh > 0,
            "min_distance_km": self.min_distance_km >= 0,
            "history_size": self.history_size >= 1,
            "history_window_s": self.history_window_s > 0,
            "recent_ids": self.recent_ids >= 1,
            "suppress_window_s": self.suppress_window_s >= 0,
            "suppress_radius_km": self.suppress_radius_km >= 0,
            "medium_ratio": 1.0 <= self.medium_ratio <= self.high_ratio,
            "network_actions": all(a in NETWORK_ACTIONS for a in self.network_actions.values()),
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{key}: out of range ({getattr(self, key)!r})")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One comparison, recorded for ``tune``: enough to decide it again under other thresholds."""

    user: str
    earlier: str
    later: str
    time: float
    net_distance_km: float
    net_speed_kmh: float
    exact: bool  # figures on the ellipsoid (else the sphere: it could not alert at the loosest setting)
    blocked: str | None  # a threshold-independent reason that would stop an alert
    lat1: float
    lon1: float
    lat2: float
    lon2: float


class Decision(NamedTuple):
    """What ``evaluate`` concluded for one sign-in."""

    state: AccountState
    outcome: Outcome
    alerts: tuple[Alert, ...] = ()
    suppressed_by: tuple[str, ...] = ()
    late: bool = False
    candidates: tuple[Candidate, ...] = ()

    @property
    def suppressed(self) -> int:
        return len(self.suppressed_by)


def place_key(loc: Location) -> str:
    """Identity of a place in the history: the city (or country) and a ~100 km grid cell, so that two
    towns of one name stay apart (computed once per location, see ``Location.place``)."""
    return loc.place


def alert_id(user: str, earlier_event_id: str, later_event_id: str) -> str:
    """Deterministic: the same account and pair of events always give the same id."""
    digest = blake2b(
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


def _lower(level: str, steps: int, scale: tuple[str, ...]) -> str:
    return scale[max(0, scale.index(level) - steps)]


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


def _ordered(a: Visit, b: Visit) -> tuple[Visit, Visit]:
    return (a, b) if a.time <= b.time else (b, a)


def measure(a: Visit, b: Visit, exact: bool = True) -> Travel:
    """Figures for a pair, ordered by time: on the WGS-84 ellipsoid (or on the sphere, ``exact=False``),
    net of both accuracy radii."""
    earlier, later = _ordered(a, b)
    la, lb = earlier.location, later.location
    distance = (geodesic_km if exact else haversine_km)(la.latitude, la.longitude, lb.latitude, lb.longitude)
    net = net_distance_km(distance, la.accuracy_radius_km, lb.accuracy_radius_km)
    return Travel(earlier, later, distance, net, later.time - earlier.time)


def could_be_impossible(a: Visit, b: Visit, policy: Policy) -> bool:
    """Cheap screen on the sphere, generous by ``SCREEN_MARGIN``: False means the exact figures cannot
    alert, so the (slow) geodesic is computed only for the few pairs that might."""
    la, lb = a.location, b.location
    if la is lb:
        return False  # one place (the same object): no distance, whatever the thresholds
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


# -- what stops or weakens an alert --------------------------------------------------------------------


def blocked_by(user: str, travel: Travel, policy: Policy, history: tuple[Visit, ...]) -> str | None:
    """A reason (independent of the thresholds) why this impossible pair is no evidence of travel."""
    la, lb = travel.earlier.location, travel.later.location
    if (la.country_level or lb.country_level) and la.country and la.country == lb.country:
        return "country_level"
    for loc in (la, lb):
        if loc.network and policy.network_actions.get(loc.network) == "suppress":
            return loc.network
    for exc in policy.exceptions.get(user, ()):
        if travel.later.time <= exc.until and (not exc.countries or _within(exc, travel, history)):
            return "exception"
    return None


def _within(exc: TravelException, travel: Travel, history: tuple[Visit, ...]) -> bool:
    """The trip goes to a country the exception allows, or back from one to where the account has been."""
    to, came_from = travel.later.location.country, travel.earlier.location.country
    if to in exc.countries:
        return True
    known = {v.location.country for v in history if v.event_id != travel.later.event_id}
    return came_from in exc.countries and to in known


def doubts(travel: Travel, policy: Policy) -> list[tuple[str, str]]:
    """(confidence this leaves, reason) for each doubtful element of the pair."""
    out: list[tuple[str, str]] = []
    for v in (travel.earlier, travel.later):
        loc = v.location
        if loc.country_level:
            out.append(
                (
                    "low",
                    f"country-level location: {v.ip} is only known to be in {loc.country} "
                    f"(accuracy {loc.accuracy_radius_km:g} km); lower confidence",
                )
            )
        elif loc.accuracy_radius_km >= policy.coarse_radius_km:
            out.append(
                (
                    "medium",
                    f"wide accuracy radius: {loc.accuracy_radius_km:g} km for {v.ip} "
                    f"({loc.label}); lower confidence",
                )
            )
        if loc.network and policy.network_actions.get(loc.network) == "lower":
            level = "low" if loc.network == "hosting" else "medium"
            asn = f"AS{loc.asn} {loc.asn_org or ''}".strip()
            out.append(
                (
                    level,
                    f"{_NETWORK_NAMES.get(loc.network, loc.network)} network: {v.ip} is in {asn}; "
                    "its location says little about the person; lower confidence",
                )
            )
    return out


def _near(e: Alerted, pair: Alerted, radius: float) -> bool:
    def close(lat1: float, lon1: float, lat2: float, lon2: float) -> bool:
        return haversine_km(lat1, lon1, lat2, lon2) <= radius

    same = close(e.lat1, e.lon1, pair.lat1, pair.lon1) and close(e.lat2, e.lon2, pair.lat2, pair.lon2)
    swapped = close(e.lat1, e.lon1, pair.lat2, pair.lon2) and close(e.lat2, e.lon2, pair.lat1, pair.lon1)
    return same or swapped


def is_repeat(alerted: list[Alerted], pair: Alerted, policy: Policy) -> bool:
    """A pair of places near one alerted for the account within the suppression window."""
    return any(
        abs(pair.time - e.time) <= policy.suppress_window_s and _near(e, pair, policy.suppress_radius_km)
        for e in alerted
    )


def remember(aid: str, travel: Travel) -> Alerted:
    la, lb = travel.earlier.location, travel.later.location
    return Alerted(aid, la.latitude, la.longitude, lb.latitude, lb.longitude, travel.later.time)


# -- explanation ---------------------------------------------------------------------------------------


def _fmt_speed(v: float) -> str:
    return "infinite (same instant)" if math.isinf(v) else f"{v:,.0f} km/h"


def _fmt_elapsed(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def pattern(travel: Travel, history: tuple[Visit, ...]) -> str | None:
    """The account going back and forth between the two places recently (a VPN, a shared account)."""
    a, b = place_key(travel.earlier.location), place_key(travel.later.location)
    keys = [place_key(v.location) for v in history if place_key(v.location) in (a, b)]
    switches = sum(1 for x, y in pairwise(keys) if x != y)
    if switches < 2:
        return None
    since = min(v.time for v in history if place_key(v.location) in (a, b))
    return (
        f"pattern: the account switched between {travel.earlier.location.label} and "
        f"{travel.later.location.label} {switches} times since {utc_text(since)} (VPN or shared account?)"
    )


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
    others = [v for v in history if v.event_id not in (travel.earlier.event_id, travel.later.event_id)]
    known = {v.location.country for v in others if v.location.country}
    for loc in (la, lb):
        if loc.country and known and loc.country not in known:
            reasons.append(f"first sign-in from {loc.country} in the account's recent history")
            break
    seen = pattern(travel, history)
    if seen:
        reasons.append(seen)
    return reasons


# -- the rule ------------------------------------------------------------------------------------------


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


def _append(history: tuple[Visit, ...], visit: Visit, policy: Policy) -> tuple[Visit, ...]:
    """``_insert`` for a visit newer than all others (the common case), without its full pass.

    After an ``_insert`` no position before the raw tail is the middle of a run (runs there are already
    cut to their ends), and appending changes the neighbours of nothing but the end. So the only visit
    that can have become such a middle is the one that has just left the raw tail."""
    visits = (*history, visit)
    j = len(visits) - RAW_TAIL - 1
    if j > 0 and visits[j - 1].location.place == visits[j].location.place == visits[j + 1].location.place:
        visits = visits[:j] + visits[j + 1 :]
    oldest = visit.time - policy.history_window_s
    if visits[0].time < oldest:
        visits = tuple(v for v in visits if v.time >= oldest)
    return visits[-policy.history_size :] if len(visits) > policy.history_size else visits


_EMPTY = AccountState()


def advance(
    state: AccountState, visit: Visit, success: bool, policy: Policy
) -> tuple[AccountState, Outcome] | None:
    """The common case of ``evaluate``, without its general machinery: a sign-in (already known not to be
    a re-delivery) newer than all the account's others, from the same address as the last one or not
    even possibly too fast (the sphere screen). Returns the new state and outcome, or None when the
    general path must decide. ``evaluate`` takes this path itself, so it is the rule, not a copy."""
    history = state.visits
    if not history:
        return None
    last = history[-1]
    if visit.time < last.time:
        return None
    same_ip = last.ip == visit.ip
    if not same_ip and could_be_impossible(last, visit, policy):
        return None
    alerted = state.alerted
    if alerted:
        keep = max(policy.suppress_window_s, policy.history_window_s)
        alerted = tuple(e for e in alerted if visit.time - e.time <= keep)
    new_history = _append(history, visit, policy) if success else history
    outcome: Outcome = "same_ip" if same_ip else ("plausible" if success else "failure_checked")
    recent = _with_id(state.recent_ids, visit.event_id, policy.recent_ids)
    return make(AccountState, new_history, recent, alerted), outcome


def begin(sign_in: SignIn, location: Location) -> AccountState:
    """An account's state after its first located sign-in (outcome "first": nothing to compare with)."""
    return first_state(sign_in.event_id, sign_in.ip, sign_in.time, sign_in.success, location)


def first_state(event_id: str, ip: str, time: float, success: bool, location: Location) -> AccountState:
    """``begin`` given the sign-in's fields (the engine has them at hand)."""
    visits = (make(Visit, event_id, ip, time, location),) if success else ()
    return make(AccountState, visits, (event_id,), ())


def is_duplicate(state: AccountState, event_id: str) -> bool:
    """A re-delivery: the event id is among the account's recent ids or its remembered sign-ins."""
    # (Loops: compiled, each comparison is a direct string compare; ``in`` over a tuple, or over the
    # visits' ids by ``map``, went through the generic protocol for every item: 4 times the cost.)
    for seen in state.recent_ids:
        if seen == event_id:
            return True
    for visit in state.visits:  # noqa: SIM110 (``any`` of a generator: a generator object per call)
        if visit.event_id == event_id:
            return True
    return False


def evaluate(
    state: AccountState | None,
    sign_in: SignIn,
    location: Location,
    policy: Policy,
    now: float,
    record: Policy | None = None,
) -> Decision:
    """Judge one located sign-in of an account; see the module docstring for the rule.

    With ``record`` (the loosest thresholds of a tuning run), every comparison is also returned as a
    ``Candidate``, with exact figures wherever those thresholds could alert."""
    eid = sign_in.event_id
    if state is None and record is None:  # an account's first sign-in: nothing to compare it with
        return Decision(begin(sign_in, location), "first")
    state = state or _EMPTY
    history = state.visits
    if is_duplicate(state, eid):
        return Decision(state, "duplicate")
    visit = Visit(eid, sign_in.ip, sign_in.time, location)

    if record is None:
        quick = advance(state, visit, sign_in.success, policy)
        if quick is not None:
            return Decision(quick[0], quick[1])
    i = bisect_right([v.time for v in history], sign_in.time)
    late = i < len(history)
    neighbours = [history[i - 1]] if i > 0 else []
    if late:
        neighbours.append(history[i])
    context = (*history[:i], visit, *history[i:])

    alerts: list[Alert] = []
    alerted = list(state.alerted)
    suppressed_by: list[str] = []
    candidates: list[Candidate] = []
    same_ip_only = bool(neighbours)
    repeated = False
    for other in neighbours:
        if other.ip == visit.ip:
            continue
        same_ip_only = False
        if record is not None:
            candidates.append(_candidate(sign_in.user, other, visit, record, policy, context))
        travel = judge(other, visit, policy)
        if travel is None:
            continue
        aid = alert_id(sign_in.user, travel.earlier.event_id, travel.later.event_id)
        if any(e.alert_id == aid for e in alerted):
            repeated = True  # this very alert was raised before: a re-delivery beyond the id memory
            continue
        reason = blocked_by(sign_in.user, travel, policy, context)
        pair = remember(aid, travel)
        if reason is None and is_repeat(alerted, pair, policy):
            reason = "repeat"
        if reason is not None:
            suppressed_by.append(reason)
            continue
        alerted.append(pair)
        alerts.append(_make_alert(aid, sign_in.user, travel, policy, context, now, late))

    recent = _with_id(state.recent_ids, sign_in.event_id, policy.recent_ids)
    newest_time = max(sign_in.time, history[-1].time if history else sign_in.time)
    keep = max(policy.suppress_window_s, policy.history_window_s)
    alerted = [e for e in alerted if newest_time - e.time <= keep]
    new_history = _insert(history, visit, policy) if sign_in.success else history
    new_state = AccountState(new_history, recent, tuple(alerted))

    outcome: Outcome
    if alerts:
        outcome = "alert"
    elif repeated:
        outcome = "duplicate"
    elif suppressed_by:
        outcome = "suppressed"
    elif not neighbours:
        outcome = "first"
    elif same_ip_only:
        outcome = "same_ip"
    elif not sign_in.success:
        outcome = "failure_checked"
    else:
        outcome = "plausible"
    return Decision(new_state, outcome, tuple(alerts), tuple(suppressed_by), late, tuple(candidates))


def _candidate(
    user: str, a: Visit, b: Visit, loosest: Policy, policy: Policy, context: tuple[Visit, ...]
) -> Candidate:
    exact = could_be_impossible(a, b, loosest)
    travel = measure(a, b, exact=exact)
    la, lb = travel.earlier.location, travel.later.location
    return Candidate(
        user,
        travel.earlier.event_id,
        travel.later.event_id,
        travel.later.time,
        travel.net_distance_km,
        travel.net_speed_kmh,
        exact,
        blocked_by(user, travel, policy, context) if exact else None,
        la.latitude,
        la.longitude,
        lb.latitude,
        lb.longitude,
    )


def _make_alert(
    aid: str, user: str, travel: Travel, policy: Policy, history: tuple[Visit, ...], now: float, late: bool
) -> Alert:
    net_speed = travel.net_speed_kmh
    reasons = explain(travel, policy, history)
    found = doubts(travel, policy)
    reasons += [text for _, text in found]
    confidence = min((level for level, _ in found), key=CONFIDENCES.index, default="high")
    severity = _lower(severity_for(net_speed, policy), len(found), SEVERITIES)
    if late:
        reasons.append(
            "late event: arrived after a newer sign-in and was compared with its neighbours in time"
        )
    return new_alert(
        alert_id=aid,
        user=user,
        detected_at=now,
        severity=severity,
        confidence=confidence,
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

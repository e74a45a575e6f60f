"""The engine: runs batches of sign-ins through enrich -> evaluate -> state.

It talks only to protocols (a GeoIP resolver, a state store, a clock), never to Kafka, files or
Prometheus, so ``replay`` and ``run`` drive the very same object. Tallies are plain counters that the
metrics adapter reads when scraped.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Protocol, cast

from detector.codec import reason_code
from detector.geo import EARTH_MEAN_RADIUS_KM, SCREEN_MARGIN
from detector.model import SPEEDUPS, AccountState, Alert, DatabaseInfo, Location, SignIn, Visit, make
from detector.rules import RAW_TAIL, Candidate, Policy, advance, evaluate, first_state, is_duplicate
from detector.state import StateStore, WorkingSet

Clock = Callable[[], float]


class GeoResolver(Protocol):
    database: DatabaseInfo

    def locate(self, ip: str) -> Location | None: ...

    def locate_many(self, ips: list[str]) -> list[Location | None]:
        """``locate`` of each, in order (a resolver may look the new ones up together)."""


class TrustedNetworks:
    """Networks whose sign-ins never count as travel (corporate egress, VPN concentrators, gateways):
    their location says where the organisation's gateway is, not where the person is."""

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())
        self.contains = lru_cache(maxsize=65536)(self._contains)

    def _contains(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)


@dataclass
class Tally:
    """Running totals; every sign-in lands in exactly one ``by_result`` bucket."""

    by_result: Counter[str] = field(default_factory=Counter)
    # Outcome of each evaluated sign-in (first, plausible, same_ip, alert, suppressed, duplicate, ...).
    by_outcome: Counter[str] = field(default_factory=Counter)
    alerts_by_severity: Counter[str] = field(default_factory=Counter)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    # Impossible pairs not alerted, by reason (repeat, country_level, satellite, hosting, exception).
    suppressed_by: Counter[str] = field(default_factory=Counter)
    late: int = 0
    newest_event_time: float = 0.0

    @property
    def events(self) -> int:
        return sum(self.by_result.values())

    @property
    def alerts(self) -> int:
        return sum(self.alerts_by_severity.values())

    @property
    def suppressed(self) -> int:
        return sum(self.suppressed_by.values())

    def merge(self, other: Tally) -> None:
        self.by_result.update(other.by_result)
        self.by_outcome.update(other.by_outcome)
        self.alerts_by_severity.update(other.alerts_by_severity)
        self.rejected_by_reason.update(other.rejected_by_reason)
        self.suppressed_by.update(other.suppressed_by)
        self.late += other.late
        self.newest_event_time = max(self.newest_event_time, other.newest_event_time)


def count_rejected(tally: Tally, reasons: Iterable[str]) -> None:
    """Count input that never became a sign-in, by the code of its reason."""
    for reason in reasons:
        tally.by_result["rejected"] += 1
        tally.rejected_by_reason[reason_code(reason)] += 1


Selected = tuple[list[tuple[Any, ...]], list[int] | None, float, int, list[str], list[str]]


def select_signins(
    events: list[SignIn],
    evaluate_failures: bool,
    newest: float,
    trusted: TrustedNetworks,
    by_result: Counter[str],
) -> Selected:
    """The sign-ins of a batch to evaluate (each a plain tuple of ``SignIn``'s fields), where each is in
    ``events`` (None while that is where it is), the newest time from ``newest`` on, how many failures
    were left out (unless ``evaluate_failures``), and the sign-ins' users and addresses. Those from
    trusted networks are counted in ``by_result``. (``_speedups.select_signins`` is the twin, where no
    network is trusted.)"""
    wanted: list[tuple[Any, ...]] = []
    wanted_at: list[int] | None = None
    ignored = 0
    any_trusted = bool(trusted)
    for i, event in enumerate(events):
        row: tuple[Any, ...] = event
        if row[2] > newest:  # (2: time)
            newest = row[2]
        if not row[4] and not evaluate_failures:  # (4: success)
            ignored += 1
        elif any_trusted and trusted.contains(row[1]):  # (1: ip)
            by_result["trusted"] += 1
        else:
            if wanted_at is not None:
                wanted_at.append(i)
            elif len(wanted) < i:
                wanted_at = [*range(len(wanted)), i]
            wanted.append(row)
    return wanted, wanted_at, newest, ignored, [row[0] for row in wanted], [row[1] for row in wanted]


@dataclass
class BatchResult:
    """What a batch concluded, not yet applied: alerts, the new state of each account it touched, and
    its tallies. Nothing of it counts until ``Engine.commit`` (so an aborted transaction leaves no trace);
    but an engine that applies at once (replay) has changed its store already, and leaves ``changes`` empty."""

    alerts: list[Alert] = field(default_factory=list)
    # Where each alert was raised: the place, in the sign-ins given to ``process``, of the one that raised it.
    raised_at: list[int] = field(default_factory=list)
    changes: dict[str, AccountState] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)
    candidates: list[Candidate] = field(default_factory=list)


class Engine:
    """Stateful detection over a stream of sign-ins, one batch at a time."""

    def __init__(
        self,
        policy: Policy,
        geo: GeoResolver,
        store: StateStore,
        clock: Clock = time.time,
        trusted: TrustedNetworks | None = None,
        use_vendor_location: bool = False,
        record: Policy | None = None,
        apply_at_once: bool = False,
    ) -> None:
        self.policy = policy
        self.geo = geo
        self.store = store
        self.clock = clock
        self.trusted = trusted or TrustedNetworks()
        self.use_vendor_location = use_vendor_location
        # The loosest thresholds of a tuning run: every comparison is then recorded (see rules.Candidate).
        self.record = record
        # Replay, where nothing is ever rolled back: each state change goes straight into the store's own
        # dict as it is made (``state.WorkingSet``), not into the batch's ``changes`` for ``commit`` to copy
        # over: one lookup a sign-in in the store's big dict where there were two, and no set or dicts of
        # the batch's accounts (a one-process replay of the benchmark's slice: 1.60 -> 1.30 s).
        self.apply_at_once = apply_at_once
        if apply_at_once and not hasattr(store, "working_set"):
            raise TypeError(f"{type(store).__name__} cannot be changed in place (apply_at_once)")
        self.tally = Tally()
        # Until the resolver takes a new database, every stored visit was located by the one in use.
        self._first_database = geo.database

    def locate(self, event: SignIn) -> Location | None:
        """Where the sign-in was: the GeoIP database, else (when allowed) the identity provider's own.
        An address the provider flagged as a proxy counts as a hosting/VPN network."""
        return self._with_vendor(event, self.geo.locate(event.ip))

    def _with_vendor(self, event: SignIn, location: Location | None) -> Location | None:
        """``locate``, given the database's answer."""
        if location is None:
            if not self.use_vendor_location:
                return None
            location = event.vendor_location
        if event.proxy and location is not None and location.network is None:
            location = replace(location, network="hosting")
        return location

    def _current(self, state: AccountState | None) -> AccountState | None:
        """The state with every visit located by the database in use: after a database update an address
        that merely moved in the new build must not look like travel. (``process`` asks only once the
        resolver has taken another database than the first.)"""
        db = self.geo.database
        if state is None:
            return state
        for v in state.visits:
            if v.location.database is not db and v.location.database is not None:
                break
        else:
            return state  # every visit located by the database in use (the common case)
        visits = []
        for v in state.visits:
            if v.location.database is not db and v.location.database is not None:
                moved = self.geo.locate(v.ip)
                if moved is not None:
                    v = v._replace(location=moved)
            visits.append(v)
        return state._replace(visits=tuple(visits))

    def process(self, events: Iterable[SignIn], rejected: Iterable[str] = ()) -> BatchResult:
        """Evaluate sign-ins in the order given (the reorder buffer puts them in event-time order),
        against the store as it is plus this batch's own changes.

        ``rejected`` are the reasons of input that never became a sign-in, counted with the batch."""
        result = BatchResult()
        tally = result.tally
        count_rejected(tally, rejected)
        now = self.clock()
        policy, store, trusted, record = self.policy, self.store, self.trusted, self.record
        events = events if isinstance(events, list) else list(events)
        evaluate_failures = policy.evaluate_failures
        by_result, by_outcome = tally.by_result, tally.by_outcome
        newest = tally.newest_event_time
        # The sign-ins to evaluate, and where each was (the batch's addresses located in one call).
        # Each sign-in's fields by position (model.SignIn) in a plain tuple: compiled, an item of a tuple,
        # where an attribute (or an item of the named tuple) is a generic lookup.
        picked: Selected | None = None
        if SPEEDUPS is not None and not trusted:
            picked = SPEEDUPS.select_signins(events, evaluate_failures, newest)
        if picked is None:
            picked = select_signins(events, evaluate_failures, newest, trusted, by_result)
        # (``wanted_at``: where each of ``wanted`` is in ``events``, once they differ)
        wanted, wanted_at, newest, ignored, users, ips = picked
        if ignored:
            by_result["failure_ignored"] += ignored
        located = self.geo.locate_many(ips)
        # The batch's accounts as the store holds them, in one call (not one call a sign-in into the store);
        # applied at once, the store's own dict, changed in place.
        changes: dict[str, AccountState]
        if self.apply_at_once:
            held = changes = cast(WorkingSet, store).working_set(users)
        else:
            held, changes = store.get_many(set(users)), result.changes
        # Visits need locating again only once the resolver has taken another database than the first.
        relocate = self.geo.database is not self._first_database
        outcomes: list[str] = []  # (counted at the end: a Counter's += is a dozen calls)
        # Where built, runs of sign-ins that the rule's quick path decides are taken in C (the loop body
        # below is its twin); it stops at each sign-in it leaves to this loop.
        quick_run = SPEEDUPS.advance_run if SPEEDUPS is not None and not relocate and record is None else None
        done = 0
        for k in range(len(wanted)):
            if k < done:
                continue
            if quick_run is not None:
                done = quick_run(
                    k, wanted, located, held, changes, outcomes, Visit, AccountState,
                    policy.max_speed_kmh, policy.min_distance_km, policy.history_size,
                    policy.history_window_s, SCREEN_MARGIN, RAW_TAIL, policy.recent_ids, EARTH_MEAN_RADIUS_KM,
                )  # fmt: skip
                if done > k:
                    continue
            row = wanted[k]
            location = located[k]
            user, ip, t, event_id, success = row[0], row[1], row[2], row[3], row[4]
            if location is None or row[6]:  # (6: proxy) the provider's location or flag: ``locate``
                location = self._with_vendor(cast(SignIn, row), location)
                if location is None:
                    by_result["no_location"] += 1
                    continue
            stored = changes[user] if user in changes else held.get(user)
            if stored is None and record is None:  # the account's first sign-in (rules.evaluate)
                changes[user] = first_state(event_id, ip, t, success, location)
                outcomes.append("first")
                continue
            state = self._current(stored) if relocate else stored
            if state is not None and record is None:
                # The common case without the Decision machinery (the same rule: rules.advance).
                if is_duplicate(state, event_id):
                    outcomes.append("duplicate")
                    continue
                visit: Visit = make(Visit, event_id, ip, t, location)
                quick = advance(state, visit, success, policy)
                if quick is not None:
                    changes[user] = quick[0]
                    outcomes.append(quick[1])
                    continue
            decision = evaluate(state, cast(SignIn, row), location, policy, now, record)
            if decision.state is not stored:
                changes[user] = decision.state
            outcome = decision.outcome
            outcomes.append(outcome)
            if outcome in ("plausible", "same_ip", "first", "duplicate"):
                continue  # nothing else to count
            tally.suppressed_by.update(decision.suppressed_by)
            tally.late += decision.late
            result.candidates += decision.candidates
            for alert in decision.alerts:
                tally.alerts_by_severity[alert.severity] += 1
                result.alerts.append(alert)
                result.raised_at.append(k if wanted_at is None else wanted_at[k])
        if SPEEDUPS is not None:  # (a list.count of each kind compared every item with it: 5% of replay)
            SPEEDUPS.count_into(by_outcome, outcomes)
        else:
            by_outcome.update(outcomes)
        tally.newest_event_time = newest
        # This batch's tally is fresh: every outcome but a duplicate is an evaluated sign-in.
        duplicates = by_outcome["duplicate"]
        evaluated = sum(by_outcome.values()) - duplicates
        if evaluated:
            by_result["evaluated"] += evaluated
        if duplicates:
            by_result["duplicate"] += duplicates
        return result

    def commit(self, result: BatchResult) -> None:
        """Apply a batch's state changes and tallies (after its output is safely delivered); applied at
        once, the store is only settled (``WorkingSet.settle``)."""
        if self.apply_at_once:
            cast(WorkingSet, self.store).settle()
        else:
            self.store.put_many(result.changes)
        self.tally.merge(result.tally)

    def drain(self) -> BatchResult:
        """What is still to come after the last ``process``: nothing here, as ``process`` returns each
        batch's own result (a pipelined engine, ``parallel.ParallelEngine``, returns its last batch)."""
        return BatchResult()

    @property
    def accounts(self) -> int:
        return len(self.store)

    def run(self, events: Iterable[SignIn], rejected: Iterable[str] = ()) -> list[Alert]:
        """Process and commit at once (replay, where output cannot be rolled back anyway)."""
        result = self.process(events, rejected)
        self.commit(result)
        return result.alerts

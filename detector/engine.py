"""The engine: runs batches of sign-ins through enrich -> evaluate -> state.

It talks only to protocols (a GeoIP resolver, a state store, a clock), never to Kafka, files or
Prometheus, so ``replay`` and ``run`` drive the very same object. Tallies are plain counters that the
metrics adapter reads when scraped.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from detector.codec import reason_code
from detector.model import AccountState, Alert, DatabaseInfo, Location, SignIn
from detector.rules import Policy, evaluate
from detector.state import StateStore

Clock = Callable[[], float]


class GeoResolver(Protocol):
    database: DatabaseInfo

    def locate(self, ip: str) -> Location | None: ...


@dataclass
class Tally:
    """Running totals; every sign-in lands in exactly one ``by_result`` bucket."""

    by_result: Counter[str] = field(default_factory=Counter)
    # Outcome of each evaluated sign-in (first, plausible, same_ip, alert, suppressed, duplicate, ...).
    by_outcome: Counter[str] = field(default_factory=Counter)
    alerts_by_severity: Counter[str] = field(default_factory=Counter)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    late: int = 0
    newest_event_time: float = 0.0

    @property
    def events(self) -> int:
        return sum(self.by_result.values())

    @property
    def alerts(self) -> int:
        return sum(self.alerts_by_severity.values())

    def merge(self, other: Tally) -> None:
        self.by_result.update(other.by_result)
        self.by_outcome.update(other.by_outcome)
        self.alerts_by_severity.update(other.alerts_by_severity)
        self.rejected_by_reason.update(other.rejected_by_reason)
        self.suppressed += other.suppressed
        self.late += other.late
        self.newest_event_time = max(self.newest_event_time, other.newest_event_time)


@dataclass
class BatchResult:
    """What a batch concluded, not yet applied: alerts, the new state of each account it touched, and
    its tallies. Nothing of it counts until ``Engine.commit`` (so an aborted transaction leaves no trace)."""

    alerts: list[Alert] = field(default_factory=list)
    changes: dict[str, AccountState] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)


class Engine:
    """Stateful detection over a stream of sign-ins, one batch at a time."""

    def __init__(
        self,
        policy: Policy,
        geo: GeoResolver,
        store: StateStore,
        clock: Clock = time.time,
    ) -> None:
        self.policy = policy
        self.geo = geo
        self.store = store
        self.clock = clock
        self.tally = Tally()

    def process(self, events: Iterable[SignIn], rejected: Iterable[str] = ()) -> BatchResult:
        """Evaluate sign-ins in the order given (the reorder buffer puts them in event-time order),
        against the store as it is plus this batch's own changes.

        ``rejected`` are the reasons of input that never became a sign-in, counted with the batch."""
        result = BatchResult()
        tally, changes = result.tally, result.changes
        for reason in rejected:
            tally.by_result["rejected"] += 1
            tally.rejected_by_reason[reason_code(reason)] += 1
        now = self.clock()
        policy, store, locate = self.policy, self.store, self.geo.locate
        for event in events:
            if event.time > tally.newest_event_time:
                tally.newest_event_time = event.time
            if not event.success and not policy.evaluate_failures:
                tally.by_result["failure_ignored"] += 1
                continue
            location = locate(event.ip)
            if location is None:
                tally.by_result["no_location"] += 1
                continue
            before = changes[event.user] if event.user in changes else store.get(event.user)
            decision = evaluate(before, event, location, policy, now)
            if decision.state is not before:
                changes[event.user] = decision.state
            tally.by_result["duplicate" if decision.outcome == "duplicate" else "evaluated"] += 1
            tally.by_outcome[decision.outcome] += 1
            tally.suppressed += decision.suppressed
            tally.late += decision.late
            for alert in decision.alerts:
                tally.alerts_by_severity[alert.severity] += 1
                result.alerts.append(alert)
        return result

    def commit(self, result: BatchResult) -> None:
        """Apply a batch's state changes and tallies (after its output is safely delivered)."""
        for user, state in result.changes.items():
            self.store.put(user, state)
        self.tally.merge(result.tally)

    def run(self, events: Iterable[SignIn], rejected: Iterable[str] = ()) -> list[Alert]:
        """Process and commit at once (replay, where output cannot be rolled back anyway)."""
        result = self.process(events, rejected)
        self.commit(result)
        return result.alerts

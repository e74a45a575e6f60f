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

from detector.model import Alert, DatabaseInfo, Location, SignIn
from detector.rules import Policy, evaluate
from detector.state import StateStore

Clock = Callable[[], float]


class GeoResolver(Protocol):
    database: DatabaseInfo

    def locate(self, ip: str) -> Location | None: ...


@dataclass
class Tally:
    """Running totals since start; every sign-in lands in exactly one ``by_result`` bucket."""

    by_result: Counter[str] = field(default_factory=Counter)
    alerts_by_severity: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    late: int = 0
    newest_event_time: float = 0.0

    @property
    def events(self) -> int:
        return sum(self.by_result.values())

    @property
    def alerts(self) -> int:
        return sum(self.alerts_by_severity.values())


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

    def process(self, events: Iterable[SignIn]) -> list[Alert]:
        """Evaluate sign-ins in the order given; return the alerts they raise."""
        alerts: list[Alert] = []
        now = self.clock()
        policy, tally, store, locate = self.policy, self.tally, self.store, self.geo.locate
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
            before = store.get(event.user)
            decision = evaluate(before, event, location, policy, now)
            if decision.state is not before:
                store.put(event.user, decision.state)
            tally.by_result[decision.outcome] += 1
            tally.suppressed += decision.suppressed
            tally.late += decision.late
            for alert in decision.alerts:
                tally.alerts_by_severity[alert.severity] += 1
                alerts.append(alert)
        return alerts

    def reject(self, count: int = 1) -> None:
        """Count input that never became a sign-in (the caller has already sent it to rejects/DLQ)."""
        self.tally.by_result["rejected"] += count

"""Event-time ordering before evaluation: a bounded reorder buffer driven by a watermark.

Sign-ins reach the detector out of event-time order: a topic's partitions are consumed at different
paces (after a restart, one may be minutes behind another), and producers deliver late. The buffer
holds each sign-in until the *watermark* says that no earlier sign-in can still come, then releases
them in event-time order.

- The caller computes the watermark. In the stream it is the lowest newest-event-time among the input
  partitions that still have records to deliver (a partition that has caught up cannot hold the others
  back); when every partition has caught up it is +infinity and everything is released at once, so
  live traffic waits for nothing. Replay reads one stream, whose watermark is its newest event time.
- ``window_s`` adds a grace period in event time for lateness *within* a source: a sign-in waits until
  the watermark is ``window_s`` past it. It costs up to that much alert latency in the stream (none in
  replay). A sign-in that comes later than that is still evaluated, against its neighbours in the
  account's history, and counted as late.
- ``max_hold_s`` bounds the wait in wall-clock time, whatever the watermark does (a stalled partition).
- ``min_hold`` (per sign-in, chosen by the caller) makes a sign-in wait a moment in wall-clock time:
  records that a producer sent together can be appended to different partitions milliseconds apart,
  so a partition that looks caught up may simply not have received its share yet. That matters only
  when event time runs much faster than the clock (a backlog, a stream of old sign-ins sent at once),
  so the stream applies it only to sign-ins that are already old when they arrive.

Each held sign-in remembers its source (partition) and offset, so the stream commits, per partition,
only offsets below the oldest sign-in still held: a crash loses nothing that was not evaluated.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from detector.model import SignIn


@dataclass(frozen=True, slots=True)
class Held:
    time: float
    seq: int
    event: SignIn
    source: Hashable
    offset: int
    arrived: float
    due: float  # not released before this wall-clock time


class ReorderBuffer:
    """Sign-ins waiting for the watermark; released oldest first."""

    def __init__(self, window_s: float = 0.0, max_hold_s: float = float("inf")) -> None:
        self.window_s = window_s
        self.max_hold_s = max_hold_s
        self._heap: list[tuple[float, int, Held]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(
        self,
        event: SignIn,
        source: Hashable = None,
        offset: int = -1,
        arrived: float = 0.0,
        min_hold: float = 0.0,
    ) -> None:
        held = Held(event.time, next(self._seq), event, source, offset, arrived, arrived + min_hold)
        heapq.heappush(self._heap, (held.time, held.seq, held))

    def add_all(self, events: Iterable[SignIn], source: Hashable = None, arrived: float = 0.0) -> None:
        for event in events:
            self.add(event, source, -1, arrived)

    def release(self, watermark: float, now: float = 0.0) -> list[SignIn]:
        """Sign-ins whose time is at least ``window_s`` behind the watermark, or held too long; oldest first."""
        limit = watermark - self.window_s
        if self.max_hold_s != float("inf") and self._heap:
            # Anything held past max_hold goes now, and with it everything older than it.
            overdue = [h.time for _, _, h in self._heap if now - h.arrived >= self.max_hold_s]
            if overdue:
                limit = max(limit, max(overdue))
        out: list[SignIn] = []
        heap = self._heap
        while heap and heap[0][0] <= limit and heap[0][2].due <= now:
            out.append(heapq.heappop(heap)[2].event)
        return out

    def next_due(self) -> float | None:
        """Wall-clock time before which the oldest held sign-in may not go (None when empty)."""
        return self._heap[0][2].due if self._heap else None

    def drain(self) -> list[SignIn]:
        """Everything still held, oldest first (end of input)."""
        return self.release(float("inf"), float("inf"))

    def oldest_offsets(self) -> dict[Hashable, int]:
        """Per source, the offset of the oldest-offset sign-in still held."""
        out: dict[Hashable, int] = {}
        for _, _, h in self._heap:
            if h.offset >= 0 and (h.source not in out or h.offset < out[h.source]):
                out[h.source] = h.offset
        return out

    def drop_sources(self, sources: Iterable[Hashable]) -> int:
        """Forget what came from these sources (partitions revoked: their new owner re-reads them)."""
        gone = set(sources)
        kept = [entry for entry in self._heap if entry[2].source not in gone]
        dropped = len(self._heap) - len(kept)
        if dropped:
            heapq.heapify(kept)
            self._heap = kept
        return dropped

    def snapshot(self) -> list[tuple[float, int, Held]]:
        return list(self._heap)

    def restore(self, snapshot: list[tuple[float, int, Held]]) -> None:
        self._heap = list(snapshot)

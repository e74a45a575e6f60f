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
- ``max_hold_s`` bounds the wait in wall-clock time, whatever the watermark does (a stalled partition)
  and whatever ``min_hold`` asks of older sign-ins (a backlog that keeps arriving).
- ``min_hold`` (per sign-in, chosen by the caller) makes a sign-in wait a moment in wall-clock time:
  records that a producer sent together can be appended to different partitions milliseconds apart,
  so a partition that looks caught up may simply not have received its share yet. That matters only
  when event time runs much faster than the clock (a backlog, a stream of old sign-ins sent at once),
  so the stream applies it only to sign-ins that are already old when they arrive. And only while a
  caught-up partition is what lets the sign-in go: once *every* partition, caught up or not, has
  delivered a sign-in as new (the ``settled`` mark), no partition is taken on trust and it goes at once.

Each held sign-in remembers its source (partition) and offset, so the stream commits, per partition,
only offsets below the oldest sign-in still held: a crash loses nothing that was not evaluated.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from operator import attrgetter
from typing import Any, NamedTuple, cast

from detector.model import SignIn, make


class Held(NamedTuple):
    time: float
    seq: int
    event: SignIn
    source: Hashable
    offset: int
    arrived: float
    due: float  # not released before this wall-clock time


class ReorderBuffer:
    """Sign-ins waiting for the watermark; released oldest first.

    Held sign-ins are kept in a list sorted when needed: input is nearly always in order already, so
    only what came out of order since the last sort is sorted and merged in (cheaper than a heap
    operation per sign-in). Each source's sign-ins are also kept in the order they came (offsets
    ascending, arrivals too), released ones dropped from the front as they reach it: a source's oldest
    offset and the sign-ins held past ``max_hold_s`` are found at the front, not by a walk over all that
    is held (a backlog holds a second of input: tens of thousands of sign-ins, asked after every batch)."""

    def __init__(self, window_s: float = 0.0, max_hold_s: float = float("inf")) -> None:
        self.window_s = window_s
        self.max_hold_s = max_hold_s
        self._items: list[Held] = []
        self._unsorted_from = 0  # _items[:_unsorted_from] are in order
        self._seq = itertools.count()
        self._by_source: dict[Hashable, deque[Held]] = {}
        self._released: set[int] = set()  # (seq) released, still in their source's queue
        self._disordered: set[Hashable] = set()  # sources whose offsets or arrivals went back

    def __len__(self) -> int:
        return len(self._items)

    def add(
        self,
        event: SignIn,
        source: Hashable = None,
        offset: int = -1,
        arrived: float = 0.0,
        min_hold: float = 0.0,
    ) -> None:
        items = self._items
        if self._unsorted_from == len(items) and not (items and event.time < items[-1].time):
            self._unsorted_from += 1  # (still in order)
        held = make(Held, event.time, next(self._seq), event, source, offset, arrived, arrived + min_hold)
        items.append(held)
        queue = self._by_source.get(source)
        if queue is None:
            queue = self._by_source[source] = deque()
        elif queue and (offset < queue[-1].offset or arrived < queue[-1].arrived):
            self._disordered.add(source)
        queue.append(held)

    def add_run(
        self,
        events: list[SignIn | None],
        start: int,
        records: list[Any],
        source: Hashable,
        arrived: float,
        min_hold: float,
        hold_before: float,
    ) -> tuple[int, float]:
        """``add`` of ``events`` from ``start``, each with the offset of the record at its place in
        ``records``, up to the first None (a record that is not one sign-in: the caller's); those older
        than ``hold_before`` with ``min_hold``. Returns where it stopped (``len(events)`` at the end) and
        the newest time added (-inf when none).

        ``add``'s steps, with what a run shares looked up once (its source's queue, the last time held,
        the source's last offset and arrival) and each ``Held`` made by ``make`` (the named tuple's
        ``__new__`` is a Python call): 0.7-0.8 -> 0.34-0.5 us a sign-in of a backlog's batches."""
        items, by_source = self._items, self._by_source
        queue = by_source.get(source)
        if queue is None:
            queue = by_source[source] = deque()
        in_order = self._unsorted_from == len(items)
        last_time = cast(tuple[Any, ...], items[-1])[0] if items else float("-inf")
        previous: tuple[Any, ...] | None = queue[-1] if queue else None
        disordered = False
        newest = float("-inf")
        seq = self._seq
        k, n = start, len(events)
        while k < n:
            event = events[k]
            if event is None:
                break
            t = cast(tuple[Any, ...], event)[2]  # (2: time)
            offset = records[k].offset
            if in_order:
                if t < last_time:
                    in_order = False
                else:
                    self._unsorted_from += 1
            last_time = t
            due = arrived + (min_hold if t < hold_before else 0.0)
            held = make(Held, t, next(seq), event, source, offset, arrived, due)
            # (Held's fields by position, see release_held; 4: offset, 5: arrived)
            if previous is not None and (offset < previous[4] or arrived < previous[5]):
                disordered = True
            items.append(held)
            queue.append(held)
            previous = held
            if t > newest:
                newest = t
            k += 1
        if disordered:
            self._disordered.add(source)
        return k, newest

    def add_all(self, events: Iterable[SignIn], source: Hashable = None, arrived: float = 0.0) -> None:
        for event in events:
            self.add(event, source, -1, arrived)

    def _sort(self) -> list[Held]:
        items, cut = self._items, self._unsorted_from
        if cut < len(items):  # the new part sorted, then merged from where its oldest goes
            # By time alone, stably: the part in order is in (time, seq) order and the new part in
            # arrival order, every seq of it above the rest, so the result is (time, seq) order; a
            # float key is compared cheaper than a tuple.
            tail = items[cut:]
            tail.sort(key=_TIME)
            at = bisect_right(items, tail[0].time, 0, cut, key=_TIME)
            merged = items[at:cut] + tail
            merged.sort(key=_TIME)  # (two runs in order: one merge)
            items[at:] = merged
            self._unsorted_from = len(items)
        return items

    def _queues(self) -> Iterator[tuple[Hashable, deque[Held]]]:
        """Each source that holds sign-ins, and its queue, released ones gone from its front."""
        released = self._released
        for source, queue in list(self._by_source.items()):
            while queue and queue[0].seq in released:
                released.discard(queue.popleft().seq)
            if queue:
                yield source, queue
            else:
                del self._by_source[source]
                self._disordered.discard(source)

    def release(self, watermark: float, now: float = 0.0, settled: float = float("-inf")) -> list[SignIn]:
        """Sign-ins whose time is at least ``window_s`` behind the watermark, or held too long; oldest first.

        ``settled`` (at most ``watermark``): the least newest time of every source, caught up or not. A
        sign-in ``window_s`` behind it goes before its ``min_hold`` is over: no source is taken on trust."""
        return [h.event for h in self.release_held(watermark, now, settled=settled)]

    def release_held(
        self,
        watermark: float,
        now: float = 0.0,
        strict: Callable[[float], float] | None = None,
        fresh_from: float = float("-inf"),
        settled: float = float("-inf"),
    ) -> list[Held]:
        """``release``, with where each sign-in came from.

        ``strict``: a second watermark given the time a sign-in arrived, one that counts a source as
        done only once it was seen caught up after the sign-in arrived. A backlog sign-in (older than
        ``fresh_from``) needs both watermarks, since a backlog can reach a source that was idle; a
        fresh one either (a source caught up since it arrived holds nothing older back, whatever
        the age of the newest sign-in it has delivered)."""
        items = self._sort()
        if not items:
            return []
        window = self.window_s
        limit, settled_limit = watermark - window, settled - window
        overdue_limit = float("-inf")
        if self.max_hold_s != float("inf"):
            # Anything held past max_hold goes now, and with it everything older than it.
            overdue = self._overdue(now)
            if overdue:
                overdue_limit = max(overdue)
        end = 0
        # (Each held sign-in's fields by position, ``Held``'s order: compiled, an item of a plain tuple,
        # where an attribute of the named tuple is a generic lookup.)
        for held in items:  # oldest first: nothing is released before an older one that is not yet due
            h = cast(tuple[Any, ...], held)
            t = h[0]
            if t > overdue_limit:  # (max_hold outranks min_hold, or a steady backlog could stall all)
                if h[6] > now and t > settled_limit:  # (6: due)
                    break
                gate = None if strict is None else strict(h[5]) - window  # (5: arrived)
                if t < fresh_from:
                    due = t <= limit and (gate is None or t <= gate)
                else:
                    due = t <= limit or (gate is not None and t <= gate)
                if not due:
                    break
            end += 1
        out = items[:end]
        del items[:end]
        self._unsorted_from -= end
        self._released.update([cast(tuple[Any, ...], h)[1] for h in out])  # (1: seq)
        return out

    def _overdue(self, now: float) -> list[float]:
        """The times of the sign-ins held ``max_hold_s`` or longer: at the front of each source's queue
        (arrivals ascending there), or anywhere in it where they were not."""
        out: list[float] = []
        released = self._released
        for source, queue in self._queues():
            every = source in self._disordered
            for h in queue:
                if h.seq in released:
                    continue
                if now - h.arrived >= self.max_hold_s:
                    out.append(h.time)
                elif not every:
                    break
        return out

    def next_due(self) -> float | None:
        """Wall-clock time before which the oldest held sign-in may not go (None when empty)."""
        items = self._sort()
        return items[0].due if items else None

    def drain(self) -> list[SignIn]:
        """Everything still held, oldest first (end of input)."""
        return self.release(float("inf"), float("inf"))

    def oldest_offsets(self) -> dict[Hashable, int]:
        """Per source, the offset of the oldest-offset sign-in still held (of those with an offset)."""
        out: dict[Hashable, int] = {}
        released = self._released
        for source, queue in self._queues():
            every = source in self._disordered
            for h in queue:
                if h.offset >= 0 and h.seq not in released and (source not in out or h.offset < out[source]):
                    out[source] = h.offset
                    if not every:  # (offsets ascending: the first is the oldest)
                        break
        return out

    def oldest_times(self) -> dict[Hashable, float]:
        """Per source, the event time of its oldest sign-in still held."""
        sources = sum(1 for _ in self._queues())
        out: dict[Hashable, float] = {}
        for h in self._sort():  # (oldest first: each source's first is its oldest)
            if h.source not in out:
                out[h.source] = h.time
                if len(out) == sources:
                    break
        return out

    def drop_sources(self, sources: Iterable[Hashable]) -> int:
        """Forget what came from these sources (partitions revoked: their new owner re-reads them)."""
        gone = set(sources)
        kept = [h for h in self._items if h.source not in gone]
        dropped = len(self._items) - len(kept)
        self._reset(kept)
        return dropped

    def snapshot(self) -> list[Held]:
        return list(self._items)

    def restore(self, snapshot: list[Held]) -> None:
        self._reset(list(snapshot))

    def _reset(self, items: list[Held]) -> None:
        """Hold exactly these (rare: a partition revoked, a batch undone): the queues made again."""
        self._items, self._unsorted_from = items, 0
        self._by_source, self._released, self._disordered = {}, set(), set()
        for h in sorted(items, key=_SEQ):  # (in the order they came)
            queue = self._by_source.setdefault(h.source, deque())
            if queue and (h.offset < queue[-1].offset or h.arrived < queue[-1].arrived):
                self._disordered.add(h.source)
            queue.append(h)


def route(held: list[Held], routes: dict[str, int]) -> list[SignIn]:
    """The sign-ins of ``held``, each account noted in ``routes`` with the partition of the source it
    came from (a Kafka ``TopicPartition``: the stream keeps an account's state with its partition)."""
    events: list[SignIn] = []
    source: Any = None
    partition = -1
    for h in held:
        row = cast(tuple[Any, ...], h)
        event = row[2]  # (Held's fields by position: see release_held)
        if row[3] is not source:  # (the same source object for a partition's run of sign-ins)
            source = row[3]
            partition = source.partition
        routes[cast(tuple[Any, ...], event)[0]] = partition  # (0: user)
        events.append(event)
    return events


_SEQ = attrgetter("seq")
_TIME = attrgetter("time")


class FileOrder:
    """The reorder buffer of a replay: one source read as fast as it goes, so no wall-clock holds, and
    the watermark is the newest event time read so far.

    It releases exactly what ``ReorderBuffer(window_s)`` releases at that watermark, in the same order
    (a test holds them equal), without a ``Held`` record and a loop step per sign-in: a batch is
    appended at once and the list sorted by time (a stable sort keeps the order of arrival among equal
    times, as ``ReorderBuffer``'s sequence numbers do; on the nearly sorted input of a log it is one
    linear pass), then cut by one bisection."""

    def __init__(self, window_s: float = 0.0) -> None:
        self.window_s = window_s
        self.newest = float("-inf")
        self._held: list[SignIn] = []

    def __len__(self) -> int:
        return len(self._held)

    def add(self, events: list[SignIn]) -> list[SignIn]:
        """Take a batch; return the sign-ins the new watermark releases, oldest first."""
        held = self._held
        if events:
            held += events
            held.sort(key=_TIME)
            self.newest = max(self.newest, held[-1].time)
        cut = bisect_right(held, self.newest - self.window_s, key=_TIME)
        out = held[:cut]
        del held[:cut]
        return out

    def drain(self) -> list[SignIn]:
        """Everything still held, oldest first (end of input)."""
        out, self._held = self._held, []
        return out

from __future__ import annotations

from typing import Any, NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from detector.model import SignIn
from detector.reorder import FileOrder, ReorderBuffer, route


def ev(t: float, name: str = "") -> SignIn:
    return SignIn("u", "81.2.69.10", t, name or f"e{t}")


def test_releases_in_event_time_order_up_to_the_watermark_less_the_window() -> None:
    b = ReorderBuffer(window_s=60)
    for t in (300, 100, 200):
        b.add(ev(t))
    assert [e.time for e in b.release(watermark=150)] == []  # 150 - 60 = 90: nothing old enough
    assert [e.time for e in b.release(watermark=250)] == [100]
    assert [e.time for e in b.release(watermark=260)] == [200]
    assert [e.time for e in b.drain()] == [300]


def test_min_hold_and_max_hold_in_wall_clock() -> None:
    b = ReorderBuffer(window_s=0, max_hold_s=5)
    b.add(ev(10), arrived=0.0, min_hold=1.0)
    assert b.release(watermark=float("inf"), now=0.5) == []
    assert b.next_due() == 1.0
    assert [e.time for e in b.release(watermark=float("inf"), now=1.0)] == [10]
    # A stalled watermark does not hold a sign-in past max_hold, nor anything older than it.
    b.add(ev(20), arrived=10.0)
    b.add(ev(15), arrived=12.0)
    assert b.release(watermark=0, now=14.0) == []
    assert [e.time for e in b.release(watermark=0, now=15.0)] == [15, 20]


def test_min_hold_is_skipped_once_every_source_has_delivered_a_newer_sign_in() -> None:
    # ``settled``: the least newest time of all sources, caught up or not. Behind it (less the window), no
    # source is taken on trust, so the hold has nothing to guard; ahead of it, the hold stands.
    b = ReorderBuffer(window_s=5)
    for t in (100, 110, 120):
        b.add(ev(t), arrived=0.0, min_hold=1.0)
    assert b.release(watermark=float("inf"), now=0.5) == []
    assert [e.time for e in b.release(watermark=float("inf"), now=0.5, settled=114)] == [100]
    assert [e.time for e in b.release(watermark=float("inf"), now=0.5, settled=115)] == [110]
    assert b.release(watermark=float("inf"), now=0.9, settled=124) == []
    assert [e.time for e in b.release(watermark=float("inf"), now=1.0, settled=124)] == [120]


def test_a_backlog_waits_for_the_strict_watermark_given_its_arrival() -> None:
    # Backlog sign-ins (older than fresh_from) also need strict(arrived) to have passed them; the stream
    # drops a partition from strict once it is reported caught up after the sign-in arrived.
    b = ReorderBuffer(window_s=0, max_hold_s=60)
    b.add(ev(100), arrived=1.0)
    b.add(ev(200), arrived=5.0)
    inf = float("inf")

    def strict(arrived: float) -> float:
        return 150.0 if arrived < 3.0 else 120.0

    assert [h.event.time for h in b.release_held(inf, now=6.0, strict=strict, fresh_from=1000)] == [100]
    assert b.release_held(inf, now=7.0, strict=strict, fresh_from=1000) == []
    # Fresh sign-ins (not older than fresh_from) only need the live watermark.
    assert [h.event.time for h in b.release_held(inf, now=7.0, strict=strict, fresh_from=150)] == [200]


def test_a_fresh_sign_in_goes_once_every_source_behind_it_was_seen_caught_up() -> None:
    # The live watermark (the least newest time a source delivered) is behind it, but the sources that
    # hold it back were reported caught up after it arrived: nothing older can still come from them.
    b = ReorderBuffer(window_s=0, max_hold_s=60)
    b.add(ev(500), arrived=1.0)

    def strict(arrived: float) -> float:
        return 600.0 if arrived < 3.0 else 100.0

    assert [h.event.time for h in b.release_held(400, now=2.0, strict=strict, fresh_from=0)] == [500]
    b.add(ev(700), arrived=4.0)
    assert b.release_held(400, now=5.0, strict=strict, fresh_from=0) == []  # not yet caught up since
    assert [h.event.time for h in b.release_held(800, now=5.0, strict=strict, fresh_from=0)] == [700]


def test_offsets_per_source_drop_snapshot_restore() -> None:
    b = ReorderBuffer()
    b.add(ev(5), "p0", 10)
    b.add(ev(3), "p0", 11)
    b.add(ev(4), "p1", 7)
    assert b.oldest_offsets() == {"p0": 10, "p1": 7}
    snap = b.snapshot()
    assert b.drop_sources(["p0"]) == 2 and len(b) == 1
    b.restore(snap)
    assert len(b) == 3 and b.oldest_offsets() == {"p0": 10, "p1": 7}


@given(st.lists(st.floats(0, 1e6), max_size=60), st.lists(st.floats(0, 1e6), max_size=10))
def test_nothing_is_lost_and_releases_are_sorted(times: list[float], marks: list[float]) -> None:
    b = ReorderBuffer(window_s=30)
    out: list[float] = []
    for i, t in enumerate(times):
        b.add(ev(t, f"e{i}"))
        if marks:
            released = [e.time for e in b.release(marks[i % len(marks)])]
            assert released == sorted(released)
            out += released
    out += [e.time for e in b.drain()]
    assert sorted(out) == sorted(times)


def test_max_hold_outranks_the_min_hold_of_older_sign_ins_that_keep_coming() -> None:
    # A backlog of old sign-ins arriving without pause (each waits min_hold) must not hold a newer
    # sign-in past max_hold: reorder_max_wait promises the longest wait whatever the stream does.
    b = ReorderBuffer(window_s=0, max_hold_s=5)
    b.add(ev(1_000, "fresh"), arrived=0.0)
    released: list[str] = []
    for tick in range(1, 20):  # one old sign-in a second, each due a second after it arrived
        b.add(ev(float(tick), f"old{tick}"), arrived=tick - 0.5, min_hold=1.0)
        released += [e.event_id for e in b.release(watermark=float("inf"), now=float(tick))]
        if "fresh" in released:
            break
    assert "fresh" in released and tick == 5
    assert released.index("fresh") == len(released) - 1  # after every older one, still in order


@given(
    st.lists(
        st.lists(st.integers(min_value=0, max_value=40), max_size=12),  # batches of event times
        max_size=8,
    ),
    st.sampled_from([0.0, 3.0, 10.0]),
)
def test_file_order_releases_what_the_reorder_buffer_releases(
    batches: list[list[int]], window: float
) -> None:
    """Replay's ``FileOrder`` against ``ReorderBuffer`` driven as replay drove it (one source, the
    watermark the newest time read): the same sign-ins, in the same order, batch by batch."""
    reference, files = ReorderBuffer(window), FileOrder(window)
    newest = float("-inf")
    n = 0
    for times in batches:
        events = []
        for t in times:
            events.append(ev(float(t), f"e{n}"))  # equal times, told apart by their ids
            n += 1
        for event in events:
            reference.add(event)
            newest = max(newest, event.time)
        assert files.add(events) == reference.release(newest)
        assert len(files) == len(reference)
    assert files.drain() == reference.drain()


class Walked:
    """The buffer as it was before each source kept its queue: every question answered by a walk over
    all that is held (what ``ReorderBuffer`` must still answer)."""

    def __init__(self, window_s: float, max_hold_s: float) -> None:
        self.window_s, self.max_hold_s, self.items, self.seq = window_s, max_hold_s, [], 0

    def add(self, event: SignIn, source: str, offset: int, arrived: float, min_hold: float) -> None:
        self.items.append((event.time, self.seq, event, source, offset, arrived, arrived + min_hold))
        self.seq += 1

    def release(self, watermark: float, now: float, fresh_from: float) -> list[str]:
        self.items.sort(key=lambda h: (h[0], h[1]))
        overdue = [h[0] for h in self.items if now - h[5] >= self.max_hold_s]
        overdue_limit = max(overdue) if overdue else float("-inf")
        end = 0
        for h in self.items:
            if h[0] > overdue_limit and (h[6] > now or h[0] > watermark - self.window_s):
                break
            end += 1
        out, self.items = self.items[:end], self.items[end:]
        return [h[2].event_id for h in out]

    def oldest_offsets(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for h in self.items:
            if h[4] >= 0 and (h[3] not in out or h[4] < out[h[3]]):
                out[h[3]] = h[4]
        return out

    def oldest_times(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for h in self.items:
            out[h[3]] = min(out.get(h[3], h[0]), h[0])
        return out


step = st.one_of(
    st.tuples(
        st.just("add"),
        st.integers(0, 40),
        st.sampled_from("pqr"),
        st.integers(-1, 12),
        st.integers(0, 8),
        st.sampled_from([0.0, 0.0, 2.0]),
    ),
    st.tuples(
        st.just("release"), st.integers(0, 45), st.integers(0, 12), st.sampled_from([float("-inf"), 20.0])
    ),
    st.tuples(st.just("undo")),
    st.tuples(st.just("drop"), st.sampled_from("pqr")),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(step, max_size=60), st.sampled_from([float("inf"), 3.0]), st.sampled_from([0.0, 5.0]))
def test_the_queues_answer_as_a_walk_over_everything_held(
    steps: list[tuple[Any, ...]], max_hold: float, window: float
) -> None:
    """Sign-ins added in and out of order, offsets and arrivals going back at times, released, a batch
    undone (snapshot and restore), a source dropped: the same releases, oldest offsets and oldest
    times as a walk over all that is held finds."""
    buffer, walked = ReorderBuffer(window, max_hold), Walked(window, max_hold)
    saved: tuple[Any, ...] | None = None
    for n, (op, *args) in enumerate(steps):
        if op == "add":
            t, source, offset, arrived, hold = args
            event = ev(float(t), f"e{n}")
            buffer.add(event, source, offset, float(arrived), hold)
            walked.add(event, source, offset, float(arrived), hold)
        elif op == "release":
            mark, now, fresh = args
            got = [h.event.event_id for h in buffer.release_held(float(mark), float(now), None, fresh)]
            assert got == walked.release(float(mark), float(now), fresh)
        elif op == "undo":
            if saved is None:
                saved = (buffer.snapshot(), list(walked.items))
            else:
                buffer.restore(saved[0])
                walked.items, saved = list(saved[1]), None
        else:
            assert buffer.drop_sources([args[0]]) == sum(1 for h in walked.items if h[3] == args[0])
            walked.items = [h for h in walked.items if h[3] != args[0]]
            saved = None
        assert buffer.oldest_offsets() == walked.oldest_offsets()
        assert buffer.oldest_times() == walked.oldest_times()
        assert len(buffer) == len(walked.items)
    assert [e.event_id for e in buffer.drain()] == walked.release(float("inf"), float("inf"), float("-inf"))


def test_add_run_is_add_of_each_up_to_the_first_record_that_is_not_a_sign_in() -> None:
    class Record(NamedTuple):
        offset: int

    events = [ev(30), ev(10), None, ev(20), ev(5)]
    records = [Record(100 + k) for k in range(len(events))]
    run, each = ReorderBuffer(), ReorderBuffer()
    assert run.add_run(events, 0, records, "p", 1.0, 2.0, 15) == (2, 30)
    assert run.add_run(events, 3, records, "p", 1.0, 2.0, 15) == (5, 20)
    assert run.add_run(events, 5, records, "p", 1.0, 2.0, 15) == (5, float("-inf"))
    for k in (0, 1, 3, 4):
        e = events[k]
        assert e is not None
        each.add(e, "p", 100 + k, 1.0, 2.0 if e.time < 15 else 0.0)
    assert run.snapshot() == each.snapshot()


class _Record(NamedTuple):
    offset: int


_runs = st.lists(
    st.tuples(
        st.sampled_from("pq"),  # the source
        st.integers(0, 3),  # its arrival
        st.lists(st.one_of(st.none(), st.tuples(st.integers(0, 40), st.integers(-2, 3))), max_size=12),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(_runs, st.lists(st.integers(0, 40), max_size=4))
def test_add_run_leaves_the_buffer_as_add_of_each_would(
    runs: list[tuple[Any, ...]], before: list[int]
) -> None:
    """Runs of sign-ins (times in and out of order, offsets going back now and then, arrivals going
    back between runs, records that are not sign-ins in between) over sign-ins held before: the same
    sign-ins held in the same order with the same fields, the same part known to be in order, the same
    sources marked disordered, and the same releases after, as ``add`` of each."""
    run, each = ReorderBuffer(), ReorderBuffer()
    for k, t in enumerate(before):
        for b in (run, each):
            b.add(ev(float(t), f"b{k}"), "p", k, 0.0)
    offset = 100
    for r, (source, arrived, items) in enumerate(runs):
        events: list[SignIn | None] = []
        records = []
        for k, item in enumerate(items):
            if item is not None:
                offset += item[1]
            events.append(None if item is None else ev(float(item[0]), f"r{r}-{k}"))
            records.append(_Record(offset))
        k = 0
        while k < len(events):
            start = k
            k, newest = run.add_run(events, k, records, source, float(arrived), 2.0, 20.0)
            added = events[start:k]
            assert None not in added and (k == len(events) or events[k] is None)
            assert newest == max((e.time for e in added if e is not None), default=float("-inf"))
            k += 1
        for e, rec in zip(events, records, strict=True):
            if e is not None:
                each.add(e, source, rec.offset, float(arrived), 2.0 if e.time < 20.0 else 0.0)
    assert run.snapshot() == each.snapshot()
    assert run._unsorted_from == each._unsorted_from and run._disordered == each._disordered
    assert run.oldest_offsets() == each.oldest_offsets()
    assert run.release_held(25.0, 1.0) == each.release_held(25.0, 1.0)
    assert run.release_held(float("inf"), 9.0) == each.release_held(float("inf"), 9.0)


def test_route_gives_the_sign_ins_and_notes_each_accounts_partition() -> None:
    class Source(NamedTuple):
        topic: str
        partition: int

    b = ReorderBuffer()
    b.add(SignIn("a", "81.2.69.10", 10, "x"), Source("in", 2), 5)
    b.add(SignIn("b", "81.2.69.10", 20, "y"), Source("in", 0), 9)
    b.add(SignIn("a", "81.2.69.10", 30, "z"), Source("in", 2), 6)
    routes: dict[str, int] = {"c": 1}
    held = b.release_held(float("inf"))
    assert route(held, routes) == [h.event for h in held]
    assert [e.event_id for e in route(held, routes)] == ["x", "y", "z"]
    assert routes == {"a": 2, "b": 0, "c": 1}

"""Replay on several cores: the accounts shared out among processes, each with an engine of its own.

The parent reads, decodes and reorders the input exactly as a one-process replay does (so rejects,
progress and the reorder window are unchanged), then shares each released batch out among itself and
the worker processes, every account always to the same one (the parent's share is smaller: it also
reads and decodes; see ``owners``). The engine never lets two accounts meet, so each account gets the
very sign-ins, in the very order, that a single engine would give it: the alerts are the same, and the
parent writes them in the same order (by the position, in the batch, of the sign-in that raised each).

While the workers evaluate one batch the parent evaluates its own share and reads and decodes the next
ones, up to ``IN_FLIGHT`` batches ahead: a thread for each worker feeds it its parts, so that neither
waits for the other at every batch. ``process`` returns the result of the batch ``IN_FLIGHT`` before the
one it is given (empty until then), and ``drain`` those of the batches still out, together.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading
import traceback
from array import array
from collections.abc import Callable, Iterable
from itertools import repeat
from multiprocessing.connection import Connection
from operator import itemgetter
from typing import Any, cast

from detector.engine import BatchResult, Engine, Tally, count_rejected
from detector.errors import DetectorError
from detector.model import SPEEDUPS, Alert, SignIn

# Below this much input, ``auto`` replays in one process: starting workers would cost more than they save.
AUTO_MIN_BYTES = 8 << 20
AUTO_MAX_WORKERS = 8
# Batches handed out whose results the parent has not yet taken. With one, the parent and the workers
# met at every batch (it collected one before handing out the next), and each waited for the other:
# workers idle for 25-35% of a replay of the bench slice on two cores.
IN_FLIGHT = 2
# The main process's share of the accounts against a worker's (see ``owners``): 1 to 2. At 3 to 5 (chosen
# on the bench slice alone) the worker waited for its parts 0.4-0.7 s of a 3.3-3.5 s replay of the
# benchmark's 10^6 lines, against 0.1-0.2 s of 2.9-3.2 s at 1 to 2 (four alternating pairs, 1 to 2 faster
# in each; the code before the worker's cheaper unpacking gave the same); the slice, median 0.84 s
# against 0.91 s (16 pairs).
LOCAL_WEIGHT = 1
WORKER_WEIGHT = 2


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(setting: int, input_bytes: int) -> int:
    """``setting`` 0 means auto: one worker per CPU this process may use (at most 8) for an input of
    8 MiB or more, else one process. Standard input (size unknown) counts as small."""
    if setting > 0:
        return setting
    if input_bytes < AUTO_MIN_BYTES:
        return 1
    return max(1, min(AUTO_MAX_WORKERS, available_cpus()))


# What goes down the pipe for a worker's part of a batch. Where ``_speedups`` is built: its sign-ins
# packed into one bytes object, and the rare ones with a vendor location or proxy flag sent whole
# (``pack_signins``). Else, its twin: the sign-ins as columns, the text ones each one string (see
# ``_text``), the times packed as doubles, and those rare sign-ins whole.
Part = tuple[bytes, dict[int, SignIn]] | tuple[Any, ...]
Columns = tuple[
    str | tuple[str, ...], str | tuple[str, ...], bytes, str | tuple[str, ...], bytes, dict[int, SignIn]
]

# Joins a column's texts: a column of one string pickles in one piece, where pickle writes (and
# remembers, in its memo) every string of a tuple on its own.
_SEPARATOR = "\x00"


def owners(processes: int) -> bytes:
    """Which share each bucket of accounts (``hash(user) % len(owners)``) goes to: share 0 is the main
    process's, ``LOCAL_WEIGHT`` buckets, and each worker's ``WORKER_WEIGHT``. The main process also reads,
    decodes and hands out the batches: with equal shares, the worker that shared its core set the pace
    while the other sat idle (0.23 s of a 0.8 s replay of the bench slice)."""
    return bytes([0] * LOCAL_WEIGHT + [k for k in range(1, processes) for _ in range(WORKER_WEIGHT)])


def _split(
    events: list[SignIn], n: int, owned: bytes | None = None, keep: int = -1
) -> tuple[list[Any], list[bytes]]:
    """Each of ``n`` shares of the batch, ready for the pipe (None: nothing for that one); every account
    always to the same share, the one its str hash names (fixed for this process's life): ``hash % n``,
    or the owner of its bucket in ``owned`` (see ``owners``). Share ``keep`` (the main process's own) is
    the list of its sign-ins themselves: packing and unpacking it took a tenth of the main process.
    And for each share, where its sign-ins are in the batch (native int32s): the place of each alert's
    sign-in in the batch, so that the batch itself need not be kept, and looked through, to order them."""
    if SPEEDUPS is not None:
        split: tuple[list[Any], list[bytes]] = SPEEDUPS.pack_signins(events, n, owned, keep)
        return split
    parts, places = [], []
    for k, share in enumerate(_shares(events, n, owned)):
        signins = [events[i] for i in share]
        parts.append(None if not share else signins if k == keep else _columns(signins))
        places.append(array("i", share).tobytes())
    return parts, places


def _events(part: Part) -> list[SignIn]:
    """A worker's sign-ins, as ``_split`` sent them (the worker is a fork: the same build)."""
    if SPEEDUPS is not None:
        events: list[SignIn] = SPEEDUPS.unpack_signins(*part, SignIn)
        return events
    return _from_columns(cast(Columns, part))


def _text(values: tuple[str, ...]) -> str | tuple[str, ...]:
    """The column as one string, unless a value holds the separator (then as it is)."""
    joined = _SEPARATOR.join(values)
    return joined if joined.count(_SEPARATOR) == len(values) - 1 else values


def _texts(column: str | tuple[str, ...]) -> list[str] | tuple[str, ...]:
    return column.split(_SEPARATOR) if isinstance(column, str) else column


def _columns(events: list[SignIn]) -> Columns:
    users, ips, times, ids, success, vendor, proxy = zip(*events, strict=True)
    special = (
        {i: e for i, e in enumerate(events) if e.vendor_location is not None or e.proxy}
        if vendor.count(None) < len(vendor) or any(proxy)
        else {}
    )
    return _text(users), _text(ips), array("d", times).tobytes(), _text(ids), bytes(success), special


def _shares(events: list[SignIn], n: int, owned: bytes | None = None) -> list[list[int]]:
    """Which of the batch's sign-ins each of ``n`` shares gets (``hash(user) % n``, or the owner of the
    bucket ``hash(user) % len(owned)``)."""
    import numpy as np  # (the twin only: numpy takes 70 ms to import)

    hashes = np.fromiter(map(hash, map(itemgetter(0), events)), np.int64, len(events))  # (0: user)
    owner = hashes % n if owned is None else np.frombuffer(owned, np.uint8)[hashes % len(owned)]
    return [np.flatnonzero(owner == k).tolist() for k in range(n)]


def _from_columns(columns: Columns) -> list[SignIn]:
    users, ips, packed, ids, success, special = columns
    times = array("d")
    times.frombytes(packed)
    # (tuple.__new__ mapped over the batch in C: a named tuple's own __new__ is Python; see model.py)
    fields = zip(
        _texts(users),
        _texts(ips),
        times.tolist(),
        _texts(ids),
        map(bool, success),
        repeat(None),
        repeat(False),
    )
    events: list[SignIn] = list(map(tuple.__new__, repeat(SignIn), fields))
    for i, event in special.items():
        events[i] = event
    return events


def _serve(conn: Connection, make_engine: Callable[[float], Engine], share: float) -> None:
    """A worker: evaluate batches until told to stop; then report how many accounts it holds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (and stops us)
    try:
        engine = make_engine(share)
        while True:
            part = conn.recv()
            if part is None:
                conn.send(("done", engine.accounts))
                return
            result = engine.process(_events(part))
            engine.commit(result)
            conn.send(("ok", result.alerts, result.raised_at, result.tally))
    except BaseException:  # reported to the parent, which fails the replay with it
        with contextlib.suppress(OSError):  # (unless the parent is gone)
            conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _feed(conn: Connection, outbox: queue.SimpleQueue[Any]) -> None:
    """A worker's parts down its pipe, in order, until None (sent too: the worker then reports and stops).
    A worker that is gone ends this; the parent learns why when it reads that worker's next answer."""
    while True:
        part = outbox.get()
        try:
            conn.send(part)
        except (OSError, EOFError, TypeError):  # (TypeError: the connection closed under us)
            return
        if part is None:
            return


def _in_batch_order(raised: list[tuple[list[Alert], list[int], bytes]]) -> tuple[list[Alert], list[int]]:
    """The alerts of several engines (each with its own accounts) over one batch, in the order one engine
    raises them, and where each was raised in the batch: for each engine its alerts, where each was
    raised among the engine's sign-ins (``BatchResult.raised_at``), and where those are in the batch
    (``_split``'s places). (The sort is stable: the alerts of one sign-in keep their order.)"""
    keyed: list[tuple[int, Alert]] = []
    for alerts, raised_at, places in raised:
        where = memoryview(places).cast("i")
        keyed += [(where[at], alert) for at, alert in zip(raised_at, alerts, strict=True)]
    if len(raised) > 1:
        keyed.sort(key=itemgetter(0))
    return [alert for _, alert in keyed], [at for at, _ in keyed]


class ParallelEngine:
    """``Engine``'s batch interface over ``processes`` processes: this one and ``processes - 1`` workers,
    each running ``make_engine(share)``'s engine on its share of the accounts (see ``owners``; ``share``
    is that fraction of them, for the engine to size its store by; a worker runs the factory after the
    fork)."""

    def __init__(self, processes: int, make_engine: Callable[[float], Engine]) -> None:
        if not 2 <= processes <= 256:  # (--workers allows 256: a bucket's owner is a byte)
            raise ValueError("replay shares accounts out among 2 to 256 processes")
        context = multiprocessing.get_context("fork")
        self.tally = Tally()
        self.accounts = 0
        self._owned = owners(processes)
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._pending: list[tuple[list[bytes], list[bool], list[str], BatchResult]] = []
        self._outboxes: list[queue.SimpleQueue[Any]] = []
        self._feeders: list[threading.Thread] = []
        try:
            for k in range(processes - 1):
                ours, theirs = context.Pipe()
                proc = context.Process(
                    target=_serve,
                    args=(theirs, make_engine, self._share(k + 1)),
                    name=f"replay-worker-{k}",
                    daemon=True,
                )
                proc.start()
                theirs.close()
                self._conns.append(ours)
                self._procs.append(proc)
            for k, conn in enumerate(self._conns):  # (the threads once every fork is done)
                outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
                feeder = threading.Thread(
                    target=_feed, args=(conn, outbox), name=f"feed-worker-{k}", daemon=True
                )
                feeder.start()
                self._outboxes.append(outbox)
                self._feeders.append(feeder)
            self._local = make_engine(self._share(0))  # (made after the forks: the workers make their own)
        except BaseException:
            self.close()
            raise

    def process(self, events: Iterable[SignIn], rejected: Iterable[str] = ()) -> BatchResult:
        """Hand this batch to the workers and evaluate this process's share of it; returns the result of
        the batch ``IN_FLIGHT`` before it (empty for the first ones)."""
        events = events if isinstance(events, list) else list(events)
        (ours, *parts), places = _split(events, len(self._conns) + 1, self._owned, keep=0)
        for outbox, part in zip(self._outboxes, parts, strict=True):
            if part is not None:
                outbox.put(part)
        local = self._local.process(ours) if ours is not None else BatchResult()
        self._local.commit(local)
        self._pending.append((places, [part is not None for part in parts], list(rejected), local))
        return self._collect() if len(self._pending) > IN_FLIGHT else BatchResult()

    def drain(self) -> BatchResult:
        """The results of the batches still out, as one; the workers then stop and report their accounts."""
        result = BatchResult()
        while self._pending:
            last = self._collect()
            result.alerts += last.alerts
            result.raised_at += last.raised_at
            result.tally.merge(last.tally)
        for outbox in self._outboxes:
            outbox.put(None)
        workers = sum(self._receive(k, "done")[0] for k in range(len(self._conns)))
        self.accounts = self._local.accounts + workers
        self.close()
        return result

    def commit(self, result: BatchResult) -> None:
        """The workers have applied their state changes already; this adds the batch's tallies."""
        self.tally.merge(result.tally)

    def close(self) -> None:
        for outbox in self._outboxes:
            outbox.put(None)
        for proc in self._procs:  # (a feeder blocked on a worker that is gone gets a broken pipe)
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)
        for feeder in self._feeders:
            feeder.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._conns, self._procs, self._outboxes, self._feeders = [], [], [], []

    def _share(self, k: int) -> float:
        """The fraction of the accounts that process ``k`` gets (0: the main process)."""
        return self._owned.count(k) / len(self._owned)

    def _receive(self, k: int, expected: str) -> tuple[Any, ...]:
        try:
            kind, *payload = self._conns[k].recv()
        except (EOFError, ConnectionResetError, OSError):
            self._procs[k].join(timeout=5)
            raise DetectorError(
                f"replay worker {k} stopped unexpectedly (exit code {self._procs[k].exitcode})"
            ) from None
        if kind == "error":
            raise DetectorError(f"replay worker {k} failed:\n{payload[0]}".rstrip())
        assert kind == expected, (kind, expected)
        return tuple(payload)

    def _collect(self) -> BatchResult:
        """The oldest batch's result (each worker answers its batches in the order they came)."""
        result = BatchResult()
        places, busy, rejected, local = self._pending.pop(0)
        count_rejected(result.tally, rejected)
        result.tally.merge(local.tally)
        raised = [(local.alerts, local.raised_at, places[0])] if local.alerts else []
        for k, sent in enumerate(busy):
            if sent:
                alerts, at, tally = self._receive(k, "ok")
                result.tally.merge(tally)
                if alerts:
                    raised.append((alerts, at, places[k + 1]))
        result.alerts, result.raised_at = _in_batch_order(raised)
        return result

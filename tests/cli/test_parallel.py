"""`replay --workers N`: the accounts shared out among processes give the very output of one process."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import random
import re
import signal
from collections import Counter
from pathlib import Path
from typing import cast

import orjson
import pytest

from detector import parallel
from detector.app import replay
from detector.config import resolve
from detector.engine import BatchResult, Engine, Tally
from detector.errors import DetectorError
from detector.model import SignIn
from detector.parallel import AUTO_MIN_BYTES, resolve_workers
from detector.state import share_of_store
from detector.traffic import Catalogue, Generator, Traffic, score
from tests.cli.test_hostile import hostile_lines
from tests.conftest import run_cli

pytestmark = pytest.mark.realdb


@pytest.fixture(scope="module")
def nuanced_set(real_db: str) -> Traffic:
    """VPN flips, late and re-delivered sign-ins, country-level fixes...: every rule at work."""
    return Generator(Catalogue.from_database(real_db), seed=23).generate(400, "nuanced", duplicates=0.05)


def _replay(src: Path, db: str, workers: int, tmp: Path) -> tuple[list[dict], bytes, str]:
    out, rej = tmp / f"alerts-{workers}.jsonl", tmp / f"rejects-{workers}.jsonl"
    res = run_cli(
        "replay",
        str(src),
        "--geoip-db",
        db,
        "--output",
        str(out),
        "--rejects",
        str(rej),
        "--workers",
        str(workers),
        "--batch-size",
        "256",  # many batches, so that results trail their input across batch boundaries
        env={"DETECTOR_LOG_LEVEL": "info"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert b"Traceback" not in res.stderr
    stderr = res.stderr.decode()
    assert f"replay started inputs=1 workers={workers} " in stderr, stderr[:2000]
    alerts = [json.loads(x) for x in out.read_text().splitlines()]
    for alert in alerts:
        alert.pop("detected_at")  # the only field that depends on when it ran
    summary = re.sub(r" in [\d.]+ s \([\d,]+ events/s\)", "", stderr.strip().splitlines()[-1])
    return alerts, rej.read_bytes(), summary


def test_workers_give_the_same_alerts_in_the_same_order_and_the_same_rejects(
    tmp_path: Path, real_db: str, nuanced_set: Traffic
) -> None:
    good = [orjson.dumps(e) for e in nuanced_set.events]
    lines = good + [raw for _, raw in hostile_lines(nuanced_set.events, 300, seed=4)]
    random.Random(4).shuffle(lines[len(good) // 2 :])  # hostile lines among the second half
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")

    one = _replay(src, real_db, 1, tmp_path)
    three = _replay(src, real_db, 3, tmp_path)

    alerts, rejects, summary = one
    assert len(alerts) > 50 and rejects.count(b"\n") == 300
    assert "300 rejected" in summary and "duplicates" in summary
    assert three == one
    # (the shuffle moved some sign-ins late: a few of the labels may not be met; most are)
    assert score(alerts, nuanced_set.labels).recall > 0.8


def test_the_order_of_alerts_across_workers_is_the_one_process_order(tmp_path: Path, real_db: str) -> None:
    """Many accounts alerting in one batch: their alerts come from different workers and are put back in
    the order one engine raises them."""
    traffic = Generator(Catalogue.from_database(real_db), seed=31).generate(200, "clear", duplicates=0.0)
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(e) for e in traffic.events) + b"\n")
    one, _, _ = _replay(src, real_db, 1, tmp_path)
    four, _, _ = _replay(src, real_db, 4, tmp_path)
    users = [a["user"] for a in one]
    assert len(set(users)) > 20  # alerts of many accounts, so of every worker
    assert four == one


@pytest.mark.parametrize("how", ["raises", "is killed"])
def test_a_worker_that_fails_fails_the_replay_with_its_reason(
    tmp_path: Path, real_db: str, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Fault injection, in this process: the workers are forked from it, so they run the patched engine."""
    victim = _user_of(1, 2)  # (an account of the worker: the main process's are not its to fail)
    src = tmp_path / "events.jsonl"
    src.write_bytes(
        b"\n".join(
            orjson.dumps({"user": u, "ip": "81.2.69.142", "timestamp": 1709287200 + i})
            for i, u in enumerate([f"u{i}" for i in range(50)] + [victim])
        )
    )
    events_of = parallel._events  # what a worker makes of each batch it is given

    def failing(part: parallel.Part) -> list[SignIn]:
        events = events_of(part)
        if any(e.user == victim for e in events):
            if how == "raises":
                raise RuntimeError("no room for u7")
            os.kill(os.getpid(), signal.SIGKILL)
        return events

    # (The engine itself may be compiled, where nothing can be patched: see detector/native.py.)
    monkeypatch.setattr(parallel, "_events", failing)
    settings = resolve(
        {"geoip_db": real_db, "workers": "2", "output": str(tmp_path / "out.jsonl"), "batch_size": "8"},
        environ={},
        command="replay",
    )
    with pytest.raises(DetectorError, match=r"replay worker [01] ") as failed:
        replay(settings, [str(src)], stderr=io.StringIO())
    if how == "raises":
        assert "RuntimeError: no room for u7" in str(failed.value)
    else:
        assert "stopped unexpectedly (exit code -9)" in str(failed.value)
    assert not [c for c in multiprocessing.active_children() if c.name.startswith("replay-worker")]


def test_auto_is_one_process_for_small_inputs_and_one_per_cpu_for_large() -> None:
    assert resolve_workers(0, AUTO_MIN_BYTES - 1) == 1
    assert resolve_workers(0, 0) == 1  # standard input: its size is unknown
    assert 1 <= resolve_workers(0, AUTO_MIN_BYTES) <= 8
    assert resolve_workers(3, 0) == 3


@pytest.mark.parametrize("built", [True, False], ids=["C", "python"])
def test_a_batch_goes_down_the_pipe_and_comes_back_the_same_sign_ins(
    monkeypatch: pytest.MonkeyPatch, built: bool
) -> None:
    """Each worker's part (packed by ``_speedups``, or as columns by its twin; the rare sign-in with a
    vendor location, a proxy flag or a lone surrogate sent whole) gives back its sign-ins in batch
    order; every account goes to the worker ``hash(user) % n`` names, every sign-in to exactly one."""
    import pickle

    from detector.model import SPEEDUPS, Location

    if built and SPEEDUPS is None:
        pytest.skip("detector._speedups is not built here (`make setup`)")
    monkeypatch.setattr(parallel, "SPEEDUPS", SPEEDUPS if built else None)
    rng = random.Random(5)
    paris = Location(48.86, 2.35, 20.0, "FR", "Paris", source="okta")
    names = ["user", "zoë", "用户", "a\x00b"]
    events = [
        SignIn(
            f"{names[k % 4]}{rng.randrange(40)}",
            f"81.2.69.{rng.randrange(256)}" if k % 5 else f"2001:db8::{k:x}",
            1.7e9 + k + rng.random(),
            f"id-{k}",
            rng.random() < 0.9,
            paris if k % 97 == 3 else None,
            k % 89 == 5,
        )
        for k in range(1000)
    ]
    assert any(e.vendor_location for e in events) and any(e.proxy for e in events)
    proxies_only = [e._replace(vendor_location=None) for e in events]
    plain = [e._replace(vendor_location=None, proxy=False) for e in events]
    # A lone surrogate (UTF-8 cannot hold it: sent whole), and a text holding the twin's separator.
    odd = [e._replace(user=f"\udc80{e.user}") if k % 7 == 0 else e for k, e in enumerate(plain)]
    for batch in (events, proxies_only, plain, odd, []):
        for n in (1, 3):
            parts, places = parallel._split(batch, n)
            assert len(parts) == n
            kept, kept_places = parallel._split(batch, n, None, keep=n - 1)  # (the last share: its sign-ins)
            assert kept[:-1] == parts[:-1] and (kept[-1] or []) == [
                batch[i] for i in parallel._shares(batch, n)[-1]
            ]
            shares = parallel._shares(batch, n)  # (the twin's ownership: hash(user) % n)
            # where each share's sign-ins are in the batch, the kept share's too
            assert [list(memoryview(p).cast("i")) for p in places] == shares
            assert kept_places == places
            for part, share in zip(parts, shares, strict=True):
                assert (part is None) == (not share)
                back = parallel._events(pickle.loads(pickle.dumps(part))) if part is not None else []
                assert back == [batch[i] for i in share]
                assert all(type(e) is SignIn and type(e.time) is float for e in back)
                # (packed, each user's str hash comes along: it must be the one this process works out)
                assert [hash(e.user) for e in back] == [hash(batch[i].user) for i in share]
            assert sorted(i for share in shares for i in share) == list(range(len(batch)))
            owners = {batch[i].user: k for k, share in enumerate(shares) for i in share}
            assert all(owners[batch[i].user] == k for k, share in enumerate(shares) for i in share)
    if built:  # a damaged blob is refused, not read past its end
        blob, special = parallel._split(plain, 1)[0][0]
        for cut in (blob[:-1], blob[:5], blob + b"x"):
            with pytest.raises(ValueError, match="truncated"):
                SPEEDUPS.unpack_signins(cut, special, SignIn)
        # Hashes from a process with another hash secret (here: the first one's changed) are not taken.
        at = 8 + 1 + 3 * 4  # (the first sign-in's hash: after its time, flags and three lengths)
        other = blob[:at] + bytes(b ^ 0xFF for b in blob[at : at + 8]) + blob[at + 8 :]
        back = SPEEDUPS.unpack_signins(other, special, SignIn)
        assert back == plain and [hash(e.user) for e in back] == [hash(e.user) for e in plain]


class _Echo:
    """An engine stand-in for the pipe itself: each batch's "alert" names the batch and carries ``size``
    random bytes, so that answers too fill the pipe."""

    accounts = 0

    def __init__(self, size: int) -> None:
        self.size = size

    def process(self, events: list[SignIn]) -> BatchResult:
        self.accounts += len({e.user for e in events})
        tally = Tally()
        tally.by_result["ok"] = len(events)
        alert = (events[0].event_id, len(events), os.urandom(self.size))
        return BatchResult(alerts=[alert], raised_at=[0], tally=tally)

    def commit(self, result: BatchResult) -> None:
        pass


@pytest.mark.timeout(120)
def test_batches_in_flight_come_back_once_each_and_in_order() -> None:
    """Parts and answers of several megabytes each, several batches out at once, each batch for one of
    two workers: every batch's answer comes back once, with that batch's own count of rejects, in the
    order given, whichever side fills its pipe first (a parent that handed out a batch while a worker was
    blocked handing back a big answer would wait for ever)."""
    users = [_user_of(share, 3) for share in (1, 2, 0)]  # a worker's, the other's, the main process's
    batches = [
        [SignIn(users[b % 3], "81.2.69.142", 1.7e9 + i, f"b{b}-{i}", True) for i in range(40_000)]
        for b in range(3 * parallel.IN_FLIGHT + 1)
    ]
    engine = parallel.ParallelEngine(3, lambda share: cast(Engine, _Echo(4 << 20)))
    try:
        answers = [engine.process(batch, ["bad line"] * b) for b, batch in enumerate(batches)]
        last = engine.drain()
    finally:
        engine.close()
    assert all(not a.alerts and not a.tally.by_result for a in answers[: parallel.IN_FLIGHT])
    for b, answer in enumerate(answers[parallel.IN_FLIGHT :]):  # each, the batch IN_FLIGHT before
        [(first, n, _)] = answer.alerts
        assert (first, n) == (batches[b][0].event_id, len(batches[b]))
        assert (answer.tally.by_result["ok"], answer.tally.by_result["rejected"]) == (len(batches[b]), b)
    rest = range(len(batches) - parallel.IN_FLIGHT, len(batches))
    assert [(first, n) for first, n, _ in last.alerts] == [(batches[b][0].event_id, 40_000) for b in rest]
    assert last.tally.by_result["rejected"] == sum(rest)
    assert engine.accounts == len(batches)


class _Share(_Echo):
    """Answers each batch with the fraction of the accounts its engine was made for."""

    def __init__(self, share: float) -> None:
        super().__init__(0)
        self.share = share

    def process(self, events: list[SignIn]) -> BatchResult:
        return BatchResult(alerts=[(events[0].user, self.share)], raised_at=[0])


def test_each_engine_is_made_for_its_share_of_the_accounts() -> None:
    """The replay sizes each engine's store by it (``state_cache_size`` in all): a worker's share is
    larger than the main process's, so an equal split of the store kept fewer of a worker's accounts
    ready than it held."""
    users = [_user_of(share, 3) for share in (0, 1, 2)]
    engine = parallel.ParallelEngine(3, lambda share: cast(Engine, _Share(share)))
    try:  # (a batch for each process: each batch's answer is one process's alone)
        answers = [engine.process([SignIn(user, "81.2.69.142", 1.7e9, "e", True)]) for user in users]
        alerts = [alert for answer in [*answers, engine.drain()] for alert in answer.alerts]
    finally:
        engine.close()
    total = parallel.LOCAL_WEIGHT + 2 * parallel.WORKER_WEIGHT
    assert alerts == [
        (users[0], parallel.LOCAL_WEIGHT / total),
        (users[1], parallel.WORKER_WEIGHT / total),
        (users[2], parallel.WORKER_WEIGHT / total),
    ]


def test_each_engine_keeps_ready_its_share_of_the_accounts_and_their_spread() -> None:
    """``state_cache_size`` shared out by each process's share of the accounts, with room for the
    unevenness of a share by hash: 100,000 accounts that fit the setting fit every process's part of it."""
    rng = random.Random(5)  # (a str's hash changes from run to run: buckets drawn alike, but fixed)
    for processes in (2, 3, 8):
        owned = parallel.owners(processes)
        held = Counter(owned[rng.randrange(len(owned))] for _ in range(100_000))
        for k in range(processes):
            share = owned.count(k) / len(owned)
            size = share_of_store(100_000, share)
            assert held[k] <= size <= 100_000 * share * 1.05
    assert share_of_store(1, 0.5) == 2 and share_of_store(0, 0.5) == 1


def _user_of(share: int, processes: int) -> str:
    """An account that ``processes`` processes give to ``share`` (0: the main process's; the workers are
    forks of this process, so they hash alike)."""
    owned = parallel.owners(processes)
    return next(u for u in (f"user-{k}" for k in range(1000)) if owned[hash(u) % len(owned)] == share)


def test_the_main_process_takes_fewer_accounts_than_a_worker() -> None:
    """Its share is LOCAL_WEIGHT buckets to each worker's WORKER_WEIGHT (it also reads and decodes),
    whatever the number of processes; and the C split and its twin give each account to that share."""
    for processes in (2, 3, 8):
        owned = parallel.owners(processes)
        assert owned.count(0) == parallel.LOCAL_WEIGHT < parallel.WORKER_WEIGHT
        assert all(owned.count(k) == parallel.WORKER_WEIGHT for k in range(1, processes))
    events = [SignIn(f"u{k}", "81.2.69.142", 1.7e9 + k, f"e{k}", True) for k in range(4000)]
    owned = parallel.owners(3)
    shares = parallel._shares(events, 3, owned)
    total = parallel.LOCAL_WEIGHT + 2 * parallel.WORKER_WEIGHT
    expected = [parallel.LOCAL_WEIGHT, parallel.WORKER_WEIGHT, parallel.WORKER_WEIGHT]
    assert [len(share) for share in shares] == pytest.approx([4000 * w / total for w in expected], rel=0.15)
    for k, share in enumerate(shares):
        assert all(owned[hash(events[i].user) % len(owned)] == k for i in share)
        part = parallel._split(events, 3, owned)[0][k]
        assert part is not None and parallel._events(part) == [events[i] for i in share]
        kept = parallel._split(events, 3, owned, keep=k)[0]
        assert kept[k] is not None and all(a is events[i] for a, i in zip(kept[k], share, strict=True))
        assert [parallel._events(p) for j, p in enumerate(kept) if j != k] == [
            [events[i] for i in other] for j, other in enumerate(shares) if j != k
        ]

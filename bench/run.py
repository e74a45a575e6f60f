"""The benchmark suite: every figure and every ratio measured in one run, on one machine.

    python -m bench.run [--quick] [--out bench/results.json] [--require-kafka]
                        [--bootstrap-servers HOST:PORT] [--only replay,kafka,latency,restore,memory,growth]

Benchmarks (see bench/README.md for what each measures and why):

    replay    replay of 1,000,000 sign-ins (`python -m detector replay`, a subprocess, wall time) against
              the naive reference (bench/naive.py, on the first 100,000 lines) and against a plain
              read-and-parse loop of the same file (the ceiling for one process)
    kafka     sign-ins per second from the input topic to committed offsets (`python -m detector run`)
              against a plain kafka-python consumer with the same settings, in both modes: input keyed
              by account (`--input-keyed-by-account`, one stage) and unkeyed (two stages, through the
              repartition topic)
    latency   production -> alert readable (read_committed), at a steady 2,000 sign-ins a second, in
              both modes
    restore   `python -m detector run` taking over partitions whose state changelog holds 1,000,000
              accounts: restore time (its own log line) and resident memory per restored account
    memory    resident bytes per tracked account with 1,000,000 accounts (a fresh interpreter)
    growth    replay throughput with 10^4, 10^5 and 10^6 accounts in files of the same size

Results: a table on stdout, and a JSON file with each figure, each goal (target, measured, met) and
the machine it ran on. ``--quick`` shrinks every size for a smoke run (a few minutes). Benchmarks that
need Kafka are recorded as skipped when no broker answers, unless ``--require-kafka``.
Inputs come from bench/generate.py, cached in .cache/bench/.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DEFAULT_DB = ROOT / ".cache" / "geoip" / "GeoLite2-City.mmdb"
DEFAULT_OUT = ROOT / "bench" / "results.json"
QUICK_OUT = ROOT / ".cache" / "bench" / "results-quick.json"
SCHEMA = "impossible-travel-bench/1"

NAIVE = (
    "import sys\n"
    "from bench.naive import naive_alerts\n"
    "print(sum(1 for _ in naive_alerts(open(sys.argv[1], 'rb'), sys.argv[2])))\n"
)
CEILING = "import sys, orjson\nfor line in open(sys.argv[1], 'rb'):\n    orjson.loads(line)\n"


@dataclass(frozen=True)
class Sizes:
    events: int  # the replay file
    accounts: int
    naive_lines: int  # the prefix the naive reference is timed on
    slice_lines: int  # a slice from the middle, where accounts have history: the held-out check's size
    kafka_events: int
    latency_s: float
    latency_rate: int
    latency_warmup_s: float
    memory_accounts: int
    growth_events: int
    growth_accounts: tuple[int, ...]
    restore_accounts: int  # account states in the changelog the detector restores


FULL = Sizes(
    1_000_000,
    100_000,
    100_000,
    200_000,
    200_000,
    15.0,
    2000,
    2.0,
    1_000_000,
    1_000_000,
    (10**4, 10**5, 10**6),
    restore_accounts=1_000_000,
)
QUICK = Sizes(
    100_000,
    10_000,
    10_000,
    20_000,
    50_000,
    8.0,
    2000,
    1.0,
    100_000,
    100_000,
    (10**3, 10**4, 10**5),
    restore_accounts=50_000,
)

# (The ones that need no broker first: with --start-kafka, the local broker starts after them, so that
# it takes no CPU from them: with an idle broker up, a 2-process replay of the slice took 1.09 s where
# it took 0.74 s without one, a few minutes apart, on this 2-core machine; one process 0.99 and 1.05 s.)
BENCHMARKS = ("replay", "memory", "growth", "kafka", "latency", "restore")
KAFKA_BENCHMARKS = ("kafka", "latency", "restore")
# Partitions of every topic the Kafka benchmarks create (the detector's default, --topic-partitions).
PARTITIONS = 6


class Skip(Exception):
    """A benchmark that cannot run here (no broker answering)."""


# name: (benchmark, what, goal as text, target, higher is better, target itself passes, unit)
GOALS: dict[str, tuple[str, str, str, float, bool, bool, str]] = {
    "replay_vs_naive": ("replay", "replay vs the naive reference", ">= 20x", 20.0, True, True, "x"),
    "replay_vs_naive_stretch": ("replay", "replay vs naive (stretch)", ">= 40x", 40.0, True, True, "x"),
    "replay_vs_naive_same_input": (
        "replay",
        "replay vs naive, identical input",
        ">= 20x",
        20.0,
        True,
        True,
        "x",
    ),
    "replay_vs_naive_slice": (
        "replay",
        "replay vs naive, a slice from the middle (accounts with history)",
        ">= 20x",
        20.0,
        True,
        True,
        "x",
    ),
    "replay_vs_ceiling": ("replay", "replay vs read-and-parse", ">= 30%", 0.30, True, True, "fraction"),
    "kafka_vs_plain": (
        "kafka",
        "Kafka path (input keyed by account) vs plain consumer",
        ">= 70%",
        0.70,
        True,
        True,
        "fraction",
    ),
    "latency_p99_ms": (
        "latency",
        "p99 latency at 2,000/s (input keyed by account)",
        "< 50 ms",
        50.0,
        False,
        False,
        "ms",
    ),
    "memory_bytes_per_account": (
        "memory",
        "RSS per tracked account",
        "<= 200 B",
        200.0,
        False,
        True,
        "bytes",
    ),
    "growth_flat": ("growth", "10^6 vs 10^4 accounts", ">= 0.80 (flat)", 0.80, True, True, "ratio"),
}


@dataclass
class Goal:
    name: str
    measured: float | None
    skipped: bool = False

    @property
    def spec(self) -> tuple[str, str, str, float, bool, bool, str]:
        return GOALS[self.name]

    @property
    def text(self) -> str:
        return self.spec[2]

    @property
    def met(self) -> bool:
        _, _, _, target, higher, inclusive, _ = self.spec
        x = self.measured
        if x is None or x != x:  # missing or NaN
            return False
        if inclusive:
            return x >= target if higher else x <= target
        return x > target if higher else x < target

    def as_dict(self) -> dict[str, Any]:
        bench, what, text, target, higher, _, unit = self.spec
        out = {
            "name": self.name,
            "benchmark": bench,
            "what": what,
            "goal": text,
            "target": target,
            "unit": unit,
            "higher_is_better": higher,
            "measured": None if self.measured is None else round(self.measured, 4),
            "met": self.met,
        }
        if self.skipped:
            out["skipped"] = True
        return out


@dataclass
class Context:
    args: argparse.Namespace
    sizes: Sizes
    db: str
    env: dict[str, str]
    started: float = field(default_factory=time.perf_counter)
    goals: list[Goal] = field(default_factory=list)
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # benchmark, figure, value, goal

    def say(self, message: str) -> None:
        print(f"[bench {time.perf_counter() - self.started:6.1f} s] {message}", flush=True)

    def row(self, bench: str, figure: str, value: str, goal: Goal | None = None, note: str = "") -> None:
        if goal is not None:
            self.goals.append(goal)
            mark = "met" if goal.met else "NOT met"
            text = f"{goal.text}: {mark}"
        else:
            text = note
        self.rows.append((bench, figure, value, text))


# -- helpers ---------------------------------------------------------------------------------------


def start_kafka(ctx: Context) -> None:
    """The local broker on ``--bootstrap-servers``' port, unless a broker answers there already."""
    from detector.localkafka import LocalKafka, broker_answers

    if broker_answers(ctx.args.bootstrap_servers, timeout_s=3.0):
        return
    ctx.say(f"starting the local Kafka broker on {ctx.args.bootstrap_servers}")
    LocalKafka(port=int(ctx.args.bootstrap_servers.rsplit(":", 1)[1])).up()


def clean_env() -> dict[str, str]:
    """The environment for the detector's subprocesses: its defaults, whatever DETECTOR_* says here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class Timed:
    wall_s: float
    cpu_s: float
    stdout: str
    stderr: str


def timed(ctx: Context, cmd: list[str]) -> Timed:
    """Run ``cmd`` (cwd: the repository) and return its wall and CPU time; raise when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=ctx.env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}: {' | '.join(tail)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu, proc.stdout, proc.stderr)


def best_of(ctx: Context, cmd: list[str]) -> Timed:
    runs = [timed(ctx, cmd) for _ in range(max(1, ctx.args.repeat))]
    return min(runs, key=lambda r: r.wall_s)


def best_of_rounds(ctx: Context, cmds: list[list[str]]) -> list[Timed]:
    """Each command's best of --repeat runs, taken in rounds (every command once a round): the figures
    compared with each other share this machine's slow and fast minutes, where runs back to back would
    give each its own."""
    rounds = [[timed(ctx, cmd) for cmd in cmds] for _ in range(max(1, ctx.args.repeat))]
    return [min(runs, key=lambda r: r.wall_s) for runs in zip(*rounds, strict=True)]


_SUMMARY = re.compile(
    r"replay: (?P<lines>[\d,]+) events read, (?P<rejected>[\d,]+) rejected.*?(?P<accounts>[\d,]+) accounts, (?P<alerts>[\d,]+) alerts"
    r".*? in (?P<seconds>[\d.]+) s \((?P<rate>[\d,]+) events/s\)",
    re.S,
)


def replay_summary(stderr: str) -> dict[str, float]:
    """The figures of the detector's own summary line (empty when its format changed)."""
    m = _SUMMARY.search(stderr)
    if not m:
        return {}
    return {k: float(v.replace(",", "")) for k, v in m.groupdict().items()}


def replay_command(ctx: Context, path: Path, *flags: str) -> list[str]:
    cmd = [PY, "-m", "detector", "replay", str(path), "--geoip-db", ctx.db, "--output", os.devnull]
    return [*cmd, "--progress", "never", "--log-level", "warning", *flags]


def replay(ctx: Context, path: Path, *flags: str) -> tuple[Timed, dict[str, float]]:
    run = best_of(ctx, replay_command(ctx, path, *flags))
    return run, replay_summary(run.stderr)


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def rate(n: float, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f} /s"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}x"


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(-(-q * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


# -- the machine -----------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine() -> dict[str, Any]:
    from detector import native

    cpu = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    dirty = [line for line in _git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    versions: dict[str, str] = {}
    for module in ("detector", "orjson", "numpy", "kafka", "crc32c", "maxminddb", "geoip2", "geopy"):
        with contextlib.suppress(Exception):
            versions[module] = str(__import__(module).__version__)
    with contextlib.suppress(Exception):
        import maxminddb.extension  # noqa: F401

        versions["maxminddb"] += " (C extension)"
    return {
        "cpu_model": cpu.group(1).strip() if cpu else platform.processor() or "unknown",
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "git_commit": _git("rev-parse", "HEAD") or None,
        "git_dirty_files": len(dirty),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": _read("/proc/loadavg").split()[:3],
        "versions": versions,
        "detector_native": native.summary(),  # compiled hot modules, or the sources
    }


def _record_index(db: str) -> int | None:
    """Records in the GeoIP record index that replay uses (detector/geoindex.py), None without one."""
    from detector.geoip import GeoIP

    geo = GeoIP(db)
    try:
        return len(geo.index) if geo.index is not None else None
    finally:
        geo.close()


# -- 1. replay -------------------------------------------------------------------------------------


def bench_replay(ctx: Context) -> dict[str, Any]:
    from bench.generate import BROKEN, Spec, ensure, messy, prefix, with_ipv6
    from detector.parallel import resolve_workers

    s = ctx.sizes
    ctx.say(f"replay: input of {s.events:,} sign-ins, {s.accounts:,} accounts (generated or cached)")
    path, meta = ensure(Spec(s.events, s.accounts), ctx.db)
    head = prefix(path, s.naive_lines)
    count_lines(path)  # into the page cache before anything is timed
    ctx.say("replay: read-and-parse ceiling (orjson.loads per line) over the whole file")
    ceiling = best_of(ctx, [PY, "-c", CEILING, str(path)])
    # `replay` shares the accounts out among one process per CPU for a file this size (--workers auto);
    # one process is timed too: the ceiling is one process's, and so is the cost per sign-in.
    workers = resolve_workers(0, path.stat().st_size)
    ctx.say(f"replay: ours, python -m detector replay over {s.events:,} lines ({workers} processes)")
    ours, ours_summary = replay(ctx, path)
    ctx.say(f"replay: ours in one process (--workers 1) over {s.events:,} lines")
    ours_one, ours_one_summary = replay(ctx, path, "--workers", "1")
    ctx.say(f"replay: ours over the first {s.naive_lines:,} lines")
    ours_head, ours_head_summary = replay(ctx, head)
    ctx.say(f"replay: the naive reference over the first {s.naive_lines:,} lines (slow)")
    naive = best_of(ctx, [PY, "-c", NAIVE, str(head), ctx.db])
    naive_alerts = int(naive.stdout.strip().splitlines()[-1])
    # What the held-out check times: a realistic slice where most accounts already have a
    # history (the head above is mostly first sign-ins, which the naive reference does not measure).
    skip = (s.events - s.slice_lines) // 2
    middle = prefix(path, s.slice_lines, skip=skip)
    ctx.say(f"replay: ours and the naive reference over lines {skip + 1:,}-{skip + s.slice_lines:,}")
    ours_slice, ours_slice_summary = replay(ctx, middle)
    ours_slice_one, ours_slice_one_summary = replay(ctx, middle, "--workers", "1")
    naive_slice = best_of(ctx, [PY, "-c", NAIVE, str(middle), ctx.db])
    naive_slice_alerts = int(naive_slice.stdout.strip().splitlines()[-1])
    # Real exports carry lines that cannot be read: each a reject with its reason, and its cost.
    broken_every = 20
    messy_slice = messy(middle, broken_every)
    ctx.say(f"replay: ours over the slice with one line in {broken_every} broken")
    ours_messy, ours_messy_summary = replay(ctx, messy_slice, "--rejects", os.devnull)
    broken = s.slice_lines // broken_every
    per_broken_us = (ours_messy.wall_s - ours_slice.wall_s) / broken * 1e6
    # Dual-stack networks: a quarter of the slice's public addresses as IPv6 ones in the same places.
    v6_every = 4
    v6_slice, v6_replaced = with_ipv6(middle, ctx.db, v6_every)
    ctx.say(f"replay: ours and the naive reference over the slice with {v6_replaced:,} addresses as IPv6")
    ours_v6, ours_v6_summary = replay(ctx, v6_slice)
    naive_v6 = best_of(ctx, [PY, "-c", NAIVE, str(v6_slice), ctx.db])
    naive_v6_alerts = int(naive_v6.stdout.strip().splitlines()[-1])
    vs_naive_v6 = rate(naive_v6.wall_s, ours_v6.wall_s)

    ours_eps = rate(s.events, ours.wall_s)
    ours_one_eps = rate(s.events, ours_one.wall_s)
    ours_head_eps = rate(s.naive_lines, ours_head.wall_s)
    naive_eps = rate(s.naive_lines, naive.wall_s)
    ceiling_eps = rate(s.events, ceiling.wall_s)
    vs_naive = rate(ours_eps, naive_eps)
    vs_naive_same = rate(ours_head_eps, naive_eps)
    vs_ceiling = rate(ours_one_eps, ceiling_eps)
    vs_naive_slice = rate(naive_slice.wall_s, ours_slice.wall_s)

    b = "replay"
    ctx.row(b, f"ours, {s.events:,} lines (wall, subprocess, {workers} processes)", fmt_rate(ours_eps))
    ctx.row(b, f"ours, {s.events:,} lines, one process (--workers 1)", fmt_rate(ours_one_eps))
    ctx.row(b, f"ours, first {s.naive_lines:,} lines", fmt_rate(ours_head_eps))
    ctx.row(b, f"naive reference, first {s.naive_lines:,} lines", fmt_rate(naive_eps))
    ctx.row(b, "read-and-parse ceiling (orjson)", fmt_rate(ceiling_eps))
    ctx.row(
        b,
        f"ours ({s.events:,}) / naive ({s.naive_lines:,})",
        fmt_ratio(vs_naive),
        Goal("replay_vs_naive", vs_naive),
    )
    ctx.row(b, "  stretch", fmt_ratio(vs_naive), Goal("replay_vs_naive_stretch", vs_naive))
    ctx.row(
        b,
        f"ours / naive, same {s.naive_lines:,} lines",
        fmt_ratio(vs_naive_same),
        Goal("replay_vs_naive_same_input", vs_naive_same),
    )
    ctx.row(b, f"ours, {s.slice_lines:,}-line slice (wall)", f"{ours_slice.wall_s:.2f} s")
    ctx.row(b, f"ours, {s.slice_lines:,}-line slice, one process", f"{ours_slice_one.wall_s:.2f} s")
    ctx.row(b, f"naive reference, {s.slice_lines:,}-line slice (wall)", f"{naive_slice.wall_s:.2f} s")
    ctx.row(
        b,
        f"ours / naive, {s.slice_lines:,}-line slice",
        fmt_ratio(vs_naive_slice),
        Goal("replay_vs_naive_slice", vs_naive_slice),
    )
    ctx.row(
        b,
        f"ours, slice with 1 line in {broken_every} broken",
        f"{ours_messy.wall_s:.2f} s",
        note=f"{per_broken_us:+.1f} us a broken line",
    )
    ctx.row(
        b,
        f"ours / naive, slice with 1 address in {v6_every} as IPv6",
        fmt_ratio(vs_naive_v6),
        note=f"{ours_v6.wall_s:.2f} s against {naive_v6.wall_s:.2f} s",
    )
    ctx.row(
        b,
        "ours (one process) / ceiling",
        f"{vs_ceiling:.1%}",
        Goal("replay_vs_ceiling", vs_ceiling),
    )
    return {
        "input": {"path": str(path.relative_to(ROOT)), **meta},
        "geoip_record_index": _record_index(ctx.db),
        "naive_input": {"path": str(head.relative_to(ROOT)), "lines": s.naive_lines},
        "ours": {
            "lines": s.events,
            "workers": workers,
            "wall_s": round(ours.wall_s, 3),
            "cpu_s": round(ours.cpu_s, 3),
            "events_per_s": round(ours_eps),
            "summary": ours_summary,
        },
        "ours_one_process": {
            "lines": s.events,
            "wall_s": round(ours_one.wall_s, 3),
            "cpu_s": round(ours_one.cpu_s, 3),
            "events_per_s": round(ours_one_eps),
            "summary": ours_one_summary,
        },
        "ours_same_input_as_naive": {
            "lines": s.naive_lines,
            "wall_s": round(ours_head.wall_s, 3),
            "cpu_s": round(ours_head.cpu_s, 3),
            "events_per_s": round(ours_head_eps),
            "summary": ours_head_summary,
        },
        "naive": {
            "lines": s.naive_lines,
            "note": f"timed on the first {s.naive_lines:,} lines of the same file (it is slow)",
            "wall_s": round(naive.wall_s, 3),
            "cpu_s": round(naive.cpu_s, 3),
            "events_per_s": round(naive_eps),
            "alerts": naive_alerts,
        },
        "slice": {
            "path": str(middle.relative_to(ROOT)),
            "lines": s.slice_lines,
            "first_line": skip + 1,
            "ours": {
                "workers": resolve_workers(0, middle.stat().st_size),
                "wall_s": round(ours_slice.wall_s, 3),
                "cpu_s": round(ours_slice.cpu_s, 3),
                "summary": ours_slice_summary,
            },
            "ours_one_process": {
                "wall_s": round(ours_slice_one.wall_s, 3),
                "cpu_s": round(ours_slice_one.cpu_s, 3),
                "summary": ours_slice_one_summary,
            },
            "naive": {
                "wall_s": round(naive_slice.wall_s, 3),
                "cpu_s": round(naive_slice.cpu_s, 3),
                "alerts": naive_slice_alerts,
            },
            "messy": {
                "path": str(messy_slice.relative_to(ROOT)),
                "broken_lines": broken,
                "faults": [new.decode() or "cut short" for _, new in BROKEN],
                "wall_s": round(ours_messy.wall_s, 3),
                "cpu_s": round(ours_messy.cpu_s, 3),
                "summary": ours_messy_summary,
                "us_per_broken_line": round(per_broken_us, 1),
                "method": "the slice with one line in 20 broken (each fault in turn), replayed as `ours`; "
                "a broken line's cost is the difference from the slice's wall time, over the broken lines",
            },
            "ipv6": {
                "path": str(v6_slice.relative_to(ROOT)),
                "addresses_replaced": v6_replaced,
                "ours": {
                    "wall_s": round(ours_v6.wall_s, 3),
                    "cpu_s": round(ours_v6.cpu_s, 3),
                    "summary": ours_v6_summary,
                },
                "naive": {
                    "wall_s": round(naive_v6.wall_s, 3),
                    "cpu_s": round(naive_v6.cpu_s, 3),
                    "alerts": naive_v6_alerts,
                },
                "ours_vs_naive": round(vs_naive_v6, 2),
                "method": f"the slice with one public IPv4 address in {v6_every} (by a hash of its text) "
                "replaced, on every line it is on, by an IPv6 address the database places in the same "
                "place (bench.generate.with_ipv6); ours and the naive reference timed as on the slice",
            },
        },
        "ceiling": {
            "lines": s.events,
            "code": "for line in open(f, 'rb'): orjson.loads(line)",
            "wall_s": round(ceiling.wall_s, 3),
            "cpu_s": round(ceiling.cpu_s, 3),
            "events_per_s": round(ceiling_eps),
        },
        "ratios": {
            "ours_vs_naive": round(vs_naive, 2),
            "ours_vs_naive_same_input": round(vs_naive_same, 2),
            "ours_vs_naive_slice": round(vs_naive_slice, 2),
            "ours_vs_naive_slice_ipv6": round(vs_naive_v6, 2),
            "ours_one_process_vs_ceiling": round(vs_ceiling, 4),
        },
        "method": "each figure is the wall time of a fresh interpreter (startup and database opening "
        "included) over the lines named; best of --repeat runs. `ours` is `replay` as it runs by "
        "default (--workers auto: one process per CPU for inputs of 8 MiB or more); the ceiling is one "
        "process's, so it is compared with `ours_one_process`",
    }


# -- Kafka helpers ---------------------------------------------------------------------------------


def require_broker(ctx: Context) -> None:
    from detector.localkafka import broker_answers

    if not broker_answers(ctx.args.bootstrap_servers, timeout_s=3.0):
        raise Skip(f"no Kafka broker answers at {ctx.args.bootstrap_servers} (run `make kafka-up`)")


def create_topics(
    ctx: Context, names: list[str], partitions: int = PARTITIONS, configs: dict[str, str] | None = None
) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=ctx.args.bootstrap_servers)
    try:
        new = [NewTopic(n, partitions, 1, topic_configs=configs or {}) for n in names]
        admin.create_topics(new, timeout_ms=15_000)
        admin.wait_for_topics(names, timeout_ms=15_000)
    finally:
        admin.close()


def delete_topics(ctx: Context, prefix: str) -> None:
    """Remove a benchmark's topics from the broker: every topic whose name starts with ``prefix``."""
    from detector.localkafka import delete_topics

    delete_topics(ctx.args.bootstrap_servers, lambda name: name.startswith(prefix))


def end_offsets(ctx: Context, topic: str) -> dict[Any, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=ctx.args.bootstrap_servers)
    try:
        deadline = time.monotonic() + 15
        while not (parts := consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} has no partitions")
            time.sleep(0.1)
            consumer.topics()
        return dict(consumer.end_offsets([TopicPartition(topic, p) for p in sorted(parts)]))
    finally:
        consumer.close()


class Unassigned(RuntimeError):
    """The detector, alone in its group, was assigned no partition and stayed so: its consumer joined
    the group before its metadata showed the topics (the assignor logs "No partition metadata for
    topic"), and no rebalance followed (kafka-python's known race, dpkp/kafka-python#2377). Seen in about
    one start in five to ten here; a detector issue (see bench/README.md), not a figure to measure."""


class Detector:
    """``python -m detector run`` as a subprocess, with its metrics port. ``keyed``: the input is keyed
    by account (``--input-keyed-by-account``: one stage); otherwise the default two stages. It logs in
    JSON at its default level (events of note, never a line per batch), so that the benchmark can
    read its log lines; ``extra``: more flags."""

    def __init__(
        self,
        ctx: Context,
        topic: str,
        alerts: str,
        dlq: str,
        group: str,
        log: Path,
        keyed: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        from detector.localkafka import free_port

        self.ctx = ctx
        self.port = free_port()
        self.group = group
        self.log_path = log
        cmd = [PY, "-m", "detector", "run", "--bootstrap-servers", ctx.args.bootstrap_servers]
        cmd += ["--input-topic", topic, "--alert-topic", alerts, "--dlq-topic", dlq, "--group-id", group]
        cmd += ["--geoip-db", ctx.db, "--metrics-port", str(self.port), "--log-format", "json"]
        cmd += ["--input-keyed-by-account", "true" if keyed else "false", *ctx.args.detector_args, *extra]
        self.cmd = cmd
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.launched = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=ctx.env, stdout=self._log, stderr=subprocess.STDOUT)
        self.ready_at: float | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"the detector exited {self.proc.returncode}: {' | '.join(tail)}")

    def wait_ready(self, timeout_s: float = 60.0, unassigned_s: float | None = None) -> float:
        """Seconds from launch until /readyz answers 200 (GeoIP loaded, partitions assigned).

        ``unassigned_s`` (JSON logs only): raise ``Unassigned`` once the detector has logged an empty
        assignment, stayed unready this long, and idles (under 10% of a core over the last 5 s: one
        that restores partitions assigned since works hard), rather than wait for ``timeout_s``."""
        deadline = time.perf_counter() + timeout_s
        next_look = time.perf_counter() + (unassigned_s or 0.0)
        cpu: list[tuple[float, float]] = []  # (wall, CPU seconds of the detector), once a second
        while time.perf_counter() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url("/readyz"), timeout=1) as r:
                if r.status == 200:
                    self.ready_at = time.perf_counter()
                    return self.ready_at - self.launched
            if unassigned_s is not None and time.perf_counter() >= next_look:
                next_look = time.perf_counter() + 1.0
                cpu.append((time.perf_counter(), self.cpu_seconds()))
                recent = [c for c in cpu if c[0] >= cpu[-1][0] - 5.0]
                idle = recent[-1][0] - recent[0][0] >= 4.0 and (recent[-1][1] - recent[0][1]) < 0.1 * (
                    recent[-1][0] - recent[0][0]
                )
                assigned = self.log_events("partitions assigned")
                if idle and assigned and assigned[-1].get("count") == 0:
                    since = datetime.fromisoformat(assigned[-1]["time"].replace("Z", "+00:00"))
                    if (datetime.now(UTC) - since).total_seconds() >= unassigned_s:
                        raise Unassigned(
                            f"the only member of group {self.group} was assigned no partition "
                            f"{unassigned_s:.0f} s ago and was still waiting for a rebalance"
                        )
            time.sleep(0.02)
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"the detector was not ready within {timeout_s:.0f} s: {' | '.join(tail)}")

    def cpu_seconds(self) -> float:
        """User and system CPU time of the detector process so far (/proc/<pid>/stat)."""
        fields = _read(f"/proc/{self.proc.pid}/stat").rpartition(")")[2].split()
        if len(fields) < 13:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def status(self) -> dict[str, int]:
        """The process's resident memory from /proc (VmRSS, and its anonymous part RssAnon), in bytes."""
        text = _read(f"/proc/{self.proc.pid}/status")
        out = {}
        for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            m = re.search(rf"^{key}:\s*(\d+) kB", text, re.M)
            if m:
                out[key] = int(m.group(1)) * 1024
        return out

    def log_events(self, message: str) -> list[dict[str, Any]]:
        """Its JSON log lines (``--log-format json``) whose message is ``message``."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{message}"' in line:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("message") == message:
                        out.append(event)
        return out

    def metrics(self) -> dict[str, float]:
        """Sums of the detector's counters by metric name (labels summed)."""
        sums: dict[str, float] = {}
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("detector_") and " " in line:
                    name = line.split("{", 1)[0].split(" ", 1)[0]
                    with contextlib.suppress(ValueError):
                        sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return sums

    def stop(self) -> dict[str, Any]:
        """SIGTERM, and how long it took to exit (killed after 20 s)."""
        t0 = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return {"exit_code": self.proc.returncode, "stop_s": round(time.perf_counter() - t0, 2)}


def start_detector(
    ctx: Context,
    log: Path,
    *args: Any,
    notes: list[str],
    timeout_s: float = 60.0,
    **kwargs: Any,
) -> tuple[Detector, float]:
    """A ready ``Detector(ctx, *args, log=..., **kwargs)`` and its start-up time (launch -> ready). One
    that was assigned no partition (``Unassigned``) is stopped and started again, at most twice; each
    time is noted in ``notes`` (and its log kept as ``<log>-unassigned-N``)."""
    for attempt in range(3):
        det = Detector(ctx, *args, log=log, **kwargs)
        try:
            return det, det.wait_ready(timeout_s, unassigned_s=20.0)
        except Unassigned as exc:
            det.stop()
            with contextlib.suppress(OSError):
                os.replace(log, log.with_name(f"{log.name}-unassigned-{attempt + 1}"))
            ctx.say(f"{exc}; starting it again")
            notes.append(str(exc))
            if attempt == 2:
                raise
        except BaseException:
            det.stop()
            raise
    raise AssertionError("unreachable")


def histogram_means(sums: dict[str, float]) -> dict[str, float | None]:
    """Means of the detector's own histograms (batch size, processing and alert latency)."""
    out: dict[str, float | None] = {}
    for name, key in (
        ("detector_batch_size", "batch_size_mean"),
        ("detector_processing_latency_seconds", "processing_latency_mean_s"),
        ("detector_alert_latency_seconds", "alert_latency_mean_s"),
    ):
        count = sums.get(f"{name}_count")
        out[key] = round(sums.get(f"{name}_sum", 0.0) / count, 4) if count else None
    return out


def committed(admin: Any, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on ``topic``."""
    offsets = admin.list_group_offsets(group)
    if group in offsets and isinstance(offsets[group], dict):
        offsets = offsets[group]
    return sum(max(0, o.offset) for tp, o in offsets.items() if o is not None and tp.topic == topic)


# -- 2. Kafka throughput ---------------------------------------------------------------------------


def produce_file(ctx: Context, topic: str, path: Path, n: int, keyed: bool = True) -> float:
    """The first ``n`` lines of ``path`` to ``topic``; returns seconds taken. ``keyed``: keyed by account
    on the default partitioner's partition (what ``--input-keyed-by-account`` expects); otherwise no key,
    round-robin over the partitions (a log shipper that does not key its records)."""
    import orjson
    from kafka import KafkaProducer

    from detector.kafka import keyed_partition

    # The default partitioner's choice (murmur2 of the key, as the Java client), computed once per
    # account rather than per record (kafka-python's murmur2 is pure Python).
    partition_of: dict[bytes, int] = {}
    producer = KafkaProducer(
        bootstrap_servers=ctx.args.bootstrap_servers,
        acks=1,
        linger_ms=50,
        batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    t0 = time.perf_counter()
    try:
        with open(path, "rb") as fh:
            for i, line in enumerate(fh):
                if i >= n:
                    break
                value = line.rstrip(b"\n")
                if not keyed:
                    producer.send(topic, value=value, partition=i % PARTITIONS)
                    continue
                key = orjson.loads(value)["user"].encode()
                part = partition_of.get(key)
                if part is None:
                    part = partition_of[key] = keyed_partition(key, PARTITIONS)
                producer.send(topic, value=value, key=key, partition=part)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)
    return time.perf_counter() - t0


def plain_consumer(ctx: Context, topic: str, n: int) -> dict[str, Any]:
    """A plain kafka-python consumer with the detector's consumer settings reads ``n`` records; the
    window runs from the assignment (rebalance callback) to the last record."""
    from kafka import ConsumerRebalanceListener, KafkaConsumer

    assigned: list[float] = []

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, parts: Any) -> None:
            if parts and not assigned:
                assigned.append(time.perf_counter())

    launched = time.perf_counter()
    consumer = KafkaConsumer(
        bootstrap_servers=ctx.args.bootstrap_servers,
        group_id=f"bench-plain-{uuid.uuid4().hex[:12]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=8192,
        fetch_max_wait_ms=100,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=2_000,
    )
    consumer.subscribe([topic], listener=Listener())
    got, nbytes = 0, 0
    deadline = time.perf_counter() + 300
    try:
        while got < n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the plain consumer read {got:,} of {n:,} records in 300 s")
            for records in consumer.poll(timeout_ms=1000).values():
                got += len(records)
                nbytes += sum(len(r.value) for r in records)
        done = time.perf_counter()
    finally:
        consumer.close(autocommit=False)
    start = assigned[0] if assigned else launched
    return {
        "records": got,
        "bytes": nbytes,
        "startup_s": round(start - launched, 3),
        "window_s": round(done - start, 3),
        "events_per_s": round(rate(got, done - start)),
    }


# The two ways the detector reads its input (README, "Durable state and scale-out").
MODES = {
    "keyed": "input keyed by account, one stage (--input-keyed-by-account)",
    "two_stage": "unkeyed input, two stages (repartition topic)",
}


def bench_kafka(ctx: Context, tmp: Path) -> dict[str, Any]:
    from bench.generate import Spec, ensure

    require_broker(ctx)
    s = ctx.sizes
    path, _ = ensure(Spec(s.events, s.accounts), ctx.db)
    run = uuid.uuid4().hex[:12]
    names = [f"bench-{run}-{kind}" for kind in ("keyed", "unkeyed", "alerts", "dlq")]
    create_topics(ctx, names)
    try:
        return _bench_kafka(ctx, tmp, path, run, *names)
    finally:
        delete_topics(ctx, f"bench-{run}-")


def _bench_kafka(
    ctx: Context, tmp: Path, path: Path, run: str, keyed: str, unkeyed: str, alerts: str, dlq: str
) -> dict[str, Any]:
    s = ctx.sizes
    topics = {"keyed": keyed, "two_stage": unkeyed}
    produced: dict[str, dict[str, Any]] = {}
    plain: dict[str, dict[str, Any]] = {}
    for mode, topic in topics.items():
        how = "keyed by account" if mode == "keyed" else "unkeyed, round-robin"
        ctx.say(f"kafka: producing {s.kafka_events:,} sign-ins to {topic} ({PARTITIONS} partitions, {how})")
        produce_s = produce_file(ctx, topic, path, s.kafka_events, keyed=mode == "keyed")
        total = sum(end_offsets(ctx, topic).values())
        if total != s.kafka_events:
            raise RuntimeError(f"{topic} holds {total:,} records, {s.kafka_events:,} were produced")
        produced[mode] = {"seconds": round(produce_s, 2), "events_per_s": round(rate(total, produce_s))}
    # In rounds, each mode's plain consumer beside its detector, the best of each kept (as replay's
    # timings): a slow minute of this shared machine then costs one round, not one side of the ratio.
    rounds = max(1, ctx.args.repeat)
    plains: dict[str, list[dict[str, Any]]] = {mode: [] for mode in topics}
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in topics}
    for r in range(rounds):
        for mode, topic in topics.items():
            which = "keyed" if mode == "keyed" else "unkeyed"
            ctx.say(f"kafka: round {r + 1} of {rounds}, plain kafka-python consumer on the {which} topic")
            plains[mode].append(plain_consumer(ctx, topic, s.kafka_events))
            ctx.say(
                f"kafka: round {r + 1} of {rounds}, python -m detector run, {MODES[mode]}, until all committed"
            )
            runs[mode].append(
                detector_throughput(ctx, tmp, f"{run}-{r}", topic, alerts, dlq, s.kafka_events, mode)
            )
    modes: dict[str, dict[str, Any]] = {}
    for mode in topics:
        plain[mode] = max(plains[mode], key=lambda x: x["events_per_s"])
        plain[mode]["rounds_events_per_s"] = [x["events_per_s"] for x in plains[mode]]
        modes[mode] = max(runs[mode], key=lambda x: x["events_per_s"])
        modes[mode]["rounds_events_per_s"] = [x["events_per_s"] for x in runs[mode]]
        modes[mode]["ratio_vs_plain"] = round(
            rate(modes[mode]["events_per_s"], plain[mode]["events_per_s"]), 4
        )

    b = "kafka"
    total = s.kafka_events
    for mode in topics:
        det, label = modes[mode], "keyed input" if mode == "keyed" else "two-stage"
        ctx.row(
            b,
            f"plain consumer, {'keyed' if mode == 'keyed' else 'unkeyed'} topic, {total:,} records",
            fmt_rate(plain[mode]["events_per_s"]),
        )
        ctx.row(b, f"detector, {label}: ready -> all committed", fmt_rate(det["events_per_s"]))
        ctx.row(b, f"detector, {label}: steady (10% -> 90%)", fmt_rate(det["steady_events_per_s"]))
        ctx.row(b, f"detector, {label}: startup (launch -> ready)", f"{det['startup_s']:.2f} s")
        # Every sign-in is evaluated once: more than the topic holds means a batch was evaluated twice.
        counted = int(det["events_counted"] or 0)
        ctx.row(
            b,
            f"detector, {label}: sign-ins evaluated / in the topic",
            f"{counted:,} / {total:,}",
            None,
            "" if counted == total else "MORE than the topic holds" if counted > total else "fewer",
        )
        ratio = det["ratio_vs_plain"]
        if mode == "keyed":
            ctx.row(b, f"detector / plain consumer, {label}", f"{ratio:.1%}", Goal("kafka_vs_plain", ratio))
        else:
            ctx.row(b, f"detector / plain consumer, {label}", f"{ratio:.1%}", None, ">= 70% judged on keyed")
    return {
        "topic_partitions": PARTITIONS,
        "records": total,
        "produce": produced,
        "plain_consumer": plain,
        "detector": modes,
        "ratio_detector_vs_plain": modes["keyed"]["ratio_vs_plain"],
        "ratio_two_stage_vs_plain": modes["two_stage"]["ratio_vs_plain"],
        "method": "input produced before timing, the same lines to two topics: keyed by account (on the "
        "default partitioner's partition) and unkeyed (round-robin). The plain consumer reads each; its "
        "window runs from its partition assignment to its last record. Each detector mode (keyed: "
        "--input-keyed-by-account true on the keyed topic, one stage; two_stage: the default on the "
        "unkeyed topic, through <group>-signins-by-account) is a fresh process and group, timed from "
        "/readyz 200 (partitions assigned, polled every 20 ms) until the group's committed offsets on "
        "the input topic (polled every 50 ms) reach its end and its detector_events_total (sign-ins of "
        "committed batches) reaches the record count. The sign-ins are a month old, so the detector "
        "treats them as a backlog (each waits reorder_min_wait, 1 s, from when it was known to be in the "
        "log, unless every partition has delivered a newer one); default settings otherwise. In --repeat "
        "rounds (each mode's plain consumer, then its detector), the best of each kept; every round's "
        "rate is in rounds_events_per_s. The goal is judged on the keyed mode",
    }


def detector_throughput(
    ctx: Context, tmp: Path, run: str, topic: str, alerts: str, dlq: str, total: int, mode: str
) -> dict[str, Any]:
    """``python -m detector run`` over ``topic`` (``total`` records), from ready to all committed."""
    from kafka import KafkaAdminClient

    group = f"bench-{run}-{mode.replace('_', '-')}"
    notes: list[str] = []
    log = tmp / f"detector-throughput-{mode}.log"
    det, startup = start_detector(ctx, log, topic, alerts, dlq, group, keyed=mode == "keyed", notes=notes)
    admin = KafkaAdminClient(bootstrap_servers=ctx.args.bootstrap_servers)
    progress: list[tuple[float, float]] = []  # (seconds after ready, detector_events_total)
    counters: dict[str, float] = {}
    try:
        assert det.ready_at is not None
        deadline = time.perf_counter() + 600
        done_at = None
        polls = 0
        while time.perf_counter() < deadline:
            det.check_alive()
            polls += 1
            with contextlib.suppress(Exception):
                # Offsets from the broker every 50 ms (no cost to the detector); its /metrics every 200 ms
                # for the progress curve, and at every poll once the input is committed to its end.
                done_input = committed(admin, group, topic) >= total
                if done_input or polls % 4 == 0:
                    counters = det.metrics()
                    events = counters.get("detector_events_total", 0.0)
                    progress.append((time.perf_counter() - det.ready_at, events))
                    if done_input and events >= total:
                        done_at = time.perf_counter()
                        break
            time.sleep(0.05)
        if done_at is None:
            raise RuntimeError(
                f"the detector ({mode}) counted {progress[-1][1] if progress else 0:,.0f} of {total:,} "
                "sign-ins in 600 s"
            )
    finally:
        admin.close()
        stopped = det.stop()
    window = done_at - det.ready_at

    def reached(frac: float) -> float | None:
        return next((t for t, c in progress if c >= frac * total), None)

    t10, t90 = reached(0.1), reached(0.9)
    steady = rate(0.8 * total, t90 - t10) if t10 is not None and t90 is not None and t90 > t10 else None
    return {
        "mode": MODES[mode],
        "startup_s": round(startup, 3),
        "window_s": round(window, 3),
        "events_per_s": round(rate(total, window)),
        "steady_events_per_s": round(steady) if steady else None,
        "committed_at_10pct_s": round(t10, 3) if t10 is not None else None,
        "committed_at_90pct_s": round(t90, 3) if t90 is not None else None,
        "events_counted": counters.get("detector_events_total"),
        "progress_samples": len(progress),
        "alerts": counters.get("detector_alerts_total"),
        "transactions": counters.get("detector_transactions_total"),
        "repartitioned": counters.get("detector_repartitioned_total"),
        "changelog_records": counters.get("detector_changelog_records_total"),
        "own_metrics": {
            k: v for k, v in histogram_means(counters).items() if not k.startswith("alert_latency")
        },
        "unassigned_restarts": notes,
        **stopped,
    }


# -- 3. latency ------------------------------------------------------------------------------------

# The latency benchmark's producer waits this long to fill a batch: Kafka's own client default since 4.0
# (KIP-1030), and what log shippers do in some form. With 0, every sign-in is a record batch of its own,
# which costs the detector's consumer a CRC and a batch header per record (counted in the latency).
LATENCY_LINGER_MS = 5


def bench_latency(ctx: Context, tmp: Path) -> dict[str, Any]:
    require_broker(ctx)
    s = ctx.sizes
    out: dict[str, Any] = {}
    for mode in ("keyed", "two_stage"):
        run = uuid.uuid4().hex[:12]
        topic, alerts, dlq = f"bench-{run}-lat-signins", f"bench-{run}-lat-alerts", f"bench-{run}-lat-dlq"
        create_topics(ctx, [topic, alerts, dlq])
        try:
            out[mode] = _bench_latency(ctx, tmp, run, topic, alerts, dlq, mode)
        finally:
            delete_topics(ctx, f"bench-{run}-")
    b = "latency"
    for mode, r in out.items():
        label = "keyed input" if mode == "keyed" else "two-stage"
        ctx.row(
            b,
            f"{label}: alerts timed / expected ({s.latency_rate:,}/s offered)",
            f"{r['alerts_timed']} / {r['trips_timed']}",
        )
        ctx.row(b, f"{label}: p50 production -> alert readable", f"{r['p50_ms']:.1f} ms")
        if mode == "keyed":
            ctx.row(b, f"{label}: p99", f"{r['p99_ms']:.1f} ms", Goal("latency_p99_ms", r["p99_ms"]))
        else:
            ctx.row(b, f"{label}: p99", f"{r['p99_ms']:.1f} ms", None, "< 50 ms judged on keyed")
        ctx.row(b, f"{label}: max", f"{r['max_ms']:.1f} ms")
        trend = r["p50_ms_by_third"]
        ctx.row(
            b,
            f"{label}: p50 over 1st / 2nd / 3rd third",
            " / ".join("-" if x is None else f"{x:.0f}" for x in trend) + " ms",
        )
        ctx.row(
            b,
            f"{label}: not yet evaluated when sending stopped",
            f"{r['backlog_at_stop']:,} sign-ins",
        )
    return {
        **out,
        "p99_ms": out["keyed"]["p99_ms"],
        "goal_mode": "keyed",
    }


def _bench_latency(
    ctx: Context, tmp: Path, run: str, topic: str, alerts: str, dlq: str, mode: str
) -> dict[str, Any]:
    import numpy as np
    import orjson
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from bench.generate import IMPOSSIBLE_MIN_KM, _far_ips, pool, uuid_ids

    s = ctx.sizes
    p = pool(ctx.db)
    texts = p.texts()
    rng = np.random.default_rng(11)
    n_accounts = 10_000
    home = rng.integers(0, len(texts), n_accounts)
    trips = int(s.latency_rate * (s.latency_s + s.latency_warmup_s + 5) / 50) + 10
    trip_home = rng.integers(0, len(texts), trips)
    c = p.city[trip_home]
    trip_far = _far_ips(p, p.city_lat[c], p.city_lon[c], rng, IMPOSSIBLE_MIN_KM)
    n_ids = int(s.latency_rate * (s.latency_s + s.latency_warmup_s + 5) * 1.1)
    ids = iter(uuid_ids(rng, n_ids).astype("U36").tolist())
    keyed = mode == "keyed"
    sent_at: dict[str, float] = {}
    received: dict[str, float] = {}
    stop = threading.Event()
    errors: list[BaseException] = []
    consumer_ready = threading.Event()

    def consume() -> None:
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=ctx.args.bootstrap_servers,
                isolation_level="read_committed",
                enable_auto_commit=False,
                group_id=None,
                fetch_max_wait_ms=25,
            )
            parts = [TopicPartition(alerts, i) for i in range(6)]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            for tp in parts:
                consumer.position(tp)
            consumer_ready.set()
            while not stop.is_set():
                for records in consumer.poll(timeout_ms=50).values():
                    now = time.perf_counter()
                    for r in records:
                        eid = orjson.loads(r.value)["current"]["event_id"]
                        received.setdefault(eid, now)
            consumer.close(autocommit=False)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            consumer_ready.set()

    def stamp(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    notes: list[str] = []
    log = tmp / f"detector-latency-{mode}.log"
    det, startup = start_detector(ctx, log, topic, alerts, dlq, f"bench-{run}-lat", keyed=keyed, notes=notes)
    try:
        reader = threading.Thread(target=consume, name="alert-reader", daemon=True)
        reader.start()
        consumer_ready.wait(30)
        if errors:
            raise errors[0]
        ctx.say(
            f"latency, {MODES[mode]}: {s.latency_rate:,} sign-ins/s for {s.latency_s:.0f} s "
            f"(+{s.latency_warmup_s:.0f} s warm-up), an impossible trip every 50 sign-ins"
        )
        producer = KafkaProducer(
            bootstrap_servers=ctx.args.bootstrap_servers, acks=1, linger_ms=ctx.args.latency_linger_ms
        )
        sent = trip = 0
        total_s = s.latency_warmup_s + s.latency_s
        t0 = time.perf_counter()
        measured_from = t0 + s.latency_warmup_s
        send = producer.send
        while True:
            now = time.perf_counter()
            if now - t0 >= total_s:
                break
            due = int((now - t0) * s.latency_rate)
            while sent < due:
                wall = time.time()
                if sent % 50 == 49 and trip < trips:  # a trip: home 30 s ago, then far away now
                    user = f"bench.trip.{run}.{trip}@agency.example"
                    key = user.encode() if keyed else None
                    ts_home, ts_far = stamp(wall - 30), stamp(wall)
                    home_ip, far_ip = texts[trip_home[trip]], texts[trip_far[trip]]
                    send(
                        topic,
                        key=key,
                        value=orjson.dumps(
                            {
                                "timestamp": ts_home,
                                "user": user,
                                "ip": home_ip,
                                "outcome": "success",
                                "event_id": next(ids),
                            }
                        ),
                    )
                    eid = next(ids)
                    t_send = time.perf_counter()
                    send(
                        topic,
                        key=key,
                        value=orjson.dumps(
                            {
                                "timestamp": ts_far,
                                "user": user,
                                "ip": far_ip,
                                "outcome": "success",
                                "event_id": eid,
                            }
                        ),
                    )
                    if t_send >= measured_from:
                        sent_at[eid] = t_send
                    trip += 1
                    sent += 2
                else:
                    a = sent % n_accounts
                    user = f"bench.steady.{a:05d}@agency.example"
                    send(
                        topic,
                        key=user.encode() if keyed else None,
                        value=orjson.dumps(
                            {
                                "timestamp": stamp(wall),
                                "user": user,
                                "ip": texts[home[a]],
                                "outcome": "success",
                                "event_id": next(ids),
                            }
                        ),
                    )
                    sent += 1
            time.sleep(0.002)
        elapsed = time.perf_counter() - t0
        producer.flush(timeout=30)
        producer.close(timeout=10)
        # Did it keep up? What it had evaluated (committed batches) when the last sign-in was sent.
        at_stop = det.metrics()
        deadline = time.perf_counter() + 15
        while time.perf_counter() < deadline and not set(sent_at) <= set(received):
            det.check_alive()
            if errors:
                raise errors[0]
            time.sleep(0.1)
        counters = det.metrics()
    finally:
        stop.set()
        stopped = det.stop()
    latencies = sorted((received[e] - t) * 1000 for e, t in sent_at.items() if e in received)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    worst = latencies[-1] if latencies else float("nan")
    # p50 by third of the measured window, in sending order: rising thirds mean a growing queue (the
    # detector slower than the offered rate), flat ones a fixed cost per sign-in.
    in_order = [
        (received[e] - t) * 1000 for t, e in sorted((t, e) for e, t in sent_at.items() if e in received)
    ]
    thirds = [sorted(in_order[k * len(in_order) // 3 : (k + 1) * len(in_order) // 3]) for k in range(3)]
    evaluated = int(at_stop.get("detector_events_total", 0.0))
    return {
        "mode": MODES[mode],
        "rate_offered_per_s": s.latency_rate,
        "rate_achieved_per_s": round(sent / elapsed),
        "duration_s": s.latency_s,
        "warmup_s": s.latency_warmup_s,
        "signins_sent": sent,
        "trips_timed": len(sent_at),
        "alerts_timed": len(latencies),
        "alerts_missing": len(set(sent_at) - set(received)),
        "p50_ms": round(p50, 2),
        "p90_ms": round(percentile(latencies, 90), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(worst, 2),
        "mean_ms": round(sum(latencies) / len(latencies), 2) if latencies else None,
        "p50_ms_by_third": [round(percentile(t, 50), 1) if t else None for t in thirds],
        "evaluated_at_stop": evaluated,
        "backlog_at_stop": max(0, sent - evaluated),
        "held_at_stop": at_stop.get("detector_reorder_held"),
        "detector_startup_s": round(startup, 3),
        "detector_alerts": counters.get("detector_alerts_total"),
        "detector_events": counters.get("detector_events_total"),
        "detector_own": histogram_means(counters),
        "detector": stopped,
        "unassigned_restarts": notes,
        "method": "fresh detector with default settings on fresh 6-partition topics (keyed: input keyed "
        "by account and --input-keyed-by-account true; two_stage: unkeyed input, default settings); "
        "sign-ins stamped now; every 50th sign-in is an impossible trip of a fresh account (home 30 s ago, then a city "
        f"{IMPOSSIBLE_MIN_KM:,.0f}+ km away now, both sent now); latency = time the alert was read "
        "(read_committed) - time the far sign-in was handed to the producer; warm-up excluded",
    }


# -- 4. restore ------------------------------------------------------------------------------------

# The state changelog's topic configs, as detector.app.prepare_topics creates it.
CHANGELOG_CONFIGS = {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"}
CHECKED_STATES = 256  # states compared byte for byte with the engine's own


def changelog_states(ctx: Context, accounts: int) -> Iterator[tuple[bytes, int, bytes]]:
    """(key, partition, value) of ``accounts`` changelog records exactly as the detector writes them:
    key = the account, partition = ``detector.kafka.account_partition``, value =
    ``detector.statecodec.pack`` of the state the engine keeps after two located sign-ins 3 h apart
    (two addresses of one city, uuid-shaped event ids). The first ``CHECKED_STATES`` are compared with
    what the engine itself makes of the same two sign-ins, so a change of the state's shape shows here."""
    import numpy as np

    from bench.generate import _member, pool, user_name, uuid_ids
    from detector.app import build_engine
    from detector.config import resolve
    from detector.kafka import account_partition
    from detector.model import AccountState, SignIn, Visit
    from detector.state import MemoryStore
    from detector.statecodec import pack

    settings = resolve({"geoip_db": ctx.db}, environ={}, command="run")
    engine = build_engine(settings, store=MemoryStore())
    locate = engine.geo.locate
    p = pool(ctx.db)
    texts = p.texts()
    rng = np.random.default_rng(5)
    first = rng.integers(0, len(texts), accounts)
    second = _member(p, p.city[first], rng.random(accounts))
    t0 = time.time() - 6 * 3600
    step = 65536
    for start in range(0, accounts, step):
        stop = min(accounts, start + step)
        ids = uuid_ids(rng, 2 * (stop - start)).astype("U36").tolist()
        ips1, ips2 = first[start:stop].tolist(), second[start:stop].tolist()
        for k in range(stop - start):
            n = start + k
            user = user_name(n)
            ip1, ip2 = texts[ips1[k]], texts[ips2[k]]
            id1, id2 = ids[2 * k], ids[2 * k + 1]
            t1 = t0 + n % 3600
            loc1, loc2 = locate(ip1), locate(ip2)
            assert loc1 is not None and loc2 is not None  # pool addresses are located
            state = AccountState(
                (Visit(id1, ip1, t1, loc1), Visit(id2, ip2, t1 + 3 * 3600, loc2)), (id1, id2)
            )
            blob = pack(user, state)
            if n < CHECKED_STATES:
                engine.run([SignIn(user, ip1, t1, id1)])
                engine.run([SignIn(user, ip2, t1 + 3 * 3600, id2)])
                made = engine.store.get(user)
                if made is None or pack(user, made) != blob:
                    raise RuntimeError(
                        "the changelog records made here differ from the engine's own state: update "
                        "bench.run.changelog_states"
                    )
            yield user.encode(), account_partition(user, PARTITIONS), blob


def fill_changelog(ctx: Context, topic: str, accounts: int) -> dict[str, Any]:
    """Write ``accounts`` account states to the changelog ``topic`` (not timed: acks=1, large batches)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=ctx.args.bootstrap_servers,
        acks=1,
        linger_ms=100,
        batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    t0 = time.perf_counter()
    nbytes = 0
    try:
        send = producer.send
        for key, partition, value in changelog_states(ctx, accounts):
            send(topic, key=key, value=value, partition=partition)
            nbytes += len(value)
        producer.flush(timeout=300)
    finally:
        producer.close(timeout=10)
    seconds = time.perf_counter() - t0
    return {
        "records": accounts,
        "value_bytes_mean": round(nbytes / max(1, accounts), 1),
        "seconds": round(seconds, 2),
        "records_per_s": round(rate(accounts, seconds)),
    }


def bench_restore(ctx: Context, tmp: Path) -> dict[str, Any]:
    require_broker(ctx)
    run = uuid.uuid4().hex[:12]
    topic, alerts, dlq = f"bench-{run}-rs-signins", f"bench-{run}-rs-alerts", f"bench-{run}-rs-dlq"
    create_topics(ctx, [topic, alerts, dlq])
    try:
        return _bench_restore(ctx, tmp, run, topic, alerts, dlq)
    finally:
        delete_topics(ctx, f"bench-{run}-")


def _detector_after_start(
    ctx: Context, tmp: Path, topic: str, alerts: str, dlq: str, group: str, name: str
) -> dict[str, Any]:
    """Start ``python -m detector run`` (default settings, JSON logs), wait until ready (partitions
    assigned, and restored), settle 2 s, read its memory, restore log lines and metrics, stop it."""
    unassigned: list[str] = []
    log = tmp / f"detector-restore-{name}.log"
    det, startup = start_detector(ctx, log, topic, alerts, dlq, group, notes=unassigned, timeout_s=900)
    try:
        time.sleep(2.0)
        det.check_alive()
        memory = det.status()
        counters = det.metrics()
    finally:
        stopped = det.stop()
    restores = det.log_events("state restored from the changelog")
    return {
        "unassigned_restarts": unassigned,
        "launch_to_ready_s": round(startup, 3),
        "memory_bytes": memory,
        "restores": [
            {k: e.get(k) for k in ("partitions", "records", "accounts", "seconds")} for e in restores
        ],
        "records": sum(int(e.get("records", 0)) for e in restores),
        "accounts": sum(int(e.get("accounts", 0)) for e in restores),
        "seconds": round(sum(float(e.get("seconds", 0.0)) for e in restores), 3),
        "accounts_tracked": counters.get("detector_accounts_tracked"),
        "state_partitions": counters.get("detector_state_partitions"),
        **stopped,
    }


def _bench_restore(ctx: Context, tmp: Path, run: str, topic: str, alerts: str, dlq: str) -> dict[str, Any]:
    n = ctx.sizes.restore_accounts
    ctx.say("restore: a detector with an empty changelog (the baseline of memory and start-up)")
    empty = _detector_after_start(ctx, tmp, topic, alerts, dlq, f"bench-{run}-rs-empty", "empty")
    group = f"bench-{run}-rs-full"
    changelog = f"{group}-state-changelog"
    create_topics(ctx, [changelog], configs=CHANGELOG_CONFIGS)
    ctx.say(f"restore: writing {n:,} account states to {changelog} (not timed)")
    fill = fill_changelog(ctx, changelog, n)
    ends = end_offsets(ctx, changelog)
    if sum(ends.values()) != n:
        raise RuntimeError(f"{changelog} holds {sum(ends.values()):,} records, {n:,} were written")
    ctx.say(f"restore: python -m detector run taking over {PARTITIONS} partitions, {n:,} accounts")
    full = _detector_after_start(ctx, tmp, topic, alerts, dlq, group, "full")
    if full["accounts"] != n:
        raise RuntimeError(f"the detector's log says {full['accounts']:,} accounts restored, not {n:,}")

    seconds = full["seconds"]
    per_s = rate(n, seconds)
    per_million = seconds * 1_000_000 / n
    rss = full["memory_bytes"].get("VmRSS", 0) - empty["memory_bytes"].get("VmRSS", 0)
    anon = full["memory_bytes"].get("RssAnon", 0) - empty["memory_bytes"].get("RssAnon", 0)
    per_account = rss / n
    b = "restore"
    mib = 1024 * 1024
    ctx.row(b, f"accounts restored ({PARTITIONS} partitions), its log line", f"{n:,} in {seconds:.2f} s")
    ctx.row(b, "restore rate", f"{per_s:,.0f} accounts/s")
    ctx.row(b, "restore time per million accounts", f"{per_million:.1f} s")
    ctx.row(
        b,
        "launch -> ready: restoring / empty changelog",
        f"{full['launch_to_ready_s']:.1f} / {empty['launch_to_ready_s']:.1f} s",
    )
    ctx.row(
        b,
        "RSS after restore / with no state",
        f"{full['memory_bytes'].get('VmRSS', 0) / mib:,.0f} / {empty['memory_bytes'].get('VmRSS', 0) / mib:,.0f} MiB",
    )
    ctx.row(b, "RSS per restored account", f"{per_account:,.0f} B")
    ctx.row(
        b,
        f"RSS per partition of {n // PARTITIONS:,} accounts",
        f"{per_account * n / PARTITIONS / mib:,.1f} MiB",
    )
    return {
        "accounts": n,
        "partitions": PARTITIONS,
        "state": "two located sign-ins per account, 3 h apart (two addresses of one city), uuid-shaped "
        "event ids, no alert: detector.statecodec.pack of the engine's own state (checked byte for byte "
        f"on the first {CHECKED_STATES})",
        "fill": fill,
        "empty": empty,
        "restored": full,
        "restore_seconds": seconds,
        "accounts_per_s": round(per_s),
        "seconds_per_million_accounts": round(per_million, 2),
        "rss_growth_bytes": rss,
        "rss_anon_growth_bytes": anon,
        "bytes_per_account": round(per_account, 1),
        "anon_bytes_per_account": round(anon / n, 1),
        "bytes_per_partition": round(per_account * n / PARTITIONS),
        "method": "a compacted changelog topic <group>-state-changelog (the detector's topic configs) "
        f"is filled before anything is timed with {n:,} records as the detector writes them (key = "
        "account, partition = CRC-32 of the account, value = the packed state), non-transactionally "
        "(acks=1, large batches); then `python -m detector run` (default settings, JSON logs) on that "
        "group over an empty input topic: its partitions are assigned, the changelog partitions read to "
        "their end into the state store, and ready. Restore time and accounts are those of its log "
        "line 'state restored from the changelog'. Memory: VmRSS of the detector 2 s after ready, less "
        "that of the same detector on a fresh group whose changelog is empty",
    }


# -- 5. memory -------------------------------------------------------------------------------------


def rss_bytes() -> int:
    m = re.search(r"^VmRSS:\s*(\d+) kB", _read("/proc/self/status"), re.M)
    return int(m.group(1)) * 1024 if m else 0


def memory_child(accounts: int, db: str) -> dict[str, Any]:
    """Runs in a fresh interpreter: RSS before and after ``accounts`` accounts are tracked."""
    import numpy as np

    from bench.generate import _member, pool, user_name, uuid_ids
    from detector.app import build_engine, use_huge_pages
    from detector.config import resolve
    from detector.model import SignIn

    settings = resolve({"geoip_db": db}, environ={}, command="run")
    use_huge_pages(settings)  # (as the command line does)
    engine = build_engine(settings)
    p = pool(db)
    texts = p.texts()
    rng = np.random.default_rng(3)
    first = rng.integers(0, len(texts), accounts)
    second = _member(p, p.city[first], rng.random(accounts))  # another address of the same city
    # The GeoIP cache is bounded and shared by every account: fill it first so that it is not counted.
    for ip in texts:
        engine.geo.locate(ip)
    t_first = time.time() - 6 * 3600
    gc.collect()
    base = rss_bytes()
    out: dict[str, Any] = {"accounts": accounts, "rss_baseline_bytes": base}
    for visit, (ips, offset) in enumerate(((first, 0.0), (second, 3 * 3600.0)), start=1):
        t0 = time.perf_counter()
        for start in range(0, accounts, 4096):
            stop = min(accounts, start + 4096)
            ids = uuid_ids(rng, stop - start).astype("U36").tolist()
            batch = [
                SignIn(user_name(n), texts[ip], t_first + offset + n % 3600, ids[n - start])
                for n, ip in zip(range(start, stop), ips[start:stop].tolist(), strict=True)
            ]
            engine.run(batch)
        seconds = time.perf_counter() - t0
        del batch, ids
        gc.collect()
        rss = rss_bytes()
        out[f"visits_{visit}"] = {
            "rss_bytes": rss,
            "tracked_accounts": len(engine.store),
            "bytes_per_account": round((rss - base) / max(1, len(engine.store)), 1),
            "engine_run_s": round(seconds, 2),
            "engine_events_per_s": round(accounts / seconds),
        }
    out["alerts"] = engine.tally.alerts
    return out


def bench_memory(ctx: Context) -> dict[str, Any]:
    s = ctx.sizes
    ctx.say(f"memory: {s.memory_accounts:,} accounts through the engine in a fresh interpreter")
    run = timed(ctx, [PY, "-m", "bench.run", "--memory-child", str(s.memory_accounts), "--geoip-db", ctx.db])
    result = json.loads(run.stdout.strip().splitlines()[-1])
    one, two = result["visits_1"], result["visits_2"]
    b = "memory"
    ctx.row(b, "accounts tracked (len(engine.store))", f"{one['tracked_accounts']:,}")
    ctx.row(
        b,
        "RSS per account, 1 visit",
        f"{one['bytes_per_account']:,.0f} B",
        Goal("memory_bytes_per_account", one["bytes_per_account"]),
    )
    ctx.row(b, "RSS per account, 2 visits", f"{two['bytes_per_account']:,.0f} B")
    ctx.row(b, "engine.run, in process (1st visit)", fmt_rate(one["engine_events_per_s"]))
    return {
        **result,
        "method": "fresh interpreter; engine built as the CLI does (config.resolve(..., environ={}, "
        "command='run'), app.build_engine); the GeoIP cache is filled with every pool address first "
        "(bounded and shared, not per account); then one located successful sign-in per account "
        "through engine.run in batches of 4096, gc.collect(), VmRSS; then a second sign-in per "
        "account (another address of the same city, 3 h later). bytes per account = (VmRSS after - "
        "VmRSS before) / len(engine.store); user names like first.last.123456@agency.example, "
        "uuid-shaped event ids",
    }


# -- 6. growth -------------------------------------------------------------------------------------


def bench_growth(ctx: Context) -> dict[str, Any]:
    from bench.generate import Spec, ensure

    s = ctx.sizes
    files = [ensure(Spec(s.growth_events, accounts), ctx.db) for accounts in s.growth_accounts]
    counts = ", ".join(f"{a:,}" for a in s.growth_accounts)
    ctx.say(f"growth: replays of {s.growth_events:,} sign-ins over {counts} accounts, in rounds")
    runs = best_of_rounds(ctx, [replay_command(ctx, path) for path, _ in files])
    points = []
    for accounts, (path, meta), run in zip(s.growth_accounts, files, runs, strict=True):
        summary = replay_summary(run.stderr)
        points.append(
            {
                "accounts": accounts,
                "accounts_in_file": meta["accounts"],
                "accounts_tracked": int(summary["accounts"]) if "accounts" in summary else None,
                "events": s.growth_events,
                "wall_s": round(run.wall_s, 3),
                "cpu_s": round(run.cpu_s, 3),
                "events_per_s": round(rate(s.growth_events, run.wall_s)),
                "path": str(path.relative_to(ROOT)),
            }
        )
    ratio = rate(points[-1]["events_per_s"], points[0]["events_per_s"])
    b = "growth"
    for pt in points:
        ctx.row(b, f"replay, {pt['accounts']:,} accounts", fmt_rate(pt["events_per_s"]))
    ctx.row(
        b,
        f"{points[-1]['accounts']:,} / {points[0]['accounts']:,} accounts",
        f"{ratio:.2f}",
        Goal("growth_flat", ratio),
    )
    return {
        "points": points,
        "ratio_most_vs_fewest_accounts": round(ratio, 3),
        "method": "replay as in the replay benchmark, of files of the same size and generator (with as "
        "many events as accounts or more, every account signs in at least once); best of --repeat runs "
        "taken in rounds, each file once a round, so that every point sees the same minutes of the machine; "
        "'flat' is taken as the largest account count keeping >= 80% of the smallest one's rate",
    }


# -- the run ---------------------------------------------------------------------------------------


def table(ctx: Context) -> str:
    rows = [("benchmark", "figure", "value", "goal"), *ctx.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if j != 2 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown(results: dict[str, Any]) -> str:
    """The machine line and the table of a results file, in Markdown."""
    m = results["machine"]
    lines = [
        f"{m['cpu_model']}, {m['cpu_cores']} cores, {m['memory_gib']} GiB, {m['python']}, {m['os']}; "
        f"commit `{str(m['git_commit'])[:12]}`{' plus uncommitted changes' if m['git_dirty_files'] else ''}"
        f", {m['date']}; `{results['run']['command']}` in {results['run']['seconds']:.0f} s; "
        f"load average at start {' '.join(m['loadavg_at_start'])}",
        "",
        "| benchmark | figure | value | goal |",
        "|---|---|--:|---|",
    ]
    lines += [f"| {' | '.join(c.strip() or ' ' for c in row)} |" for row in results.get("table", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--out",
        help=f"results file (default: {DEFAULT_OUT.relative_to(ROOT)}; with --quick "
        f"{QUICK_OUT.relative_to(ROOT)}, so that a smoke run never replaces the published figures)",
    )
    parser.add_argument("--require-kafka", action="store_true", help="fail when no broker answers")
    parser.add_argument(
        "--start-kafka",
        action="store_true",
        help="start the local broker (make kafka-up's) before the first Kafka benchmark, when none answers",
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="Kafka for the kafka and latency benchmarks (default: $KAFKA_BOOTSTRAP_SERVERS or %(default)s)",
    )
    parser.add_argument("--geoip-db", default=str(DEFAULT_DB), help="City database (default: %(default)s)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks to run")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="replay and Kafka throughput, ours and the references alike: best of N runs, taken in rounds "
        "(default 2, 1 with --quick; this machine's speed moves from minute to minute)",
    )
    parser.add_argument(
        "--markdown", metavar="RESULTS", help="print the table of a results file as Markdown (for README)"
    )
    parser.add_argument(
        "--latency-linger-ms",
        type=int,
        default=LATENCY_LINGER_MS,
        help="linger of the latency benchmark's producer (default: %(default)s, Kafka's client default; "
        "0 sends every sign-in as a record batch of its own)",
    )
    parser.add_argument(
        "--detector-args",
        type=shlex.split,
        default=[],
        metavar="'FLAGS'",
        help="more flags for every `python -m detector run` the benchmarks start, e.g. "
        "'--transactions false' (recorded in the results; the published figures use none)",
    )
    parser.add_argument("--memory-child", type=int, metavar="ACCOUNTS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.geoip_db)))
        return 0
    if args.repeat is None:
        args.repeat = 1 if args.quick else 2
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if not Path(args.geoip_db).exists():
        print(f"bench: no City database at {args.geoip_db} (run `make geoip`)", file=sys.stderr)
        return 2

    ctx = Context(args, QUICK if args.quick else FULL, args.geoip_db, clean_env())
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "machine": machine(),
        "run": {
            "command": "python -m bench.run" + (" --quick" if args.quick else ""),
            "quick": args.quick,
            "sizes": asdict(ctx.sizes),
            "bootstrap_servers": args.bootstrap_servers,
            "repeat": args.repeat,
            "latency_linger_ms": args.latency_linger_ms,
            "detector_args": args.detector_args,
            "geoip_db": os.path.relpath(args.geoip_db, ROOT),
        },
        "benchmarks": {},
    }
    ctx.say(f"{'quick' if args.quick else 'full'} run: {', '.join(only)}")
    failed = False
    tmp = ROOT / ".cache" / "bench" / "logs"
    tmp.mkdir(parents=True, exist_ok=True)
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "replay": lambda: bench_replay(ctx),
        "kafka": lambda: bench_kafka(ctx, tmp),
        "latency": lambda: bench_latency(ctx, tmp),
        "restore": lambda: bench_restore(ctx, tmp),
        "memory": lambda: bench_memory(ctx),
        "growth": lambda: bench_growth(ctx),
    }
    for name in BENCHMARKS:
        if name not in only:
            continue
        if name in KAFKA_BENCHMARKS and args.start_kafka:
            start_kafka(ctx)
        t0 = time.perf_counter()
        try:
            results["benchmarks"][name] = steps[name]()
            results["benchmarks"][name]["seconds"] = round(time.perf_counter() - t0, 1)
        except Skip as exc:
            if args.require_kafka:
                print(f"bench: {exc}", file=sys.stderr)
                return 1
            ctx.say(f"{name}: skipped: {exc}")
            results["benchmarks"][name] = {"skipped": True, "reason": str(exc)}
            ctx.row(name, "skipped", "-", None)
            ctx.goals += [Goal(g, None, skipped=True) for g, spec in GOALS.items() if spec[0] == name]
        except Exception as exc:
            failed = True
            ctx.say(f"{name}: FAILED: {exc}")
            traceback.print_exc()
            results["benchmarks"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            ctx.row(name, "failed", "-", None)
            ctx.goals += [Goal(g, None) for g, spec in GOALS.items() if spec[0] == name]
            if args.require_kafka and name in KAFKA_BENCHMARKS:
                return 1
    results["goals"] = [g.as_dict() for g in ctx.goals]
    results["table"] = [list(r) for r in ctx.rows]
    results["run"]["seconds"] = round(time.perf_counter() - ctx.started, 1)
    results["machine"]["loadavg_at_end"] = _read("/proc/loadavg").split()[:3]
    out = Path(args.out) if args.out else QUICK_OUT if args.quick else DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp_out, out)
    m = results["machine"]
    print()
    print(
        f"{m['cpu_model']}, {m['cpu_cores']} cores, {m['memory_gib']} GiB, {m['python']}, "
        f"commit {str(m['git_commit'])[:12]}{' (dirty)' if m['git_dirty_files'] else ''}, {m['date']}"
    )
    print(table(ctx))
    met = sum(g.met for g in ctx.goals)
    skipped = sum(g.skipped for g in ctx.goals)
    print(
        f"\n{met} of {len(ctx.goals)} goals met{f' ({skipped} skipped)' if skipped else ''}; results in {out} ({results['run']['seconds']:.0f} s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

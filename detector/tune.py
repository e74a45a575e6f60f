"""``tune``: how would each pair of thresholds have done over months of history?

One pass over the log runs the real engine at the loosest thresholds and records every comparison it
makes (``rules.Candidate``: exact figures wherever any setting could alert, and any reason that would
block an alert whatever the thresholds). An account's history does not depend on the thresholds, so
each setting is then decided again from the recorded comparisons, with the same repeat suppression
and duplicate rules as the engine: every row of the table is what ``replay`` gives with that setting.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from detector.app import (
    build_engine,
    detect_files,
    exceptions_from,
    open_geoip,
    policy_from,
    quiet_gc,
    reader_for,
)
from detector.errors import ConfigError
from detector.ingest import Ingest
from detector.rules import Alerted, Candidate, Policy, alert_id, is_repeat
from detector.sinks import RejectsFile
from detector.traffic import Score


@dataclass(frozen=True)
class Row:
    max_speed_kmh: float
    min_distance_km: float
    alerts: int
    accounts: int
    suppressed: int
    score: Score | None


@dataclass
class Report:
    rows: list[Row]
    speeds: list[float]  # net implied speed of every comparison between different addresses (km/h)
    events: int
    rejected: int
    comparisons: int
    seconds: float


def parse_floats(text: str, key: str) -> list[float]:
    try:
        values = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(key, f"{text!r} is not a comma-separated list of numbers") from None
    if not values or any(v < 0 or not math.isfinite(v) for v in values):
        raise ConfigError(key, "give one or more numbers of 0 or more")
    return values


def decide(candidates: Iterable[Candidate], policy: Policy) -> tuple[list[Candidate], int]:
    """The alerts (and the number suppressed) that ``policy`` gives over the recorded comparisons."""
    alerted: dict[str, list[Alerted]] = defaultdict(list)
    alerts: list[Candidate] = []
    suppressed = 0
    for c in candidates:
        if not (
            c.exact and c.net_distance_km >= policy.min_distance_km and c.net_speed_kmh > policy.max_speed_kmh
        ):
            continue
        aid = alert_id(c.user, c.earlier, c.later)
        mine = alerted[c.user]
        if any(e.alert_id == aid for e in mine):
            continue
        pair = Alerted(aid, c.lat1, c.lon1, c.lat2, c.lon2, c.time)
        if c.blocked is not None or is_repeat(mine, pair, policy):
            suppressed += 1
            continue
        mine.append(pair)
        alerts.append(c)
    return alerts, suppressed


def score_pairs(alerts: Sequence[Candidate], labels: Sequence[dict[str, Any]]) -> Score:
    expected = {(lb["user"], frozenset((lb["previous"], lb["current"]))) for lb in labels}
    found = {(c.user, frozenset((c.earlier, c.later))) for c in alerts}
    return Score(len(expected & found), len(found - expected), len(expected - found))


def load_labels(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, "rb") as fh:
            rows = [orjson.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        raise ConfigError("--labels", f"file not found: {path}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError("--labels", f"{path} is not JSON Lines: {exc}") from None
    for row in rows:
        if not isinstance(row, dict) or not {"user", "previous", "current"} <= set(row):
            raise ConfigError("--labels", f"{path}: each line needs user, previous and current (event ids)")
    return rows


def run_tune(
    settings: Any,
    inputs: list[str],
    speeds: list[float],
    distances: list[float],
    labels: list[dict[str, Any]] | None,
    progress: Any = None,
) -> Report:
    started = time.monotonic()
    loosest = replace(policy_from(settings), max_speed_kmh=min(speeds), min_distance_km=min(distances))
    geo = open_geoip(settings)
    engine = build_engine(settings, geo, exceptions=exceptions_from(settings), record=loosest)
    engine.policy = replace(
        engine.policy, max_speed_kmh=loosest.max_speed_kmh, min_distance_km=loosest.min_distance_km
    )
    reader = reader_for(settings, inputs)
    rejects = RejectsFile(settings.rejects)
    quiet_gc()
    candidates: list[Candidate] = []
    try:
        lines = detect_files(
            settings,
            reader,
            Ingest(settings, rejects),
            engine,
            lambda r: candidates.extend(r.candidates),
            lambda n: progress.update(reader.bytes_read(), n, len(candidates)) if progress else None,
        )
    finally:
        rejects.close()
        geo.close()
        if progress:
            progress.finish()

    rows = []
    base = policy_from(settings, exceptions_from(settings))
    for speed in speeds:
        for distance in distances:
            policy = replace(base, max_speed_kmh=speed, min_distance_km=distance)
            alerts, suppressed = decide(candidates, policy)
            rows.append(
                Row(
                    speed,
                    distance,
                    len(alerts),
                    len({c.user for c in alerts}),
                    suppressed,
                    score_pairs(alerts, labels) if labels is not None else None,
                )
            )
    return Report(
        rows,
        [c.net_speed_kmh for c in candidates],
        lines,
        engine.tally.by_result["rejected"],
        len(candidates),
        time.monotonic() - started,
    )


def table(report: Report) -> str:
    with_labels = any(r.score for r in report.rows)
    head = "| max km/h | min km | alerts | accounts | suppressed |" + (
        " precision | recall |" if with_labels else ""
    )
    lines = [head, "|" + "---:|" * (7 if with_labels else 5)]
    for r in report.rows:
        line = f"| {r.max_speed_kmh:g} | {r.min_distance_km:g} | {r.alerts:,} | {r.accounts:,} | {r.suppressed:,} |"
        if r.score:
            line += f" {r.score.precision:.3f} | {r.score.recall:.3f} |"
        lines.append(line)
    return "\n".join(lines)


def plot(report: Report, speeds: list[float], distances: list[float], path: Path) -> bool:
    """The distribution of implied speeds with the thresholds marked, and alerts per setting."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    finite = [max(v, 1.0) for v in report.speeds if math.isfinite(v) and v > 0]
    if finite:
        top = max(finite + speeds) * 2
        bins = [10 ** (x / 20) for x in range(0, int(20 * math.log10(top)) + 2)]
        left.hist(finite, bins=bins, color="#4477aa")
        left.set_xscale("log")
        left.set_yscale("log")
    for s in speeds:
        left.axvline(s, color="#cc3311", linestyle="--", linewidth=1)
        left.text(
            s, left.get_ylim()[1] * 0.7 if finite else 1, f" {s:g}", color="#cc3311", rotation=90, va="top"
        )
    left.set_xlabel("implied speed between consecutive sign-ins, net of accuracy radii (km/h)")
    left.set_ylabel("comparisons")
    left.set_title(f"{report.comparisons:,} comparisons between different addresses")
    for d in distances:
        xs = [r.max_speed_kmh for r in report.rows if r.min_distance_km == d]
        ys = [r.alerts for r in report.rows if r.min_distance_km == d]
        right.plot(xs, ys, marker="o", label=f"min {d:g} km")
    right.set_xlabel("max speed threshold (km/h)")
    right.set_ylabel("alerts")
    right.set_title("alerts per setting")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(
    report: Report,
    inputs: list[str],
    speeds: list[float],
    distances: list[float],
    out_dir: Path,
    labels_path: str | None,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    has_plot = plot(report, speeds, distances, out_dir / "tune.png")
    finite = sorted(v for v in report.speeds if math.isfinite(v))
    infinite = len(report.speeds) - len(finite)
    quantiles = ""
    if finite:
        q = {p: finite[min(len(finite) - 1, int(p / 100 * len(finite)))] for p in (50, 90, 99, 99.9)}
        quantiles = ", ".join(f"p{p:g} {v:,.0f} km/h" for p, v in q.items())
    md = [
        "# Threshold tuning report",
        "",
        f"Inputs: {', '.join(inputs)}  ",
        f"{report.events:,} lines read, {report.rejected:,} rejected; {report.comparisons:,} comparisons between "
        f"different addresses ({infinite:,} at the same instant){'; speeds ' + quantiles if quantiles else ''}.  ",
        f"Labels: {labels_path or 'none (precision and recall need --labels)'}  ",
        f"Done in {report.seconds:.1f} s.",
        "",
        table(report),
        "",
        "Each row is what `replay` gives with that pair of thresholds (same engine, same suppression).",
        "",
    ]
    if has_plot:
        md += ["![implied speeds and alerts per setting](tune.png)", ""]
    else:
        md += ["(matplotlib is not installed: no plot; `pip install 'impossible-travel-detector[plot]'`)", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(md))
    return path

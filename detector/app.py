"""The one place that wires settings and adapters into an engine, for each command."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

from detector import __version__, logs
from detector.config import ConfigError, describe, find_geoip_db
from detector.engine import BatchResult, Clock, Engine, TrustedNetworks
from detector.errors import DetectorError
from detector.geoip import GeoIP
from detector.identity import AccountIds
from detector.ingest import Ingest
from detector.known import AsnDatabase, ExceptionsFile
from detector.model import SPEEDUPS, utc_text
from detector.parallel import ParallelEngine, resolve_workers
from detector.reorder import FileOrder
from detector.rules import Policy
from detector.sinks import AlertFile, RejectsFile
from detector.sources import Line, LineReader, LineRun
from detector.state import CompactStore, PartitionedStore, StateStore, share_of_store

log = logging.getLogger("detector")


def quiet_gc() -> None:
    """The detector keeps millions of small long-lived tuples (account state) that can never be cyclic
    garbage; with the default thresholds the cyclic collector walks all of them over and over (a
    third of replay's time, measured). Freeze what start-up made and collect rarely. (Without a full
    collection first, as Python's documentation advises before a fork: it found no garbage after the
    imports, and cost about 40 ms of every start.)"""
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)


def policy_from(settings: Any, exceptions: ExceptionsFile | None = None) -> Policy:
    return Policy(
        max_speed_kmh=settings.max_speed_kmh,
        min_distance_km=settings.min_distance_km,
        evaluate_failures=settings.evaluate_failures,
        history_size=settings.history_size,
        history_window_s=settings.history_window,
        recent_ids=settings.dedupe_ids,
        suppress_window_s=settings.suppress_window,
        suppress_radius_km=settings.suppress_radius_km,
        coarse_radius_km=settings.coarse_radius_km,
        network_actions={
            "hosting": settings.hosting_action,
            "satellite": settings.satellite_action,
            "mobile": settings.mobile_action,
        },
        exceptions=exceptions.exceptions if exceptions else {},
    )


def exceptions_from(settings: Any) -> ExceptionsFile | None:
    return ExceptionsFile(settings.exceptions_file) if settings.exceptions_file else None


def open_geoip(settings: Any) -> GeoIP:
    asn = None
    if settings.asn_db:
        kinds = {
            "hosting": settings.hosting_asns,
            "satellite": settings.satellite_asns,
            "mobile": settings.mobile_asns,
        }
        asn = AsnDatabase(settings.asn_db, kinds, settings.geoip_cache_size)
    geo = GeoIP(
        find_geoip_db(settings.geoip_db),
        cache_size=settings.geoip_cache_size,
        default_radius_km=settings.default_accuracy_radius_km,
        coarse_radius_km=settings.coarse_radius_km,
        asn=asn,
    )
    logs.event(
        log,
        "GeoIP database opened",
        path=geo.path,
        type=geo.database.database_type,
        built=utc_text(geo.database.build_epoch),
        record_index=f"{len(geo.index):,} records" if geo.index else "none (`impossible-travel geoip-index`)",
    )
    return geo


def use_huge_pages(settings: Any) -> bool:
    """With ``settings.huge_pages``, the small objects made from now on (the account states among
    them) go in 2 MiB pages: ``_speedups.huge_arenas``, whose comment says why. True when it took
    effect (False where the C module is not built)."""
    return bool(settings.huge_pages and SPEEDUPS is not None and SPEEDUPS.huge_arenas())


def build_engine(
    settings: Any,
    geo: GeoIP | None = None,
    clock: Clock = time.time,
    exceptions: ExceptionsFile | None = None,
    record: Policy | None = None,
    store: StateStore | None = None,
    apply_at_once: bool = False,
) -> Engine:
    geo = geo or open_geoip(settings)
    return Engine(
        policy_from(settings, exceptions),
        geo,
        store if store is not None else CompactStore(geo.locate, settings.state_cache_size),
        clock,
        trusted=TrustedNetworks(settings.trusted_networks),
        use_vendor_location=settings.use_vendor_location,
        record=record,
        apply_at_once=apply_at_once,
    )


def reader_for(settings: Any, inputs: list[str]) -> LineReader:
    """Lines up to the longest a vendor page may be; whole documents for pretty-printed exports."""
    return LineReader(
        inputs, max(settings.max_event_bytes, settings.max_batch_bytes), settings.max_document_bytes
    )


@dataclass
class ReplaySummary:
    lines: int
    rejected: int
    no_location: int
    failures_ignored: int
    duplicates: int
    suppressed: int
    accounts: int
    alerts: int
    seconds: float
    records: int = 0
    assumptions: dict[str, str] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        notes = "".join(
            f"\nreplay: BSD syslog timestamps in {f} taken as {what}" for f, what in self.assumptions.items()
        )
        records = f" ({self.records:,} records)" if self.records != self.lines else ""
        return (
            f"replay: {self.lines:,} events read{records}, {self.rejected:,} rejected, "
            f"{self.no_location:,} without location, {self.failures_ignored:,} failures ignored, "
            f"{self.duplicates:,} duplicates, {self.accounts:,} accounts, {self.alerts:,} alerts "
            f"({self.suppressed:,} repeats suppressed) in {self.seconds:.2f} s "
            f"({self.events_per_second:,.0f} events/s)" + notes
        )


class Progress:
    """A one-line progress bar on a terminal, redrawn at most five times a second."""

    def __init__(self, stream: IO[str], total_bytes: int, enabled: bool) -> None:
        self.stream = stream
        self.total = total_bytes
        self.enabled = enabled
        self.started = time.monotonic()
        self._next = 0.0

    def update(self, done_bytes: int, events: int, alerts: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next and not force:
            return
        self._next = now + 0.2
        rate = events / max(now - self.started, 1e-9)
        if self.total:
            frac = min(1.0, done_bytes / self.total)
            bar = "#" * int(frac * 30)
            head = f"[{bar:<30}] {frac:4.0%}"
        else:
            head = "[stdin]"
        self.stream.write(f"\r{head} {events:,} events, {alerts:,} alerts, {rate:,.0f}/s ")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _batches(items: Iterator[Line | LineRun], size: int) -> Iterator[tuple[list[Line | LineRun], int]]:
    """The lines in chunks of ``size`` lines (a run cut where a chunk ends), each with its number of
    lines; the last chunk is shorter (perhaps empty)."""
    chunk: list[Line | LineRun] = []
    count = 0
    for item in items:
        start, n = 0, 1 if isinstance(item, Line) else len(item.raws)
        while start < n:
            take = min(size - count, n - start)
            chunk.append(item if take == n else cast(LineRun, item).cut(start, start + take))
            start += take
            count += take
            if count == size:
                yield chunk, count
                chunk, count = [], 0
    yield chunk, count


def detect_files(
    settings: Any,
    reader: LineReader,
    ingest: Ingest,
    engine: Engine | ParallelEngine,
    on_batch: Callable[[BatchResult], None],
    on_progress: Callable[[int], None] = lambda lines: None,
) -> int:
    """Run the engine over files, a batch of lines at a time, in event-time order within the reorder
    window; returns the number of lines read. (A pipelined engine's results trail its input by a few
    batches; ``drain`` gives the last.)"""
    buffer = FileOrder(settings.reorder_window)
    lines = 0

    def detect(chunk: list[Line | LineRun], final: bool = False) -> None:
        events, reasons = ingest.decode(chunk)
        released = buffer.add(events) + (buffer.drain() if final else [])
        result = engine.process(released, reasons)
        engine.commit(result)
        on_batch(result)

    chunk: list[Line | LineRun] = []
    for chunk, size in _batches(reader.runs(), settings.batch_size):  # (the last is short, maybe empty)
        lines += size
        if size < settings.batch_size:
            break
        detect(chunk)
        on_progress(lines)
    detect(chunk, final=True)
    last = engine.drain()
    engine.commit(last)
    on_batch(last)
    ingest.finish()
    return lines


def replay(
    settings: Any,
    inputs: list[str],
    stderr: IO[str] = sys.stderr,
    clock: Clock = time.time,
    left_to_exit: list[object] | None = None,
) -> ReplaySummary:
    """Run the detection over files; alerts to ``settings.output``, rejects to ``settings.rejects``.
    With ``left_to_exit``, the engine and the database's caches are put there instead of being freed:
    for a caller that ends the process right after (``cli.run``)."""
    started = time.monotonic()
    AccountIds.from_settings(settings)  # a bad pseudonymisation key is refused before any work
    reader = reader_for(settings, inputs)
    geo = open_geoip(settings)
    exceptions = exceptions_from(settings)
    workers = resolve_workers(settings.workers, reader.bytes_total)
    quiet_gc()  # (before any fork: what start-up made is frozen in every worker too)
    engine: Engine | ParallelEngine
    if workers == 1:
        engine = build_engine(settings, geo, clock, exceptions, apply_at_once=True)
    else:

        def worker_engine(share: float) -> Engine:
            # The database as opened here, forked: its file is mapped (shared, read-only), its caches
            # still empty and from now on each worker's own.
            store = CompactStore(geo.locate, share_of_store(settings.state_cache_size, share))
            return build_engine(settings, geo, clock, exceptions, store=store, apply_at_once=True)

        engine = ParallelEngine(workers, worker_engine)
    show = settings.progress == "always" or (settings.progress == "auto" and stderr.isatty())
    progress = Progress(stderr, reader.bytes_total, show)
    logs.event(
        log,
        "replay started",
        inputs=len(inputs),
        workers=workers,
        geoip=geo.database.database_type,
        geoip_build=geo.database.build_epoch,
    )
    out = AlertFile(settings.output, settings.alert_ipv4_prefix, settings.alert_ipv6_prefix)
    rejects = RejectsFile(settings.rejects)
    ingest = Ingest(settings, rejects, clock)
    try:
        lines = detect_files(
            settings,
            reader,
            ingest,
            engine,
            lambda r: out.write(r.alerts),
            lambda n: progress.update(reader.bytes_read(), n, out.written),
        )
        progress.update(reader.bytes_read(), lines, out.written, force=True)
    finally:
        if isinstance(engine, ParallelEngine):
            engine.close()  # (already stopped unless the replay failed)
        progress.finish()
        out.close()
        rejects.close()
        geo.close()
    if left_to_exit is not None:
        left_to_exit += [engine, geo, ingest]
    t = engine.tally
    return ReplaySummary(
        lines=lines,
        rejected=t.by_result["rejected"],
        no_location=t.by_result["no_location"],
        failures_ignored=t.by_result["failure_ignored"],
        duplicates=t.by_result["duplicate"],
        suppressed=t.suppressed,
        accounts=engine.accounts,
        alerts=t.alerts,
        seconds=time.monotonic() - started,
        records=ingest.records,
        assumptions=ingest.assumptions,
    )


def run_stream(settings: Any, stop: threading.Event | None = None, clock: Clock = time.time) -> int:
    """``run``: the streaming detector on Kafka, until SIGTERM/SIGINT (or ``stop``)."""
    from detector.kafka import Pipeline
    from detector.metrics import Health, HttpServer, Metrics

    stop = stop or threading.Event()
    AccountIds.from_settings(settings)  # a bad pseudonymisation key is refused before any work
    geo = open_geoip(settings)
    exceptions = exceptions_from(settings)
    metrics = Metrics()
    health = Health()
    health.geoip_loaded = True
    http = HttpServer(
        metrics,
        health,
        settings.metrics_host,
        settings.metrics_port,
        certfile=settings.metrics_tls_certfile,
        keyfile=settings.metrics_tls_keyfile,
    ).start()
    logs.event(
        log,
        "detector starting",
        version=__version__,
        metrics=http.url,
        geoip=f"{geo.database.database_type} built {geo.database.build_epoch}",
        settings=" ".join(f"{k}={v}" for k, v in describe(settings).items()),
    )
    _install_signal_handlers(stop, health, settings.shutdown_timeout)
    pipeline = None
    engine = None
    try:
        partitions = prepare_topics(settings)
        engine = build_engine(
            settings,
            geo,
            clock,
            exceptions,
            store=PartitionedStore(geo.locate, settings.state_cache_size, partitions),
        )
        metrics.attach(engine, geo)
        metrics.info.info(
            {
                "version": __version__,
                "python": sys.version.split()[0],
                "geoip_type": geo.database.database_type,
                "geoip_build": str(geo.database.build_epoch),
            }
        )
        pipeline = Pipeline(settings, engine, metrics, health, clock)
        pipeline.reloader = Reloader(settings, engine, geo, exceptions)
        quiet_gc()
        pipeline.start(partitions)
        pipeline.run(stop)
    finally:
        if pipeline is not None:
            pipeline.close()
        http.stop()
        geo.close()
        if engine is not None:
            t = engine.tally
            logs.event(
                log, "detector stopped", events=t.events, alerts=t.alerts, rejected=t.by_result["rejected"]
            )
    return 0


def prepare_topics(settings: Any) -> int:
    """Create what is missing (input, alerts, dead letters, repartition and changelog topics) and return
    the number of partitions that the account state is split into (the input topic's)."""
    from detector.kafka import (
        connect_admin,
        ensure_topics,
        input_topics,
        internal_topics,
        topic_partitions,
        wait_for_partitions,
    )

    inputs = input_topics(settings)
    admin = connect_admin(settings)
    try:
        plain: dict[str, tuple[int, dict[str, str]]] = {
            t: (settings.topic_partitions, {}) for t in (*inputs, settings.alert_topic, settings.dlq_topic)
        }
        ensure_topics(admin, settings, plain)
        for topic in inputs:
            wait_for_partitions(settings, topic)
        counts = {t: topic_partitions(settings, t) for t in inputs}
        partitions = counts[inputs[0]]
        if settings.input_keyed_by_account and len(set(counts.values())) > 1:
            raise ConfigError(
                "input_keyed_by_account", f"keyed input topics must have one partition count: {counts}"
            )
        by_account, changelog = internal_topics(settings)
        internal = {
            changelog: (
                partitions,
                {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"},
            )
        }
        if not settings.input_keyed_by_account:
            internal[by_account] = (partitions, {"cleanup.policy": "delete"})
        ensure_topics(admin, settings, internal)
        for topic in internal:
            wait_for_partitions(settings, topic)
            found = topic_partitions(settings, topic)
            if found != partitions:
                raise ConfigError(
                    "input_topic",
                    f"{topic} has {found} partitions, the input {partitions}: "
                    "they must match (recreate the internal topics after repartitioning the input)",
                )
        return partitions
    finally:
        admin.close()


class Reloader:
    """Looks now and then for a replaced GeoIP database or exceptions file and takes it, without a
    restart. A broken replacement is logged and the version in use stays."""

    def __init__(self, settings: Any, engine: Engine, geo: GeoIP, exceptions: ExceptionsFile | None) -> None:
        self.settings = settings
        self.engine = engine
        self.geo = geo
        self.exceptions = exceptions
        self.interval = settings.reload_interval
        self._next = time.monotonic() + self.interval

    def __call__(self) -> None:
        if not self.interval or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.interval
        try:
            if self.geo.reload_if_changed():
                db = self.geo.database
                logs.event(log, "GeoIP database reloaded", type=db.database_type, build=db.build_epoch)
        except DetectorError as exc:
            logs.event(
                log, "GeoIP database not reloaded; keeping the one in use", logging.ERROR, error=str(exc)
            )
        if self.exceptions is not None:
            try:
                if self.exceptions.reload_if_changed():
                    self.engine.policy = policy_from(self.settings, self.exceptions)
                    logs.event(log, "travel exceptions reloaded", accounts=len(self.exceptions.exceptions))
            except DetectorError as exc:
                logs.event(
                    log,
                    "travel exceptions not reloaded; keeping the ones in use",
                    logging.ERROR,
                    error=str(exc),
                )


def _install_signal_handlers(stop: threading.Event, health: Any, grace_s: float) -> None:
    """SIGTERM/SIGINT: finish or abandon the current batch and close cleanly; after ``grace_s`` exit
    anyway (an uncommitted transaction is aborted by the broker, so nothing is lost)."""

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            return
        logs.event(log, "signal received; shutting down", signal=signal.Signals(signum).name)
        health.stopping = True
        stop.set()

        def force() -> None:
            logs.event(log, "shutdown took too long; exiting now", logging.WARNING, grace_s=grace_s)
            logging.shutdown()
            os._exit(0)

        timer = threading.Timer(grace_s, force)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


@dataclass
class NormalizeSummary:
    lines: int
    records: int
    signins: int
    rejected: int
    assumptions: dict[str, str]

    def text(self) -> str:
        notes = "".join(
            f"\nnormalize: BSD syslog timestamps in {f} taken as {w}" for f, w in self.assumptions.items()
        )
        return (
            f"normalize: {self.lines:,} lines, {self.records:,} records, {self.signins:,} sign-ins, "
            f"{self.rejected:,} rejected" + notes
        )


def normalize(
    settings: Any, inputs: list[str], out: IO[bytes], err: IO[bytes], clock: Clock = time.time
) -> NormalizeSummary:
    """Native records -> canonical events (JSON Lines on ``out``); rejects with reasons on ``err``."""
    import orjson

    from detector.sinks import signin_to_dict

    reader = reader_for(settings, inputs)
    rejects = RejectsFile(settings.rejects, None if settings.rejects else err)
    ingest = Ingest(settings, rejects, clock)
    signins = 0
    chunk: list[Line] = []

    def flush() -> None:
        nonlocal signins
        events, _ = ingest.decode(chunk)
        out.write(b"".join(orjson.dumps(signin_to_dict(e)) + b"\n" for e in events))
        signins += len(events)
        chunk.clear()

    try:
        for line in reader:
            chunk.append(line)
            if len(chunk) >= settings.batch_size:
                flush()
        flush()
        ingest.finish()
    finally:
        out.flush()
        rejects.close()
    return NormalizeSummary(ingest.lines, ingest.records, signins, rejects.written, ingest.assumptions)

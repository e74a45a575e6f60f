"""Metrics for Prometheus and health endpoints, on one HTTP port.

The registry is passed in (never the global one), so tests assert on a fresh registry. Counters that
the engine and the GeoIP cache keep anyway are read at scrape time by a collector: the hot path pays
nothing for them. No label ever carries an account ID or an address.

    /metrics   Prometheus text format
    /healthz   200 while the processing loop is alive (it ticks at least every poll)
    /readyz    200 when the GeoIP database is loaded and partitions are assigned
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from detector import __version__
from detector.engine import Engine
from detector.geoip import GeoIP
from detector.security import server_tls_context

log = logging.getLogger("detector.metrics")

# Every series exists from the start (zero), so dashboards and rules see them before the first event.
SUPPRESSION_REASONS = ("repeat", "country_level", "satellite", "hosting", "mobile", "exception")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class _EngineCollector(Collector):
    """Reads the engine's committed tallies and the GeoIP cache's counters when scraped."""

    def __init__(self, engine: Engine, geo: GeoIP | None) -> None:
        self.engine = engine
        self.geo = geo

    def collect(self) -> Iterator[Metric]:
        t = self.engine.tally
        events = CounterMetricFamily(
            "detector_events",
            "Sign-ins consumed, by result (evaluated, duplicate, no_location, trusted, failure_ignored, rejected)",
            labels=["result"],
        )
        for result in ("evaluated", "duplicate", "no_location", "trusted", "failure_ignored", "rejected"):
            events.add_metric([result], t.by_result.get(result, 0))
        yield events
        outcomes = CounterMetricFamily(
            "detector_evaluations", "Evaluated sign-ins by outcome", labels=["outcome"]
        )
        for outcome, n in sorted(dict(t.by_outcome).items()):
            outcomes.add_metric([outcome], n)
        yield outcomes
        rejected = CounterMetricFamily("detector_rejected", "Rejected input by reason", labels=["reason"])
        for reason, n in sorted(dict(t.rejected_by_reason).items()):
            rejected.add_metric([reason], n)
        yield rejected
        alerts = CounterMetricFamily("detector_alerts", "Alerts raised, by severity", labels=["severity"])
        for severity in ("low", "medium", "high"):
            alerts.add_metric([severity], t.alerts_by_severity.get(severity, 0))
        yield alerts
        suppressed = CounterMetricFamily(
            "detector_alerts_suppressed",
            "Impossible pairs not alerted, by reason (repeat, country_level, satellite, hosting, mobile, exception)",
            labels=["reason"],
        )
        counts = dict(t.suppressed_by)
        for reason in sorted(set(SUPPRESSION_REASONS) | set(counts)):
            suppressed.add_metric([reason], counts.get(reason, 0))
        yield suppressed
        yield CounterMetricFamily(
            "detector_late_events", "Sign-ins older than the account's newest", value=t.late
        )
        yield GaugeMetricFamily(
            "detector_accounts_tracked", "Accounts with state in this process", value=len(self.engine.store)
        )
        yield GaugeMetricFamily(
            "detector_newest_event_timestamp_seconds",
            "Event time of the newest sign-in processed",
            value=t.newest_event_time,
        )
        if self.geo is not None:
            s = self.geo.stats
            yield CounterMetricFamily("detector_geoip_lookups", "GeoIP lookups", value=s.lookups)
            hits = CounterMetricFamily(
                "detector_geoip_cache_hits", "GeoIP lookups answered by a cache", labels=["level"]
            )
            hits.add_metric(["address"], s.address_cache_hits)
            hits.add_metric(["network"], s.network_cache_hits)
            hits.add_metric(["index"], s.index_hits)
            yield hits
            yield CounterMetricFamily(
                "detector_geoip_database_reads",
                "GeoIP lookups that read the database",
                value=s.database_reads,
            )
            yield CounterMetricFamily(
                "detector_geoip_errors",
                "GeoIP lookups that failed (a database file overwritten in place)",
                value=s.errors,
            )
            db = self.geo.database
            yield GaugeMetricFamily(
                "detector_geoip_build_timestamp_seconds",
                "Build time of the GeoIP database in use",
                value=db.build_epoch,
            )


class Metrics:
    """The detector's metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.alert_latency = Histogram(
            "detector_alert_latency_seconds",
            "Event time of the sign-in that raised an alert -> alert committed",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.processing_latency = Histogram(
            "detector_processing_latency_seconds",
            "Batch polled -> batch committed",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "detector_batch_size", "Records per polled batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.dlq = Counter("detector_dlq_messages", "Messages sent to the dead-letter topic", registry=r)
        self.transactions = Counter(
            "detector_transactions", "Kafka transactions by result", ["result"], registry=r
        )
        for result in ("committed", "aborted"):
            self.transactions.labels(result)
        self.consumer_lag = Gauge(
            "detector_consumer_lag",
            "Records behind the partition's end, per input partition",
            ["topic", "partition"],
            registry=r,
        )
        self.held = Gauge(
            "detector_reorder_held", "Sign-ins held in the reorder buffer for event-time order", registry=r
        )
        self.state_partitions = Gauge(
            "detector_state_partitions", "Partitions whose account state this process holds", registry=r
        )
        self.restore_seconds = Histogram(
            "detector_restore_seconds",
            "Time to restore assigned partitions' state from the changelog",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.changelog = Counter(
            "detector_changelog_records", "Account states written to the changelog", registry=r
        )
        self.tombstones = Counter(
            "detector_changelog_tombstones",
            "Accounts expired (idle past the TTL) with a changelog tombstone",
            registry=r,
        )
        self.repartitioned = Counter(
            "detector_repartitioned", "Sign-ins re-keyed by account into the repartition topic", registry=r
        )
        self.assigned_partitions = Gauge(
            "detector_assigned_partitions", "Input partitions assigned", registry=r
        )
        self.last_commit = Gauge(
            "detector_last_commit_timestamp_seconds", "Wall time of the last committed batch", registry=r
        )
        self.broker_errors = Counter(
            "detector_broker_errors", "Kafka errors that interrupted a batch", ["kind"], registry=r
        )
        self.info = Info("detector_build", "Version of the detector and its runtime", registry=r)
        self.info.info({"version": __version__, "python": sys.version.split()[0]})

    def attach(self, engine: Engine, geo: GeoIP | None) -> None:
        self.registry.register(_EngineCollector(engine, geo))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Health:
    """What /healthz and /readyz answer; the processing loop ticks it."""

    def __init__(self, stale_after_s: float = 120.0) -> None:
        self.stale_after_s = stale_after_s
        self._tick = time.monotonic()
        self.geoip_loaded = False
        self.partitions = 0
        self.stopping = False

    def tick(self) -> None:
        self._tick = time.monotonic()

    def alive(self) -> tuple[bool, str]:
        age = time.monotonic() - self._tick
        return (age < self.stale_after_s, f"last loop {age:.1f} s ago")

    def ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "shutting down"
        if not self.geoip_loaded:
            return False, "GeoIP database not loaded"
        if self.partitions == 0:
            return False, "no partitions assigned"
        return True, f"{self.partitions} partitions assigned"


class _Server(ThreadingHTTPServer):
    """With ``tls`` set, each connection's TLS handshake runs in that connection's own thread (not in the
    accepting one, where a client that never finishes it would hold every other client up)."""

    daemon_threads = True
    tls: ssl.SSLContext | None = None
    handshake_timeout_s = 10.0

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(self.handshake_timeout_s)
        try:
            secured = self.tls.wrap_socket(request, server_side=True)
        except OSError as exc:  # ssl.SSLError too: plain HTTP, an untrusted client, a scanner
            log.debug("https: handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            super().finish_request(secured, client_address)
        finally:
            self.shutdown_request(secured)


class HttpServer:
    """/metrics, /healthz and /readyz on one port (port 0 = any free port, see ``port``); HTTPS when
    given a TLS context, or a certificate and key (``metrics_tls_certfile``, ``metrics_tls_keyfile``)."""

    def __init__(
        self,
        metrics: Metrics,
        health: Health,
        host: str = "127.0.0.1",
        port: int = 9464,
        tls: ssl.SSLContext | None = None,
        *,
        certfile: str = "",
        keyfile: str = "",
    ) -> None:
        if tls is None:
            tls = server_tls_context(certfile, keyfile)  # None when neither is set
        handler = _handler(metrics, health)
        self._server = _Server((host, port), handler)
        self._server.tls = tls
        self.tls = tls is not None
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/metrics"

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(metrics: Metrics, health: Health) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, Callable[[], tuple[bool, str]]] = {"/healthz": health.alive, "/readyz": health.ready}

    class Handler(BaseHTTPRequestHandler):
        server_version = "impossible-travel"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path in routes:
                ok, detail = routes[path]()
                self._send(
                    200 if ok else 503, f"{'ok' if ok else 'not ok'}: {detail}\n".encode(), "text/plain"
                )
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

    return Handler

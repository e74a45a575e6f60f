"""A real Prometheus scrapes a real detector fed by the compose file's own demo producer.

What `docker compose up` wires together, without Docker: the session's Kafka broker, `python -m
detector run`, the demo-producer script taken verbatim from deploy/docker-compose.yml, and Debian's
`prometheus` on loopback with deploy/prometheus/prometheus.yml (its scrape job pointed at the
detector, intervals shortened to 1 s) and the real rules.yml. Checked through Prometheus' HTTP API:
the detector's series arrive with the counts that were produced, every rule is loaded and evaluates
without error, the GeoIP-age rule is pending on the 2019 database, and every dashboard query answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import COMPOSE_FILE, DASHBOARD, PROMETHEUS_DIR, load_yaml
from tests.integration.conftest import Topics, create_topic, free_port, read_all

pytestmark = [pytest.mark.kafka, pytest.mark.realdb]

JOB = "impossible-travel"
# Grafana's variables, as the dashboard would expand them for one job and all its instances.
DASHBOARD_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$job": JOB,
    "$instance": ".*",
}


class Prometheus:
    """`prometheus` on a free loopback port, with its own TSDB under tmp; queried over HTTP."""

    def __init__(self, binary: str, config: dict[str, Any], tmp: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config_file = tmp / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = tmp / "prometheus.log"
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def get(self, path: str, **params: str) -> tuple[int, bytes]:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def api(self, path: str, **params: str) -> Any:
        status, body = self.get(path, **params)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (path, params, answer)
        return answer["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", (promql, data)
        return list(data["result"])

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.output()}")
            with contextlib.suppress(OSError):
                if condition():
                    return
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()[-3000:]}")

    def wait_ready(self) -> None:
        self.wait_for(lambda: self.get("/-/ready")[0] == 200, "Prometheus /-/ready")

    def output(self) -> str:
        self._log_fh.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_fh.close()


@pytest.fixture
def prometheus(prometheus_binary: str, tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        """The shipped prometheus.yml, scraping ``target`` as job impossible-travel every second."""
        config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
        job["static_configs"] = [{"targets": [target]}]
        config["scrape_configs"] = [job]
        prom = Prometheus(prometheus_binary, config, tmp_path)
        started.append(prom)
        return prom

    yield start
    for prom in started:
        prom.stop()


def demo_producer(topics: Topics, geoip_db: str, limit: int) -> subprocess.Popen[bytes]:
    """The compose file's demo-producer, as its container would run it, against the test broker."""
    service = load_yaml(COMPOSE_FILE)["services"]["demo-producer"]
    assert service["entrypoint"] == ["python", "-c"]
    (script,) = service["command"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    env.update({k: str(v) for k, v in service["environment"].items()})
    env.update(
        DEMO_BOOTSTRAP_SERVERS=topics.bootstrap,
        DEMO_TOPIC=topics.input,
        DEMO_GEOIP_DB=geoip_db,
        DEMO_RATE="1000000",  # as fast as it goes
        DEMO_LIMIT=str(limit),
    )
    return subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def rule_names() -> set[str]:
    return {r["alert"] for g in load_yaml(PROMETHEUS_DIR / "rules.yml")["groups"] for r in g["rules"]}


def test_prometheus_scrapes_the_detector_and_evaluates_the_rules(
    topics: Topics, real_db: str, detectors: Any, prometheus: Callable[[str], Prometheus]
) -> None:
    create_topic(topics.bootstrap, topics.input)
    # The producer spends a few seconds on its address catalogue: start it first, then the rest.
    sent = 2000  # more than a round of the demo stream, so its London -> New York trip is in it
    producer = demo_producer(topics, real_db, sent)
    det = detectors(topics, real_db)
    prom = prometheus(f"127.0.0.1:{det.port}")
    prom.wait_ready()
    det.wait_ready()

    out, _ = producer.communicate(timeout=60)
    assert producer.returncode == 0, out.decode(errors="replace")
    assert f"demo: sent {sent}".encode() in out
    det.wait_events(sent, timeout=60)

    # -- the detector's series, through Prometheus -------------------------------------------------
    selector = f'{{job="{JOB}"}}'
    prom.wait_for(
        lambda: prom.value(f"sum(detector_events_total{selector})") == sent,
        f"Prometheus to see all {sent} sign-ins",
    )
    assert prom.value(f"up{selector}") == 1
    alerts = [json.loads(r.value) for r in read_all(topics.bootstrap, topics.alerts, idle_ms=1500)]
    assert any(a["user"].startswith("demo.traveller.") for a in alerts), "the demo's London -> New York trip"
    prom.wait_for(
        lambda: prom.value(f"sum(detector_alerts_total{selector})") == len(alerts),
        "the alert count",
    )
    dead = read_all(topics.bootstrap, topics.dlq, idle_ms=1500)
    assert dead, "the demo stream has an invalid message in every round"
    assert prom.value(f"sum(detector_dlq_messages_total{selector})") == len(dead)
    assert prom.value(f'detector_events_total{{job="{JOB}", result="rejected"}}') == len(dead)
    assert prom.value(f"detector_geoip_build_timestamp_seconds{selector}") == pytest.approx(1577209301)

    # The demo producer keys records by account, as deploy/README.md asks of producers.
    for record in read_all(topics.bootstrap, topics.input, committed=False, idle_ms=1000)[:200]:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            assert record.key == str(json.loads(record.value)["user"]).encode()

    # -- the rules: all loaded, all evaluated, none in error ---------------------------------------
    def rules() -> list[dict[str, Any]]:
        return [r for g in prom.api("/api/v1/rules")["groups"] for r in g["rules"]]

    def evaluated() -> bool:
        loaded = rules()
        errors = [(r["name"], r.get("lastError")) for r in loaded if r["health"] == "err"]
        assert not errors, errors
        return bool(loaded) and all(r["health"] == "ok" for r in loaded)

    prom.wait_for(evaluated, "every rule to be evaluated")
    loaded = rules()
    assert {r["name"] for r in loaded} == rule_names()
    for rule in loaded:
        assert rule["type"] == "alerting"
        assert not rule["lastEvaluation"].startswith("0001-"), rule

    # -- alerts: the 2019 database is old (pending: the rule waits an hour); the detector is up ----
    active = {a["labels"]["alertname"]: a for a in prom.api("/api/v1/alerts")["alerts"]}
    assert active["ImpossibleTravelGeoIPDatabaseOld"]["state"] == "pending"
    assert float(active["ImpossibleTravelGeoIPDatabaseOld"]["value"]) > 45
    assert "ImpossibleTravelDetectorDown" not in active

    # -- every dashboard query answers with data ---------------------------------------------------
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in DASHBOARD_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: a variable the test does not expand: {expr}"
            assert prom.query(expr), f"{panel['title']}: no data for {expr}"

"""``make run``: the whole thing on one machine with one command.

Starts the local Kafka broker unless one answers, starts ``python -m detector run`` on the demo topics,
feeds a stream of realistic sign-ins (residents, commuters, flights, VPN flip-flops, country-level
fixes, private addresses, re-deliveries, garbage, and now and then London then New York five minutes
later), and prints each alert from the alert topic (read_committed) as a readable line. Ctrl-C stops
everything it started.

    python -m detector.demo [--bootstrap-servers 127.0.0.1:9092] [--rate 200] [--metrics-port 9464]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import orjson

from detector.config import find_geoip_db
from detector.localkafka import ROOT, LocalKafka, broker_answers
from detector.traffic import Catalogue, Generator, Spot

INPUT, ALERTS, DLQ, GROUP = "demo-signins", "demo-alerts", "demo-signins-dlq", "impossible-travel-demo"


def _pick(catalogue: Catalogue, city: str, country: str) -> Spot | None:
    for spots in catalogue.cities:
        if spots[0].city == city and spots[0].country == country and spots[0].radius <= 50:
            return spots[0]
    return None


def rounds(catalogue: Catalogue) -> Any:
    """Endless rounds of labelled traffic over the last two days, plus a London -> New York trip."""
    london = _pick(catalogue, "London", "GB")
    new_york = _pick(catalogue, "New York", "US")
    # Travellers new to every run: a broker that ran the demo before keeps its accounts' state, and
    # would take the same sign-ins again for re-deliveries.
    run = f"{int(time.time()) % 1_000_000:06d}"
    seed = 1
    while True:
        now = time.time()
        traffic = Generator(catalogue, seed=seed, start=now - 2 * 86400, span_s=86400).generate(
            120, "nuanced" if seed % 2 == 0 else "clear"
        )
        # Each round's accounts are new too: the generator names its accounts by number, so the next
        # round's "hugo.00072" would be the same account with another home, and alert on every round.
        for event in traffic.events:
            local, _, domain = event["user"].partition("@")
            event["user"] = f"{local}.{run}.{seed}@{domain}"
        docs: list[bytes] = [orjson.dumps(e) for e in traffic.events]
        docs.insert(len(docs) // 3, b'{"user": "broken-shipper", "ip": "not an address"}')
        if london and new_york:
            traveller = f"demo.traveller.{run}.{seed}@gov.example"
            docs.append(
                orjson.dumps(
                    {
                        "user": traveller,
                        "ip": london.ip,
                        "timestamp": round(now - 300),
                        "event_id": f"demo-{run}-{seed}-lon",
                    }
                )
            )
            docs.append(
                orjson.dumps(
                    {
                        "user": traveller,
                        "ip": new_york.ip,
                        "timestamp": round(now),
                        "event_id": f"demo-{run}-{seed}-nyc",
                    }
                )
            )
        yield docs
        seed += 1


def feed(bootstrap: str, catalogue: Catalogue, rate: float, stop: threading.Event) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    sent = 0
    try:
        for docs in rounds(catalogue):
            for doc in docs:
                if stop.is_set():
                    return
                producer.send(INPUT, doc, key=_account_of(doc))
                sent += 1
                time.sleep(1.0 / rate)
    finally:
        producer.flush(5)
        producer.close(2)


def _account_of(doc: bytes) -> bytes | None:
    """The record key: the account, so that Kafka's partitioner puts all of an account's sign-ins on
    one partition (what --input-keyed-by-account asks)."""
    try:
        user = orjson.loads(doc).get("user")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return user.encode("utf-8", "surrogatepass") if isinstance(user, str) else None


def show(bootstrap: str, stop: threading.Event, ready: threading.Event) -> None:
    """Print alerts from now on: the alert topic's partitions assigned directly and read from their
    end (a consumer group would join for seconds first, and miss the first alerts)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    try:
        parts = [TopicPartition(ALERTS, p) for p in sorted(consumer.partitions_for_topic(ALERTS))]
        consumer.assign(parts)
        consumer.seek_to_end(*parts)
        for tp in parts:
            consumer.position(tp)  # resolve the end now, before any alert of this run exists
        ready.set()
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    print(describe(orjson.loads(record.value)), flush=True)
    finally:
        ready.set()
        consumer.close()


def describe(alert: dict[str, Any]) -> str:
    """One readable line: severity, account, from, to, distance, minutes, km/h."""

    def place(v: dict[str, Any]) -> str:
        return (
            f"{v['city'] or '?'}, {v['country'] or '?'}"
            if v["city"]
            else f"{v['country'] or '?'} (country-level)"
        )

    speed = alert["speed_kmh"]
    speed_text = "same instant" if speed is None else f"{speed:,.0f} km/h"
    return (
        f"ALERT {alert['severity']:<6} {alert['user']:<36} {place(alert['previous']):>24} -> "
        f"{place(alert['current']):<24} {alert['distance_km']:>8,.0f} km in {alert['elapsed_s'] / 60:>6.1f} min "
        f"= {speed_text}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m detector.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--rate", type=float, default=200.0, help="sign-ins per second (default 200)")
    parser.add_argument("--metrics-port", type=int, default=9464)
    parser.add_argument("--geoip-db", default="")
    args = parser.parse_args(argv)

    geoip_db = find_geoip_db(args.geoip_db)
    broker: LocalKafka | None = None
    if not broker_answers(args.bootstrap_servers):
        host, _, port = args.bootstrap_servers.rpartition(":")
        print(
            f"starting a local Kafka broker on {args.bootstrap_servers} (logs in .cache/kafka/logs) ...",
            flush=True,
        )
        broker = LocalKafka(host=host or "127.0.0.1", port=int(port))
        broker.up()
    detector = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "detector",
            "run",
            "--bootstrap-servers",
            args.bootstrap_servers,
            "--input-topic",
            INPUT,
            "--alert-topic",
            ALERTS,
            "--dlq-topic",
            DLQ,
            "--group-id",
            GROUP,
            "--geoip-db",
            geoip_db,
            "--metrics-port",
            str(args.metrics_port),
            "--log-level",
            "warning",
            # The feeder keys sign-ins by account (below), as producers should where they can: one
            # stage, and alerts within a fraction of a second.
            "--input-keyed-by-account",
            "true",
        ],
        cwd=ROOT,
    )
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        deadline = time.monotonic() + 60
        while not _ready(args.metrics_port):
            if detector.poll() is not None or time.monotonic() > deadline:
                print("the detector did not start; see the lines above", file=sys.stderr)
                return 1
            time.sleep(0.3)
        print(f"detector running; metrics at http://127.0.0.1:{args.metrics_port}/metrics")
        print(
            f"feeding {args.rate:g} sign-ins a second to topic {INPUT}; alerts from {ALERTS} below. Ctrl-C stops.",
            flush=True,
        )
        catalogue = Catalogue.from_database(geoip_db)
        printing = threading.Event()
        threads = [
            threading.Thread(target=show, args=(args.bootstrap_servers, stop, printing), daemon=True),
            threading.Thread(
                target=feed, args=(args.bootstrap_servers, catalogue, args.rate, stop), daemon=True
            ),
        ]
        threads[0].start()
        printing.wait(30)
        threads[1].start()
        while detector.poll() is None:
            time.sleep(0.5)
        if detector.returncode == 0:
            # Stopped cleanly on a signal: Ctrl-C reaches the whole process group, and on a loaded
            # machine the detector can be done before this process gets to its KeyboardInterrupt.
            print("\nthe detector stopped; stopping ...", flush=True)
            return 0
        print(f"the detector exited with status {detector.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        if detector.poll() is None:
            detector.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                detector.wait(15)
        if broker is not None:
            broker.down()


def _ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())

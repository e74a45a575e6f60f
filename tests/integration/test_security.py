"""TLS and SASL against a real broker: a second local Apache Kafka with a SASL_SSL listener.

The module starts its own broker once (``secure``): certificates from a throw-away CA (the ``openssl``
command), PLAIN users in the listener's JAAS config, SCRAM-SHA-256/512 credentials written when its
storage is formatted. The detector connects to it as users do: settings from the environment, the
password never on a command line."""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from detector.errors import BrokerError
from detector.localkafka import DevCA, LocalKafka, SecureListener
from detector.security import check_broker, kafka_security
from tests.conftest import _need_tools, run_cli
from tests.integration.conftest import Topics, free_port

pytestmark = [pytest.mark.kafka]

# Random per run, so that finding one in the output can only mean it leaked.
PASSWORDS = {"alice": f"alice-{secrets.token_hex(8)}", "bob": f"bob-{secrets.token_hex(8)}"}
KEY_PASSWORD = f"key-{secrets.token_hex(8)}"
T0 = 1_709_287_200  # 2024-03-01T10:00:00Z


@dataclass
class Secure:
    bootstrap: str  # the SASL_SSL listener
    ca: Path
    other_ca: Path  # a CA that signed nothing the broker uses
    client: tuple[Path, Path]  # a client certificate of ``ca`` (key encrypted with KEY_PASSWORD)
    stranger: tuple[Path, Path]  # a client certificate of ``other_ca``


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    _need_tools()
    pki = tmp_path_factory.mktemp("kafka-pki")
    ca, other = DevCA(pki), DevCA(pki, "Unrelated CA")
    cert, key = ca.issue("broker", hosts=("127.0.0.1", "localhost"))
    listener = SecureListener(free_port(), cert, key, PASSWORDS, client_ca=ca.cert, client_auth="requested")
    # The client compiler alone: a broker for a few tests starts faster and needs no peak throughput.
    broker = LocalKafka(
        name=f"secure-{os.getpid()}-{free_port()}",
        port=free_port(),
        secure=listener,
        jvm_options=["-XX:TieredStopAtLevel=1"],
    )
    broker.up(timeout_s=180)
    try:
        yield Secure(
            broker.secure_bootstrap,
            ca.cert,
            other.cert,
            ca.issue("detector-client", client=True, password=KEY_PASSWORD),
            other.issue("stranger", client=True),
        )
    finally:
        broker.wipe()


def settings(secure: Secure, **overrides: Any) -> SimpleNamespace:
    """What ``detector.config`` would resolve, for calling ``detector.security`` directly."""
    base: dict[str, Any] = {
        "bootstrap_servers": secure.bootstrap,
        "security_protocol": "SASL_SSL",
        "ssl_cafile": str(secure.ca),
        "ssl_certfile": "",
        "ssl_keyfile": "",
        "ssl_password": "",
        "ssl_check_hostname": True,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "alice",
        "sasl_password": PASSWORDS["alice"],
        "startup_timeout": 10.0,
    }
    return SimpleNamespace(**{**base, **overrides})


def options(secure: Secure, **overrides: Any) -> dict[str, Any]:
    s = settings(secure, **overrides)
    return {"bootstrap_servers": s.bootstrap_servers, **kafka_security(s)}


def environment(secure: Secure, **overrides: str) -> dict[str, str]:
    """The detector's settings as a deployment passes them (the secret in the environment)."""
    values = {
        "security_protocol": "SASL_SSL",
        "ssl_cafile": str(secure.ca),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "alice",
        "sasl_password": PASSWORDS["alice"],
        **overrides,
    }
    return {f"DETECTOR_{k.upper()}": v for k, v in values.items()}


def produce(opts: dict[str, Any], topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**opts, acks="all", linger_ms=5)
    try:
        for value in values:
            producer.send(topic, value=value, key=b"k")
        producer.flush(30)
    finally:
        producer.close()


def read_all(opts: dict[str, Any], topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every committed record of a topic, read up to its end offsets (no idle wait)."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(
        **opts, enable_auto_commit=False, group_id=None, isolation_level="read_committed"
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, f"{topic}: not read to its end within {timeout_s} s"
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def create_topic(opts: dict[str, Any], name: str, partitions: int = 1) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(**opts)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def assert_secrets_absent(text: str) -> None:
    for secret in (*PASSWORDS.values(), KEY_PASSWORD):
        assert secret not in text


def error_lines(done: Any) -> list[str]:
    err = done.stderr.decode()
    assert "Traceback" not in err, err
    assert_secrets_absent(done.stdout.decode() + err)
    return [line for line in err.splitlines() if line.startswith("impossible-travel: error:")]


def sign_in(user: str, ip: str, at: int, event_id: str) -> bytes:
    return orjson.dumps({"user": user, "ip": ip, "timestamp": at, "event_id": event_id})


# -- the detector over SASL_SSL ---------------------------------------------------------------------


def test_the_detector_alerts_over_sasl_ssl(secure: Secure, city_db: str, detectors: Any) -> None:
    tag = uuid.uuid4().hex[:10]
    topics = Topics(secure.bootstrap, f"in-{tag}", f"alerts-{tag}", f"dlq-{tag}", f"group-{tag}")
    # The test's own clients sign in as bob with PLAIN; the detector as alice with SCRAM-SHA-512.
    bob = options(secure, sasl_mechanism="PLAIN", sasl_username="bob", sasl_password=PASSWORDS["bob"])
    create_topic(bob, topics.input, partitions=2)
    det = detectors(topics, city_db, "--topic-partitions", "2", env=environment(secure))
    det.wait_ready()
    produce(
        bob,
        topics.input,
        [
            sign_in("victim@example.com", "81.2.69.10", T0, "e1"),  # London
            sign_in("victim@example.com", "1.21.128.10", T0 + 1800, "e2"),  # Tokyo, half an hour later
            sign_in("commuter@example.com", "81.2.69.10", T0, "e3"),
            sign_in("commuter@example.com", "81.2.70.10", T0 + 7200, "e4"),  # Reading: a train ride
            b"not json",
        ],
    )
    det.wait_for(lambda: det.metrics().get("detector_dlq_messages_total", 0) >= 1, "the dead letter", 60)
    det.wait_for(
        lambda: sum(v for k, v in det.metrics().items() if k.startswith("detector_alerts_total{")) >= 1,
        "an alert",
        60,
    )
    alerts = [orjson.loads(r.value) for r in read_all(bob, topics.alerts)]
    assert [(a["user"], a["previous"]["event_id"], a["current"]["event_id"]) for a in alerts] == [
        ("victim@example.com", "e1", "e2")
    ]
    assert [r.value for r in read_all(bob, topics.dlq)] == [b"not json"]
    assert det.stop() == 0
    out = det.output()
    assert "Traceback" not in out and "detector stopped" in out
    assert "broker accepts our security settings" in out and "sasl_password=********" in out
    assert_secrets_absent(out)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_every_mechanism_produces_and_consumes(secure: Secure, mechanism: str) -> None:
    opts = options(secure, sasl_mechanism=mechanism)
    topic = f"roundtrip-{mechanism.lower()}-{uuid.uuid4().hex[:8]}"
    create_topic(opts, topic)
    produce(opts, topic, [b"one", b"two"])
    assert [r.value for r in read_all(opts, topic)] == [b"one", b"two"]


# -- refusals: one clear line, no traceback, no secret ------------------------------------------------


def test_a_wrong_password_is_refused_at_start(secure: Secure, city_db: str) -> None:
    wrong = f"wrong-{secrets.token_hex(6)}"
    started = time.monotonic()
    done = run_cli(
        "run",
        *("--bootstrap-servers", secure.bootstrap, "--geoip-db", city_db, "--metrics-port", "0"),
        env=environment(secure, sasl_password=wrong),
    )
    assert done.returncode == 1
    assert time.monotonic() - started < 30  # not a retry until some time-out
    (line,) = error_lines(done)
    assert "refused the credentials for user alice (SCRAM-SHA-512)" in line, line
    assert wrong not in done.stderr.decode() + done.stdout.decode()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_a_wrong_password_is_refused_with_every_mechanism(secure: Secure, mechanism: str) -> None:
    wrong = f"wrong-{secrets.token_hex(6)}"
    with pytest.raises(BrokerError) as err:
        check_broker(settings(secure, sasl_mechanism=mechanism, sasl_password=wrong))
    assert str(err.value).startswith(
        f"Kafka at {secure.bootstrap} refused the credentials for user alice ({mechanism})"
    )
    assert wrong not in str(err.value)


def test_an_untrusted_broker_certificate_is_refused(secure: Secure, city_db: str) -> None:
    env = environment(secure, ssl_cafile=str(secure.other_ca))
    done = run_cli(
        "run", "--bootstrap-servers", secure.bootstrap, "--geoip-db", city_db, "--metrics-port", "0", env=env
    )
    assert done.returncode == 1
    (line,) = error_lines(done)
    assert f"the TLS certificate of the broker at {secure.bootstrap} is not trusted by ssl_cafile" in line, (
        line
    )
    assert str(secure.other_ca) in line


def test_the_wrong_protocol_is_named(secure: Secure) -> None:
    with pytest.raises(BrokerError, match="wants SASL"):
        check_broker(settings(secure, security_protocol="SSL"))
    with pytest.raises(BrokerError, match="speaks TLS on this port: set security_protocol to SASL_SSL"):
        check_broker(settings(secure, security_protocol="SASL_PLAINTEXT"))
    with pytest.raises(BrokerError, match=r"does not offer SASL|refused the credentials"):
        check_broker(settings(secure, sasl_username="mallory"))


# -- mutual TLS (the listener asks for a client certificate; SASL still names the user) ---------------


def test_a_client_certificate_of_the_ca_is_accepted_and_a_strangers_is_not(secure: Secure) -> None:
    cert, key = secure.client
    opts = options(secure, ssl_certfile=str(cert), ssl_keyfile=str(key), ssl_password=KEY_PASSWORD)
    topic = f"mtls-{uuid.uuid4().hex[:8]}"
    create_topic(opts, topic)
    produce(opts, topic, [b"signed"])
    assert [r.value for r in read_all(opts, topic)] == [b"signed"]
    cert, key = secure.stranger
    with pytest.raises(BrokerError) as err:
        check_broker(settings(secure, ssl_certfile=str(cert), ssl_keyfile=str(key)))
    assert str(err.value).startswith(f"the broker at {secure.bootstrap} refused our client certificate"), (
        err.value
    )

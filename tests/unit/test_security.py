"""Kafka client security options, the start-up check's verdicts, SASL exchanges, and HTTPS for metrics.

The broker side (a real SASL_SSL listener) is tests/integration/test_security.py; here the peers are
small TLS servers in threads, so every verdict is checked without a broker."""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import errors as kerr

from detector import security
from detector.errors import BrokerError, ConfigError
from detector.localkafka import DevCA, SecureListener
from detector.metrics import Health, HttpServer, Metrics
from detector.security import (
    check_broker,
    client_tls_context,
    explain_security_error,
    kafka_security,
    sasl_exchange,
    server_tls_context,
)
from tests.conftest import run_cli

KEY_PASSWORD = "k3y-Pa55word"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("pki")
    ca = DevCA(d)
    other = DevCA(d, "Unrelated CA")
    server = ca.issue("server")
    localhost_only = ca.issue("localhost-only", hosts=("localhost",))
    client = ca.issue("client", client=True)
    locked = ca.issue("locked-client", client=True, password=KEY_PASSWORD)
    return SimpleNamespace(
        ca=ca, other=other, server=server, localhost_only=localhost_only, client=client, locked=locked
    )


def settings(**overrides: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "bootstrap_servers": "127.0.0.1:1",
        "security_protocol": "PLAINTEXT",
        "ssl_cafile": "",
        "ssl_certfile": "",
        "ssl_keyfile": "",
        "ssl_password": "",
        "ssl_check_hostname": True,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "",
        "sasl_password": "",
        "startup_timeout": 5.0,
    }
    base.update(overrides)
    return SimpleNamespace(**base)


# -- options ----------------------------------------------------------------------------------------


def test_plaintext_needs_nothing_and_checks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "check_broker", lambda *a, **k: pytest.fail("no check for PLAINTEXT"))
    assert kafka_security(settings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_options_carry_one_verified_context(pki: SimpleNamespace) -> None:
    s = settings(
        security_protocol="SASL_SSL",
        ssl_cafile=str(pki.ca.cert),
        sasl_username="alice",
        sasl_password="s3cret",
        sasl_mechanism="SCRAM-SHA-256",
    )
    options = kafka_security(s, check=False)
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert options == {
        "security_protocol": "SASL_SSL",
        "ssl_check_hostname": True,
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s3cret",
    }


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_password": "x"}, "sasl_username"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "alice"}, "sasl_password"),
        ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "ssl_cafile"),
    ],
)
def test_incomplete_settings_name_the_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        kafka_security(settings(**overrides))
    assert err.value.key == key


def test_client_certificate_problems_name_the_key(pki: SimpleNamespace, tmp_path: Path) -> None:
    cert, key = pki.client
    locked_cert, locked_key = pki.locked
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    cases = [
        ({"ssl_certfile": str(cert)}, "ssl_keyfile"),
        ({"ssl_keyfile": str(key)}, "ssl_certfile"),
        ({"ssl_certfile": str(cert), "ssl_keyfile": str(pki.server[1])}, "ssl_keyfile"),  # not its key
        ({"ssl_certfile": str(locked_cert), "ssl_keyfile": str(locked_key)}, "ssl_password"),
        (
            {"ssl_certfile": str(locked_cert), "ssl_keyfile": str(locked_key), "ssl_password": "Not-It-123"},
            "ssl_password",
        ),
        ({"ssl_cafile": str(not_pem)}, "ssl_cafile"),
    ]
    for overrides, expected in cases:
        with pytest.raises(ConfigError) as err:
            client_tls_context(settings(security_protocol="SSL", **overrides))
        assert err.value.key == expected, (overrides, str(err.value))
        assert "Not-It-123" not in str(err.value)
    ok = settings(
        security_protocol="SSL",
        ssl_certfile=str(locked_cert),
        ssl_keyfile=str(locked_key),
        ssl_password=KEY_PASSWORD,
    )
    assert isinstance(client_tls_context(ok), ssl.SSLContext)


def test_the_broker_is_checked_once_per_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(security, "check_broker", lambda s, c=None: calls.append(s.sasl_password))
    monkeypatch.setattr(security, "_checked", set())
    s = settings(security_protocol="SASL_PLAINTEXT", sasl_username="alice", sasl_password="one")
    for _ in range(3):
        kafka_security(s)
    kafka_security(settings(security_protocol="SASL_PLAINTEXT", sasl_username="alice", sasl_password="two"))
    assert calls == ["one", "two"]


# -- SASL exchanges ---------------------------------------------------------------------------------


def test_scram_sha_256_matches_rfc_7677() -> None:
    exchange = sasl_exchange("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert next(exchange) == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = exchange.send(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    with pytest.raises(StopIteration):
        exchange.send(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_scram_refuses_a_server_that_does_not_know_the_password() -> None:
    exchange = sasl_exchange("SCRAM-SHA-512", "user", "pencil", nonce="abc")
    next(exchange)
    exchange.send(b"r=abcdef,s=" + base64.b64encode(b"salt") + b",i=4096")
    with pytest.raises(ValueError, match="signature"):
        exchange.send(b"v=" + base64.b64encode(b"\0" * 64))
    forged = sasl_exchange("SCRAM-SHA-256", "user", "pencil", nonce="abc")
    next(forged)
    with pytest.raises(ValueError):
        forged.send(b"r=zzz,s=c2FsdA==,i=4096")  # a nonce that does not extend ours


def test_plain_sends_user_and_password_once() -> None:
    assert list(sasl_exchange("PLAIN", "alice", "pw")) == [b"\0alice\0pw"]


# -- the start-up check's verdicts, against small local servers --------------------------------------


@contextlib.contextmanager
def tls_server(cert: tuple[Path, Path]) -> Iterator[int]:
    """A TLS server that completes handshakes and then hangs up."""
    context = server_tls_context(str(cert[0]), str(cert[1]))
    assert context is not None
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(2)
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def sasl_ssl(port: int, **overrides: Any) -> SimpleNamespace:
    base = {
        "bootstrap_servers": f"127.0.0.1:{port}",
        "security_protocol": "SASL_SSL",
        "sasl_username": "alice",
        "sasl_password": "never-shown-Pa55",
    }
    return settings(**{**base, **overrides})


def test_an_untrusted_broker_certificate_is_named(pki: SimpleNamespace) -> None:
    with tls_server(pki.server) as port:
        with pytest.raises(BrokerError) as err:
            check_broker(sasl_ssl(port, ssl_cafile=str(pki.other.cert)))
        text = str(err.value)
        assert text.startswith(f"the TLS certificate of the broker at 127.0.0.1:{port} is not trusted")
        assert str(pki.other.cert) in text and "never-shown" not in text
        with pytest.raises(BrokerError, match="not trusted by the system's CAs"):
            check_broker(sasl_ssl(port))


def test_a_certificate_for_another_name_is_refused_unless_hostname_checks_are_off(
    pki: SimpleNamespace,
) -> None:
    with tls_server(pki.localhost_only) as port:
        with pytest.raises(BrokerError, match=r"is not valid for the name 127\.0\.0\.1"):
            check_broker(sasl_ssl(port, ssl_cafile=str(pki.ca.cert)))
        # With the check off the TLS part passes; this server then hangs up: nothing definite to say.
        check_broker(sasl_ssl(port, ssl_cafile=str(pki.ca.cert), ssl_check_hostname=False))


def test_an_unreachable_broker_is_left_to_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    check_broker(sasl_ssl(port, ssl_cafile=""), timeout_s=1)  # no error: the client reports it


def test_client_errors_are_explained_without_the_password() -> None:
    s = sasl_ssl(9094, sasl_mechanism="SCRAM-SHA-512", ssl_cafile="/etc/ca.pem")
    auth = kerr.KafkaTimeoutError("Unable to bootstrap")
    auth.__cause__ = kerr.SaslAuthenticationFailedError("Authentication failed")
    assert explain_security_error(auth, s) == (
        "Kafka at 127.0.0.1:9094 refused the credentials for user alice (SCRAM-SHA-512); "
        "check sasl_username, sasl_password and sasl_mechanism"
    )
    tls = kerr.KafkaConnectionError(
        "Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer"
    )
    assert explain_security_error(tls, s) == (
        "the TLS certificate of the broker at 127.0.0.1:9094 failed verification against ssl_cafile /etc/ca.pem"
    )
    assert explain_security_error(kerr.KafkaTimeoutError("Unable to bootstrap"), s) is None


# -- HTTPS for /metrics /healthz /readyz -----------------------------------------------------------


def test_metrics_over_https(pki: SimpleNamespace) -> None:
    cert, key = pki.server
    health = Health()
    server = HttpServer(Metrics(), health, "127.0.0.1", 0, certfile=str(cert), keyfile=str(key)).start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        # A client that connects and never speaks holds only its own thread, not the server.
        with socket.create_connection(("127.0.0.1", server.port)):
            trusted = ssl.create_default_context(cafile=str(pki.ca.cert))
            url = f"https://127.0.0.1:{server.port}/healthz"
            with urllib.request.urlopen(url, context=trusted, timeout=5) as resp:
                assert resp.status == 200 and resp.read().startswith(b"ok")
        with urllib.request.urlopen(server.url, context=trusted, timeout=5) as resp:
            assert b"detector_build_info" in resp.read()
        untrusted = ssl.create_default_context(cafile=str(pki.other.cert))
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(url, context=untrusted, timeout=5)
        with pytest.raises(OSError):  # the handshake fails: the server hangs up on plain HTTP
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
    finally:
        server.stop()


def test_metrics_stay_plain_http_without_a_certificate() -> None:
    server = HttpServer(Metrics(), Health(), "127.0.0.1", 0).start()
    try:
        assert server.url.startswith("http://")
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.stop()


def test_metrics_tls_needs_both_files(pki: SimpleNamespace) -> None:
    cert, key = pki.server
    with pytest.raises(ConfigError) as err:
        HttpServer(Metrics(), Health(), "127.0.0.1", 0, certfile=str(cert))
    assert err.value.key == "metrics_tls_keyfile"
    with pytest.raises(ConfigError) as err:
        HttpServer(Metrics(), Health(), "127.0.0.1", 0, keyfile=str(key))
    assert err.value.key == "metrics_tls_certfile"
    with pytest.raises(ConfigError) as err:
        HttpServer(Metrics(), Health(), "127.0.0.1", 0, certfile=str(cert), keyfile=str(pki.client[1]))
    assert err.value.key == "metrics_tls_keyfile"


def test_metrics_tls_settings_reach_the_server(pki: SimpleNamespace, city_db: str) -> None:
    """``run`` refuses half a TLS configuration by its key before it touches Kafka."""
    done = run_cli(
        "run",
        "--geoip-db",
        city_db,
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--metrics-port",
        "0",
        "--metrics-tls-certfile",
        str(pki.server[0]),
        timeout=60,
    )
    err = done.stderr.decode()
    assert done.returncode == 2 and "metrics_tls_keyfile" in err and "Traceback" not in err


# -- secrets ----------------------------------------------------------------------------------------


def test_print_config_masks_the_secrets() -> None:
    env = {
        "DETECTOR_SECURITY_PROTOCOL": "SASL_SSL",
        "DETECTOR_SASL_USERNAME": "alice",
        "DETECTOR_SASL_PASSWORD": "Sasl-Secret-4711",
        "DETECTOR_SSL_PASSWORD": "Key-Secret-0815",
    }
    done = run_cli("run", "--print-config", env=env, timeout=60)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, out
    assert "Sasl-Secret-4711" not in out and "Key-Secret-0815" not in out
    assert '"sasl_password": "********"' in out and '"ssl_password": "********"' in out
    assert '"sasl_username": "alice"' in out


def test_secure_listener_properties(pki: SimpleNamespace) -> None:
    cert, key = pki.server
    listener = SecureListener(9094, cert, key, {"alice": "a-Pa55", "bob": "b-Pa55"}, client_ca=pki.ca.cert)
    props = listener.properties()
    assert props["listener.name.secure.ssl.keystore.type"] == "PEM"
    assert props["listener.name.secure.ssl.keystore.certificate.chain"] == cert.read_text()
    assert props["listener.name.secure.sasl.enabled.mechanisms"] == "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    assert 'user_alice="a-Pa55"' in props["listener.name.secure.plain.sasl.jaas.config"]
    assert props["listener.name.secure.ssl.client.auth"] == "requested"
    assert listener.scram_arguments()[:2] == ["--add-scram", "SCRAM-SHA-256=[name=alice,password=a-Pa55]"]
    with pytest.raises(ValueError):
        SecureListener(9094, cert, key, {"alice": 'quote"s'})

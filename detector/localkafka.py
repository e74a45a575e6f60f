"""A real single-node Apache Kafka broker (KRaft) for development, tests and the demo.

Assembled from Maven Central by ``deploy/local-kafka/pom.xml`` into ``.cache/kafka/libs`` and started as
``java -cp '.cache/kafka/libs/*' kafka.Kafka server.properties``. Used by ``make kafka-up``/``kafka-down``,
``make run`` and the test suite (which may start extra brokers on other ports, each with its own name).

A broker may also open a ``SASL_SSL`` listener (``SecureListener``): TLS from PEM files, SASL PLAIN,
SCRAM-SHA-256 and SCRAM-SHA-512 for the given users (SCRAM credentials are written when the storage is
formatted). ``DevCA`` issues throw-away certificates for it with the ``openssl`` command.

    python -m detector.localkafka up [--port 9092] [--name default]
    python -m detector.localkafka down [--name default]
    python -m detector.localkafka status
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("detector.localkafka")

ROOT = Path(__file__).resolve().parent.parent


def broker_answers(bootstrap: str, timeout_s: float = 3.0, **security: object) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except OSError:
        return False
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            **security,
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def delete_topics(bootstrap: str, match: Callable[[str], bool]) -> None:
    """Delete every topic whose name ``match`` accepts (best effort): what a benchmark or a test made,
    the detector's internal topics (named after its group) included. A local broker kept them all, run
    after run, thousands of partitions that slowed it."""
    from kafka import KafkaAdminClient

    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            names = [t for t in admin.list_topics() if match(t)]
            if names:
                admin.delete_topics(names, timeout_ms=15_000)
        finally:
            admin.close()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a SASL_SSL listener ----------------------------------------------------------------------------

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# User names and passwords go into a JAAS string and a StorageTool argument unquoted: keep them plain.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9._~+-]{1,128}")


@dataclass(frozen=True)
class SecureListener:
    """A ``SASL_SSL`` listener: the broker's certificate and key (PEM files; the key unencrypted
    PKCS#8, as ``openssl genpkey`` writes it) and the users who may sign in, each with PLAIN,
    SCRAM-SHA-256 and SCRAM-SHA-512. With ``client_ca`` the broker also asks clients for a
    certificate signed by it (``client_auth``: requested = optional mutual TLS, required = mandatory)."""

    port: int
    certfile: Path
    keyfile: Path
    users: Mapping[str, str] = field(default_factory=dict)
    client_ca: Path | None = None
    client_auth: str = "requested"
    name: str = "SECURE"

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("a SASL_SSL listener needs at least one user")
        for user, password in self.users.items():
            if not (_PLAIN_WORD.fullmatch(user) and _PLAIN_WORD.fullmatch(password)):
                raise ValueError(f"user {user!r}: names and passwords may use only A-Z a-z 0-9 . _ ~ + -")
        if self.client_auth not in ("none", "requested", "required"):
            raise ValueError(f"client_auth must be none, requested or required, not {self.client_auth}")
        if self.name.upper() in ("PLAINTEXT", "CONTROLLER"):
            raise ValueError(f"listener name {self.name} is taken")

    def properties(self) -> dict[str, str]:
        """The broker settings of this listener (``listener.name.<name>.`` prefixed)."""
        prefix = f"listener.name.{self.name.lower()}."
        props = {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": self.certfile.read_text(),
            "ssl.keystore.key": self.keyfile.read_text(),
            "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
            "plain.sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule required "
            + " ".join(f'user_{u}="{p}"' for u, p in self.users.items())
            + ";",
            "scram-sha-256.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "scram-sha-512.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        }
        if self.client_ca is not None and self.client_auth != "none":
            props.update(
                {
                    "ssl.truststore.type": "PEM",
                    "ssl.truststore.certificates": self.client_ca.read_text(),
                    "ssl.client.auth": self.client_auth,
                }
            )
        return {prefix + k: v for k, v in props.items()}

    def scram_arguments(self) -> list[str]:
        """``StorageTool format`` arguments that create every user's SCRAM credentials."""
        return [
            arg
            for user, password in self.users.items()
            for mechanism in SASL_MECHANISMS[1:]
            for arg in ("--add-scram", f"{mechanism}=[name={user},password={password}]")
        ]


def _property_value(value: str) -> str:
    """A value as java.util.Properties reads it back (multi-line PEM on one escaped line)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "")


_CA_EXTENSIONS = ("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign,cRLSign")


class DevCA:
    """A throw-away certificate authority for development and tests, made with the ``openssl`` command:
    its certificate ``<dir>/<slug of name>.pem`` and, on request, certificates it signs for servers or
    clients. Keys are P-256, PKCS#8, unencrypted unless a password is given (as Kafka reads them)."""

    def __init__(self, directory: Path, name: str = "Impossible Travel Dev CA", days: int = 2) -> None:
        if not shutil.which("openssl"):
            raise RuntimeError("the openssl command is needed to make development certificates")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.days = days
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        self.cert = self.dir / f"{slug}.pem"
        self.key = self.dir / f"{slug}.key"
        days_subject = ["-sha256", "-days", str(days), "-subj", f"/CN={name}"]
        self._openssl(
            "req", "-x509", *self._new_key(self.key), *days_subject, *_CA_EXTENSIONS, "-out", str(self.cert)
        )

    @staticmethod
    def _new_key(path: Path) -> list[str]:
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(path)]

    @staticmethod
    def _openssl(*args: str, env: dict[str, str] | None = None) -> None:
        done = subprocess.run(
            ["openssl", *args], capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
        )
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")

    def issue(
        self,
        name: str,
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
        *,
        client: bool = False,
        password: str | None = None,
    ) -> tuple[Path, Path]:
        """A certificate for ``name``, as (certificate, key) PEM files: for a server valid for ``hosts``
        (IP addresses and DNS names), or for a client (``client=True``)."""
        cert, key, csr, ext = (self.dir / f"{name}.{suffix}" for suffix in ("pem", "key", "csr", "ext"))
        self._openssl("req", "-new", *self._new_key(key), "-subj", f"/CN={name}", "-out", str(csr))
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}",
        ]
        if not client:
            lines.append("subjectAltName=" + ",".join(_san(h) for h in hosts))
        ext.write_text("\n".join(lines) + "\n")
        signer = ["-CA", str(self.cert), "-CAkey", str(self.key), "-CAcreateserial", "-extfile", str(ext)]
        self._openssl(
            "x509", "-req", "-in", str(csr), *signer, "-sha256", "-days", str(self.days), "-out", str(cert)
        )
        csr.unlink()
        ext.unlink()
        if password is not None:
            plain = key.with_suffix(".plain")
            key.rename(plain)
            encrypt = ["-topk8", "-v2", "aes-256-cbc", "-passout", "env:DEVCA_KEY_PASSWORD"]
            env = {"DEVCA_KEY_PASSWORD": password}  # not on the command line
            self._openssl("pkcs8", *encrypt, "-in", str(plain), "-out", str(key), env=env)
            plain.unlink()
        key.chmod(0o600)
        return cert, key


def _san(host: str) -> str:
    try:
        return f"IP:{ipaddress.ip_address(host)}"
    except ValueError:
        return f"DNS:{host}"


def new_cluster_id() -> str:
    """A random KRaft cluster id, as Kafka's ``Uuid.randomUuid`` makes them: URL-safe base64 of 16
    random bytes, never starting with "-" (one in 64 would, and the storage tool's argument parser
    then takes the id for an option: "--cluster-id/-t: expected one argument")."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka:
    """One broker+controller process with its own data, logs and pid file under .cache/kafka/<name>/."""

    def __init__(
        self,
        root: Path = ROOT,
        *,
        name: str = "default",
        host: str = "127.0.0.1",
        port: int = 9092,
        controller_port: int | None = None,
        extra_properties: dict[str, str] | None = None,
        listeners: dict[str, tuple[int, str]] | None = None,
        jvm_options: list[str] | None = None,
        secure: SecureListener | None = None,
    ) -> None:
        self.root = root
        self.libs = root / ".cache" / "kafka" / "libs"
        # The default broker keeps .cache/kafka/{data,logs}; named ones (tests) a folder of their own.
        self.home = root / ".cache" / "kafka" / ("" if name == "default" else name)
        self.name = name
        self.host = host
        self.port = port
        self.controller_port = controller_port or (port + 1 if name == "default" else free_port())
        self.extra_properties = extra_properties or {}
        # Extra listeners: name -> (port, security protocol), e.g. {"SECURE": (9094, "SASL_SSL")}.
        self.listeners = dict(listeners or {})
        self.jvm_options = jvm_options or []
        # The PLAINTEXT listener stays (readiness checks, inter-broker and controller traffic).
        self.secure = secure
        if secure is not None:
            self.listeners[secure.name] = (secure.port, "SASL_SSL")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def secure_bootstrap(self) -> str:
        """The SASL_SSL listener's address (``secure`` must be set)."""
        if self.secure is None:
            raise RuntimeError(f"broker {self.name} has no SASL_SSL listener")
        return f"{self.host}:{self.secure.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    # -- assembly ----------------------------------------------------------------------------------

    def ensure_libs(self) -> None:
        if any(self.libs.glob("kafka_2.13-*.jar")):
            return
        if not shutil.which("mvn"):
            raise RuntimeError("Maven (mvn) is needed to fetch Apache Kafka from Maven Central")
        pom = self.root / "deploy" / "local-kafka" / "pom.xml"
        log.info("fetching Apache Kafka from Maven Central into %s", self.libs)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.libs}",
                "-DincludeScope=runtime",
            ],
            check=True,
        )

    def _properties(self) -> Path:
        base = (self.root / "deploy" / "local-kafka" / "server.properties").read_text()
        names = ["PLAINTEXT", *self.listeners]
        listeners = [f"PLAINTEXT://{self.host}:{self.port}"] + [
            f"{n}://{self.host}:{p}" for n, (p, _) in self.listeners.items()
        ]
        protocol_map = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"] + [
            f"{n}:{proto}" for n, (_, proto) in self.listeners.items()
        ]
        overrides = {
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": ",".join([*listeners, f"CONTROLLER://{self.host}:{self.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "listener.security.protocol.map": ",".join(protocol_map),
            "log.dirs": str(self.home / "data"),
            **(self.secure.properties() if self.secure is not None else {}),
            **self.extra_properties,
        }
        assert names
        lines = [ln for ln in base.splitlines() if ln.split("=", 1)[0].strip() not in overrides]
        lines += [f"{k}={_property_value(v)}" for k, v in overrides.items()]
        path = self.home / "server.properties"
        path.touch(mode=0o600)  # it may hold a private key and the users' passwords
        path.write_text("\n".join(lines) + "\n")
        return path

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            "-cp",
            f"{self.libs}/*",
            f"-Dlog4j2.configurationFile={self.root}/deploy/local-kafka/log4j2.yaml",
            f"-Dkafka.logs.dir={self.log_dir}",
            *args,
        ]

    # -- lifecycle ---------------------------------------------------------------------------------

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def up(self, timeout_s: float = 120.0) -> None:
        """Start the broker unless one answers already; return once it answers a metadata request."""
        if broker_answers(self.bootstrap, 2.0):
            log.info("a broker already answers at %s", self.bootstrap)
            return
        self.ensure_libs()
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = new_cluster_id()
            scram = self.secure.scram_arguments() if self.secure is not None else []
            formatted = subprocess.run(
                # A short-lived JVM: the client compiler alone starts it twice as fast.
                self._java(
                    "-XX:TieredStopAtLevel=1",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                    *scram,
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if formatted.returncode != 0:
                # Not CalledProcessError: its message would repeat the arguments (the SCRAM passwords).
                raise RuntimeError(f"formatting the Kafka storage failed: {formatted.stderr.strip()[-500:]}")
        stdout = open(self.log_dir / "stdout.log", "ab")  # noqa: SIM115 - handed to the child
        heap = os.environ.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g").split()
        java = self._java("kafka.Kafka", str(props))
        proc = subprocess.Popen(
            [java[0], *heap, "-XX:+UseG1GC", *self.jvm_options, *java[1:]],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        stdout.close()
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Kafka exited with status {proc.returncode}; see {self.log_dir}/stdout.log and server.log"
                )
            if broker_answers(self.bootstrap, 2.0):
                log.info("Kafka is up at %s (pid %d)", self.bootstrap, proc.pid)
                return
            time.sleep(0.3)
        self.down()
        raise RuntimeError(f"Kafka did not answer at {self.bootstrap} within {timeout_s:.0f} s")

    def down(self, timeout_s: float = 30.0) -> None:
        """Stop the broker this name started (if any); SIGKILL after ``timeout_s``."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        log.info("Kafka (pid %d) stopped", pid)

    def wipe(self) -> None:
        """Stop and delete this broker's data (used by tests for throw-away brokers)."""
        if self.name == "default":
            raise RuntimeError(
                "the default broker is not wiped; use `make kafka-down` and delete .cache/kafka/data"
            )
        self.down()
        shutil.rmtree(self.home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m detector.localkafka",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", "9092")))
    parser.add_argument("--name", default="default")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    broker = LocalKafka(name=args.name, port=args.port)
    try:
        if args.action == "up":
            broker.up(args.timeout)
        elif args.action == "down":
            broker.down()
        else:
            ok = broker_answers(broker.bootstrap)
            print(f"{broker.bootstrap}: {'answers' if ok else 'no broker'}")
            return 0 if ok else 1
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"localkafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

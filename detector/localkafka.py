"""A real single-node Apache Kafka broker (KRaft) for development, tests and the demo.

Assembled from Maven Central by ``deploy/local-kafka/pom.xml`` into ``.cache/kafka/libs`` and started as
``java -cp '.cache/kafka/libs/*' kafka.Kafka server.properties``. Used by ``make kafka-up``/``kafka-down``,
``make run`` and the test suite (which may start extra brokers on other ports, each with its own name).

    python -m detector.localkafka up [--port 9092] [--name default]
    python -m detector.localkafka down [--name default]
    python -m detector.localkafka status
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    ) -> None:
        self.root = root
        self.libs = root / ".cache" / "kafka" / "libs"
        # The default broker keeps .cache/kafka/{data,logs}; named ones (tests) a folder of their own.
        self.home = root / ".cache" / "kafka" / ("" if name == "default" else name)
        self.name = name
        self.host = host
        self.port = port
        self.controller_port = controller_port or (port + 1 if name == "default" else _free_port())
        self.extra_properties = extra_properties or {}
        # Extra listeners: name -> (port, security protocol), e.g. {"SECURE": (9094, "SASL_SSL")}.
        self.listeners = listeners or {}
        self.jvm_options = jvm_options or []

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

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
            **self.extra_properties,
        }
        assert names
        lines = [ln for ln in base.splitlines() if ln.split("=", 1)[0].strip() not in overrides]
        lines += [f"{k}={v}" for k, v in overrides.items()]
        path = self.home / "server.properties"
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
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
                check=True,
                capture_output=True,
            )
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

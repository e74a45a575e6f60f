"""One frozen ``Settings`` object, from four layers: defaults < TOML file < DETECTOR_* environment < flags.

Every setting is declared once in ``OPTIONS``: its key (TOML key and attribute), flag, environment twin,
parser, default and help. The command line, the environment, the config file, ``--help`` and
``--print-config`` are all generated from that table, so they cannot drift apart. An invalid value is
refused at start with the name under which the user gave it.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.errors import ConfigError
from detector.known import DEFAULT_HOSTING_ASNS, DEFAULT_SATELLITE_ASNS
from detector.rules import NETWORK_ACTIONS

ENV_PREFIX = "DETECTOR_"
MASK = "********"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def duration(value: Any) -> float:
    """Seconds from a number or text such as ``90``, ``90s``, ``2m``, ``6h``, ``7d``, ``250ms``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 2m, 6h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"{value!r} is not a duration such as 90s, 2m, 6h or 7d")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def number(
    low: float | None = None, high: float | None = None, integer: bool = False
) -> Callable[[Any], Any]:
    def parse(value: Any) -> float | int:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            n: float | int = int(value) if integer else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not {'a whole number' if integer else 'a number'}") from None
        if n != n or (low is not None and n < low) or (high is not None and n > high):
            raise ValueError(f"{value!r} is out of range [{low}, {high}]")
        return n

    return parse


def text(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("expected text")
    return str(value)


def choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if str(value) not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return str(value)

    return parse


def asn_list(value: Any) -> tuple[int, ...]:
    """AS numbers from a list or text such as ``16509, AS14618``."""
    items = value if isinstance(value, list | tuple) else str(value).replace(",", " ").split()
    out = []
    for item in items:
        text = str(item).strip().upper().removeprefix("AS")
        if not text.isdigit() or not 0 < int(text) < 2**32:
            raise ValueError(f"{item!r} is not an AS number")
        out.append(int(text))
    return tuple(out)


def cidr_list(value: Any) -> tuple[str, ...]:
    import ipaddress

    out = csv_list(value)
    for cidr in out:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{cidr!r} is not a network such as 203.0.113.0/24") from None
    return out


FORMAT_NAMES = ("auto", "canonical", "entra", "okta", "cloudtrail", "gworkspace", "sshd", "mapping")


def input_format(value: Any) -> str:
    """A format name, or topic=format pairs (run) such as ``okta-logs=okta,hub=entra``."""
    text_value = str(value).strip()
    for part in text_value.split(","):
        name = part.split("=", 1)[-1].strip()
        if name not in FORMAT_NAMES:
            raise ValueError(f"{name!r} is not one of {', '.join(FORMAT_NAMES)}")
    return text_value


def workers(value: Any) -> int:
    """``auto`` (or 0: decided by the input's size and the CPUs) or a number of worker processes."""
    if str(value).strip().lower() == "auto":
        return 0
    return int(number(0, 256, True)(value))


def csv_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


@dataclass(frozen=True)
class Option:
    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str = "VALUE"
    secret: bool = False
    # Which subcommands show this option as a flag ("*" = all that run detection).
    commands: tuple[str, ...] = ("*",)
    # A default that differs for some subcommands.
    command_defaults: Mapping[str, Any] = field(default_factory=dict)

    def default_for(self, command: str | None) -> Any:
        return self.command_defaults.get(command or "", self.default)

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


DETECT = ("replay", "run", "tune")
INPUT = ("replay", "run", "tune", "normalize")
KAFKA = ("run",)

OPTIONS: tuple[Option, ...] = (
    # -- detection ------------------------------------------------------------------------------
    Option("max_speed_kmh", number(1, 1e7), 900, "alert when the implied speed exceeds this", "KMH"),
    Option(
        "min_distance_km",
        number(0, 40000),
        100,
        "never alert on trips shorter than this (net of accuracy radii)",
        "KM",
    ),
    Option(
        "evaluate_failures",
        boolean,
        False,
        "compare failed sign-ins with the account's history too (they never move it)",
        "BOOL",
    ),
    Option("history_size", number(1, 64, True), 8, "located sign-ins remembered per account", "N"),
    Option("history_window", duration, "7d", "forget an account's sign-ins older than this", "DURATION"),
    Option(
        "suppress_window",
        duration,
        "6h",
        "stay quiet on a repeat of an alerted location pair for this long",
        "DURATION",
    ),
    Option(
        "dedupe_ids",
        number(1, 1024, True),
        16,
        "recent event ids remembered per account to drop re-deliveries",
        "N",
    ),
    Option(
        "suppress_radius_km",
        number(0, 20000),
        200,
        "places this close count as the same place for repeat suppression",
        "KM",
    ),
    Option(
        "trusted_networks",
        cidr_list,
        "",
        "CIDRs whose sign-ins never count as travel (corporate egress, VPN concentrators), comma-separated",
        "CIDRS",
    ),
    Option(
        "asn_db",
        text,
        "",
        "optional ASN database (GeoLite2-ASN or DB-IP ASN, .mmdb) for the network lists below",
        "PATH",
    ),
    Option(
        "hosting_asns",
        asn_list,
        " ".join(map(str, DEFAULT_HOSTING_ASNS)),
        "AS numbers of hosting and VPN networks",
        "ASNS",
    ),
    Option(
        "satellite_asns",
        asn_list,
        " ".join(map(str, DEFAULT_SATELLITE_ASNS)),
        "AS numbers of satellite and in-flight networks",
        "ASNS",
    ),
    Option("mobile_asns", asn_list, "", "AS numbers of mobile carriers", "ASNS"),
    Option(
        "hosting_action",
        choice(*NETWORK_ACTIONS),
        "lower",
        "what a hosting/VPN network does to an alert: lower, suppress, ignore",
        "ACTION",
    ),
    Option(
        "satellite_action",
        choice(*NETWORK_ACTIONS),
        "suppress",
        "what a satellite/in-flight network does to an alert",
        "ACTION",
    ),
    Option(
        "mobile_action",
        choice(*NETWORK_ACTIONS),
        "lower",
        "what a mobile-carrier network does to an alert",
        "ACTION",
    ),
    Option(
        "exceptions_file",
        text,
        "",
        "CSV of per-account travel exceptions (account,until,countries), reloaded on change",
        "FILE",
    ),
    Option(
        "reload_interval",
        duration,
        "30s",
        "run: how often to look for a replaced GeoIP database or exceptions file (0 = never)",
        "DURATION",
        commands=KAFKA,
    ),
    Option(
        "reorder_window",
        duration,
        "0s",
        "event-time grace: hold each sign-in until the stream is this far past it, to evaluate in event-time "
        "order despite late delivery (costs this much alert latency in `run`; replay defaults to 1h)",
        "DURATION",
        command_defaults={"replay": "1h", "tune": "1h"},
    ),
    Option(
        "reorder_min_wait",
        duration,
        "1s",
        "wall-clock wait of a sign-in that is over a minute old on "
        "arrival (a backlog or replayed stream), so partitions out of step by milliseconds still come in "
        "event-time order; counted from when the record was known to be in the log, and skipped once "
        "every partition has delivered a newer sign-in; fresh sign-ins do not wait",
        "DURATION",
        commands=KAFKA,
    ),
    Option(
        "reorder_max_wait",
        duration,
        "5s",
        "longest wall-clock wait of a held sign-in, whatever the stream does",
        "DURATION",
        commands=KAFKA,
    ),
    Option(
        "state_cache_size",
        number(1, 1 << 30, True),
        100_000,
        "accounts kept ready as objects; idle ones are packed (about 150 bytes each instead of 500)",
        "N",
    ),
    # -- GeoIP ------------------------------------------------------------------------------------
    Option(
        "geoip_db",
        text,
        "",
        "GeoIP City database (.mmdb); default: the one `make geoip` put in .cache/geoip/",
        "PATH",
    ),
    Option("geoip_cache_size", number(16, 1 << 26, True), 262_144, "entries in each GeoIP cache level", "N"),
    Option(
        "default_accuracy_radius_km",
        number(0, 20000),
        50,
        "accuracy radius assumed when the database gives none",
        "KM",
    ),
    Option(
        "coarse_radius_km",
        number(1, 20000),
        500,
        "a fix this wide (or without a city) is country-level: low confidence",
        "KM",
    ),
    # -- input limits -----------------------------------------------------------------------------
    Option(
        "max_event_bytes",
        number(64, 16 << 20, True),
        65536,
        "longest accepted line or message",
        "BYTES",
        commands=INPUT,
    ),
    Option("max_depth", number(2, 512, True), 32, "deepest accepted JSON nesting", "N", commands=INPUT),
    Option("max_user_chars", number(1, 4096, True), 512, "longest accepted account ID", "N", commands=INPUT),
    # -- native formats ---------------------------------------------------------------------------
    Option(
        "format",
        input_format,
        "auto",
        "input format: auto (per record), canonical, entra, okta, cloudtrail, "
        "gworkspace, sshd, mapping; for run also per topic, e.g. okta-logs=okta,entra-hub=entra",
        "FORMAT",
        commands=INPUT,
    ),
    Option(
        "use_vendor_location",
        boolean,
        False,
        "use the identity provider's own coordinates when the GeoIP database has none for the address",
        "BOOL",
        commands=("replay", "run", "tune"),
    ),
    Option(
        "vendor_radius_km",
        number(0, 20000),
        50,
        "accuracy radius given to an identity provider's own coordinates",
        "KM",
        commands=("replay", "run", "tune"),
    ),
    Option(
        "syslog_year",
        number(0, 2099, True),
        0,
        "year of BSD syslog timestamps, which have none (0 = the "
        "year the file was last modified; the current year for stdin and Kafka)",
        "YEAR",
        commands=INPUT,
    ),
    Option(
        "syslog_timezone",
        text,
        "UTC",
        "time zone of BSD syslog timestamps, which have none (IANA name)",
        "ZONE",
        commands=INPUT,
    ),
    Option("mapping_user", text, "", "mapping format: dotted path of the account ID", "PATH", commands=INPUT),
    Option("mapping_ip", text, "", "mapping format: dotted path of the address", "PATH", commands=INPUT),
    Option("mapping_timestamp", text, "", "mapping format: dotted path of the time", "PATH", commands=INPUT),
    Option(
        "mapping_timestamp_format",
        text,
        "rfc3339",
        "mapping format: rfc3339, epoch_s, epoch_ms or a strptime pattern",
        "FORMAT",
        commands=INPUT,
    ),
    Option(
        "mapping_outcome",
        text,
        "",
        "mapping format: dotted path of the outcome (absent = success)",
        "PATH",
        commands=INPUT,
    ),
    Option(
        "mapping_success_values",
        csv_list,
        "success",
        "mapping format: outcome values that mean success",
        "VALUES",
        commands=INPUT,
    ),
    Option(
        "mapping_event_id",
        text,
        "",
        "mapping format: dotted path of the event id (optional)",
        "PATH",
        commands=INPUT,
    ),
    Option(
        "max_batch_bytes",
        number(1024, 1 << 30, True),
        16 << 20,
        "longest line or message that is a vendor page "
        'of records ({"value": [...]}, {"records": [...]}, ...)',
        "BYTES",
        commands=INPUT,
    ),
    Option(
        "max_document_bytes",
        number(1024, 1 << 34, True),
        256 << 20,
        "largest file read as one JSON document (a pretty-printed export)",
        "BYTES",
        commands=("replay", "tune", "normalize"),
    ),
    # -- replay -----------------------------------------------------------------------------------
    Option("output", text, "-", "where alerts go, JSON Lines ('-' = stdout)", "FILE", commands=("replay",)),
    Option(
        "rejects",
        text,
        "",
        "where invalid lines go, JSON Lines with reasons (default: counted only)",
        "FILE",
        commands=("replay", "tune"),
    ),
    Option(
        "workers",
        workers,
        0,
        "processes that evaluate the replay, the accounts shared out among them (same alerts, in the "
        "same order); auto = one per CPU for inputs of 8 MiB or more, else 1",
        "N|auto",
        commands=("replay",),
        command_defaults={"replay": "auto"},
    ),
    Option(
        "huge_pages",
        boolean,
        True,
        "keep the account states in 2 MiB memory pages (transparent huge pages, asked for by madvise): "
        "fewer address translations missed, a replay up to a tenth faster; false keeps 4 KiB pages",
        "BOOL",
        commands=DETECT,
    ),
    Option(
        "batch_size",
        number(1, 1 << 20, True),
        8192,
        "sign-ins evaluated per batch (run: the most records a poll takes)",
        "N",
        # Paired runs of the benchmark, 8192 against 4096: a replay shared out among workers (a pipe
        # round trip and a pipeline bubble a batch) 6% faster, and 16384 4.5% slower than 8192; the
        # keyed stream's backlog 62-85k sign-ins a second against 53-69k (a transaction a batch).
    ),
    Option(
        "progress",
        choice("auto", "always", "never"),
        "auto",
        "progress bar on stderr: auto = when stderr is a terminal",
        "WHEN",
        commands=("replay", "tune"),
    ),
    # -- Kafka ------------------------------------------------------------------------------------
    Option(
        "bootstrap_servers",
        text,
        "127.0.0.1:9092",
        "Kafka brokers, host:port[,host:port...]",
        "HOSTS",
        commands=KAFKA,
    ),
    Option(
        "input_topic",
        text,
        "signins",
        "topic of sign-in events (JSON values; keys ignored)",
        "TOPIC",
        commands=KAFKA,
    ),
    Option(
        "alert_topic",
        text,
        "impossible-travel-alerts",
        "topic the alerts go to, keyed by account",
        "TOPIC",
        commands=KAFKA,
    ),
    Option(
        "dlq_topic",
        text,
        "signins-dlq",
        "dead-letter topic for messages that are not valid sign-ins",
        "TOPIC",
        commands=KAFKA,
    ),
    Option(
        "group_id",
        text,
        "impossible-travel",
        "consumer group (and prefix of the transactional id)",
        "GROUP",
        commands=KAFKA,
    ),
    Option(
        "instance_id",
        text,
        "",
        "stable name of this instance (e.g. the pod name): static group membership and a stable transactional id, so a restart takes over at once",
        "NAME",
        commands=KAFKA,
    ),
    Option(
        "transactions",
        boolean,
        True,
        "exactly-once: alerts, DLQ records and offsets in one transaction; false = at-least-once",
        "BOOL",
        commands=KAFKA,
    ),
    Option("create_topics", boolean, True, "create missing topics at start", "BOOL", commands=KAFKA),
    Option(
        "topic_partitions",
        number(1, 10000, True),
        6,
        "partitions of topics created at start",
        "N",
        commands=KAFKA,
    ),
    Option(
        "topic_replication",
        number(1, 100, True),
        1,
        "replication factor of topics created at start",
        "N",
        commands=KAFKA,
    ),
    Option(
        "auto_offset_reset",
        choice("earliest", "latest"),
        "earliest",
        "where a new consumer group starts reading",
        "WHERE",
        commands=KAFKA,
    ),
    Option(
        "poll_timeout", duration, "200ms", "longest wait for records in one poll", "DURATION", commands=KAFKA
    ),
    Option(
        "commit_timeout",
        duration,
        "10s",
        "longest wait for a transaction step or an acknowledgement",
        "DURATION",
        commands=KAFKA,
    ),
    Option(
        "transaction_timeout",
        duration,
        "15s",
        "broker aborts a transaction left open this long (a crashed instance's)",
        "DURATION",
        commands=KAFKA,
    ),
    Option(
        "startup_timeout",
        duration,
        "10s",
        "give up at start when no broker answers within this",
        "DURATION",
        commands=KAFKA,
    ),
    Option(
        "shutdown_timeout",
        duration,
        "8s",
        "on SIGTERM/SIGINT, exit after this even if a batch is stuck",
        "DURATION",
        commands=KAFKA,
    ),
    Option(
        "input_keyed_by_account",
        boolean,
        False,
        "the input topic's producers key by account ID (Kafka's "
        "default partitioner): skip the repartition stage",
        "BOOL",
        commands=KAFKA,
    ),
    Option(
        "state_ttl",
        duration,
        "7d",
        "drop an account (with a changelog tombstone) when its newest sign-in is "
        "older than this, in event time",
        "DURATION",
        commands=KAFKA,
    ),
    Option(
        "state_ttl_check",
        duration,
        "60s",
        "how often to look for accounts idle past the TTL",
        "DURATION",
        commands=KAFKA,
    ),
    # -- Kafka security (TLS, SASL) ---------------------------------------------------------------
    Option(
        "security_protocol",
        choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        "PLAINTEXT",
        "how to talk to the brokers",
        "PROTOCOL",
        commands=KAFKA,
    ),
    Option(
        "ssl_cafile",
        text,
        "",
        "CA certificate(s) that signed the brokers' certificates (PEM)",
        "FILE",
        commands=KAFKA,
    ),
    Option("ssl_certfile", text, "", "client certificate (PEM), for mutual TLS", "FILE", commands=KAFKA),
    Option("ssl_keyfile", text, "", "client private key (PEM), for mutual TLS", "FILE", commands=KAFKA),
    Option(
        "ssl_password", text, "", "password of the client private key", "SECRET", secret=True, commands=KAFKA
    ),
    Option(
        "ssl_check_hostname",
        boolean,
        True,
        "verify that the broker certificate matches its host name",
        "BOOL",
        commands=KAFKA,
    ),
    Option(
        "sasl_mechanism",
        choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        "SCRAM-SHA-512",
        "SASL mechanism",
        "MECHANISM",
        commands=KAFKA,
    ),
    Option("sasl_username", text, "", "SASL user name", "USER", commands=KAFKA),
    Option("sasl_password", text, "", "SASL password", "SECRET", secret=True, commands=KAFKA),
    # -- privacy and account identity ------------------------------------------------------------
    Option(
        "account_normalize",
        choice("off", "trim", "email"),
        "off",
        "make one person one account: trim = strip surrounding white space; email = also "
        "case-fold IDs shaped like e-mail addresses (name@domain.tld)",
        "MODE",
        commands=INPUT,
    ),
    Option(
        "pseudonymize_key",
        text,
        "",
        "when set, every account ID is replaced by a keyed pseudonym (HMAC-SHA256) before it is "
        "stored, logged, published or written to the changelog",
        "SECRET",
        secret=True,
        commands=INPUT,
    ),
    Option(
        "pseudonymize_key_file",
        text,
        "",
        "read the pseudonymisation key from this file (a mounted secret) instead",
        "FILE",
        commands=INPUT,
    ),
    Option(
        "alert_ipv4_prefix",
        number(0, 32, True),
        32,
        "truncate IPv4 addresses in alerts to this prefix length (24 keeps the /24 network)",
        "BITS",
        commands=DETECT,
    ),
    Option(
        "alert_ipv6_prefix",
        number(0, 128, True),
        128,
        "truncate IPv6 addresses in alerts to this prefix length (48 keeps the /48 network)",
        "BITS",
        commands=DETECT,
    ),
    # -- metrics and health -----------------------------------------------------------------------
    Option(
        "metrics_host",
        text,
        "127.0.0.1",
        "address of the /metrics /healthz /readyz server (0.0.0.0 in containers)",
        "ADDR",
        commands=KAFKA,
    ),
    Option(
        "metrics_port",
        number(0, 65535, True),
        9464,
        "port of the /metrics /healthz /readyz server (0 = any free port)",
        "PORT",
        commands=KAFKA,
    ),
    Option(
        "metrics_tls_certfile",
        text,
        "",
        "serve /metrics /healthz /readyz over HTTPS with this certificate (PEM)",
        "FILE",
        commands=KAFKA,
    ),
    Option(
        "metrics_tls_keyfile",
        text,
        "",
        "private key (PEM) of --metrics-tls-certfile",
        "FILE",
        commands=KAFKA,
    ),
    # -- logging ----------------------------------------------------------------------------------
    Option(
        "log_level",
        choice("debug", "info", "warning", "error"),
        "info",
        "log verbosity",
        "LEVEL",
        commands=INPUT,
    ),
    Option(
        "log_format",
        choice("text", "json"),
        "text",
        "log lines as text, or JSON for log shippers",
        "FORMAT",
        commands=INPUT,
    ),
)

_BY_KEY = {o.key: o for o in OPTIONS}

_DEFAULTS = {o.key: o.parse(o.default) for o in OPTIONS}


class Settings:
    """Every setting of the detector, resolved and validated (see OPTIONS), read-only. (A plain class: a
    frozen dataclass of its fields took 7 ms of every start to generate.)"""

    def __init__(self, **values: Any) -> None:
        unknown = values.keys() - _DEFAULTS.keys()
        if unknown:
            raise TypeError(f"not settings: {', '.join(sorted(unknown))}")
        self.__dict__.update(_DEFAULTS)
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"settings are read-only ({name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"settings are read-only ({name})")

    def __eq__(self, other: object) -> bool:
        return type(other) is Settings and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


def _parse(option: Option, value: Any, where: str) -> Any:
    try:
        return option.parse(value)
    except ValueError as exc:
        raise ConfigError(where, str(exc)) from None


def _flatten_toml(data: Mapping[str, Any], path: str, source: str) -> dict[str, tuple[Any, str]]:
    """Top-level keys are settings; tables group settings for readability ([kafka], [detection], ...)."""
    out: dict[str, tuple[Any, str]] = {}
    table = path.rstrip(".").rsplit(".", 1)[-1]
    for key, value in data.items():
        if isinstance(value, dict) and key not in _BY_KEY:
            out.update(_flatten_toml(value, f"{path}{key}.", source))
            continue
        name = key if key in _BY_KEY else f"{table}_{key}"  # [mapping] user -> mapping_user
        if name not in _BY_KEY:
            raise ConfigError(f"{path}{key} (in {source})", "unknown setting")
        out[name] = (value, f"{path}{key} (in {source})")
    return out


def load_toml(path: str) -> dict[str, tuple[Any, str]]:
    import tomllib  # (here: 3 ms to import, and most runs have no file)

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    return _flatten_toml(data, "", path)


def resolve(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
    command: str | None = None,
) -> Any:
    """Build ``Settings``: defaults (of ``command``) < TOML file < DETECTOR_* environment < flags."""
    environ = os.environ if environ is None else environ
    raw: dict[str, tuple[Any, str]] = {
        o.key: (o.default_for(command), "default") for o in OPTIONS if o.command_defaults
    }
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG") or None
    if config_file:
        raw.update(load_toml(config_file))
    known_env = {o.env for o in OPTIONS} | {ENV_PREFIX + "CONFIG"}
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in known_env:
            raise ConfigError(name, "unknown setting in the environment")
    for option in OPTIONS:
        if option.env in environ:
            raw[option.key] = (environ[option.env], option.env)
    for key, value in (flags or {}).items():
        if value is not None and key in _BY_KEY:
            raw[key] = (value, _BY_KEY[key].flag)
    values = {key: _parse(_BY_KEY[key], value, where) for key, (value, where) in raw.items()}
    return Settings(**values)


def describe(settings: Any) -> dict[str, Any]:
    """Settings as a dict with secrets masked, for ``--print-config`` and the start-up log line."""
    out = {}
    for option in OPTIONS:
        value = getattr(settings, option.key)
        out[option.key] = MASK if option.secret and value else value
    return out


def applies(option: Option, command: str) -> bool:
    return command in (DETECT if "*" in option.commands else option.commands)


def add_flags(parser: argparse.ArgumentParser, command: str, skip: Iterable[str] = ()) -> None:
    """Add the flags that apply to ``command``; help shows default and environment twin."""
    skip = set(skip)
    group = parser.add_argument_group("settings (flag > environment > --config file > default)")
    for option in OPTIONS:
        if option.key in skip:
            continue
        if not applies(option, command):
            continue
        default = MASK if option.secret and option.default else option.default_for(command)
        shown = "none" if default in ("", ()) else default
        group.add_argument(
            option.flag,
            dest=option.key,
            metavar=option.metavar,
            default=None,
            help=f"{option.help} (default: {shown}) [env {option.env}]",
        )


def find_geoip_db(explicit: str) -> str:
    """The database to use: the setting when given, else the one ``make geoip`` fetched."""
    if explicit:
        return explicit
    roots = [Path.cwd(), Path(__file__).resolve().parent.parent]
    for root in roots:
        candidate = root / ".cache" / "geoip" / "GeoLite2-City.mmdb"
        if candidate.exists():
            return str(candidate)
    raise ConfigError(
        "--geoip-db",
        "no GeoIP City database given and none in .cache/geoip/ (run `make geoip`, or pass --geoip-db)",
    )

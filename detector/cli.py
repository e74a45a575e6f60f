"""Command line: ``python -m detector`` / ``impossible-travel``.

Exit status: 0 done; 1 failed while running; 2 usage or configuration error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

# numpy's BLAS starts a thread per core at import, which spins on a core for a while (perf: 0.1 s of CPU
# in every replay) and serves nothing here: the detector's numpy work is element-wise. Before the first
# import of numpy; a value already set is left as it is.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from detector import __version__, logs
from detector.config import DETECT, OPTIONS, add_flags, describe, resolve
from detector.errors import BrokerError, ConfigError, DetectorError, GeoDatabaseError, SourceError

PROG = "impossible-travel"

DESCRIPTION = """\
Impossible-travel detection for sign-in events. For every account it remembers recent located
sign-ins and alerts when two of them imply a speed no traveller reaches (default: over 900 km/h across
at least 100 km, net of the GeoIP accuracy radii).

Settings come from flags, DETECTOR_* environment variables, a TOML file (--config) and defaults, in
that order of precedence; every flag's environment twin is shown in its help.
"""

REPLAY_HELP = """\
Run the detection over historical JSON Lines files (.gz too, '-' for stdin), in the order given.
Alerts are written as JSON Lines (schemas/alert.schema.json); each line that is not a valid sign-in
goes to --rejects with its line number and reason; a summary goes to stderr."""


NORMALIZE_HELP = """\
Read identity providers' native sign-in logs and write canonical sign-in events (JSON Lines,
schemas/signin-event.schema.json) to stdout; every record that is not a sign-in, or cannot be read,
goes to stderr (or --rejects) as JSON with its file, line, record index and reason. The format is
detected per record unless --format fixes it; one file may mix formats. Vendor pages are unwrapped
({"value": [...]}, {"records": [...]}, {"Records": [...]}, {"items": [...]}, JSON arrays), and a file
that is one pretty-printed JSON document is read whole."""

TUNE_HELP = """\
One pass over historical logs, then for every combination of --speeds and --min-distances: the alerts,
the alerting accounts, the repeats suppressed, and with --labels precision and recall. Prints the table
and writes report.md and tune.png (the distribution of implied speeds with the thresholds marked, and
alerts per setting) to --out. Each row is exactly what `replay` would give with those thresholds."""

GENERATE_HELP = """\
Realistic sign-in traffic over the addresses of a real GeoIP database, with the alerts it should give:
residents, commuters, flights, impossible trips, failures from afar, and with --profile nuanced also
VPN flip-flops, country-level fixes, late arrivals and IPv4-mapped addresses. See detector/traffic.py."""

PSEUDONYM_HELP = """\
The pseudonym under which each account appears in alerts, logs, state and the changelog when
pseudonymisation is on: give the same key (--pseudonymize-key-file, DETECTOR_PSEUDONYMIZE_KEY or the
config file; a key on the command line shows in the process list) and the same --account-normalize as
the detector. Prints one line per account: PSEUDONYM<TAB>ACCOUNT. To re-identify an alert's account,
run it over the candidate accounts ('-' reads them from stdin, one per line) and look for the alert's."""

GEOIP_INDEX_HELP = """\
Read every record of the City database that an IPv4 address can reach, once, and write the fields the
detector uses beside it, as <database>.index (`make geoip` does this). A replay then finds a new
address's record with one numpy search instead of a read that costs about 23 us. GeoLite2-City: 510,481
records in about 15 s, 22 MB. The index names the database it was built from; with any other file it
is ignored (with a warning) and records are read from the database."""

# The settings `geoip-index` takes.
GEOIP_INDEX_SETTINGS = ("geoip_db", "log_level", "log_format")

# The settings `pseudonym` takes: the ones that decide what an account becomes.
PSEUDONYM_SETTINGS = ("account_normalize", "pseudonymize_key", "pseudonymize_key_file")

RUN_HELP = """\
Consume sign-in events from a Kafka topic in a consumer group, and publish alerts to the alert topic
(keyed by account) and invalid messages, unchanged, to the dead-letter topic with the reason in their
headers. Alerts, dead letters and consumed offsets commit in one transaction (exactly-once for readers
with isolation_level=read_committed). Metrics on http://METRICS_HOST:METRICS_PORT/metrics, health on
/healthz and /readyz. SIGTERM or SIGINT stops it cleanly.

Run several processes with one --group-id to share the work (up to the partition count). Unless
--input-keyed-by-account, a first stage re-keys sign-ins by account into <group>-signins-by-account.
Account state is kept per partition, in memory and in the compacted <group>-state-changelog topic,
written in the same transaction: a restarted or newly assigned process restores it from there."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings [env DETECTOR_CONFIG]")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved settings (secrets masked) and exit"
    )


def _only(parser: argparse.ArgumentParser, keys: tuple[str, ...]) -> None:
    """--config, and the flags of these settings only (of those that apply to `replay`)."""
    _common(parser)
    add_flags(parser, "replay", skip={o.key for o in OPTIONS} - set(keys))


def _command(sub: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    replay = _command(sub, "replay", "detect over log files (no Kafka)", REPLAY_HELP)
    replay.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="JSON Lines file, .gz file, or - for stdin"
    )
    _common(replay)
    add_flags(replay, "replay")

    norm = _command(
        sub,
        "normalize",
        "native sign-in records (Entra, Okta, CloudTrail, Google, sshd, mapped JSON) -> canonical events",
        NORMALIZE_HELP,
    )
    norm.add_argument(
        "inputs", nargs="+", metavar="FILE", help="file (JSON Lines, JSON document, syslog, .gz), or -"
    )
    norm.add_argument(
        "--rejects",
        metavar="FILE",
        default=None,
        help="where rejected records go, JSON Lines with reasons (default: stderr) [env DETECTOR_REJECTS]",
    )
    _common(norm)
    add_flags(norm, "normalize")

    tune = _command(
        sub, "tune", "compare thresholds over log files, with precision and recall when labelled", TUNE_HELP
    )
    tune.add_argument("inputs", nargs="+", metavar="LOG", help="JSON Lines file, .gz file, or - for stdin")
    tune.add_argument(
        "--labels",
        metavar="FILE",
        help="expected alerts, JSON Lines of {user, previous, current} (event ids): adds precision "
        "and recall",
    )
    tune.add_argument(
        "--speeds",
        default="300,500,800,900,1000",
        metavar="KMH,...",
        help="max speed thresholds to try (default: %(default)s)",
    )
    tune.add_argument(
        "--min-distances",
        default="0,50,100,500",
        metavar="KM,...",
        help="min distance thresholds to try (default: %(default)s)",
    )
    tune.add_argument(
        "--out",
        default="tune-report",
        metavar="DIR",
        help="where report.md and tune.png go (default: %(default)s)",
    )
    _common(tune)
    add_flags(tune, "tune")

    gen = _command(
        sub,
        "generate",
        "deterministic labelled sign-in traffic over a GeoIP database (for tune, tests, demos)",
        GENERATE_HELP,
    )
    gen.add_argument("--geoip-db", default="", metavar="PATH", help="City database (default: .cache/geoip/)")
    gen.add_argument("--accounts", type=int, default=300, help="accounts (default: %(default)s)")
    gen.add_argument(
        "--profile",
        choices=["clear", "nuanced"],
        default="nuanced",
        help="scenario mix (default: %(default)s)",
    )
    gen.add_argument("--seed", type=int, default=1, help="same seed, same bytes (default: %(default)s)")
    gen.add_argument("--out", required=True, metavar="FILE", help="events, JSON Lines")
    gen.add_argument("--labels", metavar="FILE", help="expected alerts, JSON Lines")

    pseu = _command(
        sub,
        "pseudonym",
        "the pseudonym of each account, for an analyst with the key to re-identify alerts",
        PSEUDONYM_HELP,
    )
    pseu.add_argument(
        "accounts", nargs="+", metavar="ACCOUNT", help="account ID as in the input, or - for stdin"
    )
    _only(pseu, PSEUDONYM_SETTINGS)

    index = _command(
        sub,
        "geoip-index",
        "decode the GeoIP database's records once, beside it (faster replay)",
        GEOIP_INDEX_HELP,
    )
    _only(index, GEOIP_INDEX_SETTINGS)

    run = _command(sub, "run", "the streaming detector on Kafka", RUN_HELP)
    _common(run)
    add_flags(run, "run")
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {o.key: getattr(args, o.key) for o in OPTIONS if getattr(args, o.key, None) is not None}


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {logs.safe(message)}", file=sys.stderr)
    return status


# Set by ``run``: what a replay leaves to the process's exit.
_left_to_exit: list[object] | None = None


def run() -> NoReturn:
    """The program: ``python -m detector`` and the ``impossible-travel`` script. ``main``; then, after a
    replay, an exit that leaves its memory to the operating system. Freeing a replay's state object by
    object (hundreds of thousands of tuples) took 0.1 s of a 0.8 s replay of 200,000 sign-ins."""
    global _left_to_exit
    _left_to_exit = []
    code = main()
    if _left_to_exit:
        # What the interpreter's exit would do that matters here (its files are closed): atexit's
        # handlers, which os._exit skips, flush the logs; the standard streams flushed.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "generate":
        return _generate(args)
    try:
        settings = resolve(_flags(args), config_file=args.config, command=args.command)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    if args.print_config:
        print(json.dumps(describe(settings), indent=2, default=str))
        return 0
    logs.setup(settings.log_level, settings.log_format)
    if args.command in DETECT:
        from detector.app import use_huge_pages

        use_huge_pages(settings)
    try:
        if args.command == "replay":
            return _replay(settings, args)
        if args.command == "normalize":
            from detector.app import normalize

            summary = normalize(settings, args.inputs, sys.stdout.buffer, sys.stderr.buffer)
            print(summary.text(), file=sys.stderr)
            return 0
        if args.command == "tune":
            return _tune(settings, args)
        if args.command == "pseudonym":
            return _pseudonym(settings, args)
        if args.command == "geoip-index":
            return _geoip_index(settings)
        if args.command == "run":
            from detector.app import run_stream

            return run_stream(settings)
    except (ConfigError, GeoDatabaseError) as exc:
        return _fail(str(exc), 2)
    except SourceError as exc:
        return _fail(str(exc), 2)
    except BrokerError as exc:
        return _fail(str(exc), 1)
    except DetectorError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return _fail(f"unknown command {args.command}", 2)


def _replay(settings: Any, args: argparse.Namespace) -> int:
    from detector.app import replay

    summary = replay(settings, args.inputs, left_to_exit=_left_to_exit)
    print(summary.text(), file=sys.stderr)
    return 0


def _pseudonym(settings: Any, args: argparse.Namespace) -> int:
    from detector.identity import AccountIds, key_from

    key = key_from(settings)
    if key is None:
        raise ConfigError(
            "pseudonymize_key",
            "no key: give --pseudonymize-key-file, DETECTOR_PSEUDONYMIZE_KEY or pseudonymize_key in --config",
        )
    ids = AccountIds(settings.account_normalize, key)
    accounts: list[str] = []
    for account in args.accounts:
        if account == "-":
            accounts += [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
        else:
            accounts.append(account)
    for account in accounts:
        if not account.strip():
            raise ConfigError("ACCOUNT", "an account ID cannot be empty")
        print(f"{ids.account(account)}\t{logs.safe(account)}")
    return 0


def _geoip_index(settings: Any) -> int:
    import time

    from detector.config import find_geoip_db
    from detector.geoindex import index_path
    from detector.geoip import GeoIP
    from detector.model import utc_text

    started = time.monotonic()
    geo = GeoIP(find_geoip_db(settings.geoip_db))
    try:
        index = geo.build_index(
            lambda done, total: print(f"geoip-index: {done:,} of {total:,} records read", file=sys.stderr)
        )
    finally:
        geo.close()
    path = index_path(geo.path)
    try:
        index.save(path)
    except OSError as exc:
        raise DetectorError(f"cannot write the record index {path}: {exc.strerror or exc}") from exc
    db = geo.database
    print(
        f"geoip-index: {len(index):,} records ({index.meta['places']:,} places) of {db.database_type} "
        f"built {utc_text(db.build_epoch)}, in {time.monotonic() - started:.1f} s -> {path}",
        file=sys.stderr,
    )
    return 0


def _tune(settings: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from detector.app import Progress
    from detector.tune import load_labels, parse_floats, run_tune, table, write_report

    speeds = parse_floats(args.speeds, "--speeds")
    distances = parse_floats(args.min_distances, "--min-distances")
    if 0 in speeds:
        raise ConfigError("--speeds", "a speed threshold must be above 0")
    labels = load_labels(args.labels) if args.labels else None
    show = settings.progress == "always" or (settings.progress == "auto" and sys.stderr.isatty())
    progress = Progress(sys.stderr, 0, show)
    report = run_tune(settings, args.inputs, speeds, distances, labels, progress)
    path = write_report(report, args.inputs, speeds, distances, Path(args.out), args.labels)
    print(table(report))
    print(
        f"tune: {report.events:,} events, {report.comparisons:,} comparisons in {report.seconds:.1f} s; "
        f"report in {path}",
        file=sys.stderr,
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    from detector.config import find_geoip_db
    from detector.traffic import Catalogue, Generator, write_jsonl

    try:
        catalogue = Catalogue.from_database(find_geoip_db(args.geoip_db))
        traffic = Generator(catalogue, seed=args.seed).generate(args.accounts, args.profile)
        n = write_jsonl(args.out, traffic.events)
        if args.labels:
            write_jsonl(args.labels, traffic.labels)
    except (ConfigError, GeoDatabaseError, ValueError, OSError) as exc:
        return _fail(str(exc), 2)
    print(
        f"generate: {n:,} events, {len(traffic.labels):,} expected alerts, {args.accounts:,} accounts",
        file=sys.stderr,
    )
    return 0

"""Command line: ``python -m detector`` / ``impossible-travel``.

Exit status: 0 done; 1 failed while running; 2 usage or configuration error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from detector import __version__, logs
from detector.config import OPTIONS, add_flags, describe, resolve
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


RUN_HELP = """\
Consume sign-in events from a Kafka topic in a consumer group, and publish alerts to the alert topic
(keyed by account) and invalid messages, unchanged, to the dead-letter topic with the reason in their
headers. Alerts, dead letters and consumed offsets commit in one transaction (exactly-once for readers
with isolation_level=read_committed). Metrics on http://METRICS_HOST:METRICS_PORT/metrics, health on
/healthz and /readyz. SIGTERM or SIGINT stops it cleanly.

Account state is kept in memory: a restart forgets each account's recent locations."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings [env DETECTOR_CONFIG]")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved settings (secrets masked) and exit"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    replay = sub.add_parser(
        "replay",
        help="detect over log files (no Kafka)",
        description=REPLAY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="JSON Lines file, .gz file, or - for stdin"
    )
    _common(replay)
    add_flags(replay, "replay")

    run = sub.add_parser(
        "run",
        help="the streaming detector on Kafka",
        description=RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(run)
    add_flags(run, "run")
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {o.key: getattr(args, o.key) for o in OPTIONS if getattr(args, o.key, None) is not None}


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {logs.safe(message)}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    try:
        settings = resolve(_flags(args), config_file=args.config, command=args.command)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    if args.print_config:
        print(json.dumps(describe(settings), indent=2, default=str))
        return 0
    logs.setup(settings.log_level, settings.log_format)
    try:
        if args.command == "replay":
            return _replay(settings, args)
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

    summary = replay(settings, args.inputs)
    print(summary.text(), file=sys.stderr)
    return 0

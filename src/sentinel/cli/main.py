"""The `sentinel` command (SPEC §1).

sentinel [--config PATH]            run the proxy (also `sentinel run`)
sentinel test -c PATH   (or -t)     parse and validate the configuration only
sentinel validate -c PATH           as test, plus live checks (--skip-network to skip them)
sentinel traces [--ui HOST:PORT]    the built-in trace viewer: OTLP receivers, store, web UI, Jaeger API
sentinel --version
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sentinel import __version__
from sentinel.compiled import status as compiled_status
from sentinel.config import (
    DEFAULT_SOURCE,
    Config,
    ConfigError,
    default_config_text,
    load_config_file,
    load_config_text,
    load_default_config,
    read_config_file,
)

CONFIG_ENV = "SENTINEL_CONFIG"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"configuration file (KDL v2); default: ${CONFIG_ENV}, else the embedded default",
    )
    parser = argparse.ArgumentParser(
        prog="sentinel",
        description="Reverse proxy with distributed tracing done right.",
        parents=[common],
    )
    parser.add_argument(
        "--version", action="version", version=f"sentinel {__version__} (request path {compiled_status()})"
    )
    parser.add_argument(
        "-t", "--test", action="store_true", help="test the configuration and exit (same as `sentinel test`)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="run the proxy (the default)")
    commands.add_parser("test", parents=[common], help="parse and validate the configuration, then exit")
    validate = commands.add_parser(
        "validate",
        parents=[common],
        help="as test, plus live checks of upstreams, agents and the trace backend",
    )
    validate.add_argument("--skip-network", action="store_true", help="skip the live checks")
    validate.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECS",
        help="time allowed for each live check (default 2)",
    )
    traces = commands.add_parser(
        "traces", help="run the built-in trace viewer (OTLP receivers, web UI, Jaeger query API)"
    )
    from sentinel.cli.traces import add_arguments as traces_arguments

    traces_arguments(traces)
    return parser


def config_path(args: argparse.Namespace) -> str | None:
    path: str | None = getattr(args, "config", None) or os.environ.get(CONFIG_ENV) or None
    return path


def read_config_text(path: str | None) -> str:
    return default_config_text() if path is None else read_config_file(path)


def load(path: str | None) -> Config:
    return load_config_file(path) if path is not None else load_default_config()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = "test" if args.test and args.command in (None, "run", "test") else (args.command or "run")
    path = config_path(args)
    shown = path if path is not None else DEFAULT_SOURCE

    if command == "test":
        try:
            load(path)
        except ConfigError as exc:
            for issue in exc.issues:
                print(f"sentinel: {issue}", file=sys.stderr)
            print(f"sentinel: configuration file {shown} test failed", file=sys.stderr)
            return 1
        print(f"sentinel: configuration file {shown} test is successful")
        return 0

    if command == "traces":
        from sentinel.cli.traces import run_traces

        return run_traces(args)

    if command == "validate":
        from sentinel.cli.validate import run_validate

        return run_validate(path, skip_network=args.skip_network, timeout=args.timeout)

    try:
        text = read_config_text(path)
        config = load_config_text(text, shown)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"sentinel: {issue}", file=sys.stderr)
        return 1
    from sentinel.supervisor import run_supervisor

    return run_supervisor(config, text)


if __name__ == "__main__":
    sys.exit(main())

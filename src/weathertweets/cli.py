"""The `weathertweets` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from weathertweets import __version__
from weathertweets.config import SettingError, Settings, declared, help_lines, meaning

EPILOG = "environment (flags win):\n" + "\n".join(help_lines())


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    for item in declared():
        if item.metadata["flag"]:
            parser.add_argument(
                _flag_name(item.name), metavar=item.name.upper(), help=f"{meaning(item)}"
            )


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    for item in declared():
        value = getattr(args, item.name, None)
        if value is not None:
            settings.override(item.name, value, _flag_name(item.name))
    return settings.resolve()


def _run_services(args: argparse.Namespace, services: Sequence[str]) -> int:
    from weathertweets.logs import configure
    from weathertweets.ports import BackendUnavailable
    from weathertweets.runtime import ServiceFailed, run, serve_forever

    settings = _settings(args)
    configure(settings.log_level, settings.log_format)

    def announce(line: str) -> None:
        if settings.log_format == "json":  # every line JSON: announcements go through logging
            logging.getLogger("weathertweets").info("%s", line)
        else:
            print(line, flush=True)

    try:
        serve_forever(run(settings, services, announce=announce))
    except ServiceFailed as error:
        logging.getLogger("weathertweets").error("%s", error)
        return 1
    except (OSError, ValueError, BackendUnavailable) as error:  # one line, no traceback
        if settings.log_format == "json":
            logging.getLogger("weathertweets").error("error: %s", error)
        else:
            print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from weathertweets.runtime import SERVICES

    return _run_services(args, list(SERVICES))


def cmd_serve(args: argparse.Namespace) -> int:
    return _run_services(args, [args.service])


def cmd_stack(args: argparse.Namespace) -> int:
    from weathertweets.stack import parse_replicas, run_stack

    settings = _settings(args)
    replicas = parse_replicas(args.replicas)
    return run_stack(settings, args.log_dir or settings.data_dir / "logs", replicas)


def cmd_gen_data(args: argparse.Namespace) -> int:
    from weathertweets.gendata import generate, write

    records = generate(args.n, args.seed)
    write(records, args.output)
    countries = len({r["pais"] for r in records})
    print(f"wrote {len(records)} tweets over {countries} countries to {args.output}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console

    from weathertweets.loadgen import progress_bar, read_records, run_load, summary

    console = Console(stderr=True)
    try:
        records = read_records(args.file)
    except (OSError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        return 2
    total = args.n or len(records)
    with progress_bar(console) as progress:
        outcome = asyncio.run(
            run_load(
                args.url,
                records,
                total=total,
                concurrency=args.c,
                rate=args.rate,
                batch=args.batch,
                progress=progress,
                api_key=args.api_key or os.environ.get("WT_API_KEY") or None,
            )
        )
    Console().print(summary(outcome, args.batch))
    return 1 if outcome.errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weathertweets",
        description="Weather Tweets: a scalable pipeline for tweets about the weather.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    up = command("up", "run every service in one process (embedded backends by default)")
    _add_server_flags(up)
    up.set_defaults(func=cmd_up)

    serve = command("serve", "run one service")
    serve.add_argument("service", choices=["gateway", "ingest", "archiver", "counter"])
    _add_server_flags(serve)
    serve.set_defaults(func=cmd_serve)

    stack = command(
        "stack", "run the four services as separate processes; report, never restart, failures"
    )
    _add_server_flags(stack)
    stack.add_argument("--log-dir", type=Path, help="one log per service (default <data-dir>/logs)")
    stack.add_argument(
        "--replicas",
        default="",
        metavar="SERVICE=N,...",
        help="instances per service, e.g. gateway=2,ingest=2,archiver=2,counter=2 (each its own"
        " process; instance N on every port + 100 × (N − 1); several consumers need Kafka)",
    )
    stack.set_defaults(func=cmd_stack)

    gen = command("gen-data", "write realistic tweets (Spanish texts, 90 countries) to a file")
    gen.add_argument("-n", type=int, default=10_000, help="how many tweets (default 10000)")
    gen.add_argument("-o", "--output", type=Path, default=Path("data.json"), help="JSON file")
    gen.add_argument("--seed", type=int, default=None, help="random seed, for repeatable data")
    gen.set_defaults(func=cmd_gen_data)

    load = command("load", "post tweets from a file to the gateway; summary at the end")
    load.add_argument("--url", default="http://127.0.0.1:8080", help="gateway base URL")
    load.add_argument("-f", "--file", type=Path, default=Path("data.json"), help="data file")
    load.add_argument("-n", type=int, default=0, help="tweets to send (default: the whole file)")
    load.add_argument("-c", type=int, default=32, help="concurrent requests (default 32)")
    load.add_argument("--rate", type=float, default=0, help="requests per second (0: no limit)")
    load.add_argument("--batch", type=int, default=0, help="tweets per request to /api/v1/tweets")
    load.add_argument(
        "--api-key", default=None, help="bearer key of a keyed deployment (default: $WT_API_KEY)"
    )
    load.set_defaults(func=cmd_load)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except SettingError as error:
        print(f"weathertweets: error: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())

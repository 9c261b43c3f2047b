"""`cotune` command line. It only wires: each subcommand module registers a parser and calls library code."""

import argparse
import logging
import sys

from cotune.cli import config_cmd, deploy_cmd, edge_cmd, export_cmd, models_cmd, run_cmd
from cotune.config import ConfigError

SUBCOMMANDS = [run_cmd, export_cmd, edge_cmd, deploy_cmd, config_cmd, models_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cotune", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError) as err:
        print(f"cotune: error: {err}", file=sys.stderr)
        return 2



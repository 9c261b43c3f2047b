"""`cotune` command line. It only wires: each subcommand module registers a parser and calls library code.

Starting it imports no torch, Flower or vLLM: a subcommand's arguments are added when it is chosen
(`cotune.cli.lazy_subcommands`) and its command imports the library it runs, so `--help`, `cotune config` and a
mistyped argument answer at once.
"""

import argparse
import sys

from cotune.cli import config_cmd, deploy_cmd, edge_cmd, export_cmd, models_cmd, run_cmd
from cotune.cli.lazy_subcommands import add_subcommands
from cotune.cli.logs import configure_logging
from cotune.config import ConfigError

SUBCOMMANDS = [run_cmd, export_cmd, edge_cmd, deploy_cmd, config_cmd, models_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cotune", description=__doc__.split("\n", 1)[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, every library's too (default: cotune at INFO, libraries at WARNING)")
    sub = add_subcommands(parser, dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError) as err:
        print(f"cotune: error: {err}", file=sys.stderr)
        return 2

"""`cotune config`: print the resolved config as TOML, or every key with its default and help."""

import argparse

from cotune.cli.common import add_config_args, config_from_args
from cotune.cli.lazy_subcommands import add_command
from cotune.config import dump_toml, explain


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "config", _arguments, run, help="show the resolved config (or --explain every key)")


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--explain", action="store_true", help="list every key with its default and meaning")


def run(args: argparse.Namespace) -> int:
    if args.explain:
        for key, default, help_text in explain():
            print(f"{key} = {default!r}\n    {help_text}")
        return 0
    print(dump_toml(config_from_args(args)), end="")
    return 0

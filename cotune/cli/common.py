"""Arguments shared by subcommands that take a cotune config."""

import argparse

from cotune.config import CotuneConfig, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="TOML config file (see configs/); defaults are built in")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config key, e.g. --set lora.r=16 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> CotuneConfig:
    return load_config(args.config, args.overrides)

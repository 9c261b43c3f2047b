"""`cotune models`: list registry models, or build one into the cache and print its folder."""

import argparse

from cotune.cli.defaults import field_default, field_help
from cotune.cli.lazy_subcommands import add_command
from cotune.config.schema import ModelsConfig


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "models", _arguments, run, help="list registry models or resolve one to its HF folder")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", help="registry name, local folder or hub id to resolve")
    parser.add_argument("--cache-dir", default=field_default(ModelsConfig, "cache_dir"),
                        help=field_help(ModelsConfig, "cache_dir"))


def run(args: argparse.Namespace) -> int:
    from cotune.models import REGISTRY, resolve_model  # torch: imported only when this command runs

    if args.spec:
        print(resolve_model(args.spec, args.cache_dir))
        return 0
    for name, entry in REGISTRY.items():
        print(f"{name:24s} {entry.description}")
    return 0

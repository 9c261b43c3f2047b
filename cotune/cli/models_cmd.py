"""`cotune models`: list registry models, or build one into the cache and print its folder."""

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="list registry models or resolve one to its HF folder")
    parser.add_argument("spec", nargs="?", help="registry name, local folder or hub id to resolve")
    parser.add_argument("--cache-dir", default="", help="model cache (default: $COTUNE_CACHE or ~/.cache/cotune)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cotune.models import REGISTRY, resolve_model  # torch: imported only when this command runs

    if args.spec:
        print(resolve_model(args.spec, args.cache_dir))
        return 0
    for name, entry in REGISTRY.items():
        print(f"{name:24s} {entry.description}")
    return 0

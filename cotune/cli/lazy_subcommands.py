"""Subcommand parsers whose arguments are added only when that subcommand is chosen.

An option's default is read from the library that owns it (`cotune.cli.defaults`): `edge` reads onnxruntime-side
dataclasses, the deployment commands read Flower's command builders. Filling every parser up front would make
`cotune --help`, `cotune config` and a mistyped command import all of them; filled on choice, only the chosen
command's libraries load.
"""

import argparse
from collections.abc import Callable

Fill = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]
_FILL = "_cotune_fill"


def add_command(sub: argparse._SubParsersAction, name: str, fill: Fill, run: Run | None, help: str) -> None:
    """A subcommand `name` that runs `run` (None: its own subcommands set theirs); `fill(parser)` adds its
    arguments once it is chosen."""
    parser = sub.add_parser(name, help=help, description=help)
    if run is not None:
        parser.set_defaults(func=run)
    setattr(parser, _FILL, fill)


class FillOnChoice(argparse._SubParsersAction):
    """argparse's subcommand action, filling the chosen subcommand's parser before it parses the rest."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: list[str],
        option_string: str | None = None,
    ) -> None:
        chosen = self._name_parser_map.get(values[0])
        fill = getattr(chosen, _FILL, None)
        if fill is not None:
            setattr(chosen, _FILL, None)
            fill(chosen)
        super().__call__(parser, namespace, values, option_string)


def add_subcommands(parser: argparse.ArgumentParser, **kwargs: object) -> argparse._SubParsersAction:
    """`parser.add_subparsers(**kwargs)` whose subcommands are filled on choice."""
    parser.register("action", "parsers", FillOnChoice)
    return parser.add_subparsers(**kwargs)

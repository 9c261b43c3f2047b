"""`option()`: a dataclass field whose help text travels with it (shown by `cotune config --explain`)."""

from dataclasses import MISSING, field
from typing import Any


def option(default: Any = MISSING, *, help: str, default_factory: Any = MISSING) -> Any:  # noqa: A002
    """A documented dataclass field; mutable defaults go through `default_factory`."""
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})

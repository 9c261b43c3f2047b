"""Option defaults and choices read from the dataclass or function that owns them (as vLLM's argparse reads
`EngineArgs`), so a default lives in one place and the CLI cannot drift from the library."""

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, get_args, get_type_hints


def _field(cls: type, name: str) -> dataclasses.Field:
    field = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if field is None:
        raise ValueError(f"{cls.__name__} has no field {name!r}")
    return field


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass `cls`'s field `name`."""
    field = _field(cls, name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise ValueError(f"{cls.__name__}.{name} has no default")


def field_help(cls: type, name: str) -> str:
    """The help text a config field carries (`cotune.config.fields.option`)."""
    return _field(cls, name).metadata["help"]


def parameter_default(func: Callable, name: str) -> Any:
    """The default of `func`'s parameter `name`."""
    default = inspect.signature(func).parameters[name].default
    if default is inspect.Parameter.empty:
        raise ValueError(f"{func.__qualname__}({name}) has no default")
    return default


def literal_choices(annotation_owner: type | Callable, name: str) -> tuple[str, ...]:
    """The values of the `Literal[...]` annotation of `annotation_owner`'s field or parameter `name`."""
    choices = get_args(get_type_hints(annotation_owner)[name])
    if not choices:
        raise ValueError(f"{annotation_owner.__qualname__}.{name} is not annotated with a Literal")
    return choices

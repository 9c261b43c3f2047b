"""Build a CotuneConfig from defaults, a TOML file and `--set` overrides; fail early with the key at fault."""

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import tomli_w

from cotune.config.errors import ConfigError
from cotune.config.schema import CotuneConfig

T = TypeVar("T")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> CotuneConfig:
    """Defaults <- TOML file <- `a.b=c` overrides, type-checked and validated before any work starts."""
    data: dict[str, Any] = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("--config", "an existing TOML file", str(path))
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError("--config", f"valid TOML ({err})", str(path)) from err
    apply_overrides(data, overrides or [])
    return from_dict(CotuneConfig, data)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> None:
    """Apply `a.b=c` strings in place; values parse as TOML (so `[1, 2]`, `true`, `3e-4`), else as plain strings."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", "KEY=VALUE", item)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(key, "a section path", item)
        node[leaf] = value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Instantiate dataclass `cls` from nested dicts, rejecting unknown keys and wrong types, then validate."""
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "<root>", "a table", data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(prefix + unknown[0], f"one of {sorted(fields)}", data[unknown[0]])
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    obj = cls(**kwargs)
    _validate(obj, prefix)
    return obj


def _validate(obj: Any, prefix: str) -> None:
    validate = getattr(obj, "validate", None)
    if validate is None:
        return
    try:
        validate()
    except ConfigError as err:
        raise ConfigError(prefix + err.key, err.expected, err.got) from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a field's type; ints are accepted where floats are expected."""
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(key, f"one of {list(choices)}", value)
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in get_args(hint):
            try:
                return _coerce(value, arm, key)
            except ConfigError:
                continue
        raise ConfigError(key, _describe(hint), value)
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(key, _describe(hint), value)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is type(None):
        if value is not None:
            raise ConfigError(key, "nothing", value)
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(key, _describe(hint), value)
    return value


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if get_origin(hint) is list:
        return f"a list of {_describe(get_args(hint)[0]).split(' ', 1)[-1]}s"
    return names.get(hint, str(hint))


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_toml(config: Any) -> str:
    return tomli_w.dumps(to_dict(config))


def explain(cls: type = CotuneConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, help) for every leaf option: the source of `cotune config --explain`."""
    rows: list[tuple[str, Any, str]] = []
    defaults = cls()
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += explain(hints[f.name], f"{prefix}{f.name}.")
        else:
            rows.append((prefix + f.name, getattr(defaults, f.name), f.metadata.get("help", "")))
    return rows

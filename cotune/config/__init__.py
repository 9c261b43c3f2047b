"""Typed configuration: one dataclass tree with defaults in code, TOML files, and `--set a.b=c` overrides.

Exports resolve lazily so that section modules elsewhere (e.g. `cotune.algorithms.fedcollm.config`) can import
`cotune.config.errors` / `cotune.config.fields` without importing the schema that imports them back.
"""

from importlib import import_module

from cotune.config.errors import ConfigError

_EXPORTS = {
    "CotuneConfig": "cotune.config.schema",
    "apply_overrides": "cotune.config.loader",
    "dump_toml": "cotune.config.loader",
    "explain": "cotune.config.loader",
    "from_dict": "cotune.config.loader",
    "load_config": "cotune.config.loader",
    "to_dict": "cotune.config.loader",
}
__all__ = ["ConfigError", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cotune.config' has no attribute {name!r}")

"""Typed configuration: one dataclass tree with defaults in code, TOML files, and `--set a.b=c` overrides.

A leaf: every section (`schema.py` for the job's own, one module per subsystem beside it) and the loader import
nothing of cotune but this package, so any layer can read the configuration without importing torch or Flower.
"""

from cotune.config.errors import ConfigError
from cotune.config.loader import apply_overrides, dump_toml, explain, from_dict, load_config, to_dict
from cotune.config.schema import CotuneConfig

__all__ = ["ConfigError", "CotuneConfig", "apply_overrides", "dump_toml", "explain", "from_dict", "load_config", "to_dict"]

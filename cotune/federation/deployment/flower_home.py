"""The `flwr` CLI's SuperLink connection, which `flwr run` and `flwr supernode register` need.

Flower 1.41 keeps connections in `$FLWR_HOME/config.toml` (default `~/.flwr/config.toml`) as
`[superlink.<name>]` tables with `address`, `root-certificates` and `insecure`; pyproject federations are gone.
Writing one named connection, and leaving the file's other entries alone, lets tests use a temporary FLWR_HOME
and operators keep their own file.
"""

import os
import tomllib
from pathlib import Path

import tomli_w

CONFIG_FILE = "config.toml"


def flower_home(explicit: str | Path | None = None) -> Path:
    """`explicit`, else $FLWR_HOME, else ~/.flwr (the lookup the `flwr` CLI does)."""
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")


def write_connection(home: Path, name: str, address: str, root_certificates: Path | None) -> Path:
    """Add or replace connection `name` to `address` (host:port); `root_certificates=None` means plain HTTP."""
    path = home / CONFIG_FILE
    data = tomllib.loads(path.read_text()) if path.is_file() else {}
    connection: dict[str, str | bool] = {"address": address}
    if root_certificates is None:
        connection["insecure"] = True
    else:
        connection["root-certificates"] = str(Path(root_certificates).resolve())
    data.setdefault("superlink", {})[name] = connection
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(data))
    return path

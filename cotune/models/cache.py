"""Where cotune keeps converted and derived model folders, and how a folder is marked complete."""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

COMPLETE_MARKER = "cotune_model.json"


def cache_root(override: str = "") -> Path:
    root = override or os.environ.get("COTUNE_CACHE") or Path.home() / ".cache" / "cotune"
    return Path(root).expanduser() / "models"


def cached_folder(name: str, build: Callable[[Path], dict], cache_dir: str = "") -> Path:
    """Return the cached folder `name`, building it once into a temp folder that is moved into place when complete.

    `build(tmp)` writes the folder and returns facts to record; a crash mid-build leaves no half folder behind.
    """
    target = cache_root(cache_dir) / name
    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        facts = build(tmp)
        (tmp / COMPLETE_MARKER).write_text(json.dumps({"name": name, **facts}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target

"""Work a job would otherwise do twice, done once: results filed under a hash of everything they depend on.

A job that compares algorithms repeats computations that are identical by construction — every algorithm's
round-1 silo updates start from the same adapter with the same seeds, every run evaluates the same zero-shot
models on the same test split. Entries are written atomically, so an interrupted job never reads half an entry.
"""

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
from safetensors.numpy import load_file, save_file

T = TypeVar("T")


def fingerprint(*parts: object) -> str:
    """A stable hex digest of JSON-able parts and numpy arrays (keyed dicts of arrays hash by key, then bytes)."""
    digest = hashlib.sha256()

    def feed(part: object) -> None:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, Mapping) and any(isinstance(v, np.ndarray) for v in part.values()):
            for key in sorted(part):
                digest.update(str(key).encode())
                feed(part[key])
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())

    for part in parts:
        feed(part)
    return digest.hexdigest()[:32]


class Memo:
    """A folder of reusable results: JSON values, and arrays with JSON facts (adapter updates)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str, suffix: str) -> Path:
        return self.folder / f"{key}{suffix}"

    def _write(self, path: Path, write: Callable[[Path], None]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write(tmp)
        os.replace(tmp, path)

    def value(self, key: str, compute: Callable[[], T]) -> tuple[T, bool]:
        """(the JSON value filed under `key`, computing and filing it if absent; whether it was reused)."""
        path = self._path(key, ".json")
        if path.is_file():
            return json.loads(path.read_text()), True
        value = compute()
        self._write(path, lambda tmp: tmp.write_text(json.dumps(value)))
        return value, False

    def arrays(self, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, facts) filed under `key`, or None."""
        path = self._path(key, ".safetensors")
        if not path.is_file():
            return None
        return load_file(path), json.loads(self._path(key, ".json").read_text())

    def put_arrays(self, key: str, arrays: dict[str, np.ndarray], facts: dict) -> None:
        # facts first: an entry counts as present only once its arrays exist
        self._write(self._path(key, ".json"), lambda tmp: tmp.write_text(json.dumps(facts)))
        self._write(self._path(key, ".safetensors"), lambda tmp: save_file(dict(arrays), str(tmp)))

"""The output folder: built in a staging folder beside the target and moved into place only when complete."""

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ONNX_PREFIX = "model.onnx"  # model.onnx and its weights, model.onnx.data


def copy_runtime_files(src: Path, dst: Path) -> None:
    """Everything but the ONNX graph and its weights: runtime config, tokenizer, chat template."""
    for path in src.iterdir():
        if path.is_file() and not path.name.startswith(ONNX_PREFIX):
            shutil.copy2(path, dst / path.name)


def file_sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def model_bytes(folder: Path) -> int:
    """Bytes of the ONNX graph and its weights: what the device loads, tokenizer and configs aside."""
    return sum(size for name, size in file_sizes(folder).items() if name.startswith(ONNX_PREFIX))


@contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """A scratch folder next to `target` (same filesystem, so the final move is a rename); always removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}-staging-", dir=target.parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def move_into_place(built: Path, target: Path, stage: Path) -> None:
    """Replace `target` (absent, empty, or a previous export) by `built`; the old one goes into `stage`."""
    if target.exists():
        target.rename(stage / "previous")
    built.rename(target)

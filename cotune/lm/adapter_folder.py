"""A PEFT adapter folder as peft saves it, read without loading a tensor: its config and its tensors' shapes.

Engines and exporters fail late and vaguely on a wrong folder (vLLM with an HTTP 500, peft deep in
load_state_dict, an exporter after minutes of merging), so every reader of adapter folders checks it here first
and then compares `AdapterInfo.shapes` with the base model it means to use. File names are peft's own constants.
"""

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors import safe_open
from safetensors.numpy import load_file

PEFT_PREFIX = "base_model.model."  # peft's prefix of every tensor name in a saved adapter
# tensor-name suffix -> LoRA part; the A parts hold the rank in their first axis, the B parts in their last
LORA_PARTS = {
    ".lora_A.weight": "lora_A",
    ".lora_B.weight": "lora_B",
    ".lora_embedding_A": "lora_embedding_A",
    ".lora_embedding_B": "lora_embedding_B",
}


class AdapterFolderError(ValueError):
    """A folder that is not a readable PEFT adapter folder."""


def lora_part(key: str) -> tuple[str, str] | None:
    """(module, part) of a LoRA tensor name as peft saves it, e.g. ('model.layers.0.mlp.up_proj', 'lora_A');
    None for any other tensor."""
    suffix = next((s for s in LORA_PARTS if key.endswith(s)), None)
    if suffix is None or not key.startswith(PEFT_PREFIX):
        return None
    return key[len(PEFT_PREFIX) : -len(suffix)], LORA_PARTS[suffix]


def tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in these safetensors files (headers only)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as handle:
                for key in handle.keys():
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        except Exception as err:  # safetensors raises its own error types for truncated or foreign files
            raise AdapterFolderError(f"{file} is not a readable safetensors file: {err}") from err
    return shapes


def adapter_config(folder: Path) -> dict:
    """The folder's adapter_config.json (its peft_type says what the folder holds)."""
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise AdapterFolderError(f"{folder} is not a PEFT adapter folder: it has no {CONFIG_NAME}")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise AdapterFolderError(f"{file} is not valid JSON: {err}") from err


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    config: dict  # adapter_config.json
    shapes: dict[str, tuple[int, ...]]  # every tensor of adapter_model.safetensors, from its header

    @property
    def peft_type(self) -> str:
        return str(self.config.get("peft_type", ""))

    @property
    def base_model(self) -> str:
        """As recorded by peft; informative only, the shapes decide."""
        return str(self.config.get("base_model_name_or_path") or "unknown")

    @property
    def weights(self) -> Path:
        return self.path / SAFETENSORS_WEIGHTS_NAME

    @cached_property
    def sha256(self) -> str:
        """Of the weights file: what a manifest records to name the adapter it was built from."""
        digest = hashlib.sha256()
        with self.weights.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    @property
    def lora(self) -> dict[str, tuple[str, str]]:
        """Tensor name -> (module, part) of the LoRA tensors; other tensors are left out."""
        return {key: found for key in self.shapes if (found := lora_part(key)) is not None}

    @property
    def rank(self) -> int:
        """Largest LoRA rank in the tensors; 0 when there is no LoRA tensor (prompt tuning)."""
        return max((self.shapes[k][0 if part.endswith("A") else -1] for k, (_, part) in self.lora.items()), default=0)

    @property
    def lora_modules(self) -> int:
        """How many modules carry LoRA tensors."""
        return len({module for module, _ in self.lora.values()})

    @property
    def num_virtual_tokens(self) -> int:
        """Rows of the soft prompt (prompt tuning); 0 without one."""
        shape = self.shapes.get("prompt_embeddings")
        return shape[0] if shape else 0

    @property
    def target_modules(self) -> list[str]:
        targets = self.config.get("target_modules")
        return sorted(targets) if isinstance(targets, list) else [str(targets)]


def read_adapter(path: str | Path) -> AdapterInfo:
    """The PEFT folder at `path`: it must hold peft's config and safetensors weights with at least one tensor."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise AdapterFolderError(f"adapter folder {folder} does not exist")
    missing = [name for name in (CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise AdapterFolderError(f"{folder} is not a PEFT adapter folder: it has no {' and no '.join(missing)}")
    shapes = tensor_shapes([folder / SAFETENSORS_WEIGHTS_NAME])
    if not shapes:
        raise AdapterFolderError(f"adapter {folder}: {SAFETENSORS_WEIGHTS_NAME} holds no tensors")
    return AdapterInfo(folder, adapter_config(folder), shapes)


def load_adapter_tensors(folder: Path, subfolder: str = "") -> dict[str, np.ndarray]:
    """Adapter tensors of a PEFT folder, keyed as peft's adapter state dict."""
    return {k: v.astype(np.float32) for k, v in load_file(Path(folder) / subfolder / SAFETENSORS_WEIGHTS_NAME).items()}

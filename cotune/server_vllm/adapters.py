"""Checking a PEFT adapter folder against the served base model before an engine loads it.

Engines fail late and vaguely on a wrong adapter (vLLM with an HTTP 500 about tensor shapes, peft with a size
mismatch deep in load_state_dict), so each adapter tensor's shape is compared here with the base weight it
modifies, read from the safetensors headers of both folders without loading any tensor.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from cotune.server_vllm.errors import AdapterError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
# adapter tensor suffix -> (axis of the adapter tensor, axis of the base weight [out, in]) that must agree
_LORA_AXES = {
    ".lora_A.weight": (1, 1),
    ".lora_B.weight": (0, 0),
    ".lora_embedding_A": (1, 0),
    ".lora_embedding_B": (0, 1),
}


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    peft_type: str
    rank: int  # largest LoRA rank found in the tensors; 0 for prompt tuning
    base_model: str  # as recorded by peft; informative only, the shapes decide


def tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in these safetensors files (headers only)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as handle:
                for key in handle.keys():
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        except Exception as err:  # safetensors raises its own error types for truncated or foreign files
            raise AdapterError(f"{file} is not a readable safetensors file: {err}") from err
    return shapes


def check_adapter(
    path: str | Path, model_dir: Path, max_rank: int | None = None, lora_only: bool = False
) -> AdapterInfo:
    """Validate the PEFT folder `path` for the base model in `model_dir`; raise AdapterError naming the problem."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise AdapterError(f"adapter folder {folder} does not exist")
    config_file, weights_file = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not config_file.is_file() or not weights_file.is_file():
        raise AdapterError(f"{folder} is not a PEFT adapter folder: it needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    config = json.loads(config_file.read_text())
    peft_type = str(config.get("peft_type", ""))
    base = str(config.get("base_model_name_or_path") or "unknown")
    if lora_only and peft_type != "LORA":
        raise AdapterError(f"adapter {folder} is {peft_type or 'of unknown type'}: vLLM serves LoRA adapters only")
    model_config = json.loads((model_dir / "config.json").read_text())
    adapter = tensor_shapes([weights_file])
    if peft_type == "LORA":
        rank = _check_lora_shapes(folder, adapter, model_dir, model_config, base)
        if max_rank is not None and rank > max_rank:
            raise AdapterError(
                f"adapter {folder} has LoRA rank {rank}, above the engine's max_lora_rank {max_rank} "
                "(raise server.max_lora_rank)"
            )
        return AdapterInfo(folder, peft_type, rank, base)
    if peft_type == "PROMPT_TUNING":
        token_dim, hidden = config.get("token_dim"), model_config.get("hidden_size")
        if token_dim != hidden:
            raise AdapterError(
                f"adapter {folder} (base {base}) has prompt embeddings of width {token_dim}, "
                f"the served model {model_dir} has hidden size {hidden}: it was trained on another base model"
            )
        return AdapterInfo(folder, peft_type, 0, base)
    raise AdapterError(f"adapter {folder}: unsupported peft_type {peft_type!r} (expected LORA or PROMPT_TUNING)")


def _check_lora_shapes(
    folder: Path, adapter: dict[str, tuple[int, ...]], model_dir: Path, model_config: dict, base: str
) -> int:
    weights = tensor_shapes(sorted(model_dir.glob("*.safetensors")))
    if not weights:
        raise AdapterError(f"served model folder {model_dir} has no safetensors weights to check adapters against")
    rank = 0
    for key, shape in adapter.items():
        suffix = next((s for s in _LORA_AXES if key.endswith(s)), None)
        if suffix is None:
            continue
        module = key.removeprefix(_PEFT_PREFIX)[: -len(suffix)]
        base_shape = weights.get(f"{module}.weight")
        if base_shape is None and module == "lm_head" and model_config.get("tie_word_embeddings"):
            base_shape = weights.get("model.embed_tokens.weight")
        if base_shape is None:
            raise AdapterError(
                f"adapter {folder} (base {base}) modifies {module}, which the served model {model_dir} does not have"
            )
        adapter_axis, base_axis = _LORA_AXES[suffix]
        if len(shape) != 2 or shape[adapter_axis] != base_shape[base_axis]:
            raise AdapterError(
                f"adapter {folder} (base {base}) does not fit the served model {model_dir}: {key} has shape "
                f"{list(shape)}, but {module} is {list(base_shape)} (out, in): it was trained on another base model"
            )
        rank = max(rank, shape[1 - adapter_axis])
    if rank == 0:
        raise AdapterError(f"adapter {folder} has no LoRA tensors in {ADAPTER_WEIGHTS}")
    return rank

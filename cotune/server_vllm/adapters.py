"""Checking a PEFT adapter folder against the served base model before an engine loads it.

Engines fail late and vaguely on a wrong adapter (vLLM with an HTTP 500 about tensor shapes, peft with a size
mismatch deep in load_state_dict), so each adapter tensor's shape is compared here with the base weight it
modifies, read from the safetensors headers of both folders without loading any tensor.
"""

import json
from pathlib import Path

from cotune.lm.adapter_folder import AdapterFolderError, AdapterInfo, read_adapter, tensor_shapes
from cotune.server_vllm.errors import AdapterError

# LoRA part -> (axis of the adapter tensor, axis of the base weight [out, in]) that must agree
_LORA_AXES = {"lora_A": (1, 1), "lora_B": (0, 0), "lora_embedding_A": (1, 0), "lora_embedding_B": (0, 1)}


def check_adapter(
    path: str | Path, model_dir: Path, max_rank: int | None = None, lora_only: bool = False
) -> AdapterInfo:
    """Validate the PEFT folder `path` for the base model in `model_dir`; raise AdapterError naming the problem."""
    try:
        return _check(read_adapter(path), model_dir, max_rank, lora_only)
    except AdapterFolderError as err:
        raise AdapterError(str(err)) from err


def _check(info: AdapterInfo, model_dir: Path, max_rank: int | None, lora_only: bool) -> AdapterInfo:
    if lora_only and info.peft_type != "LORA":
        kind = info.peft_type or "of unknown type"
        raise AdapterError(f"adapter {info.path} is {kind}: vLLM serves LoRA adapters only")
    model_config = json.loads((model_dir / "config.json").read_text())
    if info.peft_type == "LORA":
        _check_lora_shapes(info, model_dir, model_config)
        if max_rank is not None and info.rank > max_rank:
            raise AdapterError(
                f"adapter {info.path} has LoRA rank {info.rank}, above the engine's max_lora_rank {max_rank} "
                "(raise server.max_lora_rank)"
            )
        return info
    if info.peft_type == "PROMPT_TUNING":
        token_dim, hidden = info.config.get("token_dim"), model_config.get("hidden_size")
        if token_dim != hidden:
            raise AdapterError(
                f"adapter {info.path} (base {info.base_model}) has prompt embeddings of width {token_dim}, "
                f"the served model {model_dir} has hidden size {hidden}: it was trained on another base model"
            )
        return info
    raise AdapterError(
        f"adapter {info.path}: unsupported peft_type {info.peft_type!r} (expected LORA or PROMPT_TUNING)"
    )


def _check_lora_shapes(info: AdapterInfo, model_dir: Path, model_config: dict) -> None:
    weights = tensor_shapes(sorted(model_dir.glob("*.safetensors")))
    if not weights:
        raise AdapterError(f"served model folder {model_dir} has no safetensors weights to check adapters against")
    for key, (module, part) in info.lora.items():
        base_shape = weights.get(f"{module}.weight")
        if base_shape is None and module == "lm_head" and model_config.get("tie_word_embeddings"):
            base_shape = weights.get("model.embed_tokens.weight")
        if base_shape is None:
            raise AdapterError(
                f"adapter {info.path} (base {info.base_model}) modifies {module}, which the served model {model_dir} "
                "does not have"
            )
        adapter_axis, base_axis = _LORA_AXES[part]
        shape = info.shapes[key]
        if len(shape) != 2 or shape[adapter_axis] != base_shape[base_axis]:
            raise AdapterError(
                f"adapter {info.path} (base {info.base_model}) does not fit the served model {model_dir}: {key} has "
                f"shape {list(shape)}, but {module} is {list(base_shape)} (out, in): it was trained on another base "
                "model"
            )
    if not info.lora:
        raise AdapterError(f"adapter {info.path} has no LoRA tensors in {info.weights.name}")

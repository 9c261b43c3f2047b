"""Depth pruning that keeps a model trainable: drop one contiguous block of middle layers.

Measured on SmolLM2 (see README): dropping layers spread through the stack breaks the model beyond what LoRA
repairs, while keeping the first layers and the last two keeps it learnable.
"""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def keep_layers(num_layers: int, keep_first: int, keep_last: int) -> list[int]:
    if keep_first < 1 or keep_last < 0 or keep_first + keep_last > num_layers:
        raise ValueError(f"cannot keep first {keep_first} + last {keep_last} of {num_layers} layers")
    return list(range(keep_first)) + list(range(num_layers - keep_last, num_layers))


def prune_depth(source: Path, out: Path, keep_first: int, keep_last: int) -> dict:
    """Write `source` with only the kept decoder layers to `out` (HF folder) and return facts about it."""
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    kept = keep_layers(model.config.num_hidden_layers, keep_first, keep_last)
    model.model.layers = torch.nn.ModuleList(model.model.layers[i] for i in kept)
    for new_idx, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_idx  # KV-cache slots follow the new numbering
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in kept]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return {"source": str(source), "kept_layers": kept, "params": sum(p.numel() for p in model.parameters())}

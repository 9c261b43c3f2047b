"""A LoRA adapter merged into a copy of the base weights, as a folder vLLM can load its weights from.

Why: on CPU, vLLM turns torch.compile off whenever LoRA is enabled, so serving the round's adapter per request
costs every decode step; a server without LoRA that reloads merged weights runs at base-model speed
(server.adapter_serving = merged). The merge is peft's own (merge_and_unload: W + scaling * B @ A per targeted
layer, honouring rank/alpha patterns and rsLoRA), done in fp32 and cast once to the served dtype, which is the
cast vLLM would apply to fp32 weights itself.
"""

from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from cotune.quantization.loading import DTYPES


def save_merged_weights(model_dir: Path, adapter_dir: Path, out: Path, dtype: str) -> Path:
    """Write base `model_dir` + LoRA `adapter_dir`, merged in fp32, as `dtype` safetensors (and config) to `out`."""
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.to(DTYPES[dtype]).save_pretrained(out)
    return out

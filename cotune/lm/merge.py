"""Base + LoRA -> one fp32 model. The merge always lands in full-precision weights, never in 4-bit ones.

Both the ONNX export (`save_merged`) and vLLM's merged adapter serving (`save_merged_weights`) merge with it.

Silos train on a 4-bit view of the base, but the folder on disk is fp32 and the merge reads that. A base stored
as a bitsandbytes 4/8-bit checkpoint is dequantized to fp32 first: merging into quantized weights would round
the LoRA update away.
"""

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from cotune.quantization.loading import DTYPES


def load_fp32_base(path: Path) -> PreTrainedModel:
    """The base in fp32. A bitsandbytes checkpoint is dequantized, then moved into a plain model built from its
    config: the dequantized model itself keeps transformers' record of the 4-bit loading, and its save_pretrained
    fails trying to reverse it (NotImplementedError in transformers 5.19)."""
    config = AutoConfig.from_pretrained(path)
    if getattr(config, "quantization_config", None) is None:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    quantized = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", dtype=torch.float32)
    state = {name: tensor.float() for name, tensor in quantized.dequantize().state_dict().items()}
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state)
    return model.eval()


def merged_model(base: Path, adapter: Path | None) -> PreTrainedModel:
    """fp32 base with the LoRA folded in (peft merge_and_unload); the base alone when `adapter` is None."""
    model = load_fp32_base(base)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model.eval()


def save_merged(model: PreTrainedModel, base: Path, out: Path) -> Path:
    """An HF folder (config, safetensors, tokenizer) the ONNX exporters read."""
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def save_merged_weights(model_dir: Path, adapter_dir: Path, out: Path, dtype: str) -> Path:
    """Base + LoRA merged in fp32 and cast once to `dtype` (the cast vLLM would apply to fp32 weights itself), as
    the config and safetensors a running vLLM server reloads its weights from."""
    merged_model(model_dir, adapter_dir).to(DTYPES[dtype]).save_pretrained(out)
    return out

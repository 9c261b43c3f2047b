"""Loading a causal LM at a chosen precision (NF4 / int8 via bitsandbytes, or full), on CPU or CUDA.

Every quantized model cotune trains comes through `load_causal_lm`, which is why the bitsandbytes CPU trap is
fixed here and nowhere else: on CPUs with AVX512-BF16, the first no_grad forward in eval mode repacks each
Linear4bit weight into an inference-only layout, after which backward runs through a kernel without autograd
support and LoRA gradients come out silently wrong (the loss still falls). Turning that fast path off before
any forward keeps gradients exact, at some cost to CPU inference speed of 4-bit layers.
"""

from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

LoadPrecision = Literal["nf4", "int8", "none"]
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def default_device() -> str:
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def bnb_config(precision: LoadPrecision, compute_dtype: str = "bfloat16", double_quant: bool = True):
    """The BitsAndBytesConfig for a load precision, or None for an unquantized load."""
    if precision == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=DTYPES[compute_dtype],
        )
    if precision == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if precision == "none":
        return None
    raise ValueError(f"unknown load precision {precision!r}: expected nf4, int8 or none")


def load_causal_lm(
    path: str | Path,
    precision: LoadPrecision = "none",
    compute_dtype: str = "bfloat16",
    double_quant: bool = True,
    device: str | None = None,
) -> PreTrainedModel:
    """Load an HF causal LM folder at `precision`; non-quantized weights stay fp32 (LoRA needs fp32 masters)."""
    quant = bnb_config(precision, compute_dtype, double_quant)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        quantization_config=quant,
        dtype=torch.float32,
        device_map=device or default_device(),
    )
    if precision == "nf4":
        keep_4bit_backward_exact(model)
    return model


def keep_4bit_backward_exact(model: torch.nn.Module) -> int:
    """Disable bitsandbytes' CPU inference repack on every Linear4bit; returns how many layers were touched."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)

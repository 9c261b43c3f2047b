"""Loading a causal LM at a chosen precision (NF4 / int8 via bitsandbytes, or full), on CPU or CUDA.

Every quantized model cotune trains comes through `load_causal_lm`, which is why the bitsandbytes CPU trap is
fixed here and nowhere else: on CPUs with AVX512-BF16, the first no_grad forward in eval mode repacks each
Linear4bit weight into an inference-only layout, after which backward runs through a kernel without autograd
support and LoRA gradients come out silently wrong (the loss still falls). Turning that fast path off before
any forward keeps gradients exact, at some cost to CPU inference speed of 4-bit layers.

A quantized load also takes its unquantized tensors out of the checkpoint's memory map (see `own_unquantized_weights`):
otherwise the 4-bit model keeps every fp32 page the quantizer read resident, and saves no memory at all.
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
    """Load an HF causal LM folder at `precision`; unquantized weights stay fp32 (LoRA needs fp32 masters), except
    a quantized model's frozen embeddings, which are kept at `compute_dtype`."""
    quant = bnb_config(precision, compute_dtype, double_quant)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        quantization_config=quant,
        dtype=torch.float32,
        device_map=device or default_device(),
    )
    if quant is not None:
        own_unquantized_weights(model, DTYPES[compute_dtype])
    if precision == "nf4":
        keep_4bit_backward_exact(model)
    return model


def own_unquantized_weights(model: PreTrainedModel, embedding_dtype: torch.dtype) -> None:
    """Copy a quantized model's float tensors out of the safetensors memory map; embeddings in `embedding_dtype`.

    Those tensors are views of the checkpoint's private mapping: while one lives, the whole file stays mapped and
    every page the quantizer read counts in RSS (370 MB for the 90M SLM, more than the whole 4-bit model). The
    embeddings are frozen and the largest unquantized tensor (tied, 49,152 x 576 here), so they are stored at the
    compute dtype, half of fp32 for bf16; hooks keep the residual stream and the logits fp32, as with fp32 storage.
    """
    embeddings = [m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None]
    stored = {}  # id -> weight already copied at embedding_dtype (tied embeddings share one)
    for module in embeddings:
        if module.weight.dtype == torch.float32 and id(module.weight) not in stored:
            module.weight.data = module.weight.data.to(embedding_dtype, copy=True)
            stored[id(module.weight)] = module.weight
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.dtype.is_floating_point and id(tensor) not in stored:
            tensor.data = tensor.data.clone()
    if embedding_dtype == torch.float32:
        return
    input_embedding, *head = embeddings
    input_embedding.register_forward_hook(_output_to_fp32)
    for module in head:
        if id(module.weight) in stored:
            module.register_forward_pre_hook(_input_to_weight_dtype)
            module.register_forward_hook(_output_to_fp32)


def _output_to_fp32(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def _input_to_weight_dtype(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].to(module.weight.dtype), *args[1:])


def keep_4bit_backward_exact(model: torch.nn.Module) -> int:
    """Disable bitsandbytes' CPU inference repack on every Linear4bit; returns how many layers were touched."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)

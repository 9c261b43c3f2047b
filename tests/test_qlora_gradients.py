"""The bitsandbytes CPU trap: an eval forward must not corrupt later LoRA gradients of a 4-bit model.

On CPUs with AVX512-BF16, a no_grad eval forward repacks Linear4bit weights for an inference kernel without
autograd support; without cotune's fix in `load_causal_lm`, LoRA gradients after that are silently wrong.
"""

import bitsandbytes as bnb
import pytest
import torch
from bitsandbytes.functional import dequantize_4bit

from cotune.config import load_config
from cotune.data.encoding import task_batch
from cotune.lm.adapters import attach_adapter
from cotune.lm.trainer import answer_loss
from cotune.quantization.loading import load_causal_lm


def _has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in open("/proc/cpuinfo").read()
    except OSError:
        return False


def _lora_grads_after_eval_pass(tiny_path, tokenizer, task, texts, fix: bool):
    """(grads of the 4-bit model, grads of an fp32 model holding the dequantized weights), same LoRA."""
    lora = load_config(None, ["lora.dropout=0.0"]).lora
    quantized = load_causal_lm(tiny_path, "nf4", compute_dtype="float32")
    if not fix:
        for module in quantized.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = True  # undo cotune's fix: bitsandbytes' default here
    reference = load_causal_lm(tiny_path, "none")
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if isinstance(module, bnb.nn.Linear4bit):
                weight = dequantize_4bit(module.weight.data, module.weight.quant_state).float()
                reference.get_submodule(name).weight.copy_(weight)
    torch.manual_seed(0)
    quantized = attach_adapter(quantized, lora)
    torch.manual_seed(0)
    reference = attach_adapter(reference, lora)
    with torch.no_grad():
        for (_, q), (_, r) in zip(
            ((n, p) for n, p in quantized.named_parameters() if "lora_" in n),
            ((n, p) for n, p in reference.named_parameters() if "lora_" in n),
        ):
            q.normal_(0, 0.05)
            r.copy_(q)
    batch = task_batch(tokenizer, task, texts, [0, 1, 1, 0], max_length=48)
    quantized.eval()
    with torch.no_grad():  # the evaluation pass that triggers the repack
        quantized(**{k: v for k, v in batch.items() if k != "labels"})
    grads = []
    for model in (quantized, reference):
        model.train()
        answer_loss(model, batch).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n})
    return grads


def _max_relative_error(got: dict, want: dict) -> float:
    assert len(got) == len(want) > 0
    return max(float((g - w).abs().max() / w.abs().max().clamp(min=1e-12)) for g, w in zip(got.values(), want.values()))


def test_lora_gradients_after_eval_match_dequantized_reference(tiny_path, tokenizer, smoke_splits):
    got, want = _lora_grads_after_eval_pass(
        tiny_path, tokenizer, smoke_splits.task, smoke_splits.test["text"][:4], fix=True
    )
    assert _max_relative_error(got, want) < 1e-3


@pytest.mark.skipif(not _has_avx512_bf16(), reason="the repack trap exists only on CPUs with AVX512-BF16")
def test_without_the_fix_gradients_are_wrong(tiny_path, tokenizer, smoke_splits):
    """Shows the test above can fail: with bitsandbytes' default, the same comparison is far off."""
    got, want = _lora_grads_after_eval_pass(
        tiny_path, tokenizer, smoke_splits.task, smoke_splits.test["text"][:4], fix=False
    )
    assert _max_relative_error(got, want) > 0.05

"""FedCoLLM distillation on tiny models: gradients, padding, one direction, both directions, and a 4-bit student."""

import bitsandbytes as bnb
import numpy as np
import pytest
import torch
from bitsandbytes.functional import dequantize_4bit
from support.topk_loss import topk_distillation_loss
from transformers import LlamaConfig, LlamaForCausalLM

from cotune.config.fedcollm import FedCoLLMConfig
from cotune.algorithms.fedcollm.distill import batch_loss, distill, teacher_targets
from cotune.algorithms.fedcollm.mutual import encode_public_split, mutual_distillation
from cotune.config import load_config
from cotune.data.encoding import IGNORE, encode_batch
from cotune.lm.adapters import adapter_state, attach_adapter
from cotune.models import resolve_model
from cotune.quantization.loading import load_causal_lm

PROMPTS = ["Review: a warm, funny film.\nSentiment:", "Review: dull and far too long.\nSentiment:"]
ANSWERS = [" positive", " negative"]
INPUTS = ("input_ids", "attention_mask", "position_ids")


def _topk(**kwargs) -> FedCoLLMConfig:
    """The top-k KL over the vocabulary, ungated: the mode these tests pin down exactly."""
    return FedCoLLMConfig(targets="topk", gate="none", report_fit=True, **kwargs)


@pytest.fixture(scope="module")
def lora():
    return load_config(None, ["lora.dropout=0.0"]).lora


def _peft(spec: str, lora, precision: str = "none", compute_dtype: str = "bfloat16"):
    model = attach_adapter(load_causal_lm(resolve_model(spec), precision, compute_dtype), lora)
    with torch.no_grad():  # peft starts lora_B at zero: make the adapter do something, as after a round
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model


def _snapshot(model):
    """adapter_state's arrays share memory with the live parameters on CPU: copy them to compare later."""
    return {k: v.copy() for k, v in adapter_state(model).items()}


def _lora_grads(model):
    return {n: p.grad for n, p in model.named_parameters() if "lora_" in n}


def _loss_on_full_logits(student, teacher, batch, cfg):
    inputs = {k: batch[k] for k in INPUTS}
    with torch.no_grad():
        teacher_logits = teacher(**inputs).logits
    student_logits = student(**inputs).logits
    return topk_distillation_loss(
        student_logits, teacher_logits, batch["labels"], cfg.top_k, cfg.temperature, cfg.kd_weight
    )


def test_gradient_goes_into_the_student_lora_only(tokenizer, lora):
    student, teacher = _peft("tiny-llama", lora), _peft("tiny-llama-wide", lora)
    batch = encode_batch(tokenizer, PROMPTS, ANSWERS, max_length=32)
    loss, parts = _loss_on_full_logits(student, teacher, batch, _topk())
    loss.backward()
    grads = _lora_grads(student)
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for n, p in student.named_parameters() if "lora_" not in n)
    assert parts["tokens"] == 2 and parts["kl"] > 0


def test_extra_left_padding_does_not_change_the_loss(tokenizer, lora):
    student, teacher = _peft("tiny-llama", lora), _peft("tiny-llama-wide", lora)
    student.eval()
    cfg = _topk()
    batch = encode_batch(tokenizer, PROMPTS[:1], ANSWERS[:1], max_length=32)
    pad = 5
    padded = {
        "input_ids": torch.cat([torch.full((1, pad), tokenizer.pad_token_id), batch["input_ids"]], 1),
        "attention_mask": torch.cat([torch.zeros(1, pad, dtype=torch.long), batch["attention_mask"]], 1),
        "position_ids": torch.cat([torch.zeros(1, pad, dtype=torch.long), batch["position_ids"]], 1),
        "labels": torch.cat([torch.full((1, pad), IGNORE), batch["labels"]], 1),
    }
    with torch.no_grad():
        plain, padded_loss = (_loss_on_full_logits(student, teacher, b, cfg)[0].item() for b in (batch, padded))
        windowed = [
            batch_loss(student, b, teacher_targets(teacher, b, cfg, torch.device("cpu")), cfg)[0].item()
            for b in (batch, padded)
        ]
    assert padded_loss == pytest.approx(plain, rel=1e-4)
    assert windowed == pytest.approx([plain, plain], rel=1e-4)  # the logits_to_keep window gives the same loss


def test_distill_lowers_the_kl_it_optimizes_and_leaves_the_teacher_alone(tokenizer, lora):
    student, teacher = _peft("tiny-llama", lora), _peft("tiny-llama-wide", lora)
    teacher_before = _snapshot(teacher)
    batch = encode_batch(tokenizer, PROMPTS, ANSWERS, max_length=32)
    # kd_weight 10: the KL, not the CE, drives these few steps (a random-init tiny model can move its
    # near-uniform 49,152-token distribution only a little: about 8.65 -> 7.94 here)
    cfg = _topk(steps=4, lr=1e-2, top_k=8, temperature=1.0, kd_weight=10.0)
    metrics = distill(student, teacher, [batch], cfg)
    assert metrics["steps"] == 4
    assert metrics["kl_after"] < metrics["kl_before"] - 0.3, metrics
    after = adapter_state(teacher)
    assert all(np.array_equal(teacher_before[k], after[k]) for k in after)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in student.parameters())  # cleared: the student teaches next


def test_fewer_steps_than_batches_use_only_the_first_batches(tokenizer, lora):
    student, teacher = _peft("tiny-llama", lora), _peft("tiny-llama-wide", lora)
    batch = encode_batch(tokenizer, PROMPTS, ANSWERS, max_length=32)
    unanswered = encode_batch(tokenizer, PROMPTS, None, max_length=32)  # would raise if scored or trained on
    assert distill(student, teacher, [batch, unanswered], _topk(steps=1))["steps"] == 1
    with pytest.raises(ValueError, match="no (response|answer) tokens"):
        distill(student, teacher, [batch, unanswered], _topk(steps=2))


def rows(batches):
    """Each example's unpadded token ids, in batch order."""
    return [tuple(r[m.bool()].tolist()) for b in batches for r, m in zip(b["input_ids"], b["attention_mask"])]


def test_public_split_batches_cover_the_split_once_in_seeded_order(tokenizer, smoke_splits):
    public = smoke_splits.public.select(range(8))
    plain = rows(encode_public_split(tokenizer, smoke_splits.task, public, 3, 32))
    shuffled = rows(encode_public_split(tokenizer, smoke_splits.task, public, 3, 32, seed=1))
    assert len(plain) == 8 and sorted(plain) == sorted(shuffled) and plain != shuffled
    assert shuffled == rows(encode_public_split(tokenizer, smoke_splits.task, public, 3, 32, seed=1))


def test_mismatched_vocabularies_are_refused(tokenizer, lora):
    student = _peft("tiny-llama", lora)
    small = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=1000,
            hidden_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
        )
    )
    batch = encode_batch(tokenizer, PROMPTS, ANSWERS, max_length=32)
    with pytest.raises(ValueError, match="49152 tokens, teacher's has 1000"):
        distill(student, small, [batch], _topk(steps=1))


def test_mutual_distillation_runs_both_directions_in_order(tokenizer, lora, smoke_splits):
    slm, llm = _peft("tiny-llama", lora), _peft("tiny-llama-wide", lora)
    slm_before, llm_before = _snapshot(slm), _snapshot(llm)
    batches = encode_public_split(tokenizer, smoke_splits.task, smoke_splits.public.select(range(3)), 2, 32)
    assert [b["input_ids"].shape[0] for b in batches] == [2, 1]
    cfg = _topk(
        epochs=1.0, steps=0, llm_steps=0, lr=1e-2, top_k=8, temperature=1.0, kd_weight=10.0, order="slm_to_llm_first"
    )
    metrics = mutual_distillation(slm, llm, iter(batches), cfg)  # a one-shot iterator serves both directions
    assert list(metrics)[0].startswith("slm_to_llm_")
    for direction in ("llm_to_slm", "slm_to_llm"):
        assert metrics[f"{direction}_steps"] == 2
        assert metrics[f"{direction}_kl_after"] < metrics[f"{direction}_kl_before"]
    for model, before in ((slm, slm_before), (llm, llm_before)):
        after = adapter_state(model)
        assert any(not np.array_equal(before[k], after[k]) for k in after)


def test_llm_kd_weight_zero_keeps_the_teacher_out_of_the_llm(tokenizer, lora, smoke_splits):
    """llm_kd_weight 0: the SLM -> LLM direction is the CE on the labels alone (two different SLM teachers leave the
    LLM's adapter identical and nothing counts as distilled), while the LLM -> SLM direction still distils."""
    batches = encode_public_split(tokenizer, smoke_splits.task, smoke_splits.public.select(range(4)), 2, 32)
    cfg = _topk(steps=2, llm_steps=2, lr=1e-2, top_k=8, kd_weight=10.0, llm_kd_weight=0.0, order="slm_to_llm_first")
    llm_states, metrics = [], []
    for teacher_seed in (0, 1):
        torch.manual_seed(teacher_seed)
        slm = _peft("tiny-llama", lora)  # lora_B drawn from the seed: two different teachers
        torch.manual_seed(7)
        llm = _peft("tiny-llama-wide", lora)
        metrics.append(mutual_distillation(slm, llm, batches, cfg))
        llm_states.append(_snapshot(llm))
    assert metrics[0]["slm_to_llm_kl_before"] != metrics[1]["slm_to_llm_kl_before"]  # the teachers differ
    assert all(np.array_equal(llm_states[0][k], llm_states[1][k]) for k in llm_states[0])
    for m in metrics:
        assert m["slm_to_llm_distilled"] == 0 and m["slm_to_llm_kl"] == 0
        assert m["llm_to_slm_distilled"] == m["llm_to_slm_examples"] > 0


def _dequantized_copy(quantized, lora):
    """An fp32 twin of a 4-bit PeftModel: dequantized base weights, the same adapter values."""
    reference = attach_adapter(load_causal_lm(resolve_model("tiny-llama")), lora)
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if isinstance(module, bnb.nn.Linear4bit):
                weight = dequantize_4bit(module.weight.data, module.weight.quant_state).float()
                reference.get_submodule(name).weight.copy_(weight)
        ref_lora = dict(reference.named_parameters())
        for name, p in quantized.named_parameters():
            if "lora_" in name:
                ref_lora[name].copy_(p)
    return reference


def test_nf4_student_backpropagates_into_lora(tokenizer, lora):
    """The KD loss on a QLoRA student: LoRA gradients equal those of its dequantized fp32 twin, even after the
    student served as a teacher (an eval no_grad forward, the bitsandbytes CPU trap), and distill runs on it."""
    student = _peft("tiny-llama", lora, precision="nf4", compute_dtype="float32")
    reference = _dequantized_copy(student, lora)
    teacher = _peft("tiny-llama-wide", lora)
    batch = encode_batch(tokenizer, PROMPTS, ANSWERS, max_length=32)
    cfg = _topk(steps=3, lr=1e-2, top_k=32, temperature=2.0, kd_weight=1.0)
    cpu = torch.device("cpu")
    teacher_targets(student, batch, cfg, cpu)  # the student first teaches (as the SLM does in slm_to_llm)
    targets = teacher_targets(teacher, batch, cfg, cpu)
    for model in (student, reference):
        batch_loss(model, batch, targets, cfg)[0].backward()
    got, want = _lora_grads(student), _lora_grads(reference)
    assert got and all(g is not None and g.abs().sum() > 0 for g in got.values())
    assert max(float((got[n] - want[n]).abs().max() / want[n].abs().max()) for n in got) < 1e-3
    student.zero_grad(set_to_none=True)
    metrics = distill(student, teacher, [batch], cfg)
    assert metrics["kl_after"] < metrics["kl_before"]

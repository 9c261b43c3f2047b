"""FedCoLLM distillation on tiny models: gradients, padding, one direction, both directions, and a 4-bit student."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cotune.algorithms.fedcollm.config import FedCoLLMConfig
from cotune.algorithms.fedcollm.distill import batch_loss, distill, teacher_targets
from cotune.algorithms.fedcollm.loss import topk_distillation_loss
from cotune.algorithms.fedcollm.mutual import mutual_distillation, public_batches
from cotune.config import load_config
from cotune.data.encoding import IGNORE, encode_batch
from cotune.edge_client.adapters import adapter_state, attach_adapter
from cotune.models import resolve_model
from cotune.quantization.loading import load_causal_lm

PROMPTS = ["Review: a warm, funny film.\nSentiment:", "Review: dull and far too long.\nSentiment:"]
ANSWERS = [" positive", " negative"]
INPUTS = ("input_ids", "attention_mask", "position_ids")


@pytest.fixture(scope="module")
def lora():
    return load_config(None, ["lora.dropout=0.0"]).lora


def _peft(spec: str, lora, precision: str = "none"):
    model = attach_adapter(load_causal_lm(resolve_model(spec), precision), lora)
    with torch.no_grad():  # peft starts lora_B at zero: make the adapter do something, as after a round
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model


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
    loss, parts = _loss_on_full_logits(student, teacher, batch, FedCoLLMConfig())
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
    cfg = FedCoLLMConfig()
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
        windowed = [batch_loss(student, b, teacher_targets(teacher, b, cfg, "cpu"), cfg)[0].item() for b in (batch, padded)]
    assert padded_loss == pytest.approx(plain, rel=1e-4)
    assert windowed == pytest.approx([plain, plain], rel=1e-4)  # the logits_to_keep window gives the same loss


def test_distill_lowers_the_kl_it_optimizes_and_leaves_the_teacher_alone(tokenizer, lora):
    student, teacher = _peft("tiny-llama", lora), _peft("tiny-llama-wide", lora)
    teacher_before = adapter_state(teacher)
    batch = encode_batch(tokenizer, PROMPTS, ANSWERS, max_length=32)
    cfg = FedCoLLMConfig(steps=4, lr=1e-2, top_k=32)
    metrics = distill(student, teacher, [batch], cfg)
    assert metrics["steps"] == 4
    assert metrics["kl_after"] < metrics["kl_before"] - 0.5, metrics
    after = adapter_state(teacher)
    assert all(np.array_equal(teacher_before[k], after[k]) for k in after)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in student.parameters())  # cleared: the student teaches next


def test_mismatched_vocabularies_are_refused(tokenizer, lora):
    student = _peft("tiny-llama", lora)
    small = LlamaForCausalLM(
        LlamaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=2, intermediate_size=64)
    )
    batch = encode_batch(tokenizer, PROMPTS, ANSWERS, max_length=32)
    with pytest.raises(ValueError, match="49152 tokens, teacher's has 1000"):
        distill(student, small, [batch], FedCoLLMConfig(steps=1))


def test_mutual_distillation_runs_both_directions_in_order(tokenizer, lora, smoke_splits):
    slm, llm = _peft("tiny-llama", lora), _peft("tiny-llama-wide", lora)
    slm_before, llm_before = adapter_state(slm), adapter_state(llm)
    batches = public_batches(tokenizer, smoke_splits.task, smoke_splits.public.select(range(6)), 4, 48)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 2]
    cfg = FedCoLLMConfig(epochs=1.0, lr=5e-3, top_k=16, order="slm_to_llm_first")
    metrics = mutual_distillation(slm, llm, iter(batches), cfg)  # a one-shot iterator serves both directions
    assert list(metrics)[0].startswith("slm_to_llm_")
    for direction in ("llm_to_slm", "slm_to_llm"):
        assert metrics[f"{direction}_steps"] == 2
        assert metrics[f"{direction}_kl_after"] < metrics[f"{direction}_kl_before"]
    for model, before in ((slm, slm_before), (llm, llm_before)):
        after = adapter_state(model)
        assert any(not np.array_equal(before[k], after[k]) for k in after)


def test_nf4_student_backpropagates_into_lora(tokenizer, lora):
    student = _peft("tiny-llama", lora, precision="nf4")
    teacher = _peft("tiny-llama-wide", lora)
    batch = encode_batch(tokenizer, PROMPTS, ANSWERS, max_length=32)
    cfg = FedCoLLMConfig(steps=3, lr=1e-2, top_k=32)
    loss, _ = batch_loss(student, batch, teacher_targets(teacher, batch, cfg, "cpu"), cfg)
    loss.backward()
    grads = _lora_grads(student)
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())
    student.zero_grad(set_to_none=True)
    metrics = distill(student, teacher, [batch], cfg)
    assert metrics["kl_after"] < metrics["kl_before"]

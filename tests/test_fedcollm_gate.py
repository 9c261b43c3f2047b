"""Distillation that cannot hurt: label-word targets computed by hand, and the teacher-quality gate against a
near-uniform teacher."""

import math

import numpy as np
import pytest
import torch

from cotune.config.fedcollm import FedCoLLMConfig
from cotune.algorithms.fedcollm.distill import distill
from cotune.algorithms.fedcollm.distill import gate_loss
from cotune.algorithms.fedcollm.loss import label_word_ce, label_word_kl, label_word_probs, per_example_ce
from cotune.algorithms.fedcollm.mutual import encode_public_split
from cotune.config import load_config
from cotune.data.encoding import label_token_ids
from cotune.lm.adapters import attach_adapter
from cotune.lm.evaluate import label_probabilities
from cotune.lm.trainer import sample_batches, train_steps
from cotune.models import resolve_model
from cotune.quantization.loading import load_causal_lm


def test_label_word_kl_equals_the_hand_computed_value():
    student = torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, 0.0, 0.5, 0.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    label_ids, t = torch.tensor([1, 3]), 2.0
    got = label_word_kl(student, label_word_probs(teacher, label_ids, t), label_ids, t)
    want = []
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        s_l = [s_row[1] / t, s_row[3] / t]
        t_l = [t_row[1] / t, t_row[3] / t]
        p = [math.exp(x) / sum(math.exp(y) for y in t_l) for x in t_l]
        log_q = [x - math.log(sum(math.exp(y) for y in s_l)) for x in s_l]
        want.append(t * t * sum(pi * (math.log(pi) - lq) for pi, lq in zip(p, log_q)))
    assert got.tolist() == pytest.approx(want, rel=1e-5)
    assert label_word_kl(student, label_word_probs(student, label_ids, t), label_ids, t).abs().max() < 1e-6


def _answers():
    """Two examples, vocabulary of 4, label words 1 and 3; answers are a label word then token 2 (its end)."""
    targets = torch.tensor([[1, 2], [3, 2]])
    logits = torch.tensor([
        [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]],
        [[0.0, 0.5, 0.0, 1.5], [0.0, 0.0, 0.0, 0.0]],
    ])
    return logits, targets, torch.tensor([1, 3])


def test_label_word_ce_equals_the_hand_computed_value():
    logits, targets, label_ids = _answers()
    want = [-math.log(math.exp(1.0) / (math.exp(1.0) + 1.0)), -math.log(math.exp(1.5) / (math.exp(0.5) + math.exp(1.5)))]
    assert label_word_ce(logits, targets, label_ids).tolist() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="not one of the task's label words"):
        label_word_ce(logits, torch.tensor([[0, 2], [3, 2]]), label_ids)


def test_the_distilled_gate_closes_where_a_teacher_is_surer_of_the_format_but_wrong_on_the_label():
    targets, label_ids = torch.tensor([[1, 2]]), torch.tensor([1, 3])
    # The teacher puts its mass on the label words and the end token, but prefers the wrong label word (3).
    teacher = torch.tensor([[[-9.0, 4.0, -9.0, 5.0], [-9.0, -9.0, 9.0, -9.0]]])
    # The student spreads mass over the other tokens (a worse answer CE) but prefers the right label word (1).
    student = torch.tensor([[[3.0, 1.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]]])
    assert per_example_ce(teacher, targets) < per_example_ce(student, targets)  # answer CE: the teacher looks better
    assert label_word_ce(teacher, targets, label_ids) > label_word_ce(student, targets, label_ids)
    answer, distilled = FedCoLLMConfig(gate_loss="answer"), FedCoLLMConfig(gate_loss="distilled")
    assert gate_loss(teacher, targets, answer, label_ids) < gate_loss(student, targets, answer, label_ids)  # opens
    assert gate_loss(teacher, targets, distilled, label_ids) > gate_loss(student, targets, distilled, label_ids)
    # With top-k targets (no label ids) what is distilled is the answer: both settings compare the answer CE.
    assert gate_loss(teacher, targets, distilled, None) == per_example_ce(teacher, targets)


@pytest.fixture(scope="module")
def setting(tokenizer, smoke_splits):
    lora = load_config(None, ["lora.dropout=0.0"]).lora
    task, data = smoke_splits.task, smoke_splits.public.select(range(16))
    torch.manual_seed(0)
    student = attach_adapter(load_causal_lm(resolve_model("tiny-llama")), lora)
    train_steps(student, sample_batches(tokenizer, task, data, 8, 64, seed=0), steps=60, lr=3e-3)
    teacher = attach_adapter(load_causal_lm(resolve_model("tiny-llama-wide")), lora)
    with torch.no_grad():
        teacher.get_base_model().model.norm.weight.mul_(1e-3)  # logits ~0 everywhere: a near-uniform teacher
    return student, teacher, task, data, label_token_ids(tokenizer, task)


def _predictions(model, tokenizer, task, data) -> np.ndarray:
    return label_probabilities(model, tokenizer, task, data["text"], 16, 64).argmax(1)


@pytest.mark.parametrize("gate_loss_on", ["answer", "distilled"])
def test_a_near_uniform_teacher_leaves_a_trained_students_accuracy_unchanged(tokenizer, setting, gate_loss_on):
    student, teacher, task, data, label_ids = setting
    labels = np.asarray(data["label"])
    before = _predictions(student, tokenizer, task, data)
    assert (before == labels).mean() == 1.0  # the student learned its examples: the teacher is far worse
    batches = encode_public_split(tokenizer, task, data, 8, 64)
    # A KL weight 100x the default, so that without the gate the teacher would dominate the step.
    cfg = FedCoLLMConfig(steps=4, lr=3e-3, kd_weight=10.0, report_fit=True, gate_loss=gate_loss_on)
    metrics = distill(student, teacher, batches, cfg, label_ids)
    assert metrics["teacher_better_before"] == 0.0
    if gate_loss_on == "answer":
        assert metrics["distilled"] == 0
    else:  # opens only where a CE step left the student's label below the teacher's ~50%: the KL pulls it back up
        assert metrics["distilled"] <= 2
    after = _predictions(student, tokenizer, task, data)
    assert (after == labels).mean() == (before == labels).mean()


def test_without_the_gate_the_same_teacher_weighs_on_every_step(tokenizer, setting):
    student, teacher, task, data, label_ids = setting
    cfg = FedCoLLMConfig(steps=2, lr=1e-6, kd_weight=10.0, gate="none")
    metrics = distill(student, teacher, encode_public_split(tokenizer, task, data, 8, 64), cfg, label_ids)
    assert metrics["distilled"] == metrics["examples"] == 16
    assert metrics["kl"] > 0.1  # the uniform teacher's pull, which the gate closed above, weighs on the loss
    assert metrics["loss"] == pytest.approx(metrics["ce"] + 10.0 * metrics["kl"], rel=1e-4)


def test_label_word_targets_need_the_label_ids(tokenizer, setting):
    student, teacher, task, data, _ = setting
    with pytest.raises(ValueError, match="label-word token ids"):
        distill(student, teacher, encode_public_split(tokenizer, task, data, 8, 64), FedCoLLMConfig(steps=1))


def test_a_direction_that_lowers_the_students_holdout_accuracy_is_undone(tokenizer, setting):
    from cotune.algorithms.fedcollm.mutual import mutual_distillation
    from cotune.lm.adapters import adapter_state

    student, teacher, task, data, label_ids = setting
    batches = encode_public_split(tokenizer, task, data, 8, 64)
    before = {k: v.copy() for k, v in adapter_state(student).items()}
    scores = iter([0.9, 0.5, 0.4, 0.6])  # llm_to_slm: 0.9 -> 0.5 (worse: undone); slm_to_llm: 0.4 -> 0.6 (kept)
    cfg = FedCoLLMConfig(steps=2, lr=1e-2, order="llm_to_slm_first")
    metrics = mutual_distillation(student, teacher, batches, cfg, label_ids, holdout_accuracy=lambda m: next(scores))
    assert metrics["llm_to_slm_kept"] == 0 and metrics["slm_to_llm_kept"] == 1
    after = adapter_state(student)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # the SLM's adapter is back where it started


def test_the_holdout_is_label_balanced_and_disjoint_from_the_distilled_examples():
    from datasets import Dataset

    from cotune.algorithms.fedcollm.mutual import split_public

    public = Dataset.from_dict({"text": [f"t{i}" for i in range(40)], "label": [1] * 30 + [0] * 10})  # skewed, sorted
    rest, holdout = split_public(public, 10, seed=0)
    assert sorted(holdout["label"]) == [0] * 5 + [1] * 5
    assert not set(rest["text"]) & set(holdout["text"]) and len(rest) + len(holdout) == 40
    assert split_public(public, 10, seed=0)[1]["text"] == holdout["text"]  # seeded: the same every round
    assert len(split_public(public, 0, seed=0)[1]) == 0

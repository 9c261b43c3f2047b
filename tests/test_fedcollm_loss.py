"""FedCoLLM's top-k distillation loss on small hand-made tensors."""

import math

import pytest
import torch
from support.topk_loss import topk_distillation_loss

from cotune.algorithms.fedcollm.loss import teacher_topk

IGNORE = -100
# One example, vocabulary 5, 4 positions; labels 3 and 1 at positions 2 and 3 -> predicted by logits at 1 and 2.
LABELS = torch.tensor([[IGNORE, IGNORE, 3, 1]])
GARBAGE = [9.0, -7.0, 5.0, 0.0, 3.0]  # logits at positions that predict no response token
TEACHER_ROWS = [[1.0, 3.0, 0.5, 2.0, -1.0], [0.0, -2.0, 4.0, 1.0, 0.5]]
STUDENT_ROWS = [[0.2, 0.1, -0.3, 0.4, 0.0], [1.0, 0.5, 0.0, -0.5, 2.0]]


def _logits(rows, garbage=GARBAGE):
    return torch.tensor([[garbage, *rows, [g / 2 for g in garbage]]])


def _logsumexp(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _by_hand(k_indices, targets, temperature, kd_weight):
    """CE + lambda * T^2 * KL, token means, written out with explicit formulas."""
    ces, kls = [], []
    for t_row, s_row, top, y in zip(TEACHER_ROWS, STUDENT_ROWS, k_indices, targets):
        ces.append(-(s_row[y] - _logsumexp(s_row)))
        z = _logsumexp([t_row[i] / temperature for i in top])
        p = [math.exp(t_row[i] / temperature - z) for i in top]
        log_q = [s_row[i] / temperature - _logsumexp([s / temperature for s in s_row]) for i in top]
        kls.append(temperature**2 * sum(pi * (math.log(pi) - lq) for pi, lq in zip(p, log_q)))
    ce, kl = sum(ces) / len(ces), sum(kls) / len(kls)
    return ce + kd_weight * kl, ce, kl


def test_loss_equals_the_hand_computed_value():
    loss, parts = topk_distillation_loss(
        _logits(STUDENT_ROWS), _logits(TEACHER_ROWS), LABELS, k=2, temperature=2.0, kd_weight=0.5
    )
    # teacher's top-2: indices 1 and 3 at the first response position, 2 and 3 at the second
    want, ce, kl = _by_hand([[1, 3], [2, 3]], [3, 1], temperature=2.0, kd_weight=0.5)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert parts["ce"] == pytest.approx(ce, rel=1e-6) and parts["kl"] == pytest.approx(kl, rel=1e-6)
    assert parts["tokens"] == 2 and kl > 0


def test_kl_is_zero_only_when_the_student_matches_the_teacher_on_its_top_k():
    """A student whose full-vocabulary distribution equals the teacher's top-k one has KL 0 (up to fp)."""
    teacher = torch.tensor([[[1.0, 3.0, 0.5, 2.0, -1.0], [0.0] * 5]])  # position 0 predicts the label at 1
    student = torch.tensor([[[-1e4, 3.0, -1e4, 2.0, -1e4], [0.0] * 5]])
    _, parts = topk_distillation_loss(student, teacher, torch.tensor([[IGNORE, 1]]), 2, 1.0, 1.0)
    assert abs(parts["kl"]) < 1e-6
    _, full_student = topk_distillation_loss(teacher.clone(), teacher, torch.tensor([[IGNORE, 1]]), 2, 1.0, 1.0)
    assert full_student["kl"] > 0.1  # same logits, but mass outside the top-2 is still penalized


def test_scattered_top_k_distribution_sums_to_one():
    logits = torch.randn(6, 300) * 3
    probs, indices = teacher_topk(logits, k=16, temperature=1.7)
    full = torch.zeros_like(logits).scatter_(-1, indices, probs)
    assert torch.allclose(full.sum(-1), torch.ones(6), atol=1e-6)
    assert ((full > 0).sum(-1) == 16).all()
    assert torch.equal(full.argmax(-1), logits.argmax(-1))
    probs_all, _ = teacher_topk(logits, k=10_000, temperature=1.0)  # k beyond the vocabulary: the whole softmax
    assert probs_all.shape == (6, 300) and torch.allclose(probs_all.sum(-1), torch.ones(6), atol=1e-6)


def test_padding_positions_do_not_change_the_loss():
    base = topk_distillation_loss(_logits(STUDENT_ROWS), _logits(TEACHER_ROWS), LABELS, 2, 2.0, 0.5)[0]
    pad = 3
    student = torch.cat([torch.randn(1, pad, 5) * 10, _logits(STUDENT_ROWS)], dim=1)
    teacher = torch.cat([torch.randn(1, pad, 5) * 10, _logits(TEACHER_ROWS)], dim=1)
    labels = torch.cat([torch.full((1, pad), IGNORE), LABELS], dim=1)
    padded = topk_distillation_loss(student, teacher, labels, 2, 2.0, 0.5)[0]
    assert padded.item() == pytest.approx(base.item(), rel=1e-6)


def test_gradient_reaches_the_student_logits_only():
    student = _logits(STUDENT_ROWS).requires_grad_()
    teacher = _logits(TEACHER_ROWS).requires_grad_()
    topk_distillation_loss(student, teacher, LABELS, 2, 2.0, 0.5)[0].backward()
    assert teacher.grad is None
    assert student.grad[0, 1:3].abs().sum() > 0
    assert student.grad[0, [0, 3]].abs().sum() == 0  # positions that predict no response token


def test_mismatched_vocabularies_are_refused():
    with pytest.raises(ValueError, match="share one tokenizer"):
        topk_distillation_loss(torch.zeros(1, 4, 5), torch.zeros(1, 4, 7), LABELS, 2, 1.0, 1.0)


def test_batch_without_response_tokens_is_refused():
    with pytest.raises(ValueError, match="no response tokens"):
        topk_distillation_loss(torch.zeros(1, 4, 5), torch.zeros(1, 4, 5), torch.full((1, 4), IGNORE), 2, 1.0, 1.0)

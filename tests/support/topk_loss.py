"""FedCoLLM's top-k distillation loss on full logits, written straight from its definition
(cotune.algorithms.fedcollm.loss): the reference that the tests hold the training path (`distill.batch_loss`,
which keeps only the answer window) and the loss's own pieces to."""

import torch
import torch.nn.functional as F

from cotune.algorithms.fedcollm.loss import check_same_vocab, masked_responses, teacher_topk, topk_kl


def response_positions(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V) fp32 logits that predict the N response tokens, and those tokens (N,): causal shift, then mask."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not line up with labels {tuple(labels.shape)}")
    return masked_responses(logits[:, :-1], labels[:, 1:])


def topk_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    temperature: float,
    kd_weight: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CE + kd_weight * T^2 * KL for one batch, both token means: logits (B, L, V) of both models aligned with
    labels (B, L). `parts` holds the loss, its CE and its KL term as floats, and the number of response tokens."""
    check_same_vocab(student_logits.shape[-1], teacher_logits.shape[-1])
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}")
    student, targets = response_positions(student_logits, labels)
    probs, indices = teacher_topk(response_positions(teacher_logits, labels)[0], k, temperature)
    ce = F.cross_entropy(student, targets)
    kl = topk_kl(student, probs, indices, temperature).mean()
    loss = ce + kd_weight * kl
    return loss, {"loss": loss.item(), "ce": ce.item(), "kl": kl.item(), "tokens": int(targets.numel())}

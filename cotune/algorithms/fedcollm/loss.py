"""FedCoLLM's distillation loss: L = CE + lambda * T^2 * KL(p_teacher || q_student) over response tokens.

Two teacher distributions are offered. `label_words` (the default for classification): at each example's first
answer position, teacher and student are both renormalized over the task's label words — the only part of the
distribution the task reads, so a teacher that spreads its mass over other tokens cannot drag the student with
it. `topk`: the teacher's top-k over the vocabulary, as FedCoLLM's reference code does (described below).

Response tokens are the positions whose label is not -100; with the causal shift, the logits at t predict the
label at t + 1. Only those positions are cut out of the (B, L, V) logits before any softmax or top-k, so the
49,152-wide vocabulary is processed only where the loss needs it.

Top-k KL: the teacher keeps its k largest logits per position and softmaxes over those k at temperature T, i.e.
it puts all of its mass on its top-k tokens (scattered over the vocabulary this distribution sums to one). The
student's distribution is its log-softmax over the FULL vocabulary at temperature T, gathered at the teacher's k
indices. So the student is pulled to match the teacher's ranking inside the top-k *and* to move mass from the
rest of the vocabulary into the top-k (q restricted to k tokens sums to <= 1, hence KL >= 0, 0 only when q puts
exactly p on the top-k). Renormalizing the student over the k tokens instead would leave that second pressure out.
The KL is multiplied by T^2, as is customary (Hinton et al.), so its gradient scale does not shrink as T grows.
CE (at temperature 1, against the labels) and KL are token means: sums over response tokens divided by their
count, so the loss scale does not depend on batch size or answer length.
"""

import torch
import torch.nn.functional as F

from cotune.data.encoding import IGNORE


def check_same_vocab(student_vocab: int, teacher_vocab: int) -> None:
    """Distillation compares distributions token by token: both models must share one tokenizer/vocabulary."""
    if student_vocab != teacher_vocab:
        raise ValueError(
            f"student vocabulary has {student_vocab} tokens, teacher's has {teacher_vocab}: FedCoLLM distillation "
            "needs an LLM and SLM that share one tokenizer (models.slm / models.llm)"
        )


def masked_responses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Already shifted logits (B, S, V) and targets (B, S) -> the (N, V) fp32 rows and (N,) tokens of responses."""
    mask = targets != IGNORE
    if not mask.any():
        raise ValueError("batch has no response tokens (every label is -100): nothing to distill")
    return logits[mask].float(), targets[mask]


def teacher_topk(teacher_logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, indices), both (N, k'): the teacher's top-k' logits softmaxed at `temperature`; k' = min(k, V).

    Detached: the teacher is a fixed target, no gradient flows into it whatever the caller's grad mode."""
    values, indices = teacher_logits.detach().float().topk(min(k, teacher_logits.shape[-1]), dim=-1)
    return F.softmax(values / temperature, dim=-1), indices


def topk_kl(
    student_logits: torch.Tensor, probs: torch.Tensor, indices: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-token T^2 * KL(p_teacher || q_student) over the teacher's top-k, q a full-vocabulary softmax: (N,)."""
    log_q = F.log_softmax(student_logits / temperature, dim=-1).gather(-1, indices)
    return temperature**2 * (probs * (probs.clamp(min=1e-30).log() - log_q)).sum(-1)


def per_example_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, A, V) shifted answer logits and (B, A) targets -> (B,) mean token CE of each example's answer."""
    mask = targets != IGNORE
    token = F.cross_entropy(logits.float().transpose(1, 2), targets.clamp(min=0), reduction="none")
    return (token * mask).sum(1) / mask.sum(1).clamp(min=1)


def first_answer_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, V) fp32 logits that predict each example's first answer token (where the label word is decided)."""
    mask = targets != IGNORE
    if not mask.any(1).all():
        raise ValueError("an example has no answer token: nothing to distill on")
    first = mask.float().argmax(1)
    return logits[torch.arange(logits.shape[0]), first].float()


def label_word_ce(logits: torch.Tensor, targets: torch.Tensor, label_ids: torch.Tensor) -> torch.Tensor:
    """(B, A, V) shifted answer logits, (B, A) targets, (C,) label words' first tokens -> (B,): each example's CE of
    its label word with the distribution renormalized over the label words (T = 1). It measures the decision the
    task reads, apart from the mass a model puts on the answer's other tokens (its format)."""
    mask = targets != IGNORE
    first = first_answer_logits(logits, targets)
    words = targets[torch.arange(targets.shape[0]), mask.float().argmax(1)]
    match = words[:, None] == label_ids[None, :].to(words.device)
    if not match.any(1).all():
        raise ValueError("an example's first answer token is not one of the task's label words: label_ids do not match")
    return F.cross_entropy(first[:, label_ids.to(first.device)], match.float().argmax(1), reduction="none")


def label_word_probs(logits: torch.Tensor, label_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, V) -> (B, C): the distribution renormalized over the C label words, at `temperature`."""
    return F.softmax(logits[:, label_ids] / temperature, dim=-1)


def label_word_kl(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, label_ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-example T^2 * KL(p_teacher || q_student) over the label words: (B, V) student, (B, C) teacher -> (B,)."""
    log_q = F.log_softmax(student_logits[:, label_ids] / temperature, dim=-1)
    return temperature**2 * (teacher_probs * (teacher_probs.clamp(min=1e-30).log() - log_q)).sum(-1)

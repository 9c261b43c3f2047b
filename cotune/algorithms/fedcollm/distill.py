"""One distillation direction: a frozen teacher's targets train the student's adapter on public batches.

The teacher does not change during a direction, so its targets — the label-word distribution (or top-k) at the
answer, and its own loss on each example's label — are computed once per batch and reused for every step and
for the final measurement: the teacher runs one no_grad forward per public batch, however many steps the
student takes. Forwards keep only the trailing window that holds the answers (`logits_to_keep`, through the
trainer's `answer_logits`), so full-vocabulary logits exist only where the loss needs them.

With `gate = "teacher_better"` an example's KL term counts only while the teacher's loss on its label is below
the student's current one (FedMKT's DualMinCE, per example): a near-chance teacher distils on almost nothing
once the student knows the task, and the CE on the labels carries the step. The loss compared is the answer's
CE, or with `gate_loss = "distilled"` the CE over what the KL matches (the renormalized label words): there the
gate opens only where the teacher's label is the more right one, so the KL never pulls toward a wrong label.
"""

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel

from cotune.config.fedcollm import FedCoLLMConfig
from cotune.algorithms.fedcollm.loss import (
    check_same_vocab,
    first_answer_logits,
    label_word_ce,
    label_word_kl,
    label_word_probs,
    masked_responses,
    per_example_ce,
    teacher_topk,
    topk_kl,
)
from cotune.data.encoding import IGNORE
from cotune.lm.trainer import answer_logits, steps_for

Batch = dict[str, torch.Tensor]


@dataclass
class Targets:
    """A teacher's view of one batch: its gate loss per example (B,), and the distribution the student matches."""

    teacher_loss: torch.Tensor
    probs: torch.Tensor  # (B, C) over label words, or (N, k) top-k per response token
    indices: torch.Tensor | None = None  # (N, k) vocabulary ids of the top-k; None for label words
    label_ids: torch.Tensor | None = None  # (C,) label words' first token ids; None for top-k


def vocab_size(model: torch.nn.Module) -> int:
    """Width of the model's logits (rows of its output embedding)."""
    return int(model.get_output_embeddings().weight.shape[0])


def check_models_share_vocab(student: torch.nn.Module, teacher: torch.nn.Module) -> None:
    check_same_vocab(vocab_size(student), vocab_size(teacher))


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _on(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


def _label_tensor(cfg: FedCoLLMConfig, label_ids: Sequence[int] | None) -> torch.Tensor | None:
    if cfg.targets != "label_words":
        return None
    if not label_ids:
        raise ValueError("fedcollm.targets = 'label_words' needs the task's label-word token ids (label_ids)")
    return torch.tensor(list(label_ids), dtype=torch.long)


def gate_loss(
    logits: torch.Tensor, tokens: torch.Tensor, cfg: FedCoLLMConfig, label_ids: torch.Tensor | None
) -> torch.Tensor:
    """(B,) per-example loss on which the gate compares teacher and student (`cfg.gate_loss`)."""
    if cfg.gate_loss == "distilled" and label_ids is not None:
        return label_word_ce(logits, tokens, label_ids)
    return per_example_ce(logits, tokens)


@torch.no_grad()
def teacher_targets(
    teacher: torch.nn.Module,
    batch: Batch,
    cfg: FedCoLLMConfig,
    device: torch.device,
    label_ids: Sequence[int] | None = None,
) -> Targets:
    """The teacher's loss per example and its target distribution on `batch`, placed on the student's device."""
    teacher.eval()
    logits, tokens = answer_logits(teacher, _on(batch, _device(teacher)))
    ids = _label_tensor(cfg, label_ids)
    ce = gate_loss(logits, tokens, cfg, ids).to(device)
    if ids is not None:
        probs = label_word_probs(first_answer_logits(logits, tokens), ids.to(logits.device), cfg.temperature)
        return Targets(ce, probs.to(device), label_ids=ids.to(device))
    probs, indices = teacher_topk(masked_responses(logits, tokens)[0], cfg.top_k, cfg.temperature)
    return Targets(ce, probs.to(device), indices.to(device))


def batch_loss(
    student: torch.nn.Module, batch: Batch, targets: Targets, cfg: FedCoLLMConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The student's CE + lambda * T^2 * KL on one batch against precomputed teacher targets.

    CE is a token mean over answer tokens; the KL is a per-example mean over the batch (examples the gate closes
    count as zero, so gating lowers the KL's weight rather than renormalizing it)."""
    logits, tokens = answer_logits(student, _on(batch, _device(student)))
    mask = tokens != IGNORE
    if not mask.any():
        raise ValueError("batch has no response tokens (every label is -100): nothing to distill")
    ce = F.cross_entropy(logits[mask].float(), tokens[mask])
    if targets.label_ids is not None:
        kl_example = label_word_kl(first_answer_logits(logits, tokens), targets.probs, targets.label_ids, cfg.temperature)
    else:
        kl_token = topk_kl(logits[mask].float(), targets.probs, targets.indices, cfg.temperature)
        owner = mask.nonzero()[:, 0]  # the example of each response token
        kl_example = torch.zeros(logits.shape[0], device=kl_token.device).index_add(0, owner, kl_token)
        kl_example = kl_example / mask.sum(1).clamp(min=1)
    if cfg.gate == "teacher_better":
        open_ = targets.teacher_loss < gate_loss(logits, tokens, cfg, targets.label_ids).detach()
    else:
        open_ = torch.ones_like(kl_example, dtype=torch.bool)
    open_ = open_ & (cfg.kd_weight > 0)  # lambda 0 distils on nothing, whatever the gate says
    kl = (kl_example * open_).mean()
    loss = ce + cfg.kd_weight * kl
    parts = {
        "loss": loss.item(), "ce": ce.item(), "kl": kl.item(), "kl_all": kl_example.mean().item(),
        "tokens": int(mask.sum()), "examples": int(open_.numel()), "distilled": int(open_.sum()),
    }
    return loss, parts


def _token_mean(parts: list[dict[str, float]], key: str) -> float:
    weights = [p["tokens"] for p in parts]
    return float(np.average([p[key] for p in parts], weights=weights))


@torch.no_grad()
def measure(student: torch.nn.Module, batches: list[Batch], targets: list[Targets], cfg: FedCoLLMConfig) -> dict:
    """Token-mean CE and (ungated) KL of the student over `batches`, and the share of examples on which the
    teacher is better (eval mode: no dropout)."""
    student.eval()
    parts = [batch_loss(student, b, t, cfg)[1] for b, t in zip(batches, targets)]
    better = sum(p["distilled"] for p in parts) / max(sum(p["examples"] for p in parts), 1)
    return {"ce": _token_mean(parts, "ce"), "kl": _token_mean(parts, "kl_all"), "teacher_better": better}


def distill(
    student: PeftModel,
    teacher: torch.nn.Module,
    batches: Iterable[Batch],
    cfg: FedCoLLMConfig,
    label_ids: Sequence[int] | None = None,
    steps: int | None = None,
    progress: bool = False,
    desc: str = "distill",
) -> dict[str, float]:
    """Train the student's adapter towards the teacher on `batches` (one finite pass; cycled for more steps).

    `steps` defaults to `cfg.steps` (or `cfg.epochs` passes). Returns steps, the mean training loss/CE/KL over
    those steps, how many example-steps were distilled against how many were seen (distilled, examples), and
    seconds. With `cfg.report_fit` also the token-mean CE and KL over the batches trained on before and after
    training (ce_before, kl_before, ce_after, kl_after) and the share of examples the teacher was better on at
    the start: two more no-grad passes, so off in the job. The teacher gets no gradient; the student's `.grad`
    are cleared at the end (it teaches in the next direction).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    if not isinstance(student, PeftModel):
        raise TypeError(f"the student must be a peft PeftModel with an adapter to train, got {type(student).__name__}")
    check_models_share_vocab(student, teacher)
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the student has no trainable parameters: its adapter is frozen")
    batches = list(batches)
    if not batches:
        raise ValueError("no public batches to distill on")
    steps = steps_for(len(batches), cfg.steps if steps is None else steps, cfg.epochs, batch_size=1, grad_accum=1)
    batches = batches[:steps]  # fewer steps than batches: only the batches trained on are scored
    device = _device(student)
    targets = [teacher_targets(teacher, b, cfg, device, label_ids) for b in batches]
    before = measure(student, batches, targets, cfg) if cfg.report_fit else None
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    student.train()
    logged = []
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        i = step % len(batches)
        optimizer.zero_grad(set_to_none=True)
        loss, parts = batch_loss(student, batches[i], targets[i], cfg)
        loss.backward()
        optimizer.step()
        logged.append(parts)
    optimizer.zero_grad(set_to_none=True)
    result = {
        "steps": steps,
        "loss": float(np.mean([p["loss"] for p in logged])),
        "ce": float(np.mean([p["ce"] for p in logged])),
        "kl": float(np.mean([p["kl"] for p in logged])),
        "distilled": int(sum(p["distilled"] for p in logged)),
        "examples": int(sum(p["examples"] for p in logged)),
    }
    if before is not None:
        after = measure(student, batches, targets, cfg)
        result.update(
            ce_before=before["ce"], kl_before=before["kl"], ce_after=after["ce"], kl_after=after["kl"],
            teacher_better_before=before["teacher_better"],
        )
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result

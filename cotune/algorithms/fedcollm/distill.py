"""One distillation direction: a frozen teacher's top-k targets train the student's adapter on public batches.

The teacher does not change during a direction, so its top-k targets are computed once per batch (in the pass
that also measures the student's starting loss) and reused for every step and for the final measurement: the
teacher runs one no_grad forward per public batch, however many steps the student takes. The targets are
small (response tokens x k). Forwards keep only the trailing window that holds the answers (`logits_to_keep`,
through the trainer's `answer_logits`), so full-vocabulary logits exist only where the loss needs them.
"""

from collections.abc import Iterable

import numpy as np
import torch
from peft import PeftModel

from cotune.algorithms.fedcollm.config import FedCoLLMConfig
from cotune.algorithms.fedcollm.loss import check_same_vocab, masked_responses, student_loss, teacher_topk
from cotune.edge_client.trainer import answer_logits, steps_for


Batch = dict[str, torch.Tensor]
Targets = tuple[torch.Tensor, torch.Tensor]  # teacher top-k (probs, indices), each (N, k)


def vocab_size(model: torch.nn.Module) -> int:
    """Width of the model's logits (rows of its output embedding)."""
    return int(model.get_output_embeddings().weight.shape[0])


def check_models_share_vocab(student: torch.nn.Module, teacher: torch.nn.Module) -> None:
    check_same_vocab(vocab_size(student), vocab_size(teacher))


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _on(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def teacher_targets(teacher: torch.nn.Module, batch: Batch, cfg: FedCoLLMConfig, device: torch.device) -> Targets:
    """The teacher's top-k distribution at each response position of `batch`, placed on the student's device."""
    teacher.eval()
    logits, targets = masked_responses(*answer_logits(teacher, _on(batch, _device(teacher))))
    probs, indices = teacher_topk(logits, cfg.top_k, cfg.temperature)
    return probs.to(device), indices.to(device)


def batch_loss(
    student: torch.nn.Module, batch: Batch, targets: Targets, cfg: FedCoLLMConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The student's CE + lambda * KL on one batch, against precomputed teacher targets."""
    logits, tokens = masked_responses(*answer_logits(student, _on(batch, _device(student))))
    return student_loss(logits, tokens, *targets, cfg.temperature, cfg.kd_weight)


def _token_mean(parts: list[dict[str, float]], key: str) -> float:
    weights = [p["tokens"] for p in parts]
    return float(np.average([p[key] for p in parts], weights=weights))


@torch.no_grad()
def measure(student: torch.nn.Module, batches: list[Batch], targets: list[Targets], cfg: FedCoLLMConfig) -> dict:
    """Token-mean CE and KL of the student over `batches` (eval mode: no dropout)."""
    student.eval()
    parts = [batch_loss(student, b, t, cfg)[1] for b, t in zip(batches, targets)]
    return {key: _token_mean(parts, key) for key in ("ce", "kl")}


def distill(
    student: PeftModel,
    teacher: torch.nn.Module,
    batches: Iterable[Batch],
    cfg: FedCoLLMConfig,
    progress: bool = False,
    desc: str = "distill",
) -> dict[str, float]:
    """Train the student's adapter towards the teacher on `batches` (one finite pass; cycled for more steps).

    Returns steps, the mean training loss/CE/KL over those steps, and the token-mean CE and KL over the batches
    trained on, before and after training (ce_before, kl_before, ce_after, kl_after): two extra student
    forwards per batch used, the price of knowing whether distillation moved the student. The teacher gets no
    gradient; the student's `.grad` are cleared at the end, since the student teaches in the next direction.
    """
    from tqdm.auto import tqdm

    if not isinstance(student, PeftModel):
        raise TypeError(f"the student must be a peft PeftModel with an adapter to train, got {type(student).__name__}")
    check_models_share_vocab(student, teacher)
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the student has no trainable parameters: its adapter is frozen")
    batches = list(batches)
    if not batches:
        raise ValueError("no public batches to distill on")
    steps = steps_for(len(batches), cfg.steps, cfg.epochs, batch_size=1, grad_accum=1)  # counted in batches
    batches = batches[:steps]  # fewer steps than batches: only the batches trained on are scored
    device = _device(student)
    targets = [teacher_targets(teacher, b, cfg, device) for b in batches]
    before = measure(student, batches, targets, cfg)
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
    after = measure(student, batches, targets, cfg)
    return {
        "steps": steps,
        "loss": float(np.mean([p["loss"] for p in logged])),
        "ce": float(np.mean([p["ce"] for p in logged])),
        "kl": float(np.mean([p["kl"] for p in logged])),
        "ce_before": before["ce"],
        "kl_before": before["kl"],
        "ce_after": after["ce"],
        "kl_after": after["kl"],
    }

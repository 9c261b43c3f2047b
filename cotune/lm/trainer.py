"""Adapter training loop shared by silos (SLM) and the server (LLM updates): answer-only loss by default, AdamW.

A plain loop rather than transformers.Trainer: a federated round is a handful of steps on a model that stays
in memory between rounds, and the loss needs only the answer positions' logits.
"""

import ctypes
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from cotune.data.encoding import IGNORE, TOKEN_COLUMNS, answer_span, collate, pad_id, pretokenize
from cotune.data.tasks import ClassificationTask


@dataclass
class TrainResult:
    steps: int
    examples_seen: int
    mean_loss: float
    last_loss: float
    seconds: float = 0.0
    reused: bool = False  # read back from a job's reuse folder, not trained in this call


LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]  # (model, batch) -> scalar loss


def answer_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that predict the answer tokens, and those tokens: (B, A, V) and (B, A)."""
    span = answer_span(batch["labels"])
    if span == 0:
        raise ValueError("batch has no answer tokens to train on")
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    logits = model(**inputs, logits_to_keep=span + 1).logits
    return logits[:, -span - 1 : -1], batch["labels"][:, -span:]


def example_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each example's mean token cross-entropy over its answer tokens: (B, A, V) logits, (B, A) targets -> (B,).

    Per example first, so that a long answer weighs no more than a short one in whatever combines them."""
    token_loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    mask = (targets != IGNORE).float()
    return (token_loss * mask).sum(1) / mask.sum(1).clamp(min=1)


def answer_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The default `LossFn`: answer-token cross-entropy, each example's mean, averaged over the batch."""
    return example_losses(*answer_logits(model, batch)).mean()


def sample_batches(
    tokenizer: PreTrainedTokenizerBase,
    task: ClassificationTask,
    dataset: Dataset,
    batch_size: int,
    max_length: int,
    seed: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless seeded epochs over `dataset` in shuffled batches (the last short batch of an epoch is kept).

    Rows are tokenized once (`pretokenize`, a no-op on an already tokenized dataset); a batch only pads."""
    rng = np.random.default_rng(seed)
    if len(dataset) == 0:
        raise ValueError("cannot train on an empty dataset")
    encoded = pretokenize(tokenizer, task, dataset, max_length).select_columns(list(TOKEN_COLUMNS))
    encoded = encoded.with_format("python")
    pad = pad_id(tokenizer)
    while True:
        order = rng.permutation(len(encoded))
        for start in range(0, len(order), batch_size):
            rows = encoded[order[start : start + batch_size]]
            yield collate(rows["input_ids"], rows["labels"], pad)


def steps_for(num_examples: int, steps: int, epochs: float, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps of a local round: `steps` when set, else `epochs` passes over the data."""
    if steps > 0:
        return steps
    return max(1, int(np.ceil(epochs * num_examples / (batch_size * grad_accum))))


M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h


@cache
def return_freed_tensors_to_os() -> bool:
    """Fix glibc's mmap threshold at 128 KiB for this process, so that a freed tensor's memory goes back to the OS.

    By default glibc raises the threshold to the size of each large block freed (up to 32 MiB); from then on
    activations and their temporaries come from the heap, and what they free stays resident: 200-300 MB of extra
    peak RSS per step on the 90M SLM, as much as its 4-bit base saves. But every large temporary then costs an
    mmap/munmap pair and fresh page faults: steps ran ~1.5x slower, so it is opt-in (`train.release_freed_memory`).
    Process-wide, once; False without glibc.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, 128 * 1024))


def train_steps(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
    grad_accum: int = 1,
    progress: bool = False,
    desc: str = "train",
    release_freed_memory: bool = False,
    loss_fn: LossFn = answer_loss,
) -> TrainResult:
    """Run `steps` AdamW steps of `loss_fn` on the trainable parameters; the optimizer lives only for this call (a
    round). An algorithm with its own objective passes it as `loss_fn` (CrossLM: its reward-weighted likelihood).

    `release_freed_memory` pins glibc's mmap threshold (see `return_freed_tensors_to_os`): lower peak RSS, slower
    steps (measured in `benchmarks/client_training.py`)."""
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters; attach an adapter first")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    device = next(iter(params)).device
    if release_freed_memory and device.type == "cpu":
        return_freed_tensors_to_os()
    start = time.perf_counter()
    model.train()
    iterator = iter(batches)
    losses, seen = [], 0
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(grad_accum):
            batch = {k: v.to(device) for k, v in next(iterator).items()}
            loss = loss_fn(model, batch) / grad_accum
            loss.backward()
            step_loss += loss.item()
            seen += batch["input_ids"].shape[0]
        optimizer.step()
        losses.append(step_loss)
    model.eval()
    return TrainResult(
        steps=steps, examples_seen=seen, mean_loss=float(np.mean(losses)), last_loss=losses[-1],
        seconds=round(time.perf_counter() - start, 3),
    )

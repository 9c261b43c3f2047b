"""CrossLM's LLM update: reward-weighted likelihood of its own generations, weighted by the silos' feedback.

CrossLM (arXiv:2312.05842), method, step 4: the silos' scores steer the LLM toward the generations they rate
well. Each sample's weight is its reward (`scores.to_rewards`: advantage over the batch's or its label's mean,
>= 0), so the loss is a weighted mean of per-example answer likelihoods, the prompt being the generation request
and the answer the generated text. It reaches the shared trainer as its `loss_fn`; batches carry the weights in a
`weight` column.

With a task (`crosslm.llm_objective = 'generation_and_label'`) each batch also carries the same samples as task
prompts answered with their intended label (`label_` columns), and the loss adds their reward-weighted label CE:
the step on the LLM's own generations then also teaches its classifier the labels the silos confirmed, rather than
moving the answer's distribution only as a side effect of generative training (InstructGPT's PPO-ptx mixes a
supervised term into its reward update for the same reason).
"""

from collections.abc import Iterator

import numpy as np
import torch
from datasets import Dataset

from cotune.data.encoding import encode_batch, task_batch
from cotune.data.tasks import ClassificationTask
from cotune.lm.adapted_lm import AdaptedLM
from cotune.lm.trainer import TrainResult, answer_logits, example_losses, train_steps


def reward_weighted_nll(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * NLL_i / sum_i |w_i|, NLL_i being example i's mean answer-token cross-entropy.

    (B, A, V) logits, (B, A) targets (-100 where not an answer token), (B,) weights. Normalized by the weights,
    not the batch size, so a batch of few rewarded samples takes a step of the same scale as one of many."""
    per_example = example_losses(logits, targets)
    return (per_example * weights.to(per_example)).sum() / weights.abs().sum().clamp(min=1e-8)


LABEL_PREFIX = "label_"


def reward_weighted_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`reward_weighted_nll` of `model` on a batch with a `weight` column: the trainer's `loss_fn`. Where the batch
    has `label_` columns (the samples as labelled task prompts), their reward-weighted answer CE is added."""
    loss = reward_weighted_nll(*answer_logits(model, batch), batch["weight"])
    labelled = {k[len(LABEL_PREFIX) :]: v for k, v in batch.items() if k.startswith(LABEL_PREFIX)}
    if labelled:
        loss = loss + reward_weighted_nll(*answer_logits(model, labelled), batch["weight"])
    return loss


def reward_batches(
    llm: AdaptedLM, samples: Dataset, weights: np.ndarray, batch_size: int, max_length: int, seed: int,
    task: ClassificationTask | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled batches of (generation prompt -> generated text) with their reward weights, and with `task`
    the same samples as (task prompt -> intended label) in `label_` columns; samples with weight 0 are left out."""
    keep = np.flatnonzero(weights > 0)
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(keep)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            rows = samples.select(idx)
            batch = encode_batch(llm.tokenizer, rows["prompt"], [" " + t for t in rows["text"]], max_length)
            batch["weight"] = torch.tensor(weights[idx], dtype=torch.float32)
            if task is not None:
                labelled = task_batch(llm.tokenizer, task, rows["text"], rows["label"], max_length)
                batch.update({LABEL_PREFIX + k: v for k, v in labelled.items()})
            yield batch


def reward_update(
    llm: AdaptedLM, samples: Dataset, weights: np.ndarray, steps: int, lr: float, batch_size: int, max_length: int,
    seed: int, task: ClassificationTask | None = None,
) -> TrainResult:
    """`steps` reward-weighted AdamW steps on the LLM's adapter (with `task`, on the labels too)."""
    batches = reward_batches(llm, samples, weights, batch_size, max_length, seed, task)
    return train_steps(llm.model, batches, steps, lr, desc="llm reward update", loss_fn=reward_weighted_loss)

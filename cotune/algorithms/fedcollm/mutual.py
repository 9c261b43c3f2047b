"""FedCoLLM's server step: mutual distillation between the LLM and the freshly averaged SLM on public data.

Each round, after FedAvg of the silos' SLM adapters, the LLM teaches the SLM and the SLM teaches the LLM (in the
configured order; the second direction sees the first one's result). The distilled SLM adapter is what silos
receive next round: the caller extracts it (`cotune.lm.adapters.adapter_state`).
"""

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from cotune.config.fedcollm import FedCoLLMConfig
from cotune.algorithms.fedcollm.distill import Batch, check_models_share_vocab, distill
from cotune.data.encoding import task_batch
from cotune.data.tasks import ClassificationTask
from cotune.lm.adapters import adapter_state, load_adapter_state


ORDERS = {
    "llm_to_slm_first": ("llm_to_slm", "slm_to_llm"),
    "slm_to_llm_first": ("slm_to_llm", "llm_to_slm"),
}


def encode_public_split(
    tokenizer: PreTrainedTokenizerBase,
    task: ClassificationTask,
    dataset: Dataset,
    batch_size: int,
    max_length: int,
    seed: int | None = None,
) -> list[Batch]:
    """One pass over the public split as prompt + answer batches (answer-only labels), shuffled by `seed` if given:
    with fedcollm.steps below a full pass, a per-round seed makes each round distill on different examples."""
    if len(dataset) == 0:
        raise ValueError("the public split is empty: FedCoLLM has nothing to distill on (data.public_size)")
    if seed is not None:
        dataset = dataset.shuffle(seed=seed)
    return [
        task_batch(tokenizer, task, rows["text"], rows["label"], max_length)
        for rows in (dataset[start : start + batch_size] for start in range(0, len(dataset), batch_size))
    ]


def split_public(public: Dataset, holdout_size: int, seed: int) -> tuple[Dataset, Dataset]:
    """(the examples to distill on, a label-balanced hold-out that checks each direction). Balanced like the test
    split: the public split follows the pool's label mix (and order), and a skewed hold-out would reward a student
    for answering the majority label."""
    labels = np.asarray(public["label"])
    classes = np.unique(labels)
    per_class = min(holdout_size // max(len(classes), 1), *(int((labels == c).sum()) - 1 for c in classes))
    if holdout_size <= 0 or per_class <= 0:
        return public, public.select([])
    rng = np.random.default_rng(seed)
    held = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in classes]))
    rest = np.setdiff1d(np.arange(len(public)), held)
    return public.select(rest), public.select(held)


def mutual_distillation(
    slm: PeftModel,
    llm: PeftModel,
    public_batches: Iterable[Batch],
    cfg: FedCoLLMConfig,
    label_ids: Sequence[int] | None = None,
    progress: bool = False,
    holdout_accuracy: Callable[[PeftModel], float] | None = None,
) -> dict[str, float]:
    """Both directions on the same public batches; metrics of each are prefixed `llm_to_slm_` / `slm_to_llm_`.

    The LLM student takes `cfg.llm_steps` steps and `cfg.llm_kd_weight` as lambda (when set: >= 0). With
    `holdout_accuracy` (the student's accuracy on public examples kept out of the batches), a direction that
    leaves its student below where it started is undone: distillation can skip a round, never make it worse."""
    check_models_share_vocab(slm, llm)
    batches = list(public_batches)
    metrics: dict[str, float] = {}
    for direction in ORDERS[cfg.order]:
        student, teacher = (slm, llm) if direction == "llm_to_slm" else (llm, slm)
        steps = cfg.llm_steps if direction == "slm_to_llm" and cfg.llm_steps else cfg.steps
        own = direction == "slm_to_llm" and cfg.llm_kd_weight >= 0
        direction_cfg = dataclasses.replace(cfg, kd_weight=cfg.llm_kd_weight) if own else cfg
        if holdout_accuracy is not None:
            check_start = time.perf_counter()
            start_state = {k: v.copy() for k, v in adapter_state(student).items()}
            before = holdout_accuracy(student)
            check_s = time.perf_counter() - check_start
        result = distill(student, teacher, batches, direction_cfg, label_ids, steps, progress=progress, desc=direction)
        if holdout_accuracy is not None:
            check_start = time.perf_counter()
            after = holdout_accuracy(student)
            kept = after >= before
            if not kept:
                load_adapter_state(student, start_state)
            check_s += time.perf_counter() - check_start
            result.update(holdout_before=before, holdout_after=after, kept=int(kept), holdout_seconds=round(check_s, 3))
        metrics.update({f"{direction}_{key}": value for key, value in result.items()})
    return metrics

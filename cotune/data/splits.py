"""From a task's labelled pool to: a balanced held-out test, a server-side public split, and client partitions.

The three are disjoint by construction (index sets carved out of one seeded permutation), which tests assert.
"""

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from cotune.config.schema import DataConfig
from cotune.data.partition import dirichlet_partition, iid_partition
from cotune.data.rotten_tomatoes import TASK as ROTTEN_TOMATOES
from cotune.data.rotten_tomatoes import load_plot_summaries, load_reviews
from cotune.data.tasks import ClassificationTask
from cotune.data.user_files import load_generalization_file, load_user_file, task_from_config

FILE_TASK_EXAMPLES = len(ROTTEN_TOMATOES.examples)  # a file task's example inputs, as many as the builtin ships


@dataclass(frozen=True)
class BuiltinTask:
    """A task shipped with cotune: its definition, its labelled pool, and its own text of another register."""

    task: ClassificationTask
    load: Callable[[], Dataset]
    generalization: Callable[[], list[str]]


BUILTIN_TASKS = {"rotten-tomatoes": BuiltinTask(ROTTEN_TOMATOES, load_reviews, load_plot_summaries)}


@dataclass
class ClientSplit:
    train: Dataset
    val: Dataset


@dataclass
class TaskSplits:
    task: ClassificationTask
    test: Dataset
    public: Dataset
    clients: list[ClientSplit]


def seeded_sample(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """Up to `n` of `texts`, picked by a seeded permutation: the same seed, the same texts."""
    return [texts[int(i)] for i in np.random.default_rng(seed).permutation(len(texts))[:n]]


def held_out(cfg: DataConfig, pool: Dataset, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded permutation of the pool and the balanced test indices carved from it."""
    labels = np.asarray(pool["label"])
    order = np.random.default_rng(cfg.seed).permutation(len(pool))
    per_class = cfg.test_size // num_labels
    return order, np.concatenate([order[labels[order] == c][:per_class] for c in range(num_labels)])


def load_task(cfg: DataConfig) -> tuple[ClassificationTask, Dataset]:
    """The task, with its example inputs (a file task's come from its test rows), and its labelled pool."""
    if cfg.task == "file":
        task, pool = task_from_config(cfg), load_user_file(cfg)
        test = pool.select(held_out(cfg, pool, len(task.labels))[1])["text"]
        return dataclasses.replace(task, examples=tuple(seeded_sample(test, FILE_TASK_EXAMPLES, cfg.seed))), pool
    if cfg.task not in BUILTIN_TASKS:
        raise ValueError(f"data.task: unknown task {cfg.task!r}; builtin: {sorted(BUILTIN_TASKS)} or 'file'")
    builtin = BUILTIN_TASKS[cfg.task]
    task = dataclasses.replace(
        builtin.task,
        label_words=tuple(cfg.label_words) or builtin.task.label_words,
        template=cfg.template or builtin.task.template,
    )
    return task, builtin.load()


def generalization_texts(cfg: DataConfig, splits: TaskSplits) -> list[str]:
    """Text the LLM was not tuned on, for its perplexity: `data.generalization_path`'s, else the builtin task's
    own, else a seeded sample of the test rows (which no client and no server step sees)."""
    if cfg.generalization_path:
        texts = load_generalization_file(cfg)
    elif cfg.task in BUILTIN_TASKS:
        texts = BUILTIN_TASKS[cfg.task].generalization()
    else:
        return seeded_sample(splits.test["text"], cfg.generalization_texts, cfg.seed)
    return texts[: cfg.generalization_texts]


def build_splits(cfg: DataConfig, num_clients: int) -> TaskSplits:
    task, pool = load_task(cfg)
    labels = np.asarray(pool["label"])
    order, test_idx = held_out(cfg, pool, len(task.labels))
    rest = order[~np.isin(order, test_idx)]
    public_idx, client_pool = rest[: cfg.public_size], rest[cfg.public_size :]
    if len(client_pool) < num_clients * cfg.min_client_examples:
        raise ValueError(
            f"only {len(client_pool)} examples left for {num_clients} clients (data.min_client_examples = "
            f"{cfg.min_client_examples} each) after test ({len(test_idx)}) and public ({len(public_idx)}) splits"
        )
    if cfg.partition == "iid":
        parts = iid_partition(len(client_pool), num_clients, cfg.seed)
    else:
        parts = dirichlet_partition(
            labels[client_pool], num_clients, cfg.dirichlet_alpha, cfg.seed, cfg.min_client_examples
        )
    clients = []
    for client_id, part in enumerate(parts):
        idx = np.random.default_rng(cfg.seed + 1 + client_id).permutation(client_pool[part])
        n_val = int(round(len(idx) * cfg.client_val_fraction))
        train_idx = idx[n_val:]
        if cfg.max_client_examples:
            train_idx = train_idx[: cfg.max_client_examples]
        clients.append(ClientSplit(train=pool.select(train_idx), val=pool.select(idx[:n_val])))
    return TaskSplits(task=task, test=pool.select(test_idx), public=pool.select(public_idx), clients=clients)

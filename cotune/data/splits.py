"""From a task's labelled pool to: a balanced held-out test, a server-side public split, and client partitions.

The three are disjoint by construction (index sets carved out of one seeded permutation), which tests assert.
"""

from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from cotune.config.schema import DataConfig
from cotune.data.partition import dirichlet_partition, iid_partition
from cotune.data.rotten_tomatoes import TASK as ROTTEN_TOMATOES
from cotune.data.rotten_tomatoes import load_reviews
from cotune.data.tasks import ClassificationTask
from cotune.data.user_files import load_user_file, task_from_config

BUILTIN_TASKS = {"rotten-tomatoes": (ROTTEN_TOMATOES, load_reviews)}


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


def load_task(cfg: DataConfig) -> tuple[ClassificationTask, Dataset]:
    if cfg.task == "file":
        return task_from_config(cfg), load_user_file(cfg)
    if cfg.task not in BUILTIN_TASKS:
        raise ValueError(f"data.task: unknown task {cfg.task!r}; builtin: {sorted(BUILTIN_TASKS)} or 'file'")
    task, loader = BUILTIN_TASKS[cfg.task]
    if cfg.template or cfg.label_words:
        task = ClassificationTask(
            name=task.name,
            labels=task.labels,
            label_words=tuple(cfg.label_words) or task.label_words,
            template=cfg.template or task.template,
            generation_template=task.generation_template,
            item=task.item,
        )
    return task, loader()


def build_splits(cfg: DataConfig, num_clients: int) -> TaskSplits:
    task, pool = load_task(cfg)
    labels = np.asarray(pool["label"])
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(pool))
    per_class = cfg.test_size // len(task.labels)
    test_idx = np.concatenate([order[labels[order] == c][:per_class] for c in range(len(task.labels))])
    rest = order[~np.isin(order, test_idx)]
    public_idx, client_pool = rest[: cfg.public_size], rest[cfg.public_size :]
    if len(client_pool) < num_clients * 10:
        raise ValueError(
            f"only {len(client_pool)} examples left for {num_clients} clients after test ({len(test_idx)}) "
            f"and public ({len(public_idx)}) splits"
        )
    if cfg.partition == "iid":
        parts = iid_partition(len(client_pool), num_clients, cfg.seed)
    else:
        parts = dirichlet_partition(labels[client_pool], num_clients, cfg.dirichlet_alpha, cfg.seed)
    clients = []
    for client_id, part in enumerate(parts):
        idx = np.random.default_rng(cfg.seed + 1 + client_id).permutation(client_pool[part])
        n_val = int(round(len(idx) * cfg.client_val_fraction))
        train_idx = idx[n_val:]
        if cfg.max_client_examples:
            train_idx = train_idx[: cfg.max_client_examples]
        clients.append(ClientSplit(train=pool.select(train_idx), val=pool.select(idx[:n_val])))
    return TaskSplits(task=task, test=pool.select(test_idx), public=pool.select(public_idx), clients=clients)

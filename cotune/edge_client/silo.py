"""One silo's SLM and private data, kept in memory across rounds; Flower-free so baselines reuse it."""

from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from cotune.config.schema import CotuneConfig
from cotune.data import TaskSplits, build_splits
from cotune.data.tasks import ClassificationTask
from cotune.edge_client.adapters import adapter_state, attach_adapter, load_adapter_state
from cotune.edge_client.evaluate import label_word_accuracy
from cotune.edge_client.trainer import TrainResult, sample_batches, steps_for, train_steps
from cotune.models import resolve_model
from cotune.quantization.loading import load_causal_lm


@dataclass
class SLM:
    """An SLM with its adapter attached, as silos and the server both hold it."""

    model: torch.nn.Module
    tokenizer: AutoTokenizer

    @classmethod
    def load(cls, cfg: CotuneConfig) -> "SLM":
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        path = resolve_model(cfg.models.slm, cfg.models.cache_dir)
        base = load_causal_lm(
            path, cfg.quantization.slm_load, cfg.quantization.compute_dtype, cfg.quantization.double_quant
        )
        torch.manual_seed(cfg.train.seed)  # identical adapter init in every silo and on the server
        return cls(attach_adapter(base, cfg.lora, cfg.train.gradient_checkpointing), AutoTokenizer.from_pretrained(path))

    def state(self) -> dict[str, np.ndarray]:
        return adapter_state(self.model)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        load_adapter_state(self.model, state)

    def accuracy(self, task: ClassificationTask, dataset: Dataset, cfg: CotuneConfig) -> float:
        return label_word_accuracy(
            self.model, self.tokenizer, task, dataset, cfg.train.eval_batch_size, cfg.train.max_length
        )

    def train(self, task: ClassificationTask, dataset: Dataset, cfg: CotuneConfig, seed: int, desc: str) -> TrainResult:
        t = cfg.train
        torch.manual_seed(seed)  # dropout too: a resumed round replays exactly
        batches = sample_batches(self.tokenizer, task, dataset, t.batch_size, t.max_length, seed)
        steps = steps_for(len(dataset), t.steps, t.epochs, t.batch_size, t.grad_accum)
        return train_steps(
            self.model, batches, steps, t.lr, t.weight_decay, t.grad_accum, progress=cfg.run.progress, desc=desc
        )


def round_seed(cfg: CotuneConfig, partition_id: int, server_round: int) -> int:
    """Batch-order seed of a silo's round; local-only baselines reuse it so both see the same batches."""
    return cfg.train.seed + 1000 * (partition_id + 1) + server_round


class Silo:
    """A silo = partition `partition_id` of the task, and its SLM. Its data never leaves this object."""

    def __init__(
        self, cfg: CotuneConfig, partition_id: int, slm: SLM | None = None, splits: TaskSplits | None = None
    ) -> None:
        """`slm` and `splits` may be shared by the silos one process simulates; each sets its own state."""
        splits = splits or build_splits(cfg.data, cfg.clients.num_clients)
        if not 0 <= partition_id < len(splits.clients):
            raise ValueError(f"partition-id {partition_id} outside 0..{len(splits.clients) - 1}")
        self.cfg, self.partition_id, self.task = cfg, partition_id, splits.task
        self.train_data = splits.clients[partition_id].train
        self.val_data = splits.clients[partition_id].val
        self.slm = slm or SLM.load(cfg)

    def train_round(self, global_state: dict[str, np.ndarray], server_round: int) -> TrainResult:
        self.slm.set_state(global_state)
        seed = round_seed(self.cfg, self.partition_id, server_round)
        return self.slm.train(self.task, self.train_data, self.cfg, seed, f"silo {self.partition_id} r{server_round}")

    def evaluate(self, global_state: dict[str, np.ndarray]) -> float:
        self.slm.set_state(global_state)
        return self.slm.accuracy(self.task, self.val_data, self.cfg)

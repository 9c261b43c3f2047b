"""One silo's SLM and private data, kept in memory across rounds; Flower-free so baselines reuse it."""

import numpy as np
from datasets import Dataset

from cotune.config.schema import CotuneConfig
from cotune.data import TaskSplits, build_splits
from cotune.data.mixing import mix_in
from cotune.edge_client.adapted_lm import AdaptedLM
from cotune.edge_client.trainer import TrainResult


def round_seed(cfg: CotuneConfig, partition_id: int, server_round: int) -> int:
    """Batch-order seed of a silo's round; local-only baselines reuse it so both see the same batches."""
    return cfg.train.seed + 1000 * (partition_id + 1) + server_round


class Silo:
    """A silo = partition `partition_id` of the task, and its SLM. Its data never leaves this object."""

    def __init__(
        self, cfg: CotuneConfig, partition_id: int, slm: AdaptedLM | None = None, splits: TaskSplits | None = None
    ) -> None:
        """`slm` and `splits` may be shared by the silos one process simulates; each sets its own state."""
        splits = splits or build_splits(cfg.data, cfg.clients.num_clients)
        if not 0 <= partition_id < len(splits.clients):
            raise ValueError(f"partition-id {partition_id} outside 0..{len(splits.clients) - 1}")
        self.cfg, self.partition_id, self.task = cfg, partition_id, splits.task
        self.train_data = splits.clients[partition_id].train
        self.val_data = splits.clients[partition_id].val
        self.slm = slm or AdaptedLM.load(cfg)

    def train_round(
        self, global_state: dict[str, np.ndarray], server_round: int, synthetic: Dataset | None = None
    ) -> TrainResult:
        """Local training from the global adapter; CrossLM's synthetic samples, if any, join the private data."""
        self.slm.set_state(global_state)
        seed = round_seed(self.cfg, self.partition_id, server_round)
        data = mix_in(self.train_data, synthetic, self.cfg.crosslm.synthetic_share, seed)
        return self.slm.train(self.task, data, self.cfg, seed, f"silo {self.partition_id} r{server_round}")

    def score(self, texts: list[str], labels: list[int], local_state: dict[str, np.ndarray]) -> np.ndarray:
        """CrossLM: this silo's SLM, as trained here this round, rates each sample by P(intended label)."""
        self.slm.set_state(local_state)
        probs = self.slm.label_probabilities(self.task, texts, self.cfg)
        return probs[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]

    def evaluate(self, global_state: dict[str, np.ndarray]) -> float:
        self.slm.set_state(global_state)
        return self.slm.accuracy(self.task, self.val_data, self.cfg)

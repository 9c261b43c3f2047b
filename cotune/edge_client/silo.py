"""One silo's SLM and private data, kept in memory across rounds; Flower-free so baselines reuse it."""

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
from datasets import Dataset

from cotune.config.schema import CotuneConfig
from cotune.data import TaskSplits, build_splits
from cotune.data.encoding import pretokenize
from cotune.lm.adapted_lm import AdaptedLM
from cotune.lm.trainer import TrainResult
from cotune.memo import Memo, fingerprint

MixIn = Callable[[Dataset, Dataset, float, int], Dataset]  # (private, shared, share, seed) -> training data


def round_seed(cfg: CotuneConfig, partition_id: int, server_round: int) -> int:
    """Batch-order seed of a silo's round; local-only baselines reuse it so both see the same batches."""
    return cfg.train.seed + 1000 * (partition_id + 1) + server_round


class Silo:
    """A silo = partition `partition_id` of the task, and its SLM. Its data never leaves this object."""

    def __init__(
        self,
        cfg: CotuneConfig,
        partition_id: int,
        slm: AdaptedLM | None = None,
        splits: TaskSplits | None = None,
        mix_in: MixIn | None = None,
    ) -> None:
        """`slm` and `splits` may be shared by the silos one process simulates; each sets its own state.

        `mix_in` joins samples the server shares (CrossLM's synthetic set) to the private data, making up
        `crosslm.synthetic_share` of it; a silo without one accepts none."""
        splits = splits or build_splits(cfg.data, cfg.clients.num_clients)
        if not 0 <= partition_id < len(splits.clients):
            raise ValueError(f"partition-id {partition_id} outside 0..{len(splits.clients) - 1}")
        self.cfg, self.partition_id, self.task, self.mix_in = cfg, partition_id, splits.task, mix_in
        self.slm = slm or AdaptedLM.load(cfg)
        self.train_data = self._tokenized(splits.clients[partition_id].train)  # once, not per round or batch
        self.val_data = splits.clients[partition_id].val

    def _tokenized(self, data: Dataset) -> Dataset:
        return pretokenize(self.slm.tokenizer, self.task, data, self.cfg.train.max_length)

    def train_round(
        self, global_state: dict[str, np.ndarray], server_round: int, synthetic: Dataset | None = None
    ) -> TrainResult:
        """Local training from the global adapter; shared `synthetic` samples, if any, join the private data.

        With `run.reuse_dir` set, an update this silo already computed from the same adapter, data, seeds and
        settings (in another run of the same job) is read back instead of trained again."""
        memo, key = None, None
        if self.cfg.run.reuse_dir:
            memo = Memo(Path(self.cfg.run.reuse_dir) / "silo_updates")
            samples = (list(synthetic["text"]), list(synthetic["label"])) if synthetic is not None else None
            key = fingerprint(self._training_facts(), self.partition_id, server_round, samples, global_state)
            if (hit := memo.arrays(key)) is not None:
                arrays, facts = hit
                self.slm.set_state(arrays)
                return TrainResult(**{**facts, "reused": True})
        self.slm.set_state(global_state)
        seed = round_seed(self.cfg, self.partition_id, server_round)
        data = self.train_data
        if synthetic is not None and len(synthetic):
            if self.mix_in is None:
                raise ValueError(f"silo {self.partition_id} got {len(synthetic)} shared samples but no mix_in")
            data = self.mix_in(data, self._tokenized(synthetic), self.cfg.crosslm.synthetic_share, seed)
        result = self.slm.train(self.task, data, self.cfg, seed, f"silo {self.partition_id} r{server_round}")
        if memo is not None:
            memo.put_arrays(key, self.slm.state(), dataclasses.asdict(result))
        return result

    def _training_facts(self) -> dict:
        """Every setting a local update depends on (not the algorithm's server step, which comes after it)."""
        c = self.cfg
        return {
            "models": dataclasses.asdict(c.models), "data": dataclasses.asdict(c.data), "silos": c.clients.num_clients,
            "lora": dataclasses.asdict(c.lora), "train": dataclasses.asdict(c.train),
            "quantization": dataclasses.asdict(c.quantization), "synthetic_share": c.crosslm.synthetic_share,
        }

    def evaluate(self, global_state: dict[str, np.ndarray]) -> float:
        self.slm.set_state(global_state)
        return self.slm.accuracy(self.task, self.val_data, self.cfg)

"""The cloud side of a round, after FedAvg: FedCoLLM mutual distillation and the CrossLM step.

Holds what the server keeps besides the global SLM adapter — the LLM with its adapter, the generation engine
that serves it, and the shared synthetic set — and checkpoints and restores all of it with the round.
"""

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from flwr.serverapp import Grid

from cotune.algorithms.crosslm.feedback import label_agreement
from cotune.algorithms.crosslm.generation import SampleFilters, generate_synthetic, planned_tokens, round_sampling
from cotune.algorithms.crosslm.step import CrossLMStep, read_kept
from cotune.algorithms.fedcollm.mutual import encode_public_split, mutual_distillation, split_public
from cotune.config import CotuneConfig
from cotune.config.algorithms import ALGORITHMS
from cotune.data import TaskSplits
from cotune.data.encoding import label_token_ids
from cotune.lm.adapted_lm import AdaptedLM
from cotune.lm.evaluate import label_word_accuracy
from cotune.federation.evaluation import reuse_memo, slm_test_accuracy
from cotune.federation.outputs import RunOutputs
from cotune.federation.queries import ask_scores
from cotune.models import resolve_model
from cotune.lm.adapter_folder import load_adapter_tensors
from cotune.server_vllm.engine import GenerationEngine, open_engine

log = logging.getLogger(__name__)
State = dict[str, np.ndarray]


def llm_adapter_name(server_round: int) -> str:
    return f"llm-r{server_round}"


class CloudSide:
    def __init__(
        self,
        cfg: CotuneConfig,
        out: RunOutputs,
        splits: TaskSplits,
        slm: AdaptedLM,
        engine: GenerationEngine | None = None,
    ):
        """`engine`, if given, is shared with other runs of the same job and stays open after this one."""
        self.cfg, self.out, self.splits, self.slm, self.metrics = cfg, out, splits, slm, out.metrics
        algorithm = ALGORITHMS[cfg.run.algorithm]
        self.kd, self.crosslm = algorithm.distills, algorithm.crosslm
        self.llm = AdaptedLM.load(cfg, "llm") if algorithm.uses_llm else None
        self.synthetic = Dataset.from_dict({"text": [], "label": []})
        self.engine, self.owns_engine = engine, engine is None
        self.grid: Grid | None = None
        self.crosslm_step: CrossLMStep | None = None
        if self.crosslm:
            self.crosslm_step = CrossLMStep(
                cfg.crosslm,
                self.llm,
                generate=self._generate,
                ask_scores=lambda texts, labels: ask_scores(self.grid, self.cfg, texts, labels),
                batch_size=cfg.train.batch_size,
                max_length=cfg.train.max_length,
                task=splits.task,
            )

    def llm_accuracy(self) -> float:
        return self.llm.accuracy(self.splits.task, self.splits.test, self.cfg)

    def step(self, server_round: int, state: State) -> State:
        """FedCoLLM and CrossLM, in `crosslm.position`'s order, on the freshly averaged SLM adapter; returns what
        silos get next round."""
        crosslm_first = self.crosslm and self.cfg.crosslm.position == "before_fedcollm"
        if crosslm_first:
            self.slm.set_state(state)
            self._crosslm(server_round)
        if self.kd:
            state = self._distill(server_round, state)
        if self.crosslm and not crosslm_first:
            self.slm.set_state(state)
            self._crosslm(server_round)
        return state

    def _distill(self, server_round: int, state: State) -> State:
        self.slm.set_state(state)
        c, task = self.cfg.fedcollm, self.splits.task
        public, holdout = split_public(self.splits.public, c.holdout_size, self.cfg.data.seed)
        batches = encode_public_split(
            self.slm.tokenizer, task, public, c.batch_size, self.cfg.train.max_length,
            seed=self.cfg.data.seed + server_round,
        )
        t = self.cfg.train

        def holdout_accuracy(model: torch.nn.Module) -> float:
            return label_word_accuracy(model, self.slm.tokenizer, task, holdout, t.eval_batch_size, t.max_length)

        torch.manual_seed(self.cfg.train.seed + server_round)  # LoRA dropout: a resumed round replays exactly
        result = mutual_distillation(
            self.slm.model, self.llm.model, batches, c, label_token_ids(self.slm.tokenizer, task),
            progress=self.cfg.run.progress, holdout_accuracy=holdout_accuracy if len(holdout) else None,
        )
        for direction in ("llm_to_slm", "slm_to_llm"):
            self.metrics.time_row(f"distill_{direction}", result[f"{direction}_seconds"], server_round)
            if f"{direction}_holdout_seconds" in result:
                self.metrics.time_row("distill_holdout_check", result[f"{direction}_holdout_seconds"], server_round)
        self.metrics.write({"round": server_round, "kind": "fedcollm", **result})
        return self.slm.state()

    def _crosslm(self, server_round: int) -> None:
        if self.engine is None:
            llm_dir = resolve_model(self.cfg.models.llm, self.cfg.models.cache_dir)
            with self.metrics.timed("engine_start", server_round):
                planned = planned_tokens(self.cfg.crosslm, len(self.splits.task.labels), self.cfg.rounds.num_rounds)
                self.engine = open_engine(self.cfg.server, llm_dir, self.out.logs, planned_tokens=planned)
        self._publish_llm_adapter(server_round)
        # In-process sampling (HF engine) and the LLM step's dropout draw from torch's RNG: seeded per round, so a
        # resumed round replays exactly. vLLM samples in its own process, seeded once per server start.
        torch.manual_seed(self.cfg.server.seed + server_round)
        outcome = self.crosslm_step(server_round)
        self.synthetic = outcome.synthetic
        for phase in ("generate", "score", "llm_update"):
            if f"seconds_{phase}" in outcome.metrics:
                self.metrics.time_row(f"crosslm_{phase}", outcome.metrics[f"seconds_{phase}"], server_round)
        with self.metrics.timed("crosslm_fidelity", server_round):
            fidelity = self._label_fidelity(outcome.synthetic)
        probe = {}
        if self.cfg.crosslm.probe_steps and len(outcome.synthetic):
            with self.metrics.timed("crosslm_probe", server_round):
                probe = self._synthetic_probe(outcome.synthetic, server_round)
        self.metrics.write({"round": server_round, "kind": "crosslm", **outcome.metrics, **fidelity, **probe})

    def _synthetic_probe(self, kept: Dataset, server_round: int) -> dict[str, float]:
        """The round's global SLM's test accuracy without and with `crosslm.probe_steps` steps on the kept samples
        alone: what they would do to it, measured on a copy (the global adapter is restored). Without them is
        the round's own central evaluation, computed here first and read back there (the job's memo), when CrossLM
        runs last in the round; before FedCoLLM it is the averaged SLM's, one evaluation more."""
        state = self.slm.state()
        without = slm_test_accuracy(self.slm, self.splits, self.cfg, reuse_memo(self.cfg))
        train = dataclasses.replace(self.cfg.train, steps=self.cfg.crosslm.probe_steps, epochs=0.0)
        probe_cfg = dataclasses.replace(self.cfg, train=train)
        self.slm.train(self.splits.task, kept.select_columns(["text", "label"]), probe_cfg, train.seed + server_round,
                       "synthetic probe")
        with_them = self.slm.accuracy(self.splits.task, self.splits.test, self.cfg)
        self.slm.set_state(state)
        return {"slm_accuracy_without_synthetic": without, "slm_accuracy_with_synthetic": with_them}

    def _label_fidelity(self, kept: Dataset) -> dict[str, float]:
        """Do the kept samples carry the label they claim? The updated LLM's and the global SLM's agreement."""
        if len(kept) == 0:
            return {}
        return {
            f"{name}_agrees_with_label": label_agreement(lm, self.splits.task, kept, self.cfg)
            for name, lm in (("llm", self.llm), ("slm", self.slm))
        }

    def _generate(self, server_round: int) -> Dataset:
        """CrossLM's generation through the round's LLM adapter, published by `_publish_llm_adapter`."""
        c = self.cfg.crosslm
        return generate_synthetic(
            self.engine, self.splits.task, round_sampling(c), SampleFilters.of(c), llm_adapter_name(server_round),
            round_index=server_round,
        )

    def _publish_llm_adapter(self, server_round: int) -> None:
        """The LLM adapter as a PEFT folder the engine loads live (no restart), named by round."""
        folder = self.out.llm_adapters / f"round_{server_round:03d}"
        self.llm.model.save_pretrained(folder)
        self.engine.load_adapter(llm_adapter_name(server_round), folder)

    def save(self, folder: Path) -> None:
        if self.llm is not None:
            self.llm.model.save_pretrained(folder / "llm_adapter")
        if self.crosslm:
            self.synthetic.to_json(folder / "synthetic.jsonl")

    def restore(self, folder: Path) -> None:
        if self.llm is not None:
            self.llm.set_state(load_adapter_tensors(folder, "llm_adapter"))
        if self.crosslm and (folder / "synthetic.jsonl").is_file():
            self.synthetic = read_kept(folder / "synthetic.jsonl")

    def close(self) -> None:
        if self.engine is not None and self.owns_engine:
            self.engine.close()

"""One CrossLM round on the server: generate, collect silo scores, reward the LLM, keep the best samples.

CrossLM (arXiv:2312.05842), method, steps 1-4 in order, after FedAvg of the silos' SLM adapters; what it keeps
is step 5's data next round. Engine- and transport-agnostic: generation comes in as a callable returning a Dataset
(text, label, prompt columns, as `generation.generate_synthetic` produces), scores come from `ask_scores` (Flower
query messages, `cotune.federation.queries`). Built once per run; each call is one round.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset

from cotune.algorithms.crosslm.reward import reward_update
from cotune.algorithms.crosslm.scores import combine_scores, score_problem, select_best, to_rewards
from cotune.config.crosslm import CrossLMConfig
from cotune.data.tasks import ClassificationTask
from cotune.lm.adapted_lm import AdaptedLM

log = logging.getLogger(__name__)
AskScores = Callable[[list[str], list[int]], dict[int, list[float]]]


@dataclass
class CrossLMOutcome:
    synthetic: Dataset  # accepted samples, best first: the silos' shared training data next round
    metrics: dict


def _empty() -> Dataset:
    return Dataset.from_dict({"text": [], "label": []})


def read_kept(path: Path) -> Dataset:
    """A kept set saved with `Dataset.to_json`. A round that keeps nothing (a label with no accepted sample under
    `balance_labels`) saves an empty file, which the JSON reader rejects: that is the empty set."""
    return Dataset.from_json(str(path)) if path.stat().st_size else _empty()


class CrossLMStep:
    def __init__(
        self,
        cfg: CrossLMConfig,
        llm: AdaptedLM,
        generate: Callable[[int], Dataset],
        ask_scores: AskScores,
        batch_size: int = 8,
        max_length: int = 128,
        task: ClassificationTask | None = None,
    ) -> None:
        """`task` is needed for `llm_objective = 'generation_and_label'` (the labelled task prompts)."""
        if cfg.llm_objective == "generation_and_label" and task is None:
            raise ValueError("crosslm.llm_objective = 'generation_and_label' needs the task to label the samples with")
        self.cfg, self.llm, self.generate, self.ask_scores = cfg, llm, generate, ask_scores
        self.batch_size, self.max_length = batch_size, max_length
        self.task = task if cfg.llm_objective == "generation_and_label" else None

    def __call__(self, server_round: int) -> CrossLMOutcome:
        """Round `server_round`: a skipped step (no usable sample or score) keeps no sample and leaves the LLM."""
        start = time.perf_counter()
        samples = self.generate(server_round)
        metrics: dict = {"generated": len(samples), "seconds_generate": round(time.perf_counter() - start, 3)}
        if len(samples) == 0:
            log.warning("round %d: generation yielded no usable sample; CrossLM step skipped", server_round)
            return CrossLMOutcome(_empty(), {**metrics, "skipped": "no usable sample"})
        texts, labels = list(samples["text"]), list(samples["label"])
        start = time.perf_counter()
        replies = self.ask_scores(texts, labels)
        metrics["seconds_score"] = round(time.perf_counter() - start, 3)
        metrics["bytes_down_samples"] = len(replies) * sum(len(t.encode()) + 8 for t in texts)
        metrics["bytes_up_scores"] = 8 * sum(len(s) for s in replies.values())
        valid = {}
        for silo, scores in replies.items():
            problem = score_problem(scores, len(texts))
            if problem:
                log.warning("round %d: scores of silo %s excluded: %s", server_round, silo, problem)
                metrics.setdefault("excluded_silos", {})[str(silo)] = problem
            else:
                valid[silo] = np.asarray(scores, dtype=np.float64)
        if not valid:
            log.warning("round %d: no silo returned usable scores; CrossLM step skipped", server_round)
            return CrossLMOutcome(_empty(), {**metrics, "skipped": "no usable scores"})
        consensus = combine_scores(valid, self.cfg.aggregate, self.cfg.trim_fraction)
        groups = np.asarray(labels) if self.cfg.reward_baseline == "per_label" else None
        rewards = to_rewards(consensus, self.cfg.accept_threshold, groups)
        metrics.update(
            scoring_silos=len(valid),
            mean_score=float(rewards.consensus.mean()),
            acceptance_rate=float(rewards.accepted.mean()),
            label_agreement=float((rewards.consensus > 0.5).mean()),
        )
        if self.cfg.llm_steps and rewards.weights.sum() > 0:
            start = time.perf_counter()
            result = reward_update(
                self.llm, samples, rewards.weights, self.cfg.llm_steps, self.cfg.llm_lr, self.batch_size,
                self.max_length, seed=server_round, task=self.task,
            )
            metrics.update(llm_reward_loss=result.mean_loss, seconds_llm_update=round(time.perf_counter() - start, 3))
        best = select_best(rewards, self.cfg.max_synthetic, np.asarray(labels) if self.cfg.balance_labels else None)
        metrics["kept"] = int(len(best))
        kept = samples.select(best).add_column("score", rewards.consensus[best].tolist())
        return CrossLMOutcome(kept, metrics)

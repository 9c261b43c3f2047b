"""CrossLM's server-side arithmetic: validate silos' score vectors, combine them, and turn them into rewards.

CrossLM (arXiv:2312.05842), method, step 3: the server combines the SLMs' feedback into one reward per sample
and keeps the samples they accept. Only these numbers come back from the silos: one score in [0, 1] per
synthetic sample, per silo (`feedback.intended_label_probability`).
"""

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


def score_problem(scores: list[float] | np.ndarray, expected_len: int) -> str | None:
    """Why a silo's score vector cannot be used, or None."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or len(values) != expected_len:
        return f"expected {expected_len} scores, got {values.shape}"
    if not np.isfinite(values).all():
        return f"{int((~np.isfinite(values)).sum())} scores are NaN or infinite"
    if (values < 0).any() or (values > 1).any():
        return f"scores outside [0, 1] (min {values.min():.3g}, max {values.max():.3g})"
    return None


def combine_scores(per_silo: dict[int, np.ndarray], method: str, trim_fraction: float) -> np.ndarray:
    """Consensus score per sample: mean, or trimmed mean so that no single silo decides alone."""
    stacked = np.sort(np.stack(list(per_silo.values())), axis=0)
    cut = int(trim_fraction * len(stacked)) if method == "trimmed_mean" else 0
    if method == "trimmed_mean" and len(stacked) >= 3:
        cut = max(cut, 1)  # with 3+ silos, always drop the extremes: one silo alone never sets the score
    return stacked[cut : len(stacked) - cut].mean(axis=0)


@dataclass
class Rewards:
    consensus: np.ndarray  # combined score per sample
    weights: np.ndarray  # reward-weighted likelihood weight per sample (advantage over the baseline, >= 0)
    accepted: np.ndarray  # bool per sample: the consensus does not contradict the intended label
    baseline: np.ndarray  # per sample: the mean consensus of its group (the whole batch without groups)


def to_rewards(consensus: np.ndarray, accept_threshold: float, groups: np.ndarray | None = None) -> Rewards:
    """Advantage over a mean baseline, clipped at 0: the LLM is pulled toward generations the silos rate above
    average and is never pushed down an unbounded unlikelihood slope by the rest.

    With `groups` (each sample's intended label) the baseline is its group's mean, as GRPO and RLOO compare a
    sample with the others drawn for the same prompt: silos leaning to one label rate all of that label's samples
    high, and a batch baseline would then reward the label rather than the better samples of each label."""
    baseline = np.full(len(consensus), consensus.mean() if len(consensus) else 0.0)
    if groups is not None:
        for group in np.unique(groups):
            baseline[groups == group] = consensus[groups == group].mean()
    weights = np.clip(consensus - baseline, 0.0, None)
    return Rewards(consensus, weights, consensus >= accept_threshold, baseline)


def select_best(rewards: Rewards, limit: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Indices of accepted samples, highest consensus first, at most `limit`.

    With `labels` (each sample's intended label), as many per generated label as the least accepted one has (at
    most `limit` // labels each): SLMs that lean to one label accept mostly that label's samples, and a one-sided set
    teaches the silos a label prior rather than the task (seen in the per-round probe: 16 of 16 kept samples one
    label, 4 steps on them took the SLM to 50%)."""
    accepted = np.flatnonzero(rewards.accepted)
    order = accepted[np.argsort(-rewards.consensus[accepted], kind="stable")]
    if labels is None:
        return order[:limit]
    by_label = [order[labels[order] == c] for c in np.unique(labels)]  # each label's accepted, best first
    per_label = min(limit // len(by_label), *(len(ranked) for ranked in by_label))
    return order[np.isin(order, np.concatenate([ranked[:per_label] for ranked in by_label]))]

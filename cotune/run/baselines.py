"""Baselines measured by the same job on the same test: each silo training alone with the federated budget, and
the LLM trained on the server's public split alone (what the LLM would gain without any silo)."""

import itertools
import json
import logging
from pathlib import Path

import torch

from cotune.algorithms.fedcollm.mutual import encode_public_split, split_public
from cotune.config import CotuneConfig
from cotune.data import TaskSplits
from cotune.lm.adapted_lm import AdaptedLM
from cotune.edge_client.silo import Silo
from cotune.lm.trainer import train_steps
from cotune.federation.records import from_record, to_record
from cotune.run.folder import BASELINES, LLM_BASELINE

log = logging.getLogger(__name__)


def local_only(cfg: CotuneConfig, splits: TaskSplits, run_dir: Path) -> dict[str, float]:
    """Test accuracy per silo after `num_rounds` local rounds without federation (same init, seeds, steps).

    Each silo starts from the adapter the federated silos received in round 1 (the initial adapter after the
    wire's rounding), so round 1 is the very update a federated run computed, read back from the job's reuse
    folder rather than trained again."""
    path = run_dir / BASELINES
    if path.is_file():
        return json.loads(path.read_text())["local_only"]
    slm = AdaptedLM.load(cfg)
    initial = from_record(to_record(slm.state(), cfg.quantization.wire))
    results = {}
    for pid in range(len(splits.clients)):
        silo = Silo(cfg, pid, slm, splits)
        state = initial
        for server_round in range(1, cfg.rounds.num_rounds + 1):
            silo.train_round(state, server_round)
            state = {k: v.copy() for k, v in slm.state().items()}
        results[str(pid)] = slm.accuracy(splits.task, splits.test, cfg)
        log.info("local-only silo %d: test accuracy %.3f", pid, results[str(pid)])
    path.write_text(json.dumps({"local_only": results}, indent=2))
    return results


def llm_public_steps(cfg: CotuneConfig) -> int:
    """The steps co-tuning gives the LLM on the public split: the SLM -> LLM direction of every round."""
    f = cfg.fedcollm
    return cfg.rounds.num_rounds * (f.llm_steps or f.steps)


def llm_public_only(cfg: CotuneConfig, splits: TaskSplits, run_dir: Path) -> dict[str, float]:
    """The LLM after training on the public split alone (CE only) with co-tuning's step count, batches and lr:
    a gain of co-tuning's LLM over this one is what the silos taught it, not the public labels."""
    path = run_dir / LLM_BASELINE
    if path.is_file():
        return json.loads(path.read_text())
    llm = AdaptedLM.load(cfg, "llm")
    f, t = cfg.fedcollm, cfg.train
    steps_per_round = f.llm_steps or f.steps
    public, _ = split_public(splits.public, f.holdout_size, cfg.data.seed)  # the examples co-tuning distils on
    for server_round in range(1, cfg.rounds.num_rounds + 1):
        batches = encode_public_split(
            llm.tokenizer, splits.task, public, f.batch_size, t.max_length, seed=cfg.data.seed + server_round
        )
        torch.manual_seed(t.seed + server_round)
        train_steps(llm.model, itertools.cycle(batches[:steps_per_round]), steps_per_round, f.lr, desc="llm public-only")
    result = {"test_accuracy": llm.accuracy(splits.task, splits.test, cfg), "steps": llm_public_steps(cfg)}
    log.info("LLM trained on the public split alone: test accuracy %.3f", result["test_accuracy"])
    path.write_text(json.dumps(result, indent=2))
    return result

"""Central evaluations shared by the server loop and the cloud step, each done once per job for a given adapter:
the job's runs (and a CrossLM probe that asks for the round's accuracy early) read the result back."""

import dataclasses
from pathlib import Path

from cotune.config import CotuneConfig
from cotune.data import TaskSplits
from cotune.lm.adapted_lm import AdaptedLM
from cotune.memo import Memo, fingerprint


def reuse_memo(cfg: CotuneConfig) -> Memo | None:
    return Memo(Path(cfg.run.reuse_dir) / "evaluations") if cfg.run.reuse_dir else None


def eval_facts(cfg: CotuneConfig) -> dict:
    """What an evaluation's result depends on besides the model's adapter."""
    return {
        "models": dataclasses.asdict(cfg.models), "quantization": dataclasses.asdict(cfg.quantization),
        "data": dataclasses.asdict(cfg.data), "silos": cfg.clients.num_clients, "lora": dataclasses.asdict(cfg.lora),
        "eval": [cfg.train.eval_batch_size, cfg.train.max_length],
    }


def slm_test_accuracy(slm: AdaptedLM, splits: TaskSplits, cfg: CotuneConfig, memo: Memo | None) -> float:
    """The SLM's held-out accuracy with its current adapter; the same adapter is evaluated once per job."""
    compute = lambda: slm.accuracy(splits.task, splits.test, cfg)  # noqa: E731
    if memo is None:
        return compute()
    return memo.value(fingerprint("slm-test", eval_facts(cfg), slm.state()), compute)[0]

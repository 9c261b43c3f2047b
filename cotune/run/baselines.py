"""Baselines measured by the same job on the same test: each silo training alone with the federated budget."""

import json
import logging
from pathlib import Path

from cotune.config import CotuneConfig
from cotune.data import TaskSplits
from cotune.edge_client.adapted_lm import AdaptedLM
from cotune.edge_client.silo import round_seed

log = logging.getLogger(__name__)
BASELINES_FILE = "baselines.json"


def local_only(cfg: CotuneConfig, splits: TaskSplits, run_dir: Path) -> dict[str, float]:
    """Test accuracy per silo after `num_rounds` local rounds without federation (same init, seeds, steps)."""
    path = run_dir / BASELINES_FILE
    if path.is_file():
        return json.loads(path.read_text())["local_only"]
    slm = AdaptedLM.load(cfg)
    initial = slm.state()
    results = {}
    for pid, client in enumerate(splits.clients):
        slm.set_state(initial)
        for server_round in range(1, cfg.rounds.num_rounds + 1):
            slm.train(splits.task, client.train, cfg, round_seed(cfg, pid, server_round), f"local-only {pid} r{server_round}")
        results[str(pid)] = slm.accuracy(splits.task, splits.test, cfg)
        log.info("local-only silo %d: test accuracy %.3f", pid, results[str(pid)])
    path.write_text(json.dumps({"local_only": results}, indent=2))
    return results

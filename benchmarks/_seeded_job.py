"""One seeded `cotune run` of a quality benchmark: the job at the benchmark's seed, test size and overrides, on a
quiet host, in its own run folder; what the benchmarks read back is that folder's `metrics.json`."""

import json
from pathlib import Path

from _host import loadavg, wait_for_quiet

EARLIER_RUNS = (Path("runs") / "cotune_quality", Path("runs") / "crosslm_label_balance")


def reuse_override(seed: int) -> list[str]:
    """The round-1 silo updates and zero-shot evaluations of the seed's earlier benchmark runs, if this machine has
    them (a memo keyed by content: a miss recomputes, so a stale one costs time, never correctness)."""
    for earlier in EARLIER_RUNS:
        if (folder := (earlier / f"seed{seed}" / "reuse").resolve()).is_dir():
            return [f"run.reuse_dir='{folder}'"]
    return []


def run_seeded_job(seed: int, test_size: int, folder: Path, overrides: list[str]) -> tuple[dict, dict, object]:
    """(the job's metrics.json summary, the load average before/after, its resolved config). Export is off: the
    benchmarks measure accuracy, and the edge export has its own."""
    from cotune.config import load_config
    from cotune.run.job import run_job

    cfg = load_config(
        None,
        [
            f"data.seed={seed}", f"train.seed={seed}", f"data.test_size={test_size}", "export.enabled=false",
            "run.progress=false", *overrides, *reuse_override(seed),
        ],
    )
    load_before = wait_for_quiet()
    folder.mkdir(parents=True, exist_ok=True)
    run_job(cfg, folder)
    summary = json.loads((folder / "metrics.json").read_text())
    return summary, {"loadavg_before": load_before, "loadavg_after": loadavg()}, cfg

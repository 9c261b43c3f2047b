"""One seeded `cotune run` of a quality benchmark: the job at the benchmark's seed, test size and overrides, on a
quiet host, in its own run folder; what the benchmarks read back is that folder's `metrics.json`."""

import argparse
import json
import multiprocessing
from collections.abc import Callable
from pathlib import Path

from _host import loadavg, wait_for_quiet

COTUNE_ONLY = ["run.algorithm='cotune'", "run.compare=[]", "run.baselines=false"]
EARLIER_RUNS = tuple(Path("runs") / name for name in ("cotune_quality", "crosslm_label_balance", "distill_gate"))


def seeds_from_args(description: str) -> list[int]:
    """The `--seeds 0,1,2` every quality benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", default="0,1,2")
    return [int(s) for s in parser.parse_args().seeds.split(",")]


def quality_at_defaults(seeds: list[int]) -> tuple[dict, dict[int, dict]]:
    """`cotune_quality.json` and its entries by seed, checked to be measured at today's defaults (no overrides,
    CrossLM's settings as configured now): the arms read back from it stand for the current code."""
    from cotune_quality import RESULTS, crosslm_settings

    from cotune.config import load_config

    quality = json.loads(RESULTS.read_text())
    per_seed = {s["seed"]: s for s in quality["per_seed"]}
    if missing := [seed for seed in seeds if seed not in per_seed]:
        raise SystemExit(f"seeds {missing} lack entries in {RESULTS}: run benchmarks/cotune_quality.py for them first")
    defaults = crosslm_settings(load_config(None, []))
    other = [seed for seed in seeds if per_seed[seed].get("crosslm") != defaults]
    if quality.get("overrides") or other:
        raise SystemExit(
            f"{RESULTS} was not measured at today's defaults (overrides {quality.get('overrides')}; seeds {other} with "
            f"CrossLM settings other than {defaults}): re-run benchmarks/cotune_quality.py first"
        )
    return quality, per_seed


def reuse_override(seed: int) -> list[str]:
    """The round-1 silo updates and zero-shot evaluations of the seed's earlier benchmark runs, if this machine has
    them (a memo keyed by content: a miss recomputes, so a stale one costs time, never correctness)."""
    for earlier in EARLIER_RUNS:
        if (folder := (earlier / f"seed{seed}" / "reuse").resolve()).is_dir():
            return [f"run.reuse_dir='{folder}'"]
    return []


def run_job_apart(cfg, folder: Path) -> None:
    """`run_job` in a fresh process: what the job's in-process steps hold (the baselines' and the export's models)
    is freed when it ends, so a benchmark's later seeds start from the same memory as its first (three jobs in one
    process reached 17.9 GB, and Ray's memory monitor then killed the third job's silos)."""
    from cotune.run.job import run_job

    job = multiprocessing.get_context("spawn").Process(target=run_job, args=(cfg, folder), name=f"job {folder}")
    job.start()
    job.join()
    if job.exitcode != 0:
        raise SystemExit(f"the job in {folder} failed (exit code {job.exitcode}; its error is above)")


def run_seeded_job(seed: int, test_size: int, folder: Path, overrides: list[str]) -> tuple[dict, dict, object]:
    """(the job's metrics.json summary, the load average before/after, its resolved config). Export is off: the
    benchmarks measure accuracy, and the edge export has its own."""
    from cotune.config import load_config

    cfg = load_config(
        None,
        [
            f"data.seed={seed}", f"train.seed={seed}", f"data.test_size={test_size}", "export.enabled=false",
            "run.progress=false", *overrides, *reuse_override(seed),
        ],
    )
    load_before = wait_for_quiet()
    folder.mkdir(parents=True, exist_ok=True)
    run_job_apart(cfg, folder)
    summary = json.loads((folder / "metrics.json").read_text())
    return summary, {"loadavg_before": load_before, "loadavg_after": loadavg()}, cfg


def cotune_arm(summary: dict) -> dict:
    """What a benchmark keeps of a cotune-only job (`COTUNE_ONLY`): both models' test accuracy, the LLM's perplexity
    on the other-domain text, and the job's wall seconds."""
    return {
        "slm_accuracy": summary["slm_accuracy"]["cotune"],
        "llm_accuracy": summary["llm_accuracy"]["after"],
        "llm_generalization_ppl": summary["llm_generalization_ppl"],
        "wall_seconds": summary["wall_seconds"],
    }


def seed_result(
    folder: Path, done_name: str, seed: int, test_size: int, overrides: list[str],
    keep: Callable[[dict, object], dict],
) -> dict:
    """One seed of a benchmark arm: read back from `folder/done_name` if an earlier run left it (the benchmarks
    resume), else one seeded job whose `keep(summary, cfg)` is stored with the seed and the load average."""
    done = folder / done_name
    if done.is_file():
        return json.loads(done.read_text())
    summary, load, cfg = run_seeded_job(seed, test_size, folder, overrides)
    result = {"seed": seed, **keep(summary, cfg), "load": load}
    done.write_text(json.dumps(result, indent=2))
    return result

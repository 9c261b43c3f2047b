"""Does co-tuning make both sides better? The default job's models, data and budget over several seeds, with every
arm the claim is measured against, each seed a full `cotune run` (same splits, init and budget for every arm).

Arms, per seed (partition and training seeds both = the seed):
- SLM: zero-shot, local-only, fedavg, fedcollm, crosslm, cotune, and centralized (one SLM trained on the silos'
  pooled data with the federation's total silo steps);
- LLM: zero-shot, public-only (the public split alone, co-tuning's LLM steps, CE only), after co-tuning, and
  centralized (the pooled silo data, the same steps);
- the LLM's perplexity on other-domain text before and after.
Each arm's figure is `{mean, std, per_seed}`. Writes benchmarks/results/cotune_quality.json.
    .venv/bin/python benchmarks/cotune_quality.py [--seeds 0,1,2] [--test-size 500] [--compare fedavg,fedcollm,crosslm]
`--compare` names the federated arms besides cotune (fewer arms, shorter run: each is a full federation).
A seed already measured is read back, so the script can be resumed: from its run folder's quality.json, or, on a
fresh clone or machine, from the per-seed entries of the results JSON when they were measured with the same test size,
compared arms, overrides and CrossLM settings (`CROSSLM_SETTINGS`: a change of those defaults re-measures).
"""

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "cotune_quality.json"
RUNS = Path("runs") / "cotune_quality"
ALGORITHMS = ("fedavg", "fedcollm", "crosslm")
LLM_ARMS = ("zero_shot", "public_only", "after", "centralized")


def seed_config(seed: int, test_size: int, compare: list[str], overrides: list[str]):
    from cotune.config import load_config

    return load_config(
        None,
        [
            *overrides, f"data.seed={seed}", f"train.seed={seed}", f"data.test_size={test_size}",
            "run.algorithm='cotune'", f"run.compare={compare!r}", "run.baselines=true",
            "export.enabled=false", "run.progress=false",
        ],
    )


def pooled(splits):
    from datasets import concatenate_datasets

    return concatenate_datasets([c.train for c in splits.clients]).shuffle(seed=0)


def centralized_slm(cfg, splits) -> tuple[float, float]:
    """One SLM on the pooled silo data, with the federation's total silo steps: (test accuracy, seconds)."""
    import dataclasses

    from cotune.lm.adapted_lm import AdaptedLM

    start = time.perf_counter()
    steps = cfg.rounds.num_rounds * cfg.clients.num_clients * cfg.train.steps
    slm = AdaptedLM.load(cfg)
    central = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
    slm.train(splits.task, pooled(splits), central, cfg.train.seed, "centralized slm")
    return slm.accuracy(splits.task, splits.test, cfg), time.perf_counter() - start


def centralized_llm(cfg, splits) -> tuple[float, float]:
    """The LLM on the pooled silo data with co-tuning's LLM steps and lr (CE only): (test accuracy, seconds)."""
    from cotune.algorithms.fedcollm.mutual import encode_public_split
    from cotune.lm.adapted_lm import AdaptedLM
    from cotune.lm.trainer import train_steps
    from cotune.run.baselines import llm_public_steps

    start = time.perf_counter()
    llm = AdaptedLM.load(cfg, "llm")
    steps = llm_public_steps(cfg)
    data = pooled(splits)
    data = data.select(range(min(len(data), steps * cfg.fedcollm.batch_size)))
    batches = encode_public_split(llm.tokenizer, splits.task, data, cfg.fedcollm.batch_size, cfg.train.max_length)
    train_steps(llm.model, itertools.cycle(batches), steps, cfg.fedcollm.lr, desc="centralized llm")
    return llm.accuracy(splits.task, splits.test, cfg), time.perf_counter() - start


CROSSLM_SETTINGS = ("balance_labels", "reward_baseline", "llm_objective", "position")


def crosslm_settings(cfg) -> dict:
    """The CrossLM settings the other quality benchmarks compare against this one's arms, recorded with each seed
    (`crosslm_label_balance.py`: the label fixes; `crosslm_llm_update.py`: the LLM's reward step)."""
    return {name: getattr(cfg.crosslm, name) for name in CROSSLM_SETTINGS}


def measured_before(seed: int, cfg, compare: list[str], overrides: list[str]) -> dict | None:
    """The seed's entry in the results JSON, if that JSON was measured with the same settings."""
    if not RESULTS.is_file():
        return None
    previous = json.loads(RESULTS.read_text())
    same = (previous.get("test_size"), previous.get("compared"), previous.get("overrides")) == (
        cfg.data.test_size, compare, overrides)
    return next((s for s in previous.get("per_seed", [])
                 if same and s["seed"] == seed and s.get("crosslm") == crosslm_settings(cfg)), None)


def federation_seconds(folder: Path, algorithms) -> dict[str, float]:
    """Each algorithm's federation wall time in a job folder, from its `time` rows."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        algorithm: round(sum(r["seconds"] for r in rows if r.get("phase") == "federation"
                             and r.get("algorithm") == algorithm), 1)
        for algorithm in algorithms
    }


def measure_seed(seed: int, test_size: int, compare: list[str], overrides: list[str], wait_for_quiet, loadavg) -> dict:
    from _seeded_job import run_job_apart

    from cotune.data import build_splits

    folder = RUNS / f"seed{seed}"
    done = folder / "quality.json"
    cfg = seed_config(seed, test_size, compare, overrides)
    settings = crosslm_settings(cfg)
    if done.is_file():
        result = json.loads(done.read_text())
        if result.get("crosslm") != settings:  # its checkpoints would resume the old settings' job
            raise SystemExit(f"{folder} holds a run at CrossLM settings {result.get('crosslm')}, not today's "
                             f"{settings}: move it aside to re-measure")
        return result
    if (before := measured_before(seed, cfg, compare, overrides)) is not None:
        return before
    load_before = wait_for_quiet()
    folder.mkdir(parents=True, exist_ok=True)
    run_job_apart(cfg, folder)
    summary = json.loads((folder / "metrics.json").read_text())
    if failed := [r["round"] for r in summary["rounds"] if r.get("too_few")]:
        # e.g. Ray's memory monitor killing the silos' actors: every arm would read as the zero-shot SLM
        raise SystemExit(f"seed {seed}: rounds {failed} had too few silo updates ({folder}/metrics.json): not a "
                         "measurement; move the folder aside and re-run the seed")
    splits = build_splits(cfg.data, cfg.clients.num_clients)
    slm_central, slm_central_s = centralized_slm(cfg, splits)
    llm_central, llm_central_s = centralized_llm(cfg, splits)
    walls = {e["phase"]: e["seconds"] for e in summary["time"]}
    federations = federation_seconds(folder, ("cotune", *compare))
    result = {
        "seed": seed,
        "crosslm": settings,
        "slm_accuracy": {**summary["slm_accuracy"], "centralized": slm_central},
        "llm_accuracy": {**summary["llm_accuracy"], "centralized": llm_central},
        "llm_generalization_ppl": summary["llm_generalization_ppl"],
        "wall_seconds": {
            **federations, "local_only": walls.get("local_only"), "llm_public_only": walls.get("llm_public_only"),
            "slm_centralized": round(slm_central_s, 1), "llm_centralized": round(llm_central_s, 1),
            "job": summary["wall_seconds"],
        },
        "crosslm_rounds": [r.get("crosslm") for r in summary["rounds"] if "crosslm" in r],
        "distilled": [r.get("distilled") for r in summary["rounds"] if "distilled" in r],
        "load": {"loadavg_before": load_before, "loadavg_after": loadavg()},  # of the invocation that measured it
    }
    done.write_text(json.dumps(result, indent=2))
    return result


def stats(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "per_seed": values,
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _host import loadavg, wait_for_quiet

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--compare", default=",".join(ALGORITHMS))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    compare = [a for a in args.compare.split(",") if a]
    slm_arms = ("zero_shot", "local_only", *compare, "cotune", "centralized")
    per_seed = []
    for seed in seeds:
        per_seed.append(measure_seed(seed, args.test_size, compare, args.overrides, wait_for_quiet, loadavg))
    loads = [{"seed": s["seed"], **s["load"]} for s in per_seed if "load" in s]
    slm = {arm: stats([s["slm_accuracy"][arm] for s in per_seed]) for arm in slm_arms}
    llm = {arm: stats([s["llm_accuracy"][arm] for s in per_seed]) for arm in LLM_ARMS}
    ppl = {k: stats([s["llm_generalization_ppl"][k] for s in per_seed]) for k in ("before", "after")}
    gap = [s["slm_accuracy"]["cotune"] - s["slm_accuracy"]["fedavg"] for s in per_seed]
    result = {
        "seeds": seeds,
        "test_size": args.test_size,
        "compared": compare,
        "overrides": args.overrides,
        "slm_accuracy": slm,
        "llm_accuracy": llm,
        "llm_generalization_ppl": ppl,
        "goals": {
            "cotune_minus_local_only": round(slm["cotune"]["mean"] - slm["local_only"]["mean"], 4),
            "cotune_minus_fedavg": round(statistics.fmean(gap), 4),
            "cotune_at_least_fedavg_every_seed": all(g >= 0 for g in gap),
            "llm_after_minus_zero_shot": round(llm["after"]["mean"] - llm["zero_shot"]["mean"], 4),
            "llm_after_minus_public_only": round(llm["after"]["mean"] - llm["public_only"]["mean"], 4),
            "ppl_drift": round(ppl["after"]["mean"] / ppl["before"]["mean"] - 1, 4),
            "slm_cotune_over_centralized": round(slm["cotune"]["mean"] / slm["centralized"]["mean"], 4),
            "llm_after_over_centralized": round(llm["after"]["mean"] / llm["centralized"]["mean"], 4),
        },
        "wall_seconds": {arm: stats([s["wall_seconds"][arm] for s in per_seed])
                         for arm in per_seed[0]["wall_seconds"] if per_seed[0]["wall_seconds"][arm] is not None},
        "per_seed": per_seed,
        "load": loads,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("slm_accuracy", "llm_accuracy", "goals")}, indent=2))


if __name__ == "__main__":
    main()

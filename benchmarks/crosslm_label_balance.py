"""Do CrossLM's label fixes help? The quality benchmark's cotune arm re-run with `crosslm.balance_labels=true` and
`crosslm.reward_baseline='per_label'`, everything else the same (seed, splits, budget, 500-example balanced test).

Why: on the default settings the silos' SLMs lean to one label, accept mostly that label's synthetic samples, and
the LLM's reward-weighted step and the kept set follow them (README, "Co-tuning quality"). The two options keep a
label-balanced set and measure each sample's reward against its own label's mean.

The other arms (FedAvg, local-only, the default cotune, the LLM's zero-shot, public-only and after) are read from
`benchmarks/results/cotune_quality.json`, measured by `benchmarks/cotune_quality.py` on the same seeds and test:
run that first. Writes benchmarks/results/crosslm_label_balance.json.
    .venv/bin/python benchmarks/crosslm_label_balance.py [--seeds 0,1,2]
A seed whose run folder holds label_balance.json is read back, so the script can be resumed.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

QUALITY = Path(__file__).parent / "results" / "cotune_quality.json"
RESULTS = Path(__file__).parent / "results" / "crosslm_label_balance.json"
RUNS = Path("runs") / "crosslm_label_balance"
FIXES = ["crosslm.balance_labels=true", "crosslm.reward_baseline='per_label'"]


def measure_seed(seed: int, test_size: int, wait_for_quiet, loadavg) -> dict:
    from cotune.config import load_config
    from cotune.run.job import run_job

    folder = RUNS / f"seed{seed}"
    done = folder / "label_balance.json"
    if done.is_file():
        return json.loads(done.read_text())
    reuse = (Path("runs") / "cotune_quality" / f"seed{seed}" / "reuse").resolve()  # its round-1 silo updates
    cfg = load_config(
        None,
        [
            *FIXES, f"data.seed={seed}", f"train.seed={seed}", f"data.test_size={test_size}",
            "run.algorithm='cotune'", "run.compare=[]", "run.baselines=false", "export.enabled=false",
            "run.progress=false", *([f"run.reuse_dir='{reuse}'"] if reuse.is_dir() else []),
        ],
    )
    load_before = wait_for_quiet()
    folder.mkdir(parents=True, exist_ok=True)
    run_job(cfg, folder)
    summary = json.loads((folder / "metrics.json").read_text())
    result = {
        "seed": seed,
        "slm_accuracy": summary["slm_accuracy"]["cotune"],
        "llm_accuracy": summary["llm_accuracy"]["after"],
        "llm_generalization_ppl": summary["llm_generalization_ppl"],
        "crosslm_rounds": [r.get("crosslm") for r in summary["rounds"] if "crosslm" in r],
        "wall_seconds": summary["wall_seconds"],
        "load": {"loadavg_before": load_before, "loadavg_after": loadavg()},
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
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    quality = json.loads(QUALITY.read_text())
    default = {s["seed"]: s for s in quality["per_seed"]}
    missing = [seed for seed in seeds if seed not in default]
    if missing:
        raise SystemExit(f"seeds {missing} are not in {QUALITY}: run benchmarks/cotune_quality.py for them first")
    fixed = [measure_seed(seed, quality["test_size"], wait_for_quiet, loadavg) for seed in seeds]
    slm = {
        "fedavg": stats([default[s]["slm_accuracy"]["fedavg"] for s in seeds]),
        "local_only": stats([default[s]["slm_accuracy"]["local_only"] for s in seeds]),
        "cotune_default": stats([default[s]["slm_accuracy"]["cotune"] for s in seeds]),
        "cotune_fixed": stats([f["slm_accuracy"] for f in fixed]),
    }
    llm = {
        "zero_shot": stats([default[s]["llm_accuracy"]["zero_shot"] for s in seeds]),
        "public_only": stats([default[s]["llm_accuracy"]["public_only"] for s in seeds]),
        "after_default": stats([default[s]["llm_accuracy"]["after"] for s in seeds]),
        "after_fixed": stats([f["llm_accuracy"] for f in fixed]),
    }
    ppl = [f["llm_generalization_ppl"] for f in fixed]
    result = {
        "seeds": seeds,
        "test_size": quality["test_size"],
        "fixes": FIXES,
        "slm_accuracy": slm,
        "llm_accuracy": llm,
        "goals_with_fixes": {
            "cotune_minus_local_only": round(slm["cotune_fixed"]["mean"] - slm["local_only"]["mean"], 4),
            "cotune_minus_fedavg": round(slm["cotune_fixed"]["mean"] - slm["fedavg"]["mean"], 4),
            "cotune_at_least_fedavg_every_seed": all(
                f["slm_accuracy"] >= default[s]["slm_accuracy"]["fedavg"] for s, f in zip(seeds, fixed)),
            "llm_after_minus_zero_shot": round(llm["after_fixed"]["mean"] - llm["zero_shot"]["mean"], 4),
            "llm_after_minus_public_only": round(llm["after_fixed"]["mean"] - llm["public_only"]["mean"], 4),
            "ppl_drift": round(statistics.fmean(p["after"] / p["before"] - 1 for p in ppl), 4),
        },
        "fixed_minus_default": {
            "slm": round(slm["cotune_fixed"]["mean"] - slm["cotune_default"]["mean"], 4),
            "llm": round(llm["after_fixed"]["mean"] - llm["after_default"]["mean"], 4),
        },
        "wall_seconds_fixed": stats([f["wall_seconds"] for f in fixed]),
        "per_seed": fixed,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("slm_accuracy", "llm_accuracy", "goals_with_fixes")}, indent=2))


if __name__ == "__main__":
    main()

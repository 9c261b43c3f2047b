"""Do CrossLM's label fixes help? The quality benchmark's cotune arm, measured with `crosslm.balance_labels=false` and
`crosslm.reward_baseline='batch'`, re-run with them on (`true`, `'per_label'`: the defaults since this benchmark),
everything else the same (seed, splits, budget, 500-example balanced test).

Why: with the fixes off the silos' SLMs lean to one label, accept mostly that label's synthetic samples, and
the LLM's reward-weighted step and the kept set follow them (README, "Co-tuning quality"). The two options keep a
label-balanced set and measure each sample's reward against its own label's mean.

The other arms (FedAvg, local-only, cotune with the fixes off, the LLM's zero-shot, public-only and after) are read
from `benchmarks/results/cotune_quality.json`, measured by `benchmarks/cotune_quality.py` on the same seeds and test
with the fixes off: run that first (`--set crosslm.balance_labels=false --set "crosslm.reward_baseline='batch'"`; a
seed recorded without CrossLM settings was measured before the options existed, i.e. off).
Writes benchmarks/results/crosslm_label_balance.json.
    .venv/bin/python benchmarks/crosslm_label_balance.py [--seeds 0,1,2]
A seed whose run folder holds label_balance.json is read back, so the script can be resumed.
"""

import json
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "crosslm_label_balance.json"
RUNS = Path("runs") / "crosslm_label_balance"
FIXES = ["crosslm.balance_labels=true", "crosslm.reward_baseline='per_label'"]
FIXES_OFF = {"balance_labels": False, "reward_baseline": "batch"}


def measure_seed(seed: int, test_size: int) -> dict:
    from _seeded_job import seed_result

    def keep(summary: dict, _cfg: object) -> dict:
        return {
            "slm_accuracy": summary["slm_accuracy"]["cotune"],
            "llm_accuracy": summary["llm_accuracy"]["after"],
            "llm_generalization_ppl": summary["llm_generalization_ppl"],
            "crosslm_rounds": [r.get("crosslm") for r in summary["rounds"] if "crosslm" in r],
            "wall_seconds": summary["wall_seconds"],
        }

    overrides = [*FIXES, "run.algorithm='cotune'", "run.compare=[]", "run.baselines=false"]
    return seed_result(RUNS / f"seed{seed}", "label_balance.json", seed, test_size, overrides, keep)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _seeded_job import earlier_per_seed, seeds_from_args
    from cotune_quality import RESULTS as QUALITY
    from cotune_quality import stats

    seeds = seeds_from_args(__doc__)
    quality = json.loads(QUALITY.read_text())
    (off,) = earlier_per_seed(seeds, QUALITY)
    measured_on = [seed for seed in seeds if off[seed].get("crosslm", FIXES_OFF) != FIXES_OFF]
    if measured_on:
        raise SystemExit(f"seeds {measured_on} of {QUALITY} were measured with CrossLM settings other than {FIXES_OFF}")
    on = [measure_seed(seed, quality["test_size"]) for seed in seeds]
    slm = {
        "fedavg": stats([off[s]["slm_accuracy"]["fedavg"] for s in seeds]),
        "local_only": stats([off[s]["slm_accuracy"]["local_only"] for s in seeds]),
        "cotune_fixes_off": stats([off[s]["slm_accuracy"]["cotune"] for s in seeds]),
        "cotune_fixes_on": stats([f["slm_accuracy"] for f in on]),
    }
    llm = {
        "zero_shot": stats([off[s]["llm_accuracy"]["zero_shot"] for s in seeds]),
        "public_only": stats([off[s]["llm_accuracy"]["public_only"] for s in seeds]),
        "after_fixes_off": stats([off[s]["llm_accuracy"]["after"] for s in seeds]),
        "after_fixes_on": stats([f["llm_accuracy"] for f in on]),
    }
    ppl = [f["llm_generalization_ppl"] for f in on]
    result = {
        "seeds": seeds,
        "test_size": quality["test_size"],
        "fixes": FIXES,
        "slm_accuracy": slm,
        "llm_accuracy": llm,
        "goals_with_fixes": {
            "cotune_minus_local_only": round(slm["cotune_fixes_on"]["mean"] - slm["local_only"]["mean"], 4),
            "cotune_minus_fedavg": round(slm["cotune_fixes_on"]["mean"] - slm["fedavg"]["mean"], 4),
            "cotune_at_least_fedavg_every_seed": all(
                f["slm_accuracy"] >= off[s]["slm_accuracy"]["fedavg"] for s, f in zip(seeds, on)),
            "llm_after_minus_zero_shot": round(llm["after_fixes_on"]["mean"] - llm["zero_shot"]["mean"], 4),
            "llm_after_minus_public_only": round(llm["after_fixes_on"]["mean"] - llm["public_only"]["mean"], 4),
            "ppl_drift": round(statistics.fmean(p["after"] / p["before"] - 1 for p in ppl), 4),
        },
        "on_minus_off": {
            "slm": round(slm["cotune_fixes_on"]["mean"] - slm["cotune_fixes_off"]["mean"], 4),
            "llm": round(llm["after_fixes_on"]["mean"] - llm["after_fixes_off"]["mean"], 4),
        },
        "wall_seconds_fixes_on": stats([f["wall_seconds"] for f in on]),
        "per_seed": on,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("slm_accuracy", "llm_accuracy", "goals_with_fixes")}, indent=2))


if __name__ == "__main__":
    main()

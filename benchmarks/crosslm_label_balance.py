"""Do CrossLM's label fixes help? The quality benchmark's cotune arm (today's defaults: `crosslm.balance_labels=true`,
`crosslm.reward_baseline='per_label'`) beside the same job with both off (`false`, `'batch'`), everything else the
same (seed, splits, budget, 500-example balanced test).

Why: with the fixes off the silos' SLMs lean to one label, accept mostly that label's synthetic samples, and
the LLM's reward-weighted step and the kept set follow them (README, "CrossLM's label fixes"). The two options keep
a label-balanced set and measure each sample's reward against its own label's mean.

Measured here: the cotune arm with the fixes off, one cotune-only job per seed. Read back from
`benchmarks/results/cotune_quality.json` (run that first, at the defaults): the cotune arm with the fixes on, and
FedAvg, local-only, the LLM's zero-shot and public-only, which do not depend on CrossLM's settings.
Writes benchmarks/results/crosslm_label_balance.json.
    .venv/bin/python benchmarks/crosslm_label_balance.py [--seeds 0,1,2]
A seed whose run folder holds fixes_off.json is read back, so the script can be resumed.
"""

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "crosslm_label_balance.json"
RUNS = Path("runs") / "crosslm_label_balance"
FIXES_ON = {"balance_labels": True, "reward_baseline": "per_label"}
FIXES_OFF = ["crosslm.balance_labels=false", "crosslm.reward_baseline='batch'"]


def measure_seed(seed: int, test_size: int) -> dict:
    from _seeded_job import COTUNE_ONLY, cotune_arm, seed_result

    def keep(summary: dict, _cfg: object) -> dict:
        return {**cotune_arm(summary), "crosslm_rounds": [r.get("crosslm") for r in summary["rounds"] if "crosslm" in r]}

    overrides = [*FIXES_OFF, *COTUNE_ONLY]
    return seed_result(RUNS / f"seed{seed}", "fixes_off.json", seed, test_size, overrides, keep)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _seeded_job import quality_at_defaults, seeds_from_args
    from cotune_quality import RESULTS as QUALITY
    from cotune_quality import stats

    seeds = seeds_from_args(__doc__)
    quality, on = quality_at_defaults(seeds)
    if other := [seed for seed in seeds if on[seed]["crosslm"] != FIXES_ON]:
        raise SystemExit(f"seeds {other} of {QUALITY} were measured with CrossLM settings other than {FIXES_ON}")
    off = {seed: measure_seed(seed, quality["test_size"]) for seed in seeds}
    slm = {
        "fedavg": stats([on[s]["slm_accuracy"]["fedavg"] for s in seeds]),
        "local_only": stats([on[s]["slm_accuracy"]["local_only"] for s in seeds]),
        "cotune_fixes_off": stats([off[s]["slm_accuracy"] for s in seeds]),
        "cotune_fixes_on": stats([on[s]["slm_accuracy"]["cotune"] for s in seeds]),
    }
    llm = {
        "zero_shot": stats([on[s]["llm_accuracy"]["zero_shot"] for s in seeds]),
        "public_only": stats([on[s]["llm_accuracy"]["public_only"] for s in seeds]),
        "after_fixes_off": stats([off[s]["llm_accuracy"] for s in seeds]),
        "after_fixes_on": stats([on[s]["llm_accuracy"]["after"] for s in seeds]),
    }
    result = {
        "seeds": seeds,
        "test_size": quality["test_size"],
        "fixes_off": FIXES_OFF,
        "slm_accuracy": slm,
        "llm_accuracy": llm,
        "on_minus_off": {
            "slm": round(slm["cotune_fixes_on"]["mean"] - slm["cotune_fixes_off"]["mean"], 4),
            "llm": round(llm["after_fixes_on"]["mean"] - llm["after_fixes_off"]["mean"], 4),
        },
        "wall_seconds_fixes_off": stats([off[s]["wall_seconds"] for s in seeds]),
        "per_seed": [off[s] for s in seeds],
        "load": [{"seed": s, **off[s]["load"]} for s in seeds],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("slm_accuracy", "llm_accuracy", "on_minus_off")}, indent=2))


if __name__ == "__main__":
    main()

"""Which half of co-tuning does what? FedCoLLM alone and CrossLM alone, on the quality benchmark's seeds, splits,
budget and 500-example balanced test, beside the arms already measured there.

`cotune = FedAvg + FedCoLLM + CrossLM`: this measures the two middle arms the issue's table names (`fedcollm`,
`crosslm`), each a full federation with the current defaults (CrossLM's label fixes on), one job per seed
(`run.algorithm='fedcollm'`, `run.compare=['crosslm']`), so that the LLM each of them leaves is measured too. The
other arms are read back, not re-run, from `benchmarks/results/cotune_quality.json` (run that first, at the
defaults): zero-shot, local-only, FedAvg, cotune and centralized (SLM); zero-shot, public-only, after co-tuning and
centralized (LLM).
Writes benchmarks/results/cotune_ablation.json: `slm_accuracy` and `llm_accuracy` per arm as `{mean, std,
per_seed}`, `gains` (each arm minus FedAvg for the SLM, minus public-only for the LLM), `wall_seconds` per arm
and the load average per seed.
    .venv/bin/python benchmarks/cotune_ablation.py [--seeds 0,1,2]
A seed whose run folder holds ablation.json is read back, so the script can be resumed.
"""

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "cotune_ablation.json"
RUNS = Path("runs") / "cotune_ablation"
ARMS = ("fedcollm", "crosslm")


def measure_seed(seed: int, test_size: int) -> dict:
    from _seeded_job import seed_result
    from cotune_quality import federation_seconds

    folder = RUNS / f"seed{seed}"

    def keep(summary: dict, cfg) -> dict:
        arms = {ARMS[0]: summary, **summary.get("compare", {})}
        return {
            "crosslm": {"balance_labels": cfg.crosslm.balance_labels, "reward_baseline": cfg.crosslm.reward_baseline},
            "slm_accuracy": {arm: arms[arm]["slm_accuracy"][arm] for arm in ARMS},
            "llm_accuracy": {arm: arms[arm]["llm_accuracy"]["after"] for arm in ARMS},
            "llm_generalization_ppl": {arm: arms[arm]["llm_generalization_ppl"] for arm in ARMS},
            "wall_seconds": federation_seconds(folder, ARMS),
        }

    overrides = [f"run.algorithm='{ARMS[0]}'", f"run.compare={list(ARMS[1:])!r}", "run.baselines=false"]
    return seed_result(folder, "ablation.json", seed, test_size, overrides, keep)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _seeded_job import quality_at_defaults, seeds_from_args
    from cotune_quality import stats

    seeds = seeds_from_args(__doc__)
    quality, base = quality_at_defaults(seeds)
    ablation = {seed: measure_seed(seed, quality["test_size"]) for seed in seeds}

    def arm(values: dict[int, float]) -> dict:
        return stats([values[seed] for seed in seeds])

    slm = {
        **{a: arm({s: base[s]["slm_accuracy"][a] for s in seeds}) for a in ("zero_shot", "local_only", "fedavg")},
        **{a: arm({s: ablation[s]["slm_accuracy"][a] for s in seeds}) for a in ARMS},
        "cotune": arm({s: base[s]["slm_accuracy"]["cotune"] for s in seeds}),
        "centralized": arm({s: base[s]["slm_accuracy"]["centralized"] for s in seeds}),
    }
    llm = {
        **{a: arm({s: base[s]["llm_accuracy"][a] for s in seeds}) for a in ("zero_shot", "public_only")},
        **{f"after_{a}": arm({s: ablation[s]["llm_accuracy"][a] for s in seeds}) for a in ARMS},
        "after_cotune": arm({s: base[s]["llm_accuracy"]["after"] for s in seeds}),
        "centralized": arm({s: base[s]["llm_accuracy"]["centralized"] for s in seeds}),
    }
    result = {
        "seeds": seeds,
        "test_size": quality["test_size"],
        "slm_accuracy": slm,
        "llm_accuracy": llm,
        "gains": {
            "slm_minus_fedavg": {a: round(slm[a]["mean"] - slm["fedavg"]["mean"], 4) for a in (*ARMS, "cotune")},
            "llm_minus_public_only": {
                a: round(llm[f"after_{a}"]["mean"] - llm["public_only"]["mean"], 4) for a in (*ARMS, "cotune")
            },
        },
        "wall_seconds": {a: stats([ablation[s]["wall_seconds"][a] for s in seeds]) for a in ARMS},
        "per_seed": [ablation[s] for s in seeds],
        "load": [{"seed": s, **ablation[s]["load"]} for s in seeds],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("slm_accuracy", "llm_accuracy", "gains")}, indent=2))


if __name__ == "__main__":
    main()

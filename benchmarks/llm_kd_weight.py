"""Does the SLM teach the LLM anything? The cotune arm at the current defaults (the SLM -> LLM direction trains on
CE + 0.1 * KL toward the averaged SLM) beside the same job with `fedcollm.llm_kd_weight=0` (that direction is the
CE on the public labels alone, the public-only baseline's training; the LLM -> SLM direction is unchanged), on the
quality benchmark's seeds, splits, budget and 500-example balanced test.

Why: co-tuning's LLM ends level with (or below) the one trained on the public split alone with the same steps, and
two things separate them: the averaged SLM as a teacher and CrossLM's reward-weighted step on the silo-scored
samples. With lambda 0 on the SLM -> LLM direction only the reward step is left, so `after - public_only` at lambda
0 measures the reward step, and the default minus lambda 0 measures the teacher.

Read back, not re-run, from `benchmarks/results/cotune_quality.json` (run that first, at the defaults): the
default arm (its cotune arm: SLM and the LLM after), FedAvg, the LLM's zero-shot and public-only.
Writes benchmarks/results/llm_kd_weight.json: `slm_accuracy` and `llm_accuracy` per arm as `{mean, std,
per_seed}`, `llm_after_minus_public_only` per arm (mean and per seed), `wall_seconds_llm_kd_weight_0` and the load
average per seed.
    .venv/bin/python benchmarks/llm_kd_weight.py [--seeds 0,1,2]
A seed whose run folder holds llm_kd_weight.json is read back, so the script can be resumed.
"""

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "llm_kd_weight.json"
RUNS = Path("runs") / "llm_kd_weight"


def measure_seed(seed: int, test_size: int) -> dict:
    from _seeded_job import COTUNE_ONLY, cotune_arm, seed_result

    overrides = ["fedcollm.llm_kd_weight=0.0", *COTUNE_ONLY]
    return seed_result(
        RUNS / f"seed{seed}", "llm_kd_weight.json", seed, test_size, overrides, lambda summary, _cfg: cotune_arm(summary)
    )


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _seeded_job import quality_at_defaults, seeds_from_args
    from cotune_quality import stats

    seeds = seeds_from_args(__doc__)
    quality, base = quality_at_defaults(seeds)
    zero = {seed: measure_seed(seed, quality["test_size"]) for seed in seeds}
    slm = {
        "fedavg": stats([base[s]["slm_accuracy"]["fedavg"] for s in seeds]),
        "cotune_default": stats([base[s]["slm_accuracy"]["cotune"] for s in seeds]),
        "cotune_llm_kd_weight_0": stats([zero[s]["slm_accuracy"] for s in seeds]),
    }
    llm = {
        **{a: stats([base[s]["llm_accuracy"][a] for s in seeds]) for a in ("zero_shot", "public_only")},
        "after_default": stats([base[s]["llm_accuracy"]["after"] for s in seeds]),
        "after_llm_kd_weight_0": stats([zero[s]["llm_accuracy"] for s in seeds]),
    }
    public_only = llm["public_only"]["per_seed"]
    result = {
        "seeds": seeds,
        "test_size": quality["test_size"],
        "slm_accuracy": slm,
        "llm_accuracy": llm,
        "llm_after_minus_public_only": {
            arm: {
                "mean": round(llm[arm]["mean"] - llm["public_only"]["mean"], 4),
                "per_seed": [round(a - p, 4) for a, p in zip(llm[arm]["per_seed"], public_only)],
            }
            for arm in ("after_default", "after_llm_kd_weight_0")
        },
        "wall_seconds_llm_kd_weight_0": stats([zero[s]["wall_seconds"] for s in seeds]),
        "per_seed": [zero[s] for s in seeds],
        "load": [{"seed": s, **zero[s]["load"]} for s in seeds],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("slm_accuracy", "llm_accuracy", "llm_after_minus_public_only")}, indent=2))


if __name__ == "__main__":
    main()

"""Where should CrossLM's reward step meet the LLM? The cotune arm at the current defaults (read back from the
quality run) beside the reward step as CrossLM writes it, the likelihood of the LLM's own silo-scored generations
(`crosslm.llm_objective='generation'`, the default until 2026-12-04), alone and in two variants:
  * `generation`: as CrossLM writes it, each round's last LLM update, 4 steps at lr 2e-4;
  * `position_before`: the same with `crosslm.position='before_fedcollm'`, the round's last LLM update is then the
    SLM -> LLM distillation on the public labels;
  * `llm_lr_5e-05`: the same at a quarter of its learning rate;
against today's default, `generation_and_label`: the reward step also trains the LLM to answer each rewarded
sample's task prompt with its intended label, weighted alike. Same seeds, splits, budget and 500-example balanced
test as the quality benchmark.

Why: `benchmarks/llm_kd_weight.py` measured the generative reward step as what moved co-tuning's LLM away from the
public-only baseline, by -12 to +10 points depending on the seed, and so as the reason `after - public_only >= +1`
was missed.

Read back, not re-run, from `benchmarks/results/cotune_quality.json` (run that first, at the defaults): the
default arm (its cotune arm), FedAvg, the LLM's zero-shot and public-only.
Writes benchmarks/results/crosslm_llm_update.json: `slm_accuracy` and `llm_accuracy` per arm as `{mean, std,
per_seed}`, `llm_after_minus_public_only` and `slm_minus_fedavg` per arm (mean and per seed), `wall_seconds` per
measured arm, and the load average per seed and arm.
    .venv/bin/python benchmarks/crosslm_llm_update.py [--seeds 0,1,2]
A seed whose run folder holds the arm's JSON is read back, so the script can be resumed.
"""

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "crosslm_llm_update.json"
RUNS = Path("runs") / "crosslm_llm_update"
GENERATION = "crosslm.llm_objective='generation'"
ARMS = {
    "generation": [GENERATION],
    "position_before": [GENERATION, "crosslm.position='before_fedcollm'"],
    "llm_lr_5e-05": [GENERATION, "crosslm.llm_lr=5e-05"],
}


def measure(arm: str, seed: int, test_size: int) -> dict:
    from _seeded_job import COTUNE_ONLY, cotune_arm, seed_result

    return seed_result(
        RUNS / arm / f"seed{seed}", "arm.json", seed, test_size, [*ARMS[arm], *COTUNE_ONLY],
        lambda summary, _cfg: cotune_arm(summary),
    )


def differences(arms: dict[str, dict], baseline: dict) -> dict[str, dict]:
    """Each arm's mean and per-seed difference to `baseline` (the same seeds, in order)."""
    return {
        arm: {
            "mean": round(arm_stats["mean"] - baseline["mean"], 4),
            "per_seed": [round(a - b, 4) for a, b in zip(arm_stats["per_seed"], baseline["per_seed"])],
        }
        for arm, arm_stats in arms.items()
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _seeded_job import quality_at_defaults, seeds_from_args
    from cotune_quality import stats

    seeds = seeds_from_args(__doc__)
    quality, base = quality_at_defaults(seeds)
    runs = {seed: {arm: measure(arm, seed, quality["test_size"]) for arm in ARMS} for seed in seeds}
    slm = {"default": stats([base[s]["slm_accuracy"]["cotune"] for s in seeds])}
    llm = {"default": stats([base[s]["llm_accuracy"]["after"] for s in seeds])}
    for arm in ARMS:
        slm[arm] = stats([runs[s][arm]["slm_accuracy"] for s in seeds])
        llm[arm] = stats([runs[s][arm]["llm_accuracy"] for s in seeds])
    baselines = {
        "slm_fedavg": stats([base[s]["slm_accuracy"]["fedavg"] for s in seeds]),
        **{f"llm_{a}": stats([base[s]["llm_accuracy"][a] for s in seeds]) for a in ("zero_shot", "public_only")},
    }
    result = {
        "seeds": seeds,
        "test_size": quality["test_size"],
        "arms": {arm: overrides for arm, overrides in ARMS.items()},
        "slm_accuracy": slm,
        "llm_accuracy": llm,
        "baselines": baselines,
        "llm_after_minus_public_only": differences(llm, baselines["llm_public_only"]),
        "slm_minus_fedavg": differences(slm, baselines["slm_fedavg"]),
        "llm_generalization_ppl": {arm: [runs[s][arm]["llm_generalization_ppl"] for s in seeds] for arm in ARMS},
        "wall_seconds": {arm: stats([runs[s][arm]["wall_seconds"] for s in seeds]) for arm in ARMS},
        "per_seed": [{"seed": s, **runs[s]} for s in seeds],
        "load": [{"seed": s, "arm": arm, **runs[s][arm]["load"]} for s in seeds for arm in ARMS],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    keys = ("slm_accuracy", "llm_accuracy", "llm_after_minus_public_only", "slm_minus_fedavg")
    print(json.dumps({k: result[k] for k in keys}, indent=2))


if __name__ == "__main__":
    main()

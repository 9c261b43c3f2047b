"""Which loss should FedCoLLM's teacher-better gate compare? The cotune arm at the current defaults (the gate on the
answer CE, FedMKT's DualMinCE) beside the same job with `fedcollm.gate_loss='distilled'` (the gate on the CE over
the renormalized label words, what the KL matches), on the quality benchmark's seeds, splits, budget and
500-example balanced test.

Why: the answer CE counts a teacher that puts more mass on the answer's format as better even where its label is the
wrong one; the KL then pulls the student toward that label. The distilled gate only opens where the teacher ranks
the right label word higher than the student does.

Read back, not re-run, from `benchmarks/results/cotune_quality.json` (run that first, at the defaults): the
answer-gate arm (its cotune arm: SLM and the LLM after), local-only, FedAvg, the LLM's zero-shot and public-only.
Writes benchmarks/results/distill_gate.json: `slm_accuracy` and `llm_accuracy` per arm as `{mean, std, per_seed}`,
`distilled_minus_answer`, `llm_after_minus_public_only`, `distilled_examples` (per direction: examples distilled
of those seen, summed over rounds, per seed), `wall_seconds_distilled_gate` and the load average per seed.
    .venv/bin/python benchmarks/distill_gate.py [--seeds 0,1,2]
A seed whose run folder holds distill_gate.json is read back, so the script can be resumed.
"""

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "distill_gate.json"
RUNS = Path("runs") / "distill_gate"
DIRECTIONS = ("slm_to_llm", "llm_to_slm")


def measure_seed(seed: int, test_size: int) -> dict:
    from _seeded_job import COTUNE_ONLY, cotune_arm, seed_result

    def keep(summary: dict, _cfg: object) -> dict:
        kd = [r["distilled"] for r in summary["rounds"] if "distilled" in r]
        return {
            **cotune_arm(summary),
            "distilled_examples": {
                d: {"distilled": sum(r[d]["distilled"] for r in kd), "examples": sum(r[d]["examples"] for r in kd)}
                for d in DIRECTIONS
            },
        }

    overrides = ["fedcollm.gate_loss='distilled'", *COTUNE_ONLY]
    return seed_result(RUNS / f"seed{seed}", "distill_gate.json", seed, test_size, overrides, keep)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _seeded_job import quality_at_defaults, seeds_from_args
    from cotune_quality import stats

    seeds = seeds_from_args(__doc__)
    quality, base = quality_at_defaults(seeds)
    distilled = {seed: measure_seed(seed, quality["test_size"]) for seed in seeds}
    slm = {
        **{a: stats([base[s]["slm_accuracy"][a] for s in seeds]) for a in ("local_only", "fedavg")},
        "cotune_answer_gate": stats([base[s]["slm_accuracy"]["cotune"] for s in seeds]),
        "cotune_distilled_gate": stats([distilled[s]["slm_accuracy"] for s in seeds]),
    }
    llm = {
        **{a: stats([base[s]["llm_accuracy"][a] for s in seeds]) for a in ("zero_shot", "public_only")},
        "after_answer_gate": stats([base[s]["llm_accuracy"]["after"] for s in seeds]),
        "after_distilled_gate": stats([distilled[s]["llm_accuracy"] for s in seeds]),
    }
    result = {
        "seeds": seeds,
        "test_size": quality["test_size"],
        "slm_accuracy": slm,
        "llm_accuracy": llm,
        "distilled_minus_answer": {
            "slm": round(slm["cotune_distilled_gate"]["mean"] - slm["cotune_answer_gate"]["mean"], 4),
            "llm": round(llm["after_distilled_gate"]["mean"] - llm["after_answer_gate"]["mean"], 4),
        },
        "llm_after_minus_public_only": {
            "answer_gate": round(llm["after_answer_gate"]["mean"] - llm["public_only"]["mean"], 4),
            "distilled_gate": round(llm["after_distilled_gate"]["mean"] - llm["public_only"]["mean"], 4),
        },
        "distilled_examples": {d: [distilled[s]["distilled_examples"][d] for s in seeds] for d in DIRECTIONS},
        "wall_seconds_distilled_gate": stats([distilled[s]["wall_seconds"] for s in seeds]),
        "per_seed": [distilled[s] for s in seeds],
        "load": [{"seed": s, **distilled[s]["load"]} for s in seeds],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("slm_accuracy", "llm_accuracy", "distilled_minus_answer")}, indent=2))


if __name__ == "__main__":
    main()

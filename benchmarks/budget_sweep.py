"""The default job's budget, chosen from measurement: FedAvg learning curves of the default SLM and silos for a
few adapter learning rates, with the seconds each round costs on this host.

In one process, without Flower (the arithmetic of a FedAvg round: int8 wire, example-weighted mean), so the
sweep measures learning and silo compute, not messaging. For each learning rate: `--rounds` rounds of `--steps`
steps per silo, held-out accuracy after every round. Writes benchmarks/results/budget_sweep.json.
    .venv/bin/python benchmarks/budget_sweep.py [--lrs 5e-4,1e-3,2e-3] [--rounds 4] [--steps 10]
"""

import argparse
import json
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "budget_sweep.json"


def curve(lr: float, rounds: int, steps: int, overrides: list[str]) -> dict:
    from cotune.config import load_config
    from cotune.data import build_splits
    from cotune.lm.adapted_lm import AdaptedLM
    from cotune.edge_client.silo import Silo
    from cotune.federation.records import from_record, to_record
    from cotune.federation.strategies.adapter_fedavg import weighted_average

    cfg = load_config(None, [*overrides, f"train.lr={lr}", f"train.steps={steps}", "run.progress=false"])
    splits = build_splits(cfg.data, cfg.clients.num_clients)
    slm = AdaptedLM.load(cfg)
    silos = [Silo(cfg, pid, slm, splits) for pid in range(len(splits.clients))]
    state = slm.state()
    points = [{"round": 0, "test_accuracy": slm.accuracy(splits.task, splits.test, cfg), "seconds": 0.0}]
    for server_round in range(1, rounds + 1):
        start = time.perf_counter()
        sent = from_record(to_record(state, cfg.quantization.wire))
        updates, weights = [], []
        for silo in silos:
            silo.train_round(sent, server_round)
            updates.append(from_record(to_record(slm.state(), cfg.quantization.wire)))
            weights.append(len(silo.train_data))
        train_s = time.perf_counter() - start
        state = weighted_average(updates, weights)
        slm.set_state(state)
        accuracy = slm.accuracy(splits.task, splits.test, cfg)
        points.append({"round": server_round, "test_accuracy": accuracy, "silo_seconds": round(train_s, 1),
                       "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps({"lr": lr, **points[-1]}), flush=True)
    return {"lr": lr, "steps_per_round": steps, "curve": points}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _host import loadavg, wait_for_quiet

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lrs", default="5e-4,1e-3,2e-3")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    before = wait_for_quiet()
    start = time.perf_counter()
    curves = [curve(float(lr), args.rounds, args.steps, args.overrides) for lr in args.lrs.split(",")]
    best = max(curves, key=lambda c: c["curve"][-1]["test_accuracy"])
    result = {
        "curves": curves,
        "best_lr": best["lr"],
        "settings": {"rounds": args.rounds, "steps": args.steps, "overrides": args.overrides},
        "wall_seconds": round(time.perf_counter() - start, 1),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "curves"}, indent=2))


if __name__ == "__main__":
    main()

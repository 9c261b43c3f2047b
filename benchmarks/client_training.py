"""Silo training cost on the default SLM: 4-bit QLoRA vs fp32 LoRA (same adapter, batch, data), and wire bytes.

Each variant runs in its own subprocess so that peak RSS is its own. Writes benchmarks/results/client_training.json.
    .venv/bin/python benchmarks/client_training.py [--steps 10] [--set key=value ...]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "client_training.json"
MB = 1024 * 1024


def measure_variant(precision: str, steps: int, overrides: list[str]) -> dict:
    """In this (fresh) process: load the SLM at `precision`, train `steps` QLoRA/LoRA steps, report memory/time."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _memory import PeakRSS

    import torch

    from cotune.config import load_config
    from cotune.data import build_splits
    from cotune.edge_client.adapted_lm import AdaptedLM

    cfg = load_config(None, [*overrides, f"quantization.slm_load='{precision}'", "run.progress=false"])
    splits = build_splits(cfg.data, cfg.clients.num_clients)
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    rss = PeakRSS().start()  # after imports and data: what remains is model + training
    load_start = time.perf_counter()
    slm = AdaptedLM.load(cfg)
    load_s = time.perf_counter() - load_start
    after_load = rss.rss()
    slm.train(splits.task, splits.clients[0].train, load_config(None, [*overrides, "train.steps=1"]), 0, "warmup")
    start = time.perf_counter()
    trained = load_config(None, [*overrides, f"train.steps={steps}", "run.progress=false"])
    result = slm.train(splits.task, splits.clients[0].train, trained, 1, "bench")
    step_s = (time.perf_counter() - start) / steps
    peak = rss.stop()
    return {
        "precision": precision,
        "peak_rss_mb": round((peak - rss.baseline) / MB, 1),
        "model_rss_mb": round((after_load - rss.baseline) / MB, 1),
        "load_s": round(load_s, 2),
        "seconds_per_step": round(step_s, 3),
        "mean_loss": round(result.mean_loss, 4),
        "threads": torch.get_num_threads(),
        "exact_peak": rss.exact,
    }


def wire_figures(overrides: list[str]) -> dict:
    import numpy as np
    from safetensors import safe_open

    from cotune.config import load_config
    from cotune.edge_client.adapted_lm import AdaptedLM
    from cotune.federation.records import record_bytes, to_record
    from cotune.models import resolve_model

    cfg = load_config(None, [*overrides, "quantization.slm_load='none'"])
    state = AdaptedLM.load(cfg).state()
    wire = record_bytes(to_record(state, cfg.quantization.wire))
    path = resolve_model(cfg.models.slm, cfg.models.cache_dir)
    full = 0
    for shard in path.glob("*.safetensors"):
        with safe_open(shard, "np") as f:
            full += sum(f.get_slice(k).get_shape() and int(np.prod(f.get_slice(k).get_shape())) * 4 for k in f.keys())
    return {
        "slm": cfg.models.slm,
        "lora": {"r": cfg.lora.r, "target_modules": cfg.lora.target_modules},
        "wire_format": cfg.quantization.wire,
        "adapter_parameters": int(sum(v.size for v in state.values())),
        "wire_bytes_per_round": wire,
        "full_model_bytes": full,
        "wire_fraction": round(wire / full, 6),
    }


def measure_pair(steps: int, overrides: list[str]) -> dict:
    """fp32 LoRA and NF4 QLoRA under the same overrides, each in a fresh subprocess, and their ratios."""
    variants = {}
    for precision in ("none", "nf4"):
        cmd = [sys.executable, __file__, "--variant", precision, "--steps", str(steps)]
        cmd += [a for o in overrides for a in ("--set", o)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        variants["fp32_lora" if precision == "none" else "nf4_qlora"] = json.loads(out.strip().splitlines()[-1])
    fp32, nf4 = variants["fp32_lora"], variants["nf4_qlora"]
    return {
        "memory_ratio": round(nf4["peak_rss_mb"] / fp32["peak_rss_mb"], 3),
        "step_time_ratio": round(nf4["seconds_per_step"] / fp32["seconds_per_step"], 3),
        "variants": variants,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure_variant(args.variant, args.steps, args.overrides)))
        return
    default = measure_pair(args.steps, args.overrides)
    # Activations dominate the default's peak; with them recomputed, the weights' precision shows.
    checkpointed = measure_pair(args.steps, [*args.overrides, "train.gradient_checkpointing=true"])
    result = {
        "memory_ratio": default["memory_ratio"],
        "step_time_ratio": default["step_time_ratio"],
        **wire_figures(args.overrides),
        "variants": default["variants"],
        "with_gradient_checkpointing": checkpointed,
        "settings": {"steps": args.steps, "overrides": args.overrides, "note": "peak RSS above the post-import baseline"},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

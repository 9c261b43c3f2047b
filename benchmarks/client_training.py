"""Silo training cost on the default SLM: 4-bit QLoRA vs fp32 LoRA (same adapter, batch, data), against a
minimal transformers + peft fp32 LoRA loop (no cotune code) over the same model and batches; and wire bytes.

Each variant runs in its own subprocess so that peak RSS and OpenMP state are its own; the host must be quiet
(load average < 1.0 before, recorded before and after). Writes benchmarks/results/client_training.json.
    .venv/bin/python benchmarks/client_training.py [--steps 6] [--set key=value ...]
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
    import os

    sys.path.insert(0, str(Path(__file__).parent))
    from _memory import PeakRSS

    import torch

    from cotune.config import load_config
    from cotune.data import build_splits
    from cotune.data.encoding import pretokenize
    from cotune.lm.adapted_lm import AdaptedLM

    cfg = load_config(None, [*overrides, f"quantization.slm_load='{precision}'", "run.progress=false"])
    splits = build_splits(cfg.data, cfg.clients.num_clients)
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    rss = PeakRSS().start()  # after imports and data: what remains is model + training
    load_start = time.perf_counter()
    slm = AdaptedLM.load(cfg)
    load_s = time.perf_counter() - load_start
    after_load = rss.rss()
    data = pretokenize(slm.tokenizer, splits.task, splits.clients[0].train, cfg.train.max_length)  # as a silo does
    slm.train(splits.task, data, load_config(None, [*overrides, "train.steps=1", "run.progress=false"]), 0, "warmup")
    start = time.perf_counter()
    trained = load_config(None, [*overrides, f"train.steps={steps}", "run.progress=false"])
    result = slm.train(splits.task, data, trained, 1, "bench")
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
        "omp": os.environ.get("COTUNE_OMP_REASON", "libgomp default"),
    }


def measure_reference(steps: int, overrides: list[str]) -> dict:
    """In this (fresh) process: the same fp32 SLM, LoRA and batches through plain transformers + peft + AdamW.

    Only the data comes from cotune (the same examples in the same order); the loop, the model, the adapter
    and the loss are the libraries' own. Logits are kept for the last position only (`logits_to_keep`), as a
    careful user would write it, so that the comparison is about the training step and not the loss."""
    import os

    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotune.config import load_config
    from cotune.data import build_splits
    from cotune.models import resolve_model

    cfg = load_config(None, overrides)
    t, lora = cfg.train, cfg.lora
    splits = build_splits(cfg.data, cfg.clients.num_clients)
    data = splits.clients[0].train
    path = resolve_model(cfg.models.slm, cfg.models.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    texts = [splits.task.prompt(x) + splits.task.answer(y) for x, y in zip(data["text"], data["label"])]
    torch.manual_seed(t.seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                             target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.lr)
    model.train()

    def step(i: int) -> None:
        batch = tokenizer(texts[i * t.batch_size : (i + 1) * t.batch_size], return_tensors="pt", padding=True,
                          truncation=True, max_length=t.max_length)
        ids = batch["input_ids"]
        logits = model(input_ids=ids[:, :-1], attention_mask=batch["attention_mask"][:, :-1], logits_to_keep=1).logits
        loss = F.cross_entropy(logits[:, -1].float(), ids[:, -1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(0)  # warm-up, as the cotune variants do
    start = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    return {
        "variant": "reference: transformers + peft fp32 LoRA",
        "seconds_per_step": round((time.perf_counter() - start) / steps, 3),
        "threads": torch.get_num_threads(),
        "omp": os.environ.get("COTUNE_OMP_REASON", os.environ.get("OMP_WAIT_POLICY", "libgomp default")),
    }


def wire_figures(overrides: list[str]) -> dict:
    import numpy as np
    from safetensors import safe_open

    from cotune.config import load_config
    from cotune.lm.adapted_lm import AdaptedLM
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


def run_variant(variant: str, steps: int, overrides: list[str], env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant, "--steps", str(steps)]
    cmd += [a for o in overrides for a in ("--set", o)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_pair(steps: int, overrides: list[str]) -> dict:
    """fp32 LoRA and NF4 QLoRA under the same overrides, each in a fresh subprocess, and their ratios."""
    fp32, nf4 = (run_variant(precision, steps, overrides) for precision in ("none", "nf4"))
    return {
        "memory_ratio": round(nf4["peak_rss_mb"] / fp32["peak_rss_mb"], 3),
        "step_time_ratio": round(nf4["seconds_per_step"] / fp32["seconds_per_step"], 3),
        "variants": {"fp32_lora": fp32, "nf4_qlora": nf4},
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _host import loadavg, wait_for_quiet

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant == "reference":
        print(json.dumps(measure_reference(args.steps, args.overrides)))
        return
    if args.variant:
        print(json.dumps(measure_variant(args.variant, args.steps, args.overrides)))
        return
    load_before = wait_for_quiet()
    import os

    import cotune  # noqa: F401  the OpenMP choice a job starting now would make, inherited by every variant

    reference = run_variant("reference", args.steps, args.overrides)
    default = measure_pair(args.steps, args.overrides)
    # The glibc mmap threshold pinned (train.release_freed_memory): what it saves in memory, what it costs in time.
    released = run_variant("nf4", args.steps, [*args.overrides, "train.release_freed_memory=true"])
    # Threads that sleep at once between parallel regions (what cotune picks when other work shares the cores).
    passive = run_variant("nf4", args.steps, args.overrides, {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    # Activations dominate the default's peak; with them recomputed, the weights' precision shows.
    checkpointed = measure_pair(args.steps, [*args.overrides, "train.gradient_checkpointing=true"])
    fp32_s = default["variants"]["fp32_lora"]["seconds_per_step"]
    nf4_s = default["variants"]["nf4_qlora"]["seconds_per_step"]
    result = {
        "reference_step_s": reference["seconds_per_step"],
        "fp32_step_s": fp32_s,
        "nf4_step_s": nf4_s,
        "fp32_vs_reference": round(fp32_s / reference["seconds_per_step"], 3),
        "step_time_ratio": default["step_time_ratio"],
        "memory_ratio": default["memory_ratio"],
        **wire_figures(args.overrides),
        "variants": {
            **default["variants"], "reference": reference, "nf4_release_freed_memory": released, "nf4_omp_passive": passive,
        },
        "with_gradient_checkpointing": checkpointed,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "settings": {"steps": args.steps, "overrides": args.overrides, "note": "peak RSS above the post-import baseline"},
    }
    try:
        from _qlora_1b import measure_1b
    except ImportError:
        measure_1b = None
    if measure_1b is not None:
        result.update(measure_1b())
        result["loadavg_after"] = loadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

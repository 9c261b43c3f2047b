"""NF4 QLoRA vs fp32 LoRA memory on a model whose weights dominate: a random-init model of Llama-3.2-1B's shape.

On the 90M default SLM the 4-bit base saves little (its tied 28M-parameter embedding stays unquantized and the
step's peak is activations). QLoRA exists for models whose linear layers hold most of the bytes; this builds
one locally (Llama-3.2-1B's published config: 16 layers, hidden 2048, MLP 8192, 32/8 heads, 128,256-token tied
embedding; 1.24B parameters; random weights, as no hub is reachable and memory does not depend on the values),
stores it once in the cotune cache (bf16 on disk, 2.5 GB), and trains 3 steps of the default LoRA config through
cotune's own silo path (AdaptedLM: load_causal_lm + attach_adapter + train_steps) at each precision, each in a
fresh subprocess, peak RSS above the post-import baseline (benchmarks/_memory.py).

    from _qlora_1b import measure_1b
    figures = measure_1b()  # {"memory_ratio_1b", "weight_bytes_ratio_1b", ...}

or `.venv/bin/python benchmarks/_qlora_1b.py` to print them.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

MB = 1024 * 1024
STEPS = 3  # the first includes the allocator's and autograd's warm-up; seconds_per_step is the mean of the rest
LLAMA_3_2_1B = dict(  # config.json of meta-llama/Llama-3.2-1B, as published
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
    rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    tie_word_embeddings=True, hidden_act="silu", attention_bias=False, mlp_bias=False,
    bos_token_id=1, eos_token_id=2, pad_token_id=2,
)  # fmt: skip


def model_folder(cache_dir: str = "") -> Path:
    """The random-init 1B-shape model as an HF folder (cached), with the SmolLM2 tokenizer: the data pipeline
    needs one, and its ids (< 49,152) fit the larger vocabulary."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from cotune.models import resolve_model
    from cotune.models.cache import cached_folder

    def build(out: Path) -> dict:
        torch.manual_seed(0)
        config = LlamaConfig(**LLAMA_3_2_1B, dtype="bfloat16")
        with torch.device("cpu"):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(resolve_model("tiny-llama", cache_dir)).save_pretrained(out)
        return {"parameters": sum(p.numel() for p in model.parameters()), "shape_of": "meta-llama/Llama-3.2-1B"}

    return cached_folder("llama-3.2-1b-shape-random-bf16", build, cache_dir)


def weight_bytes(model) -> int:
    """Bytes of the model's tensors as held: parameters, buffers and bitsandbytes' quantization state."""
    import torch

    total, seen = 0, set()

    def add(tensor) -> None:
        nonlocal total
        if isinstance(tensor, torch.Tensor) and tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()

    for tensor in [*model.parameters(), *model.buffers()]:
        add(tensor)
        state = getattr(tensor, "quant_state", None)
        while state is not None:  # double quantization nests a second state
            add(state.absmax)
            add(getattr(state, "code", None))
            state = getattr(state, "state2", None)
    return total


def measure_variant(precision: str, folder: str, steps: int, overrides: list[str]) -> dict:
    """In this (fresh) process: load the 1B-shape model at `precision` the silo's way and train `steps` steps."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _memory import PeakRSS, _kernel_peak, _reset_kernel_peak

    import torch

    from cotune.config import load_config
    from cotune.data import build_splits
    from cotune.lm.adapted_lm import AdaptedLM
    from cotune.lm.trainer import sample_batches, train_steps

    cfg = load_config(
        None, [*overrides, f"models.slm='{folder}'", f"quantization.slm_load='{precision}'", "run.progress=false"]
    )
    splits = build_splits(cfg.data, cfg.clients.num_clients)
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    rss = PeakRSS().start()  # after imports and data: what remains is model + training
    start = time.perf_counter()
    slm = AdaptedLM.load(cfg)
    load_s, after_load, load_peak = time.perf_counter() - start, rss.rss(), _kernel_peak() or 0
    # the loader's transient peak (checkpoint pages + converted tensors) is one thing, training's another:
    # restart the kernel's high-water mark so the training phase is measured on its own too
    train_exact = rss.exact and _reset_kernel_peak()
    t = cfg.train
    batches = sample_batches(slm.tokenizer, splits.task, splits.clients[0].train, t.batch_size, t.max_length, 0)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        result = train_steps(  # one call per step, to time each; the silo's memory setting, as it trains
            slm.model, batches, 1, t.lr, release_freed_memory=getattr(t, "release_freed_memory", False)
        )
        times.append(time.perf_counter() - start)
    train_peak = _kernel_peak() if train_exact else None
    peak = max(rss.stop(), load_peak)
    return {
        "precision": precision,
        "peak_rss_mb": round((peak - rss.baseline) / MB, 1),
        "model_rss_mb": round((after_load - rss.baseline) / MB, 1),
        "load_peak_rss_mb": round((load_peak - rss.baseline) / MB, 1) if rss.exact else None,
        "train_peak_rss_mb": round((train_peak - rss.baseline) / MB, 1) if train_peak else None,
        "weight_bytes": weight_bytes(slm.model),
        "parameters": sum(p.numel() for p in slm.model.parameters()),
        "load_s": round(load_s, 1),
        "seconds_per_step": round(sum(times[1:]) / max(len(times) - 1, 1), 2),
        "last_loss": round(float(result.last_loss), 4),
        "steps": steps,
        "batch_size": t.batch_size,
        "threads": torch.get_num_threads(),
        "exact_peak": rss.exact,
    }


def measure_pair(folder: Path, steps: int, overrides: list[str]) -> dict:
    """fp32 LoRA and NF4 QLoRA under the same overrides, each in a fresh subprocess."""
    variants = {}
    for precision in ("none", "nf4"):
        cmd = [sys.executable, __file__, "--variant", precision, "--folder", str(folder), "--steps", str(steps)]
        cmd += [a for o in overrides for a in ("--set", o)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        variants["fp32_lora" if precision == "none" else "nf4_qlora"] = json.loads(out.strip().splitlines()[-1])
    return variants


def measure_1b(steps: int = STEPS, cache_dir: str = "", checkpointed: bool = True) -> dict:
    """memory_ratio_1b (NF4 QLoRA peak / fp32 LoRA peak, default config) and weight_bytes_ratio_1b, with the
    variants' figures; `checkpointed` adds the same pair with train.gradient_checkpointing = true."""
    folder = model_folder(cache_dir)
    variants = measure_pair(folder, steps, [])
    fp32, nf4 = variants["fp32_lora"], variants["nf4_qlora"]
    result = {
        "memory_ratio_1b": round(nf4["peak_rss_mb"] / fp32["peak_rss_mb"], 3),
        "memory_ratio_1b_training": round(nf4["train_peak_rss_mb"] / fp32["train_peak_rss_mb"], 3),
        "memory_ratio_1b_loading": round(nf4["load_peak_rss_mb"] / fp32["load_peak_rss_mb"], 3),
        "weight_bytes_ratio_1b": round(nf4["weight_bytes"] / fp32["weight_bytes"], 3),
        "step_time_ratio_1b": round(nf4["seconds_per_step"] / fp32["seconds_per_step"], 3),
        "model_1b": f"random-init, shape of meta-llama/Llama-3.2-1B ({fp32['parameters'] / 1e9:.2f}B parameters)",
        "variants_1b": variants,
    }
    if checkpointed:
        pair = measure_pair(folder, steps, ["train.gradient_checkpointing=true"])
        fp32, nf4 = pair["fp32_lora"], pair["nf4_qlora"]
        result["memory_ratio_1b_gradient_checkpointing"] = round(nf4["peak_rss_mb"] / fp32["peak_rss_mb"], 3)
        result["memory_ratio_1b_training_gradient_checkpointing"] = round(
            nf4["train_peak_rss_mb"] / fp32["train_peak_rss_mb"], 3
        )
        result["variants_1b_gradient_checkpointing"] = pair
    return result


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure_variant(args.variant, args.folder, args.steps, args.overrides)))
        return
    print(json.dumps(measure_1b(args.steps), indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()

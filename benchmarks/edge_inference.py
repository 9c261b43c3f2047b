"""Edge inference: the tuned default SLM as PyTorch fp32 vs exported ONNX fp32 / int8 / int4 merged / int4 base +
runtime LoRA adapter, side by side.

Batch 1, 2 threads. Accuracy drops are measured for 3 independently trained adapters (seeds 0-2, cached) and
reported as median, min and max: one adapter's drop says little (int4 flips a few dozen of 300 predictions, and
which ones depends on the adapter). The runtime variant is ONE int4 base exported with LoRA inputs (adapter 0's
export); adapters 1 and 2 are only written as `.onnx_adapter` files and loaded onto it, as a device would.

Per variant, in its own subprocess (so peak RSS is that variant's alone): label-word accuracy on the held-out
test and perplexity on other-domain text; the ONNX workers import no torch: they measure what a device would run.
Decode speed (64 greedy tokens, EOS ignored) is measured last, for every variant of adapter 0 in one process
taking turns, so that on a shared machine they all run under the same load; the same process times adapter
switches (a never-loaded adapter file activated, then the prompt's first token) on both backends.

Adapter: `--adapter PATH` (a LoRA for smollm2-90m, e.g. a run's global_adapter), else the three trained here on
rotten-tomatoes through cotune.edge_client (cached in the cotune cache folder, reused by later runs).

    .venv/bin/python benchmarks/edge_inference.py [--adapter DIR] [--test-size 300] [--ppl-texts 50]
writes benchmarks/results/edge_inference.json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULT = ROOT / "benchmarks" / "results" / "edge_inference.json"
SLM = "smollm2-90m"
THREADS = 2
NEW_TOKENS = 64
ADAPTERS = 3  # independently trained adapters behind every accuracy drop
# variant -> (precision, adapter mode); fp32 is exported for the first adapter only (its goal is parity, not a drop)
VARIANTS = {"fp32": ("fp32", "merged"), "int8": ("int8", "merged"), "int4": ("int4", "merged"), "int4_runtime": ("int4", "runtime")}
DROPS = ("int8", "int4", "int4_runtime")
PARITY_PROMPTS = {"fp32": 20, "int8": 8, "int4": 8, "int4_runtime": 8}  # x 64 greedy tokens; fp32's is the goal
SWITCHES = 6  # adapter switches timed per backend
SPEED_PROMPT = "Review: A quiet, patient film that trusts its actors and its audience.\nSentiment (positive or negative):"
GOALS = {
    "int4.speedup_vs_pytorch >= 5": lambda r: r["int4"]["speedup_vs_pytorch"] >= 5,
    "int4.size_ratio_vs_fp32 <= 0.2": lambda r: r["int4"]["size_ratio_vs_fp32"] <= 0.2,
    "int8 median accuracy drop <= 1": lambda r: r["accuracy_drop_points"]["int8"]["median"] <= 1,
    "int4 median accuracy drop <= 2": lambda r: r["accuracy_drop_points"]["int4"]["median"] <= 2,
    "fp32.greedy_token_agreement >= 0.99": lambda r: r["fp32"]["greedy_token_agreement"] >= 0.99,
    "adapter_fraction <= 0.05": lambda r: r["adapter_fraction"] <= 0.05,
    "runtime_adapter_accuracy_drop <= 1.0": lambda r: r["runtime_adapter_accuracy_drop"] <= 1.0,
    "runtime_adapter_accuracy_drop < int4 merged median drop": lambda r: r["runtime_adapter_accuracy_drop"]
    < r["accuracy_drop_points"]["int4"]["median"],
    "runtime_adapter_speed_ratio >= 0.8": lambda r: r["runtime_adapter_speed_ratio"] >= 0.8,
    "adapter_switch_ms <= 50": lambda r: r["adapter_switch_ms"] <= 50,
}


def peak_rss_mb() -> float:
    """This worker's own peak: VmHWM starts afresh at exec. ru_maxrss does not: a forked child inherits the
    parent's resident set as its high-water mark, and this parent holds GBs of exporters."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: peak RSS needs Linux")


# ---------------------------------------------------------------- adapters
def trained_adapter(cache_dir: str, steps: int, seed: int) -> Path:
    """A LoRA adapter for the default SLM trained on rotten-tomatoes (fp32 base, the default LoRA config); `seed`
    sets its initialization and its batch order, so each seed is an independently trained adapter."""
    import torch
    from datasets import concatenate_datasets

    from cotune.config import load_config
    from cotune.data import build_splits
    from cotune.lm.adapters import attach_adapter
    from cotune.lm.trainer import sample_batches, train_steps
    from cotune.models import resolve_model
    from cotune.models.cache import cached_folder
    from cotune.quantization.loading import load_causal_lm
    from transformers import AutoTokenizer

    def build(out: Path) -> dict:
        cfg = load_config(None, [f"models.slm={SLM}", f"train.seed={seed}"])
        torch.set_num_threads(THREADS)
        path = resolve_model(cfg.models.slm, cache_dir)
        splits = build_splits(cfg.data, cfg.clients.num_clients)
        train = concatenate_datasets([c.train for c in splits.clients])
        torch.manual_seed(seed)
        model = attach_adapter(load_causal_lm(path, "none", device="cpu"), cfg.lora)
        tokenizer = AutoTokenizer.from_pretrained(path)
        batches = sample_batches(tokenizer, splits.task, train, cfg.train.batch_size, cfg.train.max_length, seed)
        result = train_steps(model, batches, steps, cfg.train.lr, progress=True, desc=f"edge benchmark adapter {seed}")
        model.save_pretrained(out)
        return {"steps": steps, "seed": seed, "last_loss": result.last_loss, "base": str(path)}

    return cached_folder(f"edge-bench-adapter-{SLM}-{steps}-s{seed}", build, cache_dir)


def pick_adapters(arg: str | None, cache_dir: str, steps: int, count: int) -> tuple[list[Path], str]:
    """`--adapter` (e.g. a run's global_adapter; drops are then of that one adapter), else `count` cached
    benchmark adapters (seeds 0..count-1), trained once: same figures run after run."""
    if arg:
        return [Path(arg)], "given"
    adapters = [trained_adapter(cache_dir, steps, seed) for seed in range(count)]
    return adapters, f"trained on rotten-tomatoes ({steps} steps, default LoRA config, seeds 0..{count - 1})"


# ---------------------------------------------------------------- workers (one subprocess each)
def pytorch_generator(base: str, adapter: str):
    """The merged model's 64-token greedy decode as a callable returning its tokens/s."""
    import torch
    from transformers import AutoTokenizer

    from cotune.lm.merge import merged_model

    torch.set_num_threads(THREADS)
    model = merged_model(Path(base), Path(adapter))
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer(SPEED_PROMPT, return_tensors="pt")
    kwargs = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.eos_token_id)

    @torch.no_grad()
    def generate() -> float:
        start = time.perf_counter()
        model.generate(**ids, **kwargs)
        return NEW_TOKENS / (time.perf_counter() - start)

    return generate


def speed_worker(job: dict) -> dict:
    """Decode speed of every variant in one process, one generation each in turn, the fastest of `speed_repeats`
    rounds per variant: on a shared machine all variants see the same load, and a run is only ever slowed down.
    Then adapter switches on the runtime base, per backend."""
    from cotune.edge_runtime import EdgeModel

    def onnx_generator(model_dir: str):
        model = EdgeModel(model_dir, "auto", THREADS)
        return lambda: model.generate(SPEED_PROMPT, NEW_TOKENS, stop_at_eos=False).tokens_per_s

    runs = {"pytorch": pytorch_generator(job["base"], job["adapter"])}
    runs |= {variant: onnx_generator(path) for variant, path in job["model_dirs"].items()}
    for run in runs.values():
        run()  # warm-up
    best = dict.fromkeys(runs, 0.0)
    load = []
    for _ in range(job["speed_repeats"]):
        for name, run in runs.items():
            best[name] = max(best[name], run())
        load.append(os.getloadavg()[0])
    del runs
    switch = {b: switch_times(job["runtime_dir"], job["adapter_files"], b) for b in ("genai", "session")}
    return {"tokens_per_s": best, "loadavg_1m": load, "switch": switch}


def switch_times(model_dir: str, adapter_files: list[str], backend: str) -> dict:
    """Milliseconds from activating an adapter file never loaded before (a copy under a new name, so nothing is
    reused) to the prompt's first token, and the same first token with no switch, medians of SWITCHES."""
    import shutil

    from cotune.edge_runtime import EdgeModel

    model = EdgeModel(model_dir, backend, THREADS)
    first_token = lambda: model.generate(SPEED_PROMPT, 1, stop_at_eos=False)  # noqa: E731
    first_token()
    switched, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(SWITCHES):
            fresh = Path(tmp) / f"switch-{i}.onnx_adapter"
            shutil.copy(adapter_files[i % len(adapter_files)], fresh)
            start = time.perf_counter()
            model.set_adapter(fresh)
            first_token()
            switched.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            first_token()
            plain.append(1000 * (time.perf_counter() - start))
    return {"switch_and_first_token_ms": float(np.median(switched)), "first_token_ms": float(np.median(plain)),
            "switches": SWITCHES}  # fmt: skip


def pytorch_worker(job: dict) -> dict:
    import torch
    from transformers import AutoTokenizer

    from cotune.data.tasks import ClassificationTask
    from cotune.lm.evaluate import label_probabilities, perplexity
    from cotune.lm.merge import merged_model

    torch.set_num_threads(THREADS)
    model = merged_model(Path(job["base"]), Path(job["adapter"]))
    tokenizer = AutoTokenizer.from_pretrained(job["base"])
    task = ClassificationTask(**job["task"])
    predictions = label_probabilities(model, tokenizer, task, job["test_texts"], batch_size=16).argmax(1)
    return {
        "predictions": predictions.tolist(),
        "accuracy": float((predictions == np.asarray(job["test_labels"])).mean()),
        "perplexity": perplexity(model, tokenizer, job["ppl_texts"], batch_size=8),
        "peak_rss_mb": peak_rss_mb(),
    }


def onnx_worker(job: dict) -> dict:
    from cotune.edge_runtime import EdgeModel
    from cotune.edge_runtime.model import DEFAULT_ADAPTER
    from cotune.edge_runtime.scoring import label_predictions, perplexity

    model = EdgeModel(job["model_dir"], "auto", THREADS, job.get("adapter_file") or DEFAULT_ADAPTER)
    model.generate(SPEED_PROMPT, NEW_TOKENS, stop_at_eos=False)  # the decode buffers count in the peak too
    predictions = label_predictions(model, job["prompts"], job["label_token_ids"])
    return {
        "predictions": predictions.tolist(),
        "accuracy": float((predictions == np.asarray(job["test_labels"])).mean()),
        "perplexity": perplexity(model, job["ppl_texts"]),
        "peak_rss_mb": peak_rss_mb(),
        "torch_imported": "torch" in sys.modules,
    }


WORKERS = {"pytorch": pytorch_worker, "onnx": onnx_worker, "speed": speed_worker}


def run_worker(kind: str, job: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        job_file, out_file = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps(job))
        cmd = [sys.executable, __file__, "--worker", kind, str(job_file), str(out_file)]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
        return json.loads(out_file.read_text())


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", help="PEFT adapter folder for the default SLM")
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--train-steps", type=int, default=200, help="steps of each benchmark adapter")
    parser.add_argument("--adapters", type=int, default=ADAPTERS, help="independently trained adapters")
    parser.add_argument("--test-size", type=int, default=300, help="held-out test examples scored")
    parser.add_argument("--ppl-texts", type=int, default=50, help="plot summaries for perplexity")
    parser.add_argument("--speed-repeats", type=int, default=5, help="rounds of the speed phase; fastest kept")
    parser.add_argument("--out", default=str(RESULT))
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "JOB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, job_file, out_file = args.worker
        job = json.loads(Path(job_file).read_text())
        result = WORKERS[kind](job)
        Path(out_file).write_text(json.dumps(result))
        return
    run_benchmark(args)


def spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)), "per_adapter": values}


def measure_adapter(index: int, adapter: Path, ctx: dict, work: Path, runtime_dir: Path | None) -> dict:
    """PyTorch and every ONNX variant for one adapter. The runtime variant of adapters after the first is the
    first one's runtime base with this adapter's `.onnx_adapter` file."""
    from cotune.export import export_edge_model
    from cotune.export.runtime_adapter import write_runtime_adapter

    pytorch = run_worker("pytorch", {"base": ctx["base"], "adapter": str(adapter), **ctx["pytorch_job"]})
    measured: dict = {"adapter": str(adapter), "pytorch_accuracy": pytorch["accuracy"], "pytorch": pytorch}
    for variant, (precision, mode) in VARIANTS.items():
        if variant == "fp32" and index > 0:
            continue
        out, export_s, parity, adapter_file = work / f"{index}-{variant}", None, None, None
        if variant == "int4_runtime" and runtime_dir is not None:
            out, adapter_file = runtime_dir, write_runtime_adapter(adapter, work / f"adapter-{index}.onnx_adapter")
        else:
            start = time.perf_counter()
            exported = export_edge_model(
                ctx["base"], adapter, out, precision, PARITY_PROMPTS[variant], NEW_TOKENS, cache_dir=ctx["cache_dir"],
                task=ctx["task"], max_length=ctx["max_length"], adapter_mode=mode,
            )  # fmt: skip
            export_s, parity = time.perf_counter() - start, exported.parity
        job = {**ctx["onnx_job"], "model_dir": str(out), "adapter_file": str(adapter_file) if adapter_file else None}
        result = run_worker("onnx", job)
        changed = np.asarray(result["predictions"]) != np.asarray(pytorch["predictions"])
        measured[variant] = {
            "model_dir": str(out),
            "size_mb": sum(p.stat().st_size for p in out.glob("model.onnx*")) / 2**20,
            "peak_rss_mb": result["peak_rss_mb"],
            "accuracy": result["accuracy"],
            "accuracy_drop_points": 100 * (pytorch["accuracy"] - result["accuracy"]),
            "predictions_changed_vs_pytorch": int(changed.sum()),
            "perplexity": result["perplexity"],
            "perplexity_ratio_vs_pytorch": result["perplexity"] / pytorch["perplexity"],
            "worker_imported_torch": result["torch_imported"],
            **({} if parity is None else {
                "greedy_token_agreement": parity["greedy_token_agreement"], "parity_prompts": parity["prompts"],
                "max_abs_logit_diff": parity["max_abs_logit_diff"], "export_s": export_s,
            }),
        }  # fmt: skip
        if adapter_file:
            measured[variant]["adapter_file"] = str(adapter_file)
    return measured


def run_benchmark(args: argparse.Namespace) -> None:
    import dataclasses

    from transformers import AutoTokenizer

    from cotune.config import load_config
    from cotune.data import build_splits, generalization_texts
    from cotune.data.encoding import label_token_ids
    from cotune.models import resolve_model

    started = time.time()
    load_before = os.getloadavg()
    base = resolve_model(SLM, args.cache_dir)
    adapters, adapter_source = pick_adapters(args.adapter, args.cache_dir, args.train_steps, args.adapters)
    cfg = load_config(
        None, [f"models.slm={SLM}", f"data.test_size={args.test_size}", f"data.generalization_texts={args.ppl_texts}"]
    )
    splits = build_splits(cfg.data, cfg.clients.num_clients)
    tokenizer = AutoTokenizer.from_pretrained(base)
    scoring = {"test_labels": list(splits.test["label"]), "ppl_texts": generalization_texts(cfg.data, splits)}
    prompts = [splits.task.prompt(t) for t in splits.test["text"]]
    ctx = {
        "base": str(base), "cache_dir": args.cache_dir, "task": splits.task, "max_length": cfg.train.max_length,
        "pytorch_job": {**scoring, "task": dataclasses.asdict(splits.task), "test_texts": list(splits.test["text"])},
        "onnx_job": {**scoring, "prompts": prompts, "label_token_ids": label_token_ids(tokenizer, splits.task)},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        work = Path(tmp)
        per_adapter = []
        for index, adapter in enumerate(adapters):
            runtime_dir = Path(per_adapter[0]["int4_runtime"]["model_dir"]) if per_adapter else None
            per_adapter.append(measure_adapter(index, adapter, ctx, work, runtime_dir))
        first = per_adapter[0]
        runtime_dir = first["int4_runtime"]["model_dir"]
        adapter_files = [str(Path(runtime_dir) / "adapters" / "adapter.onnx_adapter")]
        adapter_files += [m["int4_runtime"]["adapter_file"] for m in per_adapter[1:]]
        speed = run_worker("speed", {
            "base": str(base), "adapter": str(adapters[0]), "speed_repeats": args.speed_repeats,
            "model_dirs": {v: first[v]["model_dir"] for v in VARIANTS}, "runtime_dir": runtime_dir,
            "adapter_files": adapter_files if len(adapter_files) > 1 else adapter_files * 2,
        })  # fmt: skip
        adapter_bytes = Path(adapter_files[0]).stat().st_size
        base_bytes = sum(p.stat().st_size for p in Path(runtime_dir).glob("model.onnx*"))
        merged_int4_bytes = sum(p.stat().st_size for p in Path(first["int4"]["model_dir"]).glob("model.onnx*"))
    tokens_per_s = speed["tokens_per_s"]
    drops = {v: spread([m[v]["accuracy_drop_points"] for m in per_adapter]) for v in DROPS}
    results = {
        "model": SLM,
        "adapters": [str(a) for a in adapters],
        "adapter_source": adapter_source,
        "threads": THREADS,
        "batch_size": 1,
        "new_tokens": NEW_TOKENS,
        "speed_repeats": args.speed_repeats,
        "test_examples": len(prompts),
        "ppl_texts": len(scoring["ppl_texts"]),
        "accuracy_drop_points": drops,
        "pytorch_accuracy": spread([m["pytorch_accuracy"] for m in per_adapter]),
        "adapter_bytes": adapter_bytes,
        "adapter_fraction": adapter_bytes / base_bytes,
        "runtime_base_bytes": base_bytes,
        "merged_int4_bytes": merged_int4_bytes,
        "runtime_adapter_accuracy_drop": drops["int4_runtime"]["median"],
        "runtime_adapter_speed_ratio": tokens_per_s["int4_runtime"] / tokens_per_s["int4"],
        "adapter_switch_ms": speed["switch"]["genai"]["switch_and_first_token_ms"],
        "adapter_switch": speed["switch"],
        "pytorch_tokens_per_s": tokens_per_s["pytorch"],
        "first_adapter": "the per-variant blocks below (size, speed, parity, perplexity) are adapter 0's",
        "pytorch_perplexity": first["pytorch"]["perplexity"],
        "pytorch_peak_rss_mb": first["pytorch"]["peak_rss_mb"],
    }
    for variant in VARIANTS:
        measured = {k: v for k, v in first[variant].items() if k not in ("model_dir", "adapter_file")}
        results[variant] = {
            "tokens_per_s": tokens_per_s[variant],
            "speedup_vs_pytorch": tokens_per_s[variant] / tokens_per_s["pytorch"],
            "size_ratio_vs_fp32": measured["size_mb"] / first["fp32"]["size_mb"],
            **measured,
        }
    results["per_adapter"] = [
        {"adapter": m["adapter"], "pytorch_accuracy": m["pytorch_accuracy"],
         **{v: {k: m[v][k] for k in ("accuracy", "accuracy_drop_points", "predictions_changed_vs_pytorch")} for v in DROPS}}
        for m in per_adapter
    ]  # fmt: skip
    results["goals"] = {name: bool(check(results)) for name, check in GOALS.items()}
    results["conditions"] = {
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_1m_during_speed_rounds": speed["loadavg_1m"],
        "loadavg_after": os.getloadavg(),
        "note": "shared machine: other agents' jobs run alongside; see the loadavg figures. A 2-thread decode slows "
        "down far more than the load suggests when the two cores are oversubscribed (its threads wait for each "
        "other at every op), PyTorch's many small ops most of all.",
        "perplexity": "of plot summaries, another register than the task; the depth-pruned SLM's language modelling "
        "is broken by the pruning (base alone ~7e6 on 20 summaries, SmolLM2-135M 56), so only the ratios between "
        "variants mean something",
        "adapter_switch_ms": "genai backend: activate a never-loaded .onnx_adapter copy, then the prompt's first "
        "token (prefill included); adapter_switch holds both backends and the first token alone for comparison",
        "wall_s": time.time() - started,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

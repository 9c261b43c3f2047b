"""`cotune run`: the whole job in one run folder — federation(s), baselines, report, edge export.

The main algorithm runs in the run folder itself; `run.compare` algorithms run with the same seed, splits and
budget in `compare/<algorithm>/`, so the report compares like with like. Each is resumable on its own.
"""

import contextlib
import dataclasses
import json
import logging
import time
import tomllib
from pathlib import Path

from cotune.config import CotuneConfig, dump_toml, from_dict
from cotune.data import build_splits
from cotune.federation.server_app import new_run_dir
from cotune.federation.server_loop import GLOBAL_ADAPTER
from cotune.federation.simulation import simulate
from cotune.models import resolve_model
from cotune.run.baselines import local_only
from cotune.run.report import render_report, summarize, write_summary
from cotune.server_vllm.engine import open_engine

log = logging.getLogger(__name__)
GENERATES = ("crosslm", "cotune")


def resume_config(run_dir: Path) -> CotuneConfig:
    path = run_dir / "config.toml"
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume {run_dir}: no config.toml (not a cotune run folder)")
    return from_dict(CotuneConfig, tomllib.loads(path.read_text()))


def with_algorithm(cfg: CotuneConfig, algorithm: str) -> CotuneConfig:
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, algorithm=algorithm, compare=[]))


def _shared_engine(cfg: CotuneConfig, algorithms: list[str], run_dir: Path):
    """One generation engine for every run of the job that generates: vLLM's start is paid once."""
    if not any(a in GENERATES for a in algorithms):
        return contextlib.nullcontext(None)
    llm_dir = resolve_model(cfg.models.llm, cfg.models.cache_dir)
    return open_engine(cfg.server, llm_dir, run_dir / "logs")


def run_federations(cfg: CotuneConfig, run_dir: Path) -> dict[str, Path]:
    """Run (or finish) every algorithm of the job; returns each one's folder."""
    algorithms = [cfg.run.algorithm] + [a for a in cfg.run.compare if a != cfg.run.algorithm]
    folders = {a: run_dir if a == cfg.run.algorithm else run_dir / "compare" / a for a in algorithms}
    with _shared_engine(cfg, algorithms, run_dir) as engine:
        for algorithm, folder in folders.items():
            if (folder / GLOBAL_ADAPTER / "adapter_config.json").is_file():
                continue  # finished before an interruption
            folder.mkdir(parents=True, exist_ok=True)
            log.info("federation: %s -> %s", algorithm, folder)
            simulate(with_algorithm(cfg, algorithm), folder, engine)
            if not (folder / GLOBAL_ADAPTER / "adapter_config.json").is_file():
                raise RuntimeError(f"federation '{algorithm}' did not complete: no {GLOBAL_ADAPTER} in {folder}")
    return folders


def export_edge(cfg: CotuneConfig, run_dir: Path) -> dict:
    """The final global SLM as a quantized ONNX model in `edge/`, with its size and decode speed."""
    from cotune.edge_runtime.speed import measure_tokens_per_s
    from cotune.edge_runtime.layout import MANIFEST
    from cotune.export.pipeline import export_edge_model

    out = run_dir / "edge"
    if not (out / MANIFEST).is_file():
        e = cfg.export
        export_edge_model(
            cfg.models.slm, run_dir / GLOBAL_ADAPTER, out, e.precision, e.parity_prompts, e.parity_tokens,
            cfg.models.cache_dir,
        )
    manifest = json.loads((out / MANIFEST).read_text())
    prompt = build_splits(cfg.data, cfg.clients.num_clients).task.generation_prompt(1)
    return {
        "path": str(out),
        "precision": manifest["precision"],
        "size_mb": round(manifest["sizes"]["model_bytes"] / 2**20, 1),
        "tokens_per_s": round(measure_tokens_per_s(out, prompt, new_tokens=64), 1),
        "parity": manifest["parity"],
    }


def run_job(cfg: CotuneConfig, run_dir: Path | None = None) -> Path:
    """Run (or, given an existing run folder, resume) the job; returns the run folder."""
    start = time.perf_counter()
    run_dir = run_dir or new_run_dir(cfg.run.output_root)
    (run_dir / "config.toml").write_text(dump_toml(cfg))
    log.info("run folder: %s", run_dir)
    folders = run_federations(cfg, run_dir)
    baselines = {}
    if cfg.run.baselines:
        baselines = local_only(cfg, build_splits(cfg.data, cfg.clients.num_clients), run_dir)
    compared = {}
    for algorithm, folder in folders.items():
        if folder != run_dir:
            compared[algorithm] = summarize(folder, algorithm, baselines, 0.0)
            write_summary(folder, compared[algorithm])
    summary = summarize(run_dir, cfg.run.algorithm, baselines, time.perf_counter() - start)
    for algorithm, sub in compared.items():
        summary["slm_accuracy"][algorithm] = sub["slm_accuracy"][algorithm]
        summary.setdefault("compare", {})[algorithm] = {
            k: sub[k] for k in ("slm_accuracy", "llm_accuracy", "llm_generalization_ppl") if k in sub
        }
    if cfg.export.enabled:
        summary["edge"] = export_edge(cfg, run_dir)
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_summary(run_dir, summary)
    report = render_report(run_dir, summary, f"cotune run {run_dir.name} ({cfg.run.algorithm})")
    log.info("report: %s", report)
    return run_dir

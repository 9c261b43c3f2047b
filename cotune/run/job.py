"""`cotune run`: the whole job in one run folder — federation(s), baselines, report, edge export.

The main algorithm runs in the run folder itself; `run.compare` algorithms run with the same seed, splits and
budget in `compare/<algorithm>/`, so the report compares like with like. Each is resumable on its own.
"""

import contextlib
import dataclasses
import json
import logging
import os
import time
import tomllib
from pathlib import Path

from cotune.algorithms.crosslm.generation import planned_tokens
from cotune.config import CotuneConfig, from_dict
from cotune.config.algorithms import ALGORITHMS
from cotune.data import ClassificationTask, build_splits
from cotune.export.checks import check_exportable
from cotune.metrics_log import MetricsLog
from cotune.models import resolve_model
from cotune.openmp import REASON_ENV
from cotune.run.baselines import llm_public_only, local_only
from cotune.run.folder import (
    COMPARE, CONFIG, EDGE, GLOBAL_ADAPTER, LOGS, METRICS, REUSE, finished, metrics_log, new_run_dir, write_config,
)
from cotune.run.report import (
    collect_time_rows, no_round_aggregated, render_report, summarize, time_table, write_summary,
)
from cotune.run.simulation import simulate
from cotune.server_vllm.engine import BackgroundEngine, open_engine

log = logging.getLogger(__name__)


class FederationFailed(RuntimeError):
    """A federation of the job ended without aggregating any silo update: no baseline, export or report follows."""


def resume_config(run_dir: Path) -> CotuneConfig:
    path = run_dir / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume {run_dir}: no config.toml (not a cotune run folder)")
    return from_dict(CotuneConfig, tomllib.loads(path.read_text()))


def with_algorithm(cfg: CotuneConfig, algorithm: str) -> CotuneConfig:
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, algorithm=algorithm, compare=[]))


@contextlib.contextmanager
def _shared_engine(
    cfg: CotuneConfig, algorithms: list[str], run_dir: Path, metrics: MetricsLog, task: ClassificationTask
):
    """One generation engine for every run of the job that generates, started now (vLLM: in the background,
    beside the first round's silo training): its start is paid once, and its seconds land in the phase timing."""
    generating = [a for a in algorithms if ALGORITHMS[a].crosslm and not finished(_folder(cfg, run_dir, a))]
    if not generating:
        yield None
        return
    llm_dir = resolve_model(cfg.models.llm, cfg.models.cache_dir)
    start = time.perf_counter()
    planned = len(generating) * planned_tokens(cfg.crosslm, len(task.labels), cfg.rounds.num_rounds)
    engine = open_engine(cfg.server, llm_dir, run_dir / LOGS, background=True, planned_tokens=planned)
    if not isinstance(engine, BackgroundEngine):
        metrics.time_row("engine_start", time.perf_counter() - start, scope="job")
    try:
        yield engine
    finally:
        if isinstance(engine, BackgroundEngine):
            startup = engine.startup()
            metrics.time_row("engine_start", startup["start_s"] or 0.0, scope="job", overlapped=True)
            metrics.time_row("engine_wait", startup["waited_s"], scope="job")
        engine.close()


def _folder(cfg: CotuneConfig, run_dir: Path, algorithm: str) -> Path:
    return run_dir if algorithm == cfg.run.algorithm else run_dir / COMPARE / algorithm


def run_federations(cfg: CotuneConfig, run_dir: Path, metrics: MetricsLog, task: ClassificationTask) -> dict[str, Path]:
    """Run (or finish) every algorithm of the job; returns each one's folder."""
    algorithms = [cfg.run.algorithm] + [a for a in cfg.run.compare if a != cfg.run.algorithm]
    folders = {a: _folder(cfg, run_dir, a) for a in algorithms}
    with _shared_engine(cfg, algorithms, run_dir, metrics, task) as engine:
        for algorithm, folder in folders.items():
            if finished(folder):
                check_aggregated(folder, algorithm)  # finished before an interruption
                continue
            run_cfg = with_algorithm(cfg, algorithm)
            if folder != run_dir:
                write_config(folder, run_cfg)  # the job's own config.toml keeps the comparison it asked for
            log.info("federation: %s -> %s", algorithm, folder)
            with metrics.timed("federation", algorithm=algorithm, scope="job"):
                simulate(run_cfg, folder, engine)
            if not finished(folder):
                raise RuntimeError(f"federation '{algorithm}' did not complete: no {GLOBAL_ADAPTER} in {folder}")
            check_aggregated(folder, algorithm)
    return folders


def check_aggregated(folder: Path, algorithm: str) -> None:
    """Stop the job when a federation aggregated no silo update in any round (its metrics.jsonl says why each
    silo was left out), rather than report its initial adapter as the algorithm's result."""
    if (reasons := no_round_aggregated(metrics_log(folder).rows())) is not None:
        raise FederationFailed(
            f"federation '{algorithm}' aggregated no silo update in any round ({reasons}): its global adapter is the "
            f"initial one, not a result. Each silo's reply (failed, rejected or missing) is in {folder / METRICS}."
        )


def export_edge(cfg: CotuneConfig, run_dir: Path, metrics: MetricsLog, task: ClassificationTask) -> dict:
    """The final global SLM as a quantized ONNX model in `edge/`, with its size and decode speed."""
    from cotune.edge_runtime.speed import measure_decode_speed
    from cotune.edge_runtime.layout import MANIFEST
    from cotune.export.pipeline import export_edge_model

    out = run_dir / EDGE
    if not (out / MANIFEST).is_file():
        e = cfg.export
        with metrics.timed("export", scope="job"):
            export_edge_model(
                cfg.models.slm, run_dir / GLOBAL_ADAPTER, out, e.precision, e.parity_prompts, e.parity_tokens,
                cfg.models.cache_dir, task=task, max_length=cfg.train.max_length, adapter_mode=e.adapter_mode,
            )
    manifest = json.loads((out / MANIFEST).read_text())
    prompt = task.generation_prompt(1)
    with metrics.timed("edge_speed_check", scope="job"):
        speed = measure_decode_speed(out, prompt, new_tokens=64)
    return {
        "path": str(out),
        "precision": manifest["precision"],
        "size_mb": round(manifest["sizes"]["model_bytes"] / 2**20, 1),
        "tokens_per_s": round(speed.tokens_per_s, 1),
        "threads": speed.threads,
        "parity": manifest["parity"],
    }


def with_reuse(cfg: CotuneConfig, run_dir: Path) -> CotuneConfig:
    """The job's runs share one reuse folder (absolute: Ray's workers may run elsewhere), unless one is set."""
    if cfg.run.reuse_dir:
        return cfg
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, reuse_dir=str((run_dir / REUSE).resolve())))


def run_job(cfg: CotuneConfig, run_dir: Path | None = None) -> Path:
    """Run (or, given an existing run folder, resume) the job; returns the run folder."""
    start = time.perf_counter()
    check_exportable(cfg, resolve_model(cfg.models.slm, cfg.models.cache_dir))  # before any training, not after
    run_dir = run_dir or new_run_dir(cfg.run.output_root)
    cfg = with_reuse(cfg, run_dir)
    write_config(run_dir, cfg)
    log.info("run folder: %s", run_dir)
    log.info("OpenMP: %s", os.environ.get(REASON_ENV, "not chosen by cotune"))
    metrics = metrics_log(run_dir)
    splits = build_splits(cfg.data, cfg.clients.num_clients)  # once: the engine's plan, the baselines, the export
    folders = run_federations(cfg, run_dir, metrics, splits.task)
    baselines, llm_baseline = {}, {}
    if cfg.run.baselines:
        with metrics.timed("local_only", scope="job"):
            baselines = local_only(cfg, splits, run_dir)
        if ALGORITHMS[cfg.run.algorithm].uses_llm:
            with metrics.timed("llm_public_only", scope="job"):
                llm_baseline = llm_public_only(cfg, splits, run_dir)
    compared = {}
    for algorithm, folder in folders.items():
        if folder != run_dir:
            compared[algorithm] = summarize(folder, algorithm, baselines, 0.0)
            write_summary(folder, compared[algorithm])
    summary = summarize(run_dir, cfg.run.algorithm, baselines, time.perf_counter() - start)
    if llm_baseline and "llm_accuracy" in summary:
        summary["llm_accuracy"]["public_only"] = llm_baseline["test_accuracy"]
    for algorithm, sub in compared.items():
        summary["slm_accuracy"][algorithm] = sub["slm_accuracy"][algorithm]
        summary.setdefault("compare", {})[algorithm] = {
            k: sub[k] for k in ("slm_accuracy", "llm_accuracy", "llm_generalization_ppl") if k in sub
        }
    if cfg.export.enabled:
        summary["edge"] = export_edge(cfg, run_dir, metrics, splits.task)
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    summary["time"] = time_table(collect_time_rows(run_dir, folders), summary["wall_seconds"])
    write_summary(run_dir, summary)
    report = render_report(run_dir, summary, f"cotune run {run_dir.name} ({cfg.run.algorithm})")
    log.info("report: %s", report)
    return run_dir

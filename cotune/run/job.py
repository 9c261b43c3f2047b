"""`cotune run`: the whole job in one run folder — federation, baselines, report."""

import logging
import time
import tomllib
from pathlib import Path

from cotune.config import CotuneConfig, dump_toml, from_dict
from cotune.data import build_splits
from cotune.federation.server_app import new_run_dir
from cotune.federation.server_loop import GLOBAL_ADAPTER
from cotune.federation.simulation import simulate
from cotune.run.baselines import local_only
from cotune.run.report import render_report, summarize

log = logging.getLogger(__name__)


def resume_config(run_dir: Path) -> CotuneConfig:
    path = run_dir / "config.toml"
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume {run_dir}: no config.toml (not a cotune run folder)")
    return from_dict(CotuneConfig, tomllib.loads(path.read_text()))


def run_job(cfg: CotuneConfig, run_dir: Path | None = None) -> Path:
    """Run (or, given an existing run folder, resume) the job; returns the run folder."""
    start = time.perf_counter()
    run_dir = run_dir or new_run_dir(cfg.run.output_root)
    (run_dir / "config.toml").write_text(dump_toml(cfg))
    log.info("run folder: %s", run_dir)
    simulate(cfg, run_dir)
    if not (run_dir / GLOBAL_ADAPTER / "adapter_config.json").is_file():
        raise RuntimeError(f"federation did not complete: no {GLOBAL_ADAPTER} in {run_dir} (see the log above)")
    baselines = {}
    if cfg.run.baselines:
        baselines = local_only(cfg, build_splits(cfg.data, cfg.clients.num_clients), run_dir)
    summary = summarize(run_dir, cfg.run.algorithm, baselines, time.perf_counter() - start)
    report = render_report(run_dir, summary, f"cotune run {run_dir.name} ({cfg.run.algorithm})")
    log.info("report: %s", report)
    return run_dir

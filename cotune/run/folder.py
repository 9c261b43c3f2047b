"""The run folder's layout: every name in it, where new folders go, and its `config.toml`, written once.

The layers below get paths and open logs as arguments (`outputs`), so what a run leaves where is decided here:

    <run>/config.toml        the job's configuration, as run (what `--resume` reads)
    <run>/metrics.jsonl      one JSON row per event (`cotune.metrics_log`); metrics.json, report.md, accuracy.png:
                             the summary; baselines.json, llm_public_only.json: the baselines
    <run>/checkpoints/       round_NNN/ per completed round (`cotune.checkpoints`)
    <run>/global_adapter/    the final SLM adapter (PEFT folder); llm_adapter/: the LLM's
    <run>/llm_adapters/      the LLM adapter of each round, as the generation engine loads it
    <run>/logs/              the engine's log; edge/: the ONNX export; reuse/: work shared by the job's runs
    <run>/compare/<name>/    each compared algorithm's run, laid out the same way
"""

from datetime import datetime
from pathlib import Path

from cotune.checkpoints import Checkpoints
from cotune.config import CotuneConfig, dump_toml
from cotune.federation.outputs import RunOutputs
from cotune.metrics_log import MetricsLog

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
SUMMARY = "metrics.json"
REPORT = "report.md"
PLOT = "accuracy.png"
BASELINES = "baselines.json"
LLM_BASELINE = "llm_public_only.json"
CHECKPOINTS = "checkpoints"
GLOBAL_ADAPTER = "global_adapter"
LLM_ADAPTER = "llm_adapter"
LLM_ADAPTERS = "llm_adapters"
LOGS = "logs"
EDGE = "edge"
REUSE = "reuse"
COMPARE = "compare"


def new_run_dir(root: str) -> Path:
    run_dir = Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def write_config(run_dir: Path, cfg: CotuneConfig) -> None:
    """The one writer of a run's `config.toml`: the configuration its results came from."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG).write_text(dump_toml(cfg))


def metrics_log(run_dir: Path) -> MetricsLog:
    return MetricsLog(run_dir / METRICS)


def outputs(run_dir: Path) -> RunOutputs:
    """Where one federation run writes, in `run_dir`."""
    return RunOutputs(
        metrics=metrics_log(run_dir),
        checkpoints=Checkpoints(run_dir / CHECKPOINTS),
        global_adapter=run_dir / GLOBAL_ADAPTER,
        llm_adapter=run_dir / LLM_ADAPTER,
        llm_adapters=run_dir / LLM_ADAPTERS,
        logs=run_dir / LOGS,
    )


def finished(run_dir: Path) -> bool:
    """A run is finished once its final adapter is written (the last thing a run writes)."""
    from peft.utils import CONFIG_NAME  # imports torch: only once a run is under way

    return (run_dir / GLOBAL_ADAPTER / CONFIG_NAME).is_file()

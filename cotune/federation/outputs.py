"""Where one federation run writes. The run folder's layout (`cotune.run.folder`) fills it in, so federation
code never spells a path of its own."""

from dataclasses import dataclass
from pathlib import Path

from cotune.checkpoints import Checkpoints
from cotune.metrics_log import MetricsLog


@dataclass(frozen=True)
class RunOutputs:
    """Where one federation run writes; the run folder's layout (`cotune.run.folder`) decides the paths."""

    metrics: MetricsLog
    checkpoints: Checkpoints
    global_adapter: Path  # the final SLM adapter (PEFT folder)
    llm_adapter: Path  # the final LLM adapter
    llm_adapters: Path  # each round's LLM adapter, as the generation engine loads it
    logs: Path  # the generation engine's log

"""The generation engine started in the background at job start, waited for only when CrossLM first generates.

vLLM's start (20-120 s on 2 cores) then overlaps the first round's silo training instead of adding to it.
"""

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from cotune.run.metrics import MetricsLog
from cotune.server_vllm.config import ServerConfig
from cotune.server_vllm.engine import GenerationEngine, Sampling, open_engine

log = logging.getLogger(__name__)


class BackgroundEngine(GenerationEngine):
    """A GenerationEngine whose start runs in a thread; the first call that needs it waits (and logs the wait)."""

    def __init__(self, cfg: ServerConfig, model_dir: Path, log_dir: Path, metrics: MetricsLog) -> None:
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-start")
        self._future: Future[GenerationEngine] = self._pool.submit(self._start, cfg, model_dir, log_dir)

    def _start(self, cfg: ServerConfig, model_dir: Path, log_dir: Path) -> GenerationEngine:
        start = time.perf_counter()
        engine = open_engine(cfg, model_dir, log_dir)
        self.metrics.time_row("engine_start", time.perf_counter() - start, scope="job", overlapped=True)
        return engine

    @property
    def engine(self) -> GenerationEngine:
        if not self._future.done():
            log.info("waiting for the generation engine to finish starting")
            start = time.perf_counter()
            self._future.result()
            self.metrics.time_row("engine_wait", time.perf_counter() - start, scope="job")
        return self._future.result()

    @property
    def backend(self) -> str:  # type: ignore[override]
        return self.engine.backend

    @property
    def generated_tokens(self) -> int:  # type: ignore[override]
        return self.engine.generated_tokens

    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[str]]:
        return self.engine.generate(prompts, sampling, adapter)

    def load_adapter(self, name: str, path: str | Path) -> None:
        self.engine.load_adapter(name, path)

    def close(self) -> None:
        """Stops the engine, once it has started (a start that failed has nothing to stop)."""
        self._pool.shutdown(wait=True)
        if self._future.exception() is None:
            self._future.result().close()

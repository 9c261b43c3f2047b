"""One generation interface over two backends: vLLM in its own process, or HF transformers in process.

`open_engine` picks the backend from ServerConfig and says why in the log. Whatever it picks stays for the
engine's life: a vLLM server that dies raises EngineError on the next call instead of switching to HF, so a run
never mixes outputs of two engines without saying so. `open_engine(..., background=True)` returns at once and
starts a vLLM server in a thread, so that a job can train silos meanwhile; the first call that needs the engine
waits for it (BackgroundEngine).
"""

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cotune.config.server import ServerConfig
from cotune.server_vllm.interface import GenerationEngine, Sampling

__all__ = ["BackgroundEngine", "GenerationEngine", "Sampling", "choose_backend", "open_engine"]

log = logging.getLogger(__name__)


def choose_backend(cfg: ServerConfig) -> tuple[str, str]:
    """(backend, reason) for `cfg.backend`; auto prefers vLLM where it can be reached or started."""
    if cfg.backend != "auto":
        return cfg.backend, f"server.backend = {cfg.backend}"
    if cfg.vllm_url:
        return "vllm", f"auto: server.vllm_url is set ({cfg.vllm_url})"
    from cotune.server_vllm.vllm_server import find_vllm_python

    python = find_vllm_python(cfg.vllm_python)
    if python is not None:
        return "vllm", f"auto: vLLM environment found at {python}"
    return "hf", f"auto: no server.vllm_url and no vLLM environment at {cfg.vllm_python} (see README to install one)"


class BackgroundEngine(GenerationEngine):
    """An engine that starts in a background thread. The constructor returns at once; `generate`, `load_adapter`
    and any other engine attribute wait for the start to finish (and raise its error, if it failed).

    `startup()` says how long the start took and how long callers waited for it, for a job's phase timing.
    """

    def __init__(self, backend: str, start: Callable[[], GenerationEngine]) -> None:
        self.backend = backend
        self._engine: GenerationEngine | None = None
        self._error: BaseException | None = None
        self._began = time.monotonic()
        self._start_s: float | None = None
        self._waited_s = 0.0
        self._thread = threading.Thread(target=self._start, args=(start,), name="cotune-engine-start", daemon=True)
        self._thread.start()

    def _start(self, start: Callable[[], GenerationEngine]) -> None:
        try:
            self._engine = start()
        except BaseException as err:  # kept for the caller's thread, which re-raises it on first use
            self._error = err
        finally:
            self._start_s = time.monotonic() - self._began

    @property
    def ready(self) -> bool:
        """True once the start finished (successfully or not); never blocks."""
        return not self._thread.is_alive()

    def wait(self) -> GenerationEngine:
        """The started engine; blocks until the start finished and re-raises its error if it failed."""
        if self._thread.is_alive():
            began = time.monotonic()
            log.info("waiting for the %s generation engine to finish starting", self.backend)
            self._thread.join()
            self._waited_s += time.monotonic() - began
        if self._error is not None:
            raise self._error
        assert self._engine is not None
        return self._engine

    def startup(self) -> dict:
        """{"backend", "start_s" (None while starting), "waited_s"}: the start and the time callers blocked on it."""
        start_s = None if self._start_s is None else round(self._start_s, 1)
        return {"backend": self.backend, "start_s": start_s, "waited_s": round(self._waited_s, 1)}

    @property
    def generated_tokens(self) -> int:  # type: ignore[override]
        return self._engine.generated_tokens if self._engine is not None else 0

    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[str]]:
        return self.wait().generate(prompts, sampling, adapter=adapter)

    def load_adapter(self, name: str, path: str | Path) -> None:
        self.wait().load_adapter(name, path)

    def close(self) -> None:
        """Waits for a start in progress (a half-started vLLM server is stopped by its own error path)."""
        self._thread.join()
        if self._engine is not None:
            self._engine.close()

    def __getattr__(self, name: str):
        if name.startswith("_"):  # attributes this object has not set yet (during __init__): no waiting
            raise AttributeError(name)
        return getattr(self.wait(), name)


def open_engine(
    cfg: ServerConfig, model_dir: Path, run_dir: Path, background: bool = False, planned_tokens: int | None = None
) -> GenerationEngine:
    """The engine ServerConfig asks for, serving the HF model folder `model_dir`; vLLM logs go to `run_dir`.
    `planned_tokens`: what the caller will generate (None: unknown), which vLLM's auto adapter serving weighs.

    With `background`, a vLLM engine starts in a thread and a BackgroundEngine is returned at once. The HF
    engine always loads here (about a second): loading it in a thread would seed torch's global generator
    (HfEngine samples from it) in the middle of whatever the caller's thread is doing.
    """
    backend, reason = choose_backend(cfg)
    later = background and backend == "vllm"
    log.info("generation engine: %s (%s)%s", backend, reason, "; starting in the background" if later else "")
    if backend == "vllm":
        from cotune.server_vllm.vllm_engine import VllmEngine

        if later:
            return BackgroundEngine(backend, lambda: VllmEngine(cfg, model_dir, run_dir, planned_tokens))
        return VllmEngine(cfg, model_dir, run_dir, planned_tokens)
    from cotune.server_vllm.hf_engine import HfEngine

    return HfEngine(cfg, model_dir)

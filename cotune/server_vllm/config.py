"""Server-side settings: which generation engine serves the LLM, and how the LLM is updated."""

from dataclasses import dataclass
from typing import Literal

from cotune.config.errors import require
from cotune.config.fields import option


@dataclass
class ServerConfig:
    backend: Literal["auto", "vllm", "hf"] = option(
        "auto",
        help="Generation engine: vLLM (own process from .venv-vllm, or vllm_url), the in-process HF fallback, "
        "or auto (vLLM where .venv-vllm exists; the choice is logged).",
    )
    vllm_url: str = option("", help="An existing vLLM OpenAI-compatible endpoint to use instead of starting one.")
    vllm_python: str = option(".venv-vllm/bin/python", help="Interpreter of the vLLM environment cotune starts.")
    vllm_start_timeout_s: float = option(300.0, help="How long to wait for the vLLM server to become ready.")
    max_lora_rank: int = option(16, help="Largest adapter rank the vLLM engine accepts (--max-lora-rank).")
    llm_lr: float = option(2e-4, help="Learning rate of the LLM's QLoRA updates.")
    llm_steps: int = option(20, help="Optimizer steps of each LLM update.")

    def validate(self) -> None:
        require(self.vllm_start_timeout_s > 0, "vllm_start_timeout_s", "seconds > 0", self.vllm_start_timeout_s)
        require(self.max_lora_rank > 0, "max_lora_rank", "an integer > 0", self.max_lora_rank)
        require(self.llm_lr > 0, "llm_lr", "a number > 0", self.llm_lr)
        require(self.llm_steps >= 0, "llm_steps", "an integer >= 0", self.llm_steps)

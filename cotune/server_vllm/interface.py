"""What every generation engine offers, apart from any one backend: the backends (`hf_engine`, `vllm_engine`)
implement it and `engine.open_engine` chooses among them, so neither imports the module that imports it."""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cotune.server_vllm.errors import PromptTooLongError


@dataclass(frozen=True)
class Sampling:
    """Sampling of one request; temperature 0 is greedy. `min_tokens` suppresses EOS until that many tokens.

    On CPU prefer `top_k` to `top_p` < 1: top-p sorts the whole vocabulary of every sequence at every step
    (both engines use torch's sort), which costs seconds per step for a few hundred sequences on 2 cores.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    max_tokens: int = 64
    min_tokens: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"sampling n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"sampling temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"sampling top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_tokens < 1:
            raise ValueError(f"sampling max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"sampling min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens}")


class GenerationEngine(ABC):
    """Generates text for prompts with the base model or a named adapter; use as a context manager."""

    backend: str
    generated_tokens: int  # running count of generated tokens (EOS included), for throughput figures

    @abstractmethod
    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[str]]:
        """`sampling.n` completions per prompt (prompt text excluded), in prompt order."""

    @abstractmethod
    def load_adapter(self, name: str, path: str | Path) -> None:
        """Make the PEFT folder `path` available as `name`; loading under a used name replaces that adapter."""

    @abstractmethod
    def close(self) -> None:
        """Release the engine (and stop any process it started); safe to call twice."""

    def __enter__(self) -> "GenerationEngine":
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def check_prompt_lengths(prompt_tokens: list[int], max_tokens: int, max_model_len: int) -> None:
    """Raise PromptTooLongError for the first prompt whose tokens plus `max_tokens` exceed the context."""
    for index, length in enumerate(prompt_tokens):
        if length + max_tokens > max_model_len:
            raise PromptTooLongError(
                f"prompt {index} has {length} tokens; with max_tokens={max_tokens} it needs {length + max_tokens}, "
                f"above the engine's context of {max_model_len} tokens (server.max_model_len)"
            )

"""Decode throughput of an exported model: batch 1, a fixed number of new tokens, EOS ignored."""

from pathlib import Path

from cotune.edge_runtime.model import Backend, EdgeModel


def tokens_per_s(model: EdgeModel, prompt: str, new_tokens: int = 64, repeats: int = 3) -> float:
    """New tokens per second (prefill included) of the fastest of `repeats` generations after one warm-up: on a
    shared CPU other jobs only ever slow a run down, so the fastest is the least disturbed (timeit's rule)."""
    model.generate(prompt, new_tokens, stop_at_eos=False)
    return max(model.generate(prompt, new_tokens, stop_at_eos=False).tokens_per_s for _ in range(repeats))


def measure_tokens_per_s(
    model_dir: str | Path, prompt: str, new_tokens: int = 64, threads: int = 2, backend: Backend = "auto"
) -> float:
    return tokens_per_s(EdgeModel(model_dir, backend, threads), prompt, new_tokens)

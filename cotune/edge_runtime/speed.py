"""Decode throughput of an exported model: batch 1, a fixed number of new tokens, EOS ignored."""

from pathlib import Path

from cotune.edge_runtime.model import Backend, EdgeModel


def tokens_per_s(model: EdgeModel, prompt: str, new_tokens: int = 64, repeats: int = 3) -> float:
    """New tokens per second (prefill included), after one warm-up generation."""
    model.generate(prompt, new_tokens, stop_at_eos=False)
    runs = [model.generate(prompt, new_tokens, stop_at_eos=False) for _ in range(repeats)]
    return sum(len(r.token_ids) for r in runs) / sum(r.seconds for r in runs)


def measure_tokens_per_s(
    model_dir: str | Path, prompt: str, new_tokens: int = 64, threads: int = 2, backend: Backend = "auto"
) -> float:
    return tokens_per_s(EdgeModel(model_dir, backend, threads), prompt, new_tokens)

"""Decode throughput of an exported model: batch 1, a fixed number of new tokens, EOS ignored."""

from dataclasses import dataclass
from pathlib import Path

from cotune.edge_runtime.model import Backend, EdgeModel
from cotune.openmp import usable_cpus


@dataclass(frozen=True)
class DecodeSpeed:
    tokens_per_s: float
    threads: int  # onnxruntime intra-op threads it ran with


def tokens_per_s(model: EdgeModel, prompt: str, new_tokens: int = 64, repeats: int = 3) -> float:
    """New tokens per second (prefill included) of the fastest of `repeats` generations after one warm-up: on a
    shared CPU other jobs only ever slow a run down, so the fastest is the least disturbed (timeit's rule)."""
    model.generate(prompt, new_tokens, stop_at_eos=False)
    return max(model.generate(prompt, new_tokens, stop_at_eos=False).tokens_per_s for _ in range(repeats))


def measure_decode_speed(
    model_dir: str | Path, prompt: str, new_tokens: int = 64, threads: int | None = None, backend: Backend = "auto"
) -> DecodeSpeed:
    """`threads` None: every core this process may use, passed to onnxruntime as a number, so that the figure comes
    with the thread count it ran on (onnxruntime's own default count is not observable)."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 (or None for every usable core), got {threads}")
    used = usable_cpus() if threads is None else threads
    return DecodeSpeed(tokens_per_s(EdgeModel(model_dir, backend, used), prompt, new_tokens), used)

"""A prompt-tuned export's soft prompt, shipped as the KV cache it leaves in every layer.

Prompt tuning prepends trained embeddings to the input. Those virtual tokens come first and attend only to each
other, so what the real tokens see of them is fixed: each layer's keys and values at positions 0..n-1. The
export computes them once (PyTorch, fp32) and stores them in `prompt_prefix.npz`, keyed by the graph's cache
input names; the runtime starts every sequence from that cache, at position n, instead of an empty one. The
result equals peft's forward with the soft prompt, with no change to the ONNX graph.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREFIX_FILE = "prompt_prefix.npz"


@dataclass(frozen=True)
class Prefix:
    cache: dict[str, np.ndarray]  # cache input name -> (1, kv_heads, n, head_dim)

    @property
    def length(self) -> int:
        return int(next(iter(self.cache.values())).shape[2])


def read_prefix(folder: Path) -> Prefix | None:
    """The folder's soft-prompt cache, or None for an export without one."""
    path = Path(folder) / PREFIX_FILE
    if not path.is_file():
        return None
    with np.load(path) as data:
        cache = {name: data[name] for name in data.files}
    if not cache or len({v.shape[2] for v in cache.values()}) != 1:
        raise ValueError(f"{path}: expected KV tensors of one common length, got {[v.shape for v in cache.values()]}")
    return Prefix(cache)

"""Decoding over onnxruntime-genai (og.Model / og.Generator): the fast path for model-builder exports.

og keeps the KV cache in buffers sized to `max_length`, so each generation asks for exactly prompt + new
tokens rather than the model's whole context. Runtime LoRA adapters load into one `og.Adapters` per model and are
activated per generator (`Generator.set_active_adapter`), so switching costs no reload of the base.
"""

import json
from collections.abc import Iterator

import numpy as np
import onnxruntime_genai as og

from cotune.edge_runtime.layout import EdgeLayout
from cotune.edge_runtime.sampling import Sampling


class GenaiDecoder:
    def __init__(self, layout: EdgeLayout, threads: int = 0) -> None:
        config = og.Config(str(layout.folder))
        if threads:
            options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
            config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.layout = layout
        self.model = og.Model(config)
        self.adapters: og.Adapters | None = None
        self.active: str | None = None
        self.loaded: set[str] = set()

    def set_adapter(self, path: str | None) -> None:
        """Activate the `.onnx_adapter` at `path` for the following generations (None: the base model)."""
        if path is not None:
            if self.adapters is None:
                self.adapters = og.Adapters(self.model)
            if path not in self.loaded:
                self.adapters.load(path, path)
                self.loaded.add(path)
        self.active = path

    def _generator(self, ids: list[int], max_length: int, sampling: Sampling, min_length: int = 0) -> og.Generator:
        params = og.GeneratorParams(self.model)
        params.set_search_options(
            max_length=max_length,
            min_length=min_length,
            do_sample=sampling.do_sample,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            random_seed=sampling.seed,
        )
        generator = og.Generator(self.model, params)
        if self.active is not None:
            generator.set_active_adapter(self.adapters, self.active)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        return generator

    def next_token_logits(self, ids: list[int]) -> np.ndarray:
        """Logits (V,) of the token after `ids`."""
        generator = self._generator(ids, len(ids) + 1, Sampling())
        return np.asarray(generator.get_logits(), dtype=np.float32).reshape(-1)

    def stream(
        self, ids: list[int], max_new_tokens: int, sampling: Sampling, stop_ids: tuple[int, ...]
    ) -> Iterator[int]:
        max_length = len(ids) + max_new_tokens
        # og stops at the model's EOS by itself; no stop ids means "always produce max_new_tokens" (timing).
        generator = self._generator(ids, max_length, sampling, min_length=0 if stop_ids else max_length)
        while not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            if token in stop_ids:
                return
            yield token

"""Autoregressive decoding over a plain onnxruntime InferenceSession, carrying past_key_values between steps.

It runs both layouts: the model builder's graph (`past_key_values.N.key` in, `present.N.key` out, an
attention_mask input) and the transformers exporter's (`input.<cache leaf>` in, `output.<cache leaf>` out,
position_ids). Cache inputs are paired with their outputs by those two naming rules, so a graph with any other
cache naming fails at load with the names listed, not mid-generation.

Runtime LoRA (`set_adapter`): the adapter's tensors are fed through `RunOptions.add_active_adapter`; with none
active, the graph's empty default tensors make the LoRA branches add nothing. A prompt-tuned export starts every
sequence from its soft prompt's KV cache (`Prefix`) instead of an empty one.
"""

from collections.abc import Iterator

import numpy as np
import onnxruntime as ort

from cotune.edge_runtime.layout import EdgeLayout
from cotune.edge_runtime.prefix import Prefix
from cotune.edge_runtime.sampling import Sampling, pick_token

CACHE_RULES = (("past_key_values.", "present."), ("input.", "output."))


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: onnxruntime's default (all cores)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def cache_pairs(input_names: list[str], output_names: list[str]) -> dict[str, str]:
    """{cache input: matching cache output}."""
    pairs = {}
    for name in input_names:
        for prefix_in, prefix_out in CACHE_RULES:
            if name.startswith(prefix_in):
                out = prefix_out + name[len(prefix_in) :]
                if out not in output_names:
                    raise ValueError(f"cache input {name} has no output {out}; outputs: {output_names}")
                pairs[name] = out
    if not pairs:
        raise ValueError(f"no KV-cache inputs found among {input_names}: export the model with a KV cache")
    return pairs


class SessionDecoder:
    def __init__(self, layout: EdgeLayout, threads: int = 0, prefix: Prefix | None = None) -> None:
        self.layout, self.prefix = layout, prefix
        self.run_options: ort.RunOptions | None = None
        self._adapters: dict[str, ort.LoraAdapter] = {}
        self.session = ort.InferenceSession(
            str(layout.onnx_path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.cache = cache_pairs(self.input_names, self.output_names)
        types = {i.name: i.type for i in self.session.get_inputs()}
        self.cache_dtype = np.float16 if "float16" in types[next(iter(self.cache))] else np.float32
        known = {"input_ids", "attention_mask", "position_ids", *self.cache}
        unknown = [n for n in self.input_names if n not in known]
        if unknown:
            raise ValueError(f"{layout.onnx_path} has inputs this runtime cannot feed: {unknown}")
        batch_dim = self.session.get_inputs()[self.input_names.index("input_ids")].shape[0]
        # transformers' exporter fixes the batch to its sample's; the model builder leaves it symbolic
        self.max_batch = batch_dim if isinstance(batch_dim, int) else None

    def set_adapter(self, path: str | None) -> None:
        """Activate the `.onnx_adapter` at `path` for every following run (None: the base model). Each file is
        read once and kept, so switching back is free."""
        if path is None:
            self.run_options = None
            return
        if path not in self._adapters:
            adapter = ort.LoraAdapter()
            adapter.Load(path)
            self._adapters[path] = adapter
        self.run_options = ort.RunOptions()
        self.run_options.add_active_adapter(self._adapters[path])

    @property
    def prefix_len(self) -> int:
        return self.prefix.length if self.prefix else 0

    def empty_cache(self, batch: int = 1) -> dict[str, np.ndarray]:
        """The cache a new sequence starts from: empty, or the soft prompt's for a prompt-tuned export."""
        if self.prefix is not None:
            return {name: np.repeat(self.prefix.cache[name].astype(self.cache_dtype), batch, axis=0) for name in self.cache}
        shape = (batch, self.layout.num_kv_heads, 0, self.layout.head_dim)
        return {name: np.zeros(shape, self.cache_dtype) for name in self.cache}

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feed, self.run_options)))

    def forward(self, ids: list[int], cache: dict[str, np.ndarray], past_len: int):
        """Logits (len(ids), V) for `ids` after `past_len` cached tokens, and the grown cache."""
        feed = dict(cache)
        feed["input_ids"] = np.asarray([ids], dtype=np.int64)
        total = past_len + len(ids)
        if "attention_mask" in self.input_names:
            feed["attention_mask"] = np.ones((1, total), dtype=np.int64)
        if "position_ids" in self.input_names:
            feed["position_ids"] = np.arange(past_len, total, dtype=np.int64)[None]
        outputs = self._run(feed)
        new_cache = {name: outputs[out] for name, out in self.cache.items()}
        return outputs["logits"][0], new_cache

    def sequence_logits(self, ids: list[int]) -> np.ndarray:
        """Teacher-forced logits at every position of `ids`: (len(ids), V)."""
        return self.forward(ids, self.empty_cache(), self.prefix_len)[0]

    def last_logits(self, rows: list[list[int]]) -> np.ndarray:
        """(len(rows), V): the logits after each row's last token, rows run as one right-padded batch.

        Right padding is exact under a causal mask: a row's real positions never see its pads, and positions
        count from the row's start. Graphs with a fixed batch size, and soft-prompt exports (onnxruntime's
        GroupQueryAttention takes several new tokens after a non-empty cache only at batch 1), run row by row."""
        if self.max_batch is not None or "attention_mask" not in self.input_names or self.prefix is not None:
            return np.stack([self.sequence_logits(row)[-1] for row in rows])
        width, past = max(len(row) for row in rows), self.prefix_len
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), past + width), dtype=np.int64)
        mask[:, :past] = 1
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, past : past + len(row)] = 1
        feed = {**self.empty_cache(len(rows)), "input_ids": ids, "attention_mask": mask}
        if "position_ids" in self.input_names:
            feed["position_ids"] = np.repeat(np.arange(past, past + width, dtype=np.int64)[None], len(rows), axis=0)
        logits = self._run(feed)["logits"]
        return logits[np.arange(len(rows)), [len(row) - 1 for row in rows]]

    def stream(
        self, ids: list[int], max_new_tokens: int, sampling: Sampling, stop_ids: tuple[int, ...]
    ) -> Iterator[int]:
        rng = np.random.default_rng(sampling.seed)
        cache, past_len, step = self.empty_cache(), self.prefix_len, list(ids)
        for _ in range(max_new_tokens):
            logits, cache = self.forward(step, cache, past_len)
            past_len += len(step)
            token = pick_token(logits[-1], sampling, rng)
            if token in stop_ids:
                return
            yield token
            step = [token]

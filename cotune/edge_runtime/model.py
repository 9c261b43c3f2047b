"""`EdgeModel`: load an exported folder and generate from it, streamed token by token, without torch.

Backends: "genai" (onnxruntime-genai, model-builder exports), "session" (plain onnxruntime loop, any export),
"auto" (genai where the folder allows it). Prompts are tokenized without special tokens, as cotune trains.

A folder exported with `--adapter-mode runtime` holds the base with LoRA inputs and its adapter(s) as
`.onnx_adapter` files: the manifest's default adapter is active on load; `set_adapter(file)` switches to another
(or to the bare base with None) between requests, without reloading the base.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from cotune.edge_runtime.layout import MANIFEST, TOKENIZER, read_layout
from cotune.edge_runtime.prefix import read_prefix
from cotune.edge_runtime.sampling import GREEDY, Sampling
from cotune.edge_runtime.session_backend import SessionDecoder
from cotune.edge_runtime.task import read_manifest

Backend = Literal["auto", "genai", "session"]
DEFAULT_ADAPTER = "default"  # EdgeModel(adapter=...): the folder's own adapter, if it ships one


def runtime_adapter_info(folder: Path) -> dict | None:
    """The manifest's `runtime_adapter` section (LoRA inputs in the graph), or None for a merged export."""
    if not (folder / MANIFEST).is_file():
        return None
    return read_manifest(folder).get("runtime_adapter")


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else 0.0


class TextStream:
    """Incremental detokenization: a piece is released once it decodes to whole characters (a character can
    span several byte-level tokens)."""

    def __init__(self, model: "EdgeModel") -> None:
        self.model, self.ids, self.shown = model, [], ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.model.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next byte
            return ""
        piece, self.shown = text[len(self.shown) :], text
        return piece


class EdgeModel:
    def __init__(
        self, folder: str | Path, backend: Backend = "auto", threads: int = 0, adapter: str | Path | None = DEFAULT_ADAPTER
    ) -> None:
        self.layout = read_layout(folder)
        self.threads = threads
        self.tokenizer = Tokenizer.from_file(str(self.layout.folder / TOKENIZER))
        self.prefix = read_prefix(self.layout.folder)
        self.runtime_adapter = runtime_adapter_info(self.layout.folder)
        if backend not in ("auto", "genai", "session"):
            raise ValueError(f"unknown backend {backend!r}: expected auto, genai or session")
        if backend == "genai" and not self.layout.genai:
            raise ValueError(
                f"{folder} cannot run under onnxruntime-genai (no genai_config.json, or a prompt-tuned export whose "
                "soft prompt is a KV-cache prefix): use backend='session'"
            )
        self.backend = "genai" if backend == "genai" or (backend == "auto" and self.layout.genai) else "session"
        if self.backend == "genai":
            from cotune.edge_runtime.genai_backend import GenaiDecoder

            self.decoder = GenaiDecoder(self.layout, threads)
        else:
            self.decoder = SessionDecoder(self.layout, threads, self.prefix)
        self._session: SessionDecoder | None = self.decoder if self.backend == "session" else None
        self.adapter: Path | None = None
        if adapter == DEFAULT_ADAPTER:
            default = (self.runtime_adapter or {}).get("default")
            adapter = self.layout.folder / default if default else None
        self.set_adapter(adapter)

    def set_adapter(self, adapter: str | Path | None) -> None:
        """Run the following requests with the runtime LoRA adapter file `adapter` (None: the base alone)."""
        if adapter is not None:
            adapter = Path(adapter).expanduser().resolve()
            if self.runtime_adapter is None:
                raise ValueError(
                    f"{self.layout.folder} has no LoRA inputs (its adapter, if any, is merged into the weights): "
                    "export it with `cotune export --adapter-mode runtime` to switch adapters at runtime"
                )
            if not adapter.is_file():
                raise FileNotFoundError(f"adapter file {adapter} does not exist")
        for decoder in {id(d): d for d in (self.decoder, self._session) if d is not None}.values():
            decoder.set_adapter(None if adapter is None else str(adapter))
        self.adapter = adapter

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _ids(self, prompt: str | list[int], max_new_tokens: int) -> list[int]:
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("empty prompt: nothing to continue")
        soft = self.prefix.length if self.prefix else 0
        if soft + len(ids) + max_new_tokens > self.layout.context_length:
            raise ValueError(
                f"{len(ids)} prompt + {max_new_tokens} new tokens (+ {soft} soft-prompt) exceed the context of "
                f"{self.layout.context_length}"
            )
        return ids

    def stream_tokens(
        self,
        prompt: str | list[int],
        max_new_tokens: int = 64,
        sampling: Sampling = GREEDY,
        stop_at_eos: bool = True,
    ) -> Iterator[int]:
        """New token ids as they are decoded (EOS ends the stream and is not yielded)."""
        ids = self._ids(prompt, max_new_tokens)
        stop = self.layout.eos_token_ids if stop_at_eos else ()
        yield from self.decoder.stream(ids, max_new_tokens, sampling, stop)

    def stream_text(
        self, prompt: str | list[int], max_new_tokens: int = 64, sampling: Sampling = GREEDY
    ) -> Iterator[str]:
        """Text pieces as they become printable."""
        text = TextStream(self)
        for token in self.stream_tokens(prompt, max_new_tokens, sampling):
            if piece := text.push(token):
                yield piece

    def generate(
        self,
        prompt: str | list[int],
        max_new_tokens: int = 64,
        sampling: Sampling = GREEDY,
        stop_at_eos: bool = True,
    ) -> Generation:
        ids = self._ids(prompt, max_new_tokens)
        start = time.perf_counter()
        tokens = list(self.stream_tokens(ids, max_new_tokens, sampling, stop_at_eos))
        return Generation(self.decode(tokens), tokens, len(ids), time.perf_counter() - start)

    def next_token_logits(self, prompt: str | list[int]) -> np.ndarray:
        """Logits (V,) of the token that would follow `prompt`."""
        ids = self._ids(prompt, 1)
        if self.backend == "genai":
            return self.decoder.next_token_logits(ids)
        return self.decoder.sequence_logits(ids)[-1]

    def sequence_logits(self, ids: list[int]) -> np.ndarray:
        """Teacher-forced logits (len(ids), V); runs a plain session over the same ONNX file on genai exports."""
        return self.session_decoder().sequence_logits(self._ids(ids, 0))

    def session_decoder(self) -> SessionDecoder:
        """The plain-session decoder (batched scoring, teacher forcing); opened on first use on genai exports."""
        if self._session is None:
            self._session = SessionDecoder(self.layout, self.threads, self.prefix)
            self._session.set_adapter(None if self.adapter is None else str(self.adapter))
        return self._session

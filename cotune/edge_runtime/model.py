"""`EdgeModel`: load an exported folder and generate from it, streamed token by token, without torch.

Backends: "genai" (onnxruntime-genai, model-builder exports), "session" (plain onnxruntime loop, any export),
"auto" (genai where the folder allows it). Prompts are tokenized without special tokens, as cotune trains.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from cotune.edge_runtime.layout import TOKENIZER, read_layout
from cotune.edge_runtime.sampling import GREEDY, Sampling
from cotune.edge_runtime.session_backend import SessionDecoder

Backend = Literal["auto", "genai", "session"]


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
    def __init__(self, folder: str | Path, backend: Backend = "auto", threads: int = 0) -> None:
        self.layout = read_layout(folder)
        self.threads = threads
        self.tokenizer = Tokenizer.from_file(str(self.layout.folder / TOKENIZER))
        if backend not in ("auto", "genai", "session"):
            raise ValueError(f"unknown backend {backend!r}: expected auto, genai or session")
        if backend == "genai" and not self.layout.genai:
            raise ValueError(f"{folder} is not an onnxruntime-genai export (no genai_config.json): use backend='session'")
        self.backend = "genai" if backend == "genai" or (backend == "auto" and self.layout.genai) else "session"
        if self.backend == "genai":
            from cotune.edge_runtime.genai_backend import GenaiDecoder

            self.decoder = GenaiDecoder(self.layout, threads)
        else:
            self.decoder = SessionDecoder(self.layout, threads)
        self._session: SessionDecoder | None = self.decoder if self.backend == "session" else None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _ids(self, prompt: str | list[int], max_new_tokens: int) -> list[int]:
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("empty prompt: nothing to continue")
        if len(ids) + max_new_tokens > self.layout.context_length:
            raise ValueError(
                f"{len(ids)} prompt + {max_new_tokens} new tokens exceed the context of {self.layout.context_length}"
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
        if self._session is None:
            self._session = SessionDecoder(self.layout, self.threads)
        return self._session.sequence_logits(self._ids(ids, 0))

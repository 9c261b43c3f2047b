"""`EdgeClassifier`: an exported folder as a text classifier, from its task card, without torch.

It scores exactly as cotune evaluates (cotune.lm.evaluate.label_probabilities): the task's prompt, cut
from the left to the card's `max_length` tokens, then the next-token logits over the first token of each label
word, renormalized with a softmax over those words. Texts run in right-padded batches through a plain
onnxruntime session (one prefill per batch, no decoding), which any export supports.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cotune.edge_runtime.model import DEFAULT_ADAPTER, EdgeModel
from cotune.edge_runtime.task import TaskCard, read_task_card


@dataclass(frozen=True)
class Classification:
    label: str
    index: int
    probabilities: dict[str, float]  # label -> probability, over the task's labels


class EdgeClassifier:
    def __init__(
        self,
        folder: str | Path,
        adapter: str | Path | None = DEFAULT_ADAPTER,
        threads: int = 0,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.task: TaskCard = read_task_card(folder)
        self.model = EdgeModel(folder, "session", threads, adapter)
        self.batch_size = batch_size

    def set_adapter(self, adapter: str | Path | None) -> None:
        """Classify with another runtime adapter from now on (None: the bare base)."""
        self.model.set_adapter(adapter)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_labels): each text's label distribution."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        ids = np.asarray(self.task.label_token_ids)
        decoder = self.model.session_decoder()
        out = []
        for start in range(0, len(texts), self.batch_size):
            rows = [self._prompt_ids(text) for text in texts[start : start + self.batch_size]]
            logits = decoder.last_logits(rows)[:, ids].astype(np.float64)
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            out.append(probs / probs.sum(axis=1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, len(ids)))

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        labels = self.task.labels
        return [
            Classification(labels[int(row.argmax())], int(row.argmax()), {label: float(p) for label, p in zip(labels, row)})
            for row in self.probabilities(texts)
        ]

    def _prompt_ids(self, text: str) -> list[int]:
        ids = self.model.encode(self.task.prompt(text))[-self.task.max_length :]
        if not ids:
            raise ValueError(f"text {text!r} gives an empty prompt")
        return ids

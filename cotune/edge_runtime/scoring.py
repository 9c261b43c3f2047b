"""Quality of an exported model on the device side, mirroring cotune.lm.evaluate without torch.

Label-word accuracy: the prompt's next-token logits compared over the first token of each label word (the
caller passes those ids, e.g. from cotune.data.encoding.label_token_ids). Prompts and texts are cut from the
left to `max_length` tokens, as the PyTorch side's batches are.
"""

import math
from collections.abc import Sequence

import numpy as np

from cotune.edge_runtime.model import EdgeModel


def label_predictions(
    model: EdgeModel, prompts: Sequence[str], label_token_ids: Sequence[int], max_length: int = 128
) -> np.ndarray:
    """Index of the most likely label word after each prompt."""
    ids = np.asarray(label_token_ids)
    return np.asarray([int(np.argmax(model.next_token_logits(model.encode(p)[-max_length:])[ids])) for p in prompts])


def label_word_accuracy(
    model: EdgeModel,
    prompts: Sequence[str],
    labels: Sequence[int],
    label_token_ids: Sequence[int],
    max_length: int = 128,
) -> float:
    if len(prompts) != len(labels) or not prompts:
        raise ValueError(f"need as many labels as prompts (> 0): {len(prompts)} prompts, {len(labels)} labels")
    return float((label_predictions(model, prompts, label_token_ids, max_length) == np.asarray(labels)).mean())


def perplexity(model: EdgeModel, texts: Sequence[str], max_length: int = 128) -> float:
    """Token-level perplexity: every token after the first of each text, scored teacher-forced."""
    total_nll, total_tokens = 0.0, 0
    for text in texts:
        ids = model.encode(text)[-max_length:]
        if len(ids) < 2:
            continue
        logits = model.sequence_logits(ids)[:-1].astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
        total_nll += float((log_norm - logits[np.arange(len(ids) - 1), ids[1:]]).sum())
        total_tokens += len(ids) - 1
    if total_tokens == 0:
        raise ValueError("no text has two tokens or more: nothing to score")
    return math.exp(total_nll / total_tokens)

"""Evaluation on a silo or the server: label-word accuracy and perplexity."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from cotune.data.encoding import encode_batch, label_token_ids, task_batch
from cotune.data.tasks import ClassificationTask


@torch.no_grad()
def label_probabilities(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    task: ClassificationTask,
    texts: list[str],
    batch_size: int = 32,
    max_length: int = 128,
) -> np.ndarray:
    """(N, num_labels): the model's next-token distribution after each prompt, renormalized over the label words.

    Prompts are batched shortest first (and the rows put back in order), so a batch pads to a length near its own
    rather than to the longest of a random draw: fewer padded positions to compute, the same distributions."""
    model.eval()
    ids = torch.tensor(label_token_ids(tokenizer, task))
    device = next(model.parameters()).device
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), len(ids)), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        batch = task_batch(tokenizer, task, [texts[i] for i in rows], None, max_length)
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, logits_to_keep=1).logits[:, -1].float()
        out[rows] = F.softmax(logits[:, ids.to(device)], dim=-1).cpu().numpy()
    return out


def label_word_accuracy(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    task: ClassificationTask,
    dataset: Dataset,
    batch_size: int = 32,
    max_length: int = 128,
) -> float:
    """Share of examples whose most likely label word is the right one."""
    probs = label_probabilities(model, tokenizer, task, dataset["text"], batch_size, max_length)
    return float((probs.argmax(1) == np.asarray(dataset["label"])).mean())


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int = 16,
    max_length: int = 128,
) -> float:
    """Token-level perplexity of `texts` (each cut to `max_length` tokens from the left)."""
    model.eval()
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(texts), batch_size):
        batch = encode_batch(tokenizer, texts[start : start + batch_size], None, max_length)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}).logits[:, :-1]
        targets = batch["input_ids"][:, 1:]
        mask = batch["attention_mask"][:, 1:].bool() & batch["attention_mask"][:, :-1].bool()
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        total_nll += float(nll[mask].sum())
        total_tokens += int(mask.sum())
    return math.exp(total_nll / max(total_tokens, 1))

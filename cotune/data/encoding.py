"""Token batches for answer-only training and label-word scoring.

Batches are LEFT-padded so that every answer ends at the last position: a forward with
`logits_to_keep = answer_len + 1` then yields exactly the logits the loss needs, instead of the 49,152-wide
logits at every position that otherwise dominate memory. `position_ids` follow the attention mask so that a
padded example is scored exactly as it would be alone.
"""

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from cotune.data.tasks import ClassificationTask

IGNORE = -100


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str | None, max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer, and their labels (-100 except answer tokens); the prompt is cut from the left."""
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids if answer else []
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    budget = max_length - len(answer_ids)
    if budget < 1:
        raise ValueError(f"answer of {len(answer_ids)} tokens does not fit max_length={max_length}")
    prompt_ids = prompt_ids[-budget:]
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids


def collate(rows: list[list[int]], targets: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded input_ids, attention_mask, position_ids and labels from tokenized rows."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, target) in enumerate(zip(rows, targets)):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        labels[i, width - len(row) :] = torch.tensor(target)
        attention_mask[i, width - len(row) :] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "labels": labels}


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode_batch(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    answers: list[str] | None = None,
    max_length: int = 128,
) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, position_ids and labels (-100 except answer tokens); prompts cut from the left."""
    pairs = [tokenize_pair(tokenizer, p, answers[i] if answers else None, max_length) for i, p in enumerate(prompts)]
    return collate([r for r, _ in pairs], [t for _, t in pairs], pad_id(tokenizer))


def answer_span(labels: torch.Tensor) -> int:
    """How many trailing positions hold answer tokens in a left-padded batch (0 if none)."""
    has_answer = (labels != IGNORE).any(dim=0).nonzero()
    return 0 if has_answer.numel() == 0 else labels.shape[1] - int(has_answer.min())


def label_token_ids(tokenizer: PreTrainedTokenizerBase, task: ClassificationTask) -> list[int]:
    """First token of each answer (" word"); label-word scoring needs them distinct."""
    ids = [tokenizer(task.answer(i), add_special_tokens=False).input_ids[0] for i in range(len(task.labels))]
    if len(set(ids)) != len(ids):
        raise ValueError(f"label words {task.label_words} share a first token; choose words that differ at the start")
    return ids


def task_batch(tokenizer, task: ClassificationTask, texts: list[str], labels: list[int] | None, max_length: int):
    """A batch of task prompts, with their answers when labels are given."""
    prompts = [task.prompt(t) for t in texts]
    answers = [task.answer(y) for y in labels] if labels is not None else None
    return encode_batch(tokenizer, prompts, answers, max_length)


TOKEN_COLUMNS = ("input_ids", "labels")


def pretokenize(tokenizer: PreTrainedTokenizerBase, task: ClassificationTask, dataset: Dataset, max_length: int) -> Dataset:
    """`dataset` (text, label) with its task prompt + answer tokenized once (`input_ids`, `labels` columns):
    a silo's partition is tokenized when it is loaded, not again for every batch of every round."""
    if all(c in dataset.column_names for c in TOKEN_COLUMNS):
        return dataset

    def encode(rows: dict) -> dict:
        pairs = [
            tokenize_pair(tokenizer, task.prompt(t), task.answer(y), max_length) for t, y in zip(rows["text"], rows["label"])
        ]
        return {"input_ids": [r for r, _ in pairs], "labels": [t for _, t in pairs]}

    return dataset.map(encode, batched=True)

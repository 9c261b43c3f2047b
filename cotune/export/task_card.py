"""The task card written into every edge folder's manifest (read back by cotune.edge_runtime.task, torch-free)."""

from transformers import PreTrainedTokenizerBase

from cotune.data.encoding import label_token_ids
from cotune.data.tasks import ClassificationTask
from cotune.edge_runtime.task import TaskCard


def task_card(task: ClassificationTask, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """The task as the SLM was tuned and evaluated on it, with the answer words' first token ids."""
    return TaskCard(
        name=task.name,
        labels=tuple(task.labels),
        label_words=tuple(task.label_words),
        template=task.template,
        label_token_ids=tuple(label_token_ids(tokenizer, task)),
        max_length=max_length,
    ).to_dict()

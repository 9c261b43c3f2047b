"""Task data through `datasets`: builtin and user tasks, prompt templates, splits and partitions, token batches."""

from cotune.data.splits import ClientSplit, TaskSplits, build_splits, generalization_texts, load_task
from cotune.data.tasks import ClassificationTask

__all__ = ["ClassificationTask", "ClientSplit", "TaskSplits", "build_splits", "generalization_texts", "load_task"]

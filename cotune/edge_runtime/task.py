"""The task card of an exported folder: what the model was tuned to answer, read from manifest.json without torch.

`cotune export` writes it (cotune.export.task_card) from the run's task: the prompt template, the label names and
the word the model answers for each, the first token id of each answer word (" word", as trained), and the token
limit prompts were cut to. With it an app classifies exactly as cotune evaluated, without re-implementing the
prompt.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cotune.edge_runtime.layout import MANIFEST

TASK_KEYS = ("name", "labels", "label_words", "template", "label_token_ids", "max_length")


@dataclass(frozen=True)
class TaskCard:
    name: str
    labels: tuple[str, ...]
    label_words: tuple[str, ...]
    template: str  # with {text} and {choices}; the answer word follows it
    label_token_ids: tuple[int, ...]  # first token of " " + label word, one per label
    max_length: int  # prompts are cut from the left to this many tokens

    def __post_init__(self) -> None:
        if not len(self.labels) == len(self.label_words) == len(self.label_token_ids) >= 2:
            raise ValueError(
                f"task card {self.name!r}: need >= 2 labels with one label word and one token id each, got "
                f"{len(self.labels)} labels, {len(self.label_words)} words, {len(self.label_token_ids)} ids"
            )
        if len(set(self.label_token_ids)) != len(self.label_token_ids):
            raise ValueError(f"task card {self.name!r}: label token ids must differ, got {self.label_token_ids}")
        if self.max_length < 1:
            raise ValueError(f"task card {self.name!r}: max_length must be >= 1, got {self.max_length}")

    def prompt(self, text: str) -> str:
        """The prompt the model was tuned on (cotune.data.tasks.ClassificationTask.prompt)."""
        return self.template.format(text=text.strip(), choices=" or ".join(self.label_words))

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "TaskCard":
        missing = [key for key in TASK_KEYS if key not in data]
        if missing:
            raise ValueError(f"task card lacks {missing}")
        return cls(
            name=str(data["name"]),
            labels=tuple(str(x) for x in data["labels"]),
            label_words=tuple(str(x) for x in data["label_words"]),
            template=str(data["template"]),
            label_token_ids=tuple(int(x) for x in data["label_token_ids"]),
            max_length=int(data["max_length"]),
        )


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {MANIFEST}: not a folder written by `cotune export`")
    return json.loads(path.read_text())


def read_task_card(folder: str | Path) -> TaskCard:
    """The folder's task card; a folder exported without one is a ValueError saying how to get one."""
    task = read_manifest(folder).get("task")
    if not task:
        raise ValueError(
            f"{folder}: its {MANIFEST} has no task card (exported without a task); re-export it with "
            "`cotune export` (the config's data section names the task) to classify with it"
        )
    return TaskCard.from_dict(task)

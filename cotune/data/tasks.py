"""Classification as generation: a prompt template and one answer word per label (a verbalizer)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassificationTask:
    name: str
    labels: tuple[str, ...]
    label_words: tuple[str, ...]
    template: str
    generation_template: str = "Write a short {label_word} {item}:\n"
    item: str = "text"
    examples: tuple[str, ...] = ()  # inputs like the task's, for where a prompt is needed without the data (parity)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.label_words) or len(self.labels) < 2:
            raise ValueError(f"task {self.name!r}: need >= 2 labels and one label word each")
        if len(set(self.label_words)) != len(self.label_words):
            raise ValueError(f"task {self.name!r}: label words must differ: {self.label_words}")

    def prompt(self, text: str) -> str:
        return self.template.format(text=text.strip(), choices=" or ".join(self.label_words))

    def example_prompts(self) -> tuple[str, ...]:
        return tuple(self.prompt(text) for text in self.examples)

    def answer(self, label: int) -> str:
        """The target continuation; the leading space makes it one natural word token after the colon."""
        return " " + self.label_words[label]

    def generation_prompt(self, label: int) -> str:
        """A label-conditioned request for a synthetic example (CrossLM)."""
        return self.generation_template.format(label_word=self.label_words[label], item=self.item)

"""Parity prompts: the task's own first (what the device will see), then general text, so any SLM gets varied
continuations; with no task, the general text alone."""

from cotune.data.tasks import ClassificationTask

GENERAL_PROMPTS = (
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "The three primary colors are",
    "To make a cup of tea, first",
    "Water boils at a temperature of",
    "The best way to learn a new language is",
    "In 1969, astronauts landed on",
    "My favorite season of the year is",
    "The quick brown fox",
    "A recipe for pancakes needs flour, eggs and",
    "The train left the station at noon and",
    "Photosynthesis is the process by which plants",
    "Dear hiring manager, I am writing to apply for",
    "The most important rule of the road is",
    "Scientists announced today that they have discovered",
    "Here is a list of things to pack for a hiking trip:",
    "The history of the printing press begins",
    "If you want to stay healthy, you should",
    "The meeting was postponed because",
    "Question: What is two plus two?\nAnswer:",
    "Translate to French: Good morning, my friend.\nFrench:",
    "The old lighthouse keeper looked out at the storm and",
    "Summary of the movie: A young wizard discovers",
)


def parity_prompts_for(task: ClassificationTask | None) -> tuple[str, ...]:
    return (task.example_prompts() if task is not None else ()) + GENERAL_PROMPTS

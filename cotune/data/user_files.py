"""User classification data from JSONL/JSON/CSV/parquet, through `datasets`, with a field mapping."""

from pathlib import Path

from datasets import ClassLabel, Dataset, Features, Value, load_dataset

from cotune.config.schema import DataConfig
from cotune.data.tasks import ClassificationTask

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
TEXT_BUILDERS = {**BUILDERS, ".txt": "text"}  # datasets' text builder: one row a line, in column 'text'
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


def load_generalization_file(cfg: DataConfig) -> list[str]:
    """The non-empty texts of `data.generalization_path`, in file order; an unusable file fails by name."""
    path = Path(cfg.generalization_path).expanduser()
    builder = TEXT_BUILDERS.get(path.suffix.lower())
    if builder is None:
        expected = sorted(TEXT_BUILDERS)
        raise ValueError(f"data.generalization_path {path}: expected one of {expected}, got '{path.suffix}'")
    column = "text" if builder == "text" else cfg.text_field
    raw = load_dataset(builder, data_files=str(path), split="train")
    if column not in raw.column_names:
        raise ValueError(f"data.generalization_path {path} has no column '{column}' (columns: {raw.column_names})")
    texts = [str(t).strip() for t in raw[column] if t is not None and str(t).strip()]
    if not texts:
        raise ValueError(f"data.generalization_path {path} holds no text")
    return texts

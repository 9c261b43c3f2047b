"""CrossLM's data generation: the LLM writes label-conditioned synthetic examples, cleaned, filtered and deduplicated.

CrossLM (arXiv:2312.05842), method, step 1: the LLM generates task-specific data for the silos' SLMs to judge.
The engine is generic (`cotune.server_vllm.engine`); what is asked of it, and what of its answer is kept, is
CrossLM's and lives here.

Each label gets the task's generation prompt ("Write a short {label_word} movie review:"), sampled `n` times.
Samples are cut at the first blank line (the model tends to start a second example there), then dropped when
empty, too short or long, echoing the instruction, or duplicating an earlier sample. The result carries its
provenance (prompt, intended label, engine backend, adapter version, round) so that a run can trace every example.
"""

import logging
import re
from collections import Counter
from dataclasses import dataclass

from datasets import Dataset, Features, Value

from cotune.config.crosslm import CrossLMConfig
from cotune.data.tasks import ClassificationTask
from cotune.server_vllm.engine import GenerationEngine, Sampling

log = logging.getLogger(__name__)

FEATURES = Features(
    {
        "text": Value("string"),
        "prompt": Value("string"),
        "label": Value("int64"),
        "label_word": Value("string"),
        "backend": Value("string"),
        "adapter_version": Value("string"),
        "round": Value("int64"),
    }
)
_NOT_WORD = re.compile(r"[^\w]+")


@dataclass(frozen=True)
class SampleFilters:
    """Length bounds of a kept sample, in words (`crosslm.min_words`, `crosslm.max_words`)."""

    min_words: int
    max_words: int = 0  # 0: no limit beyond the sampling's max_tokens

    def __post_init__(self) -> None:
        if self.min_words < 1 or self.max_words < 0 or (self.max_words and self.max_words < self.min_words):
            raise ValueError(f"sample filters need 1 <= min_words <= max_words (or max_words 0), got {self}")

    @classmethod
    def of(cls, cfg: CrossLMConfig) -> "SampleFilters":
        return cls(cfg.min_words, cfg.max_words)


def round_sampling(cfg: CrossLMConfig) -> Sampling:
    """The engine request of a round: `samples_per_label` draws per label prompt."""
    return Sampling(
        n=cfg.samples_per_label, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens
    )


def planned_tokens(cfg: CrossLMConfig, num_labels: int, rounds: int) -> int:
    """The most tokens a run's generation asks of the engine (every sample at full length), so that the engine can
    choose how to serve adapters for that volume."""
    return cfg.samples_per_label * num_labels * cfg.max_new_tokens * rounds


def clean_sample(text: str) -> str:
    """The first paragraph, whitespace collapsed, surrounding quotes removed."""
    first = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]
    return " ".join(first.split()).strip("\"'“”").strip()


def rejection(text: str, prompt: str, filters: SampleFilters) -> str | None:
    """Why a cleaned sample is dropped, or None to keep it."""
    words = len(text.split())
    if words == 0:
        return "empty"
    if words < filters.min_words:
        return "too_short"
    if filters.max_words and words > filters.max_words:
        return "too_long"
    if _normalize(prompt) in _normalize(text):
        return "echoes_prompt"
    return None


def generate_synthetic(
    engine: GenerationEngine,
    task: ClassificationTask,
    sampling: Sampling,
    filters: SampleFilters,
    adapter: str | None = None,
    adapter_version: str = "",
    round_index: int = 0,
) -> Dataset:
    """`sampling.n` samples per label of `task` (fewer after filtering); columns as in FEATURES.

    `adapter_version` is recorded per row; it defaults to the adapter's name, or "base" without an adapter.
    """
    adapter_version = adapter_version or adapter or "base"
    labels = list(range(len(task.labels)))
    prompts = [task.generation_prompt(label) for label in labels]
    outputs = engine.generate(prompts, sampling, adapter=adapter)
    rows: dict[str, list] = {name: [] for name in FEATURES}
    seen: set[str] = set()
    dropped: Counter[str] = Counter()
    for label, prompt, samples in zip(labels, prompts, outputs, strict=True):
        for raw in samples:
            text = clean_sample(raw)
            reason = rejection(text, prompt, filters)
            key = _normalize(text)
            if reason is None and key in seen:
                reason = "duplicate"
            if reason is not None:
                dropped[reason] += 1
                continue
            seen.add(key)
            for name, value in (
                ("text", text),
                ("prompt", prompt),
                ("label", label),
                ("label_word", task.label_words[label]),
                ("backend", engine.backend),
                ("adapter_version", adapter_version),
                ("round", round_index),
            ):
                rows[name].append(value)
    total = len(labels) * sampling.n
    log.info("synthetic data: kept %d of %d samples; dropped %s", len(rows["text"]), total, dict(dropped) or "none")
    return Dataset.from_dict(rows, features=FEATURES)


def _normalize(text: str) -> str:
    """Lowercase words only: what makes two samples duplicates, or a sample an echo of its prompt."""
    return _NOT_WORD.sub(" ", text.lower()).strip()

"""CrossLM's feedback: a language model judges whether each synthetic sample carries the label it was written for.

CrossLM (arXiv:2312.05842), method, step 2: each silo's SLM, as trained on its private data this round, rates
the LLM's samples; only these scores leave the silo (the Flower query in `cotune.federation.client_app` calls
`intended_label_probability`). The same judgement, as agreement of the argmax, measures what the server keeps.
"""

import numpy as np
from datasets import Dataset

from cotune.config.schema import CotuneConfig
from cotune.data.tasks import ClassificationTask
from cotune.lm.adapted_lm import AdaptedLM


def intended_label_probability(
    lm: AdaptedLM, task: ClassificationTask, texts: list[str], labels: list[int], cfg: CotuneConfig
) -> np.ndarray:
    """P(intended label | sample) under `lm` with its current adapter: one score in [0, 1] per sample."""
    probs = lm.label_probabilities(task, texts, cfg)
    return probs[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]


def label_agreement(lm: AdaptedLM, task: ClassificationTask, samples: Dataset, cfg: CotuneConfig) -> float:
    """Share of `samples` whose most probable label under `lm` is the one they claim."""
    probs = lm.label_probabilities(task, samples["text"], cfg)
    return float((probs.argmax(1) == np.asarray(samples["label"])).mean())

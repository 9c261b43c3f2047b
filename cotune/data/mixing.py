"""Mix a small shared set (CrossLM's accepted synthetic samples) into a silo's private training data."""

import numpy as np
from datasets import Dataset, concatenate_datasets


def mix_in(private: Dataset, extra: Dataset | None, share: float, seed: int) -> Dataset:
    """`private` plus draws from `extra` making up `share` of the result, in the columns both have (text, label,
    and the token columns when both are tokenized), with private's features."""
    if extra is None or len(extra) == 0 or share <= 0:
        return private
    count = int(round(share / (1 - share) * len(private)))
    picks = np.random.default_rng(seed).integers(0, len(extra), count)
    columns = [c for c in private.column_names if c in extra.column_names]
    private = private.select_columns(columns)
    extra = extra.select_columns(columns).cast(private.features)
    return concatenate_datasets([private, extra.select(picks)])

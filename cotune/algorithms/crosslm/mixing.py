"""CrossLM's SLM update: the server's kept synthetic samples join each silo's private training data.

CrossLM (arXiv:2312.05842), method, step 5: the SLMs are enhanced with the LLM's generated data. The silo
(`cotune.edge_client.silo.Silo`) is handed `mix_in` by the Flower client, so it trains on the mix without
knowing which algorithm supplied the samples.
"""

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

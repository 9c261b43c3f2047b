"""CrossLM's shared samples reach a silo's training only through the `mix_in` the Flower client hands it."""

import pytest
from datasets import Dataset

from cotune.algorithms.crosslm.mixing import mix_in
from cotune.edge_client.silo import Silo
from cotune.lm.adapted_lm import AdaptedLM


def test_mix_in_makes_up_the_share_in_the_common_columns():
    private = Dataset.from_dict({"text": [f"p{i}" for i in range(6)], "label": [0] * 6, "source": ["x"] * 6})
    extra = Dataset.from_dict({"text": ["s0", "s1"], "label": [1, 1], "score": [0.9, 0.8]})
    mixed = mix_in(private, extra, share=0.25, seed=0)
    assert mixed.column_names == ["text", "label"] and len(mixed) == 8  # 2 of 8 drawn from extra
    assert mixed["text"][:6] == private["text"] and set(mixed["text"][6:]) <= {"s0", "s1"}
    assert mix_in(private, None, 0.25, 0) is private and mix_in(private, extra, 0.0, 0) is private


def test_a_silo_without_mix_in_refuses_shared_samples(smoke_cfg, smoke_splits):
    silo = Silo(smoke_cfg, 0, AdaptedLM.load(smoke_cfg), smoke_splits)
    shared = Dataset.from_dict({"text": ["A fine film."], "label": [1]})
    with pytest.raises(ValueError, match="shared samples but no mix_in"):
        silo.train_round(silo.slm.state(), 1, shared)

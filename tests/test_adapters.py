import numpy as np
import pytest
import torch

from cotune.config import load_config
from cotune.lm.adapters import adapter_state, attach_adapter, load_adapter_state
from cotune.lm.evaluate import label_probabilities, perplexity
from cotune.lm.trainer import answer_loss, sample_batches, train_steps
from cotune.quantization.loading import load_causal_lm


def _model(tiny_path, *overrides):
    cfg = load_config(None, list(overrides))
    return attach_adapter(load_causal_lm(tiny_path), cfg.lora), cfg


def test_adapter_state_is_only_adapter_tensors_and_round_trips(tiny_path):
    model, _ = _model(tiny_path)
    state = adapter_state(model)
    assert state and all("lora_" in k for k in state)
    changed = {k: v + 1.0 for k, v in state.items()}
    load_adapter_state(model, changed)
    assert all(np.allclose(adapter_state(model)[k], changed[k]) for k in state)


def test_adapter_that_does_not_fit_is_refused(tiny_path):
    model, _ = _model(tiny_path)
    other, _ = _model(tiny_path, "lora.r=4")
    with pytest.raises(ValueError, match="shape"):
        load_adapter_state(model, adapter_state(other))
    narrower, _ = _model(tiny_path, "lora.target_modules=['q_proj']")
    with pytest.raises(ValueError, match="keys do not match"):
        load_adapter_state(model, adapter_state(narrower))


@pytest.mark.parametrize("method, lr", [("lora", 1e-2), ("prompt_tuning", 0.3)])
def test_training_lowers_the_answer_loss(tiny_path, tokenizer, smoke_splits, method, lr):
    model, cfg = _model(tiny_path, f"lora.method='{method}'")
    data = smoke_splits.clients[0].train
    fixed = next(sample_batches(tokenizer, smoke_splits.task, data, 8, 64, seed=0))
    before = answer_loss(model, fixed).item()
    result = train_steps(model, (fixed for _ in range(100)), steps=15, lr=lr)
    assert result.steps == 15 and result.examples_seen == 120
    assert answer_loss(model, fixed).item() < before - 0.5


def test_label_probabilities_and_perplexity(tiny_path, tokenizer, smoke_splits):
    model, _ = _model(tiny_path)
    probs = label_probabilities(model, tokenizer, smoke_splits.task, smoke_splits.test["text"][:5])
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    ppl = perplexity(model, tokenizer, ["a movie about a dog", "the plot thickens"])
    assert 1000 < ppl < 200_000  # a random model is near-uniform over 49,152 tokens


def test_padding_does_not_change_scores(tiny_path, tokenizer, smoke_splits):
    model, _ = _model(tiny_path)
    texts = smoke_splits.test["text"][:3]
    batched = label_probabilities(model, tokenizer, smoke_splits.task, texts, batch_size=3)
    alone = np.concatenate([label_probabilities(model, tokenizer, smoke_splits.task, [t]) for t in texts])
    assert np.allclose(batched, alone, atol=1e-4)


def test_rows_come_back_in_the_callers_order_whatever_the_length_batching(tiny_path, tokenizer, smoke_splits):
    model, _ = _model(tiny_path)
    texts = ["a long and winding review of a film that goes on and on about nothing", "short", "a medium one"]
    batched = label_probabilities(model, tokenizer, smoke_splits.task, texts, batch_size=2)
    alone = np.concatenate([label_probabilities(model, tokenizer, smoke_splits.task, [t]) for t in texts])
    assert np.allclose(batched, alone, atol=1e-4)
    reversed_ = label_probabilities(model, tokenizer, smoke_splits.task, texts[::-1], batch_size=2)
    assert np.allclose(reversed_[::-1], batched, atol=1e-4)

"""CrossLM's reward-weighted likelihood on hand-computed tensors, the trainer's `loss_fn` that carries it, and the
labelled task prompts `crosslm.llm_objective = 'generation_and_label'` adds."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from cotune.algorithms.crosslm.reward import LABEL_PREFIX, reward_batches, reward_weighted_loss, reward_weighted_nll
from cotune.algorithms.crosslm.step import CrossLMStep
from cotune.config.crosslm import CrossLMConfig
from cotune.data.tasks import ClassificationTask
from cotune.data.encoding import IGNORE
from cotune.lm.trainer import answer_loss, example_losses, train_steps

# Two examples, two answer positions, a 2-token vocabulary. Example 0: uniform logits, both positions answer
# tokens, so each token costs ln 2. Example 1: P(token 0) = 3/4 at its one answer position, the other ignored.
LOGITS = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[math.log(3.0), 0.0], [5.0, -5.0]]])
TARGETS = torch.tensor([[0, 1], [0, IGNORE]])
NLL = [math.log(2.0), math.log(4 / 3)]


def test_per_example_losses_are_token_means_over_answer_tokens():
    assert example_losses(LOGITS, TARGETS).tolist() == pytest.approx(NLL)


def test_reward_weighted_nll_is_the_weight_normalized_sum():
    loss = reward_weighted_nll(LOGITS, TARGETS, torch.tensor([0.5, 0.25]))
    assert loss.item() == pytest.approx((0.5 * NLL[0] + 0.25 * NLL[1]) / 0.75)


def test_equal_weights_give_the_plain_answer_loss_and_their_scale_does_not_matter():
    plain = example_losses(LOGITS, TARGETS).mean().item()
    for w in (1.0, 0.1, 7.0):
        assert reward_weighted_nll(LOGITS, TARGETS, torch.tensor([w, w])).item() == pytest.approx(plain)


def test_only_rewarded_examples_count_and_all_zero_weights_give_zero_not_nan():
    assert reward_weighted_nll(LOGITS, TARGETS, torch.tensor([0.0, 0.3])).item() == pytest.approx(NLL[1])
    assert reward_weighted_nll(LOGITS, TARGETS, torch.tensor([0.0, 0.0])).item() == 0.0


def test_negative_weights_push_down_normalized_by_absolute_weight():
    loss = reward_weighted_nll(LOGITS, TARGETS, torch.tensor([1.0, -1.0]))
    assert loss.item() == pytest.approx((NLL[0] - NLL[1]) / 2)


class FixedLogits(torch.nn.Module):
    """Returns LOGITS (scaled by a trainable scalar) at the answer positions, as a causal LM's output would."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        logits = torch.cat([LOGITS, torch.zeros(2, 1, 2)], dim=1) * self.scale  # last position predicts nothing
        return type("Output", (), {"logits": logits})()


def _batch(weight):
    labels = torch.full((2, 3), IGNORE)
    labels[:, 1:] = TARGETS
    return {"input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": labels, "weight": torch.tensor(weight)}


def test_reward_weighted_loss_reads_the_batch_weights_through_the_answer_logits():
    model = FixedLogits()
    batch = _batch([0.5, 0.25])
    assert reward_weighted_loss(model, batch).item() == pytest.approx((0.5 * NLL[0] + 0.25 * NLL[1]) / 0.75)
    assert answer_loss(model, batch).item() == pytest.approx(sum(NLL) / 2)  # the default ignores `weight`


def test_the_trainer_steps_on_the_loss_fn_it_is_given():
    """Sharper logits help example 1 only (example 0's are uniform): its weight alone decides whether they grow."""
    scales = []
    for weight in ([1.0, 0.0], [0.0, 1.0]):
        model, batch = FixedLogits(), _batch(weight)
        result = train_steps(model, (batch for _ in range(3)), steps=3, lr=0.1, loss_fn=reward_weighted_loss)
        assert result.steps == 3 and result.examples_seen == 6
        scales.append(model.scale.item())
    assert scales[0] == 1.0 and scales[1] > 1.2


def test_reward_batches_leave_out_unrewarded_samples_and_carry_the_weights(tokenizer):
    samples = Dataset.from_dict({"prompt": ["Write:"] * 4, "text": ["a", "b c", "d", "e f g"]})
    llm = type("LLM", (), {"tokenizer": tokenizer})()
    weights = np.array([0.0, 0.2, 0.0, 0.4])
    batch = next(reward_batches(llm, samples, weights, batch_size=8, max_length=32, seed=0))
    assert sorted(batch["weight"].tolist()) == pytest.approx([0.2, 0.4])
    assert batch["input_ids"].shape[0] == 2


def test_labelled_columns_add_their_reward_weighted_label_ce():
    """The same (fixed) logits as labelled task prompts: the loss is the generation term twice over."""
    model, batch = FixedLogits(), _batch([0.5, 0.25])
    batch.update({LABEL_PREFIX + k: v for k, v in batch.items() if k != "weight"})
    assert reward_weighted_loss(model, batch).item() == pytest.approx(2 * (0.5 * NLL[0] + 0.25 * NLL[1]) / 0.75)


def test_with_a_task_the_batches_carry_each_sample_answered_with_its_intended_label(tokenizer):
    task = ClassificationTask("sentiment", ("neg", "pos"), ("negative", "positive"), "Review: {text}\nSentiment:")
    samples = Dataset.from_dict(
        {"prompt": ["Write:"] * 3, "text": ["dull film", "great fun", "a mess"], "label": [0, 1, 0]}
    )
    llm = type("LLM", (), {"tokenizer": tokenizer})()
    batch = next(reward_batches(llm, samples, np.array([0.3, 0.6, 0.1]), 8, 32, seed=0, task=task))
    assert LABEL_PREFIX + "input_ids" not in next(reward_batches(llm, samples, np.ones(3), 8, 32, seed=0))
    for i, weight in enumerate(batch["weight"].tolist()):
        row = [0.3, 0.6, 0.1].index(pytest.approx(weight))
        answer = batch[LABEL_PREFIX + "labels"][i]
        assert tokenizer.decode(answer[answer != IGNORE]) == task.answer(samples["label"][row])
        prompt = tokenizer.decode(batch[LABEL_PREFIX + "input_ids"][i], skip_special_tokens=True)
        assert samples["text"][row] in prompt and "Sentiment:" in prompt


def test_the_labelled_objective_needs_the_task():
    cfg = CrossLMConfig(llm_objective="generation_and_label")
    with pytest.raises(ValueError, match="llm_objective"):
        CrossLMStep(cfg, llm=None, generate=lambda r: None, ask_scores=lambda t, y: {})

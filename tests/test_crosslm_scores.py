"""CrossLM's server arithmetic on exact arrays: which samples are kept for the silos."""

import numpy as np

from cotune.algorithms.crosslm.scores import select_best, to_rewards

CONSENSUS = np.array([0.9, 0.8, 0.95, 0.6, 0.4, 0.7, 0.55])
LABELS = np.array([1, 1, 1, 1, 0, 0, 0])  # sample 4 (label 0) is below the threshold: not accepted


def test_best_accepted_first_up_to_the_limit():
    rewards = to_rewards(CONSENSUS, accept_threshold=0.5)
    assert select_best(rewards, 10).tolist() == [2, 0, 1, 5, 3, 6]
    assert select_best(rewards, 3).tolist() == [2, 0, 1]


def test_balanced_selection_keeps_as_many_of_each_label_as_the_rarer_one_has():
    rewards = to_rewards(CONSENSUS, accept_threshold=0.5)
    # label 0 has two accepted samples (5, 6): two of label 1, its best (2, 0); consensus order overall
    assert select_best(rewards, 10, LABELS).tolist() == [2, 0, 5, 6]
    assert select_best(rewards, 2, LABELS).tolist() == [2, 5]  # limit // 2 labels = one each


def test_a_label_with_no_accepted_sample_leaves_nothing_to_keep():
    rewards = to_rewards(np.array([0.9, 0.8, 0.2]), accept_threshold=0.5)
    assert select_best(rewards, 10, np.array([1, 1, 0])).tolist() == []


def test_batch_baseline_rewards_the_label_the_silos_lean_to():
    rewards = to_rewards(CONSENSUS, accept_threshold=0.5)  # batch mean 0.7
    np.testing.assert_allclose(rewards.baseline, np.full(7, 0.7))
    np.testing.assert_allclose(rewards.weights, [0.2, 0.1, 0.25, 0.0, 0.0, 0.0, 0.0], atol=1e-12)


def test_per_label_baseline_rewards_the_better_samples_of_each_label():
    rewards = to_rewards(CONSENSUS, accept_threshold=0.5, groups=LABELS)  # label 1 mean 0.8125, label 0 mean 0.55
    np.testing.assert_allclose(rewards.baseline, [0.8125] * 4 + [0.55] * 3)
    np.testing.assert_allclose(rewards.weights, [0.0875, 0.0, 0.1375, 0.0, 0.0, 0.15, 0.0], atol=1e-12)
    assert rewards.accepted.tolist() == [True, True, True, True, False, True, True]  # the threshold is unchanged

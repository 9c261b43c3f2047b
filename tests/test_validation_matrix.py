"""Hostile training replies: every kind is rejected with a logged reason, the global adapter never moves because
of one, and the honest replies of the same round are averaged exactly as if the hostile ones had not come."""

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict
from support.replies import MALFORMED, content, reply, strategy
from support.silos import GLOBAL, honest

from cotune.config.federation import FederationConfig
from cotune.federation.records import from_record, to_record
from cotune.federation.strategies.adapter_fedavg import AdapterFedAvg
from cotune.federation.validation import WireSchema, decode_reply, norm_outliers

pytestmark = pytest.mark.usefixtures("flower_task_identity")


def test_the_matrix_is_large_enough():
    assert len(MALFORMED) >= 8


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_each_malformed_reply_alone_is_rejected_and_the_global_adapter_kept(kind):
    rows = []
    s = strategy(rows)
    before = {k: v.tobytes() for k, v in s.current.items()}
    arrays, metrics = s.aggregate_train(1, [reply(MALFORMED[kind](), node=7)])
    assert arrays is None and metrics is None
    assert {k: v.tobytes() for k, v in s.current.items()} == before
    (rejected,) = [r for r in rows if r["kind"] == "client_train"]
    assert rejected["rejected"] and rejected["node"] == 7
    (summary,) = [r for r in rows if r["kind"] == "aggregate"]
    assert summary["accepted"] == 0 and summary["rejected"] == 1


def test_reasons_name_what_was_wrong():
    schema = WireSchema.of(GLOBAL)
    reasons = {kind: decode_reply(make(), schema)[1] for kind, make in MALFORMED.items()}
    assert "without its scales" in reasons["int8_without_scales"]
    assert "float64" in reasons["float64"] and "int32" in reasons["int32"]
    assert "non-finite" in reasons["nan"] and "non-finite" in reasons["int8_nan_scale"]
    assert "bytes" in reasons["oversized"] and "undecodable" in reasons["undecodable"]
    assert "twice" in reasons["plain_and_int8_twice"] and "missing" in reasons["missing_key"]


def test_good_replies_are_averaged_as_if_the_bad_ones_had_not_come():
    goods = [honest(seed) for seed in range(4)]
    good_replies = [reply(content(to_record(g, fmt), examples=10 * (i + 1), partition=i), node=i + 1)
                    for i, (g, fmt) in enumerate(zip(goods, ["fp32", "fp16", "int8", "fp32"]))]
    outlier = {k: GLOBAL[k] + 1000 * (goods[0][k] - GLOBAL[k]) for k in GLOBAL}  # valid but a poisoning step
    bad_replies = [reply(make(), node=100 + i) for i, make in enumerate(MALFORMED.values())]
    bad_replies.append(reply(content(to_record(outlier, "fp32")), node=99))

    clean, _ = strategy([]).aggregate_train(1, good_replies)
    rows = []
    mixed, _ = strategy(rows).aggregate_train(1, bad_replies[:7] + good_replies + bad_replies[7:])
    expected, got = from_record(clean), from_record(mixed)
    assert all(np.array_equal(expected[k], got[k]) for k in GLOBAL)
    rejected = [r for r in rows if r["kind"] == "client_train" and "rejected" in r]
    assert len(rejected) == len(bad_replies)
    assert any("median" in r["rejected"] for r in rejected if r["node"] == 99)


def test_norm_outliers_leave_one_out():
    assert set(norm_outliers({0: 1.0, 1: 50.0}, 10)) == {1}  # two silos: the outsized one is still caught
    assert set(norm_outliers({0: 1.0, 1: 1.2, 2: 0.9, 3: 30.0, 4: 30.0}, 10)) == {3, 4}
    assert norm_outliers({0: 1.0, 1: 50.0}, 0) == {}  # off
    assert norm_outliers({0: 0.0, 1: 0.0, 2: 1.0}, 10) == {}  # a zero median says nothing about scale


def test_clip_norm_bounds_every_update():
    far = {k: GLOBAL[k] + 5.0 for k in GLOBAL}
    arrays, _ = strategy([], clip_norm=0.5, max_update_norm_multiple=0).aggregate_train(
        1, [reply(content(to_record(far, "fp32")), node=1)]
    )
    state = from_record(arrays)
    norm = np.sqrt(sum(np.sum((state[k] - GLOBAL[k]) ** 2) for k in GLOBAL))
    assert norm == pytest.approx(0.5, rel=1e-5)


class ReplayGrid:
    """A grid whose every silo answers each train message with the reply `answer` builds."""

    def __init__(self, answer):
        self.answer = answer

    def get_node_ids(self):
        return [1, 2, 3]

    def send_and_receive(self, messages, *, timeout=None):
        return [Message(self.answer(i, m), reply_to=m) for i, m in enumerate(messages)]


def test_rounds_of_only_malformed_replies_leave_the_global_state_byte_identical():
    """Through Flower's own round loop: every round's evaluation sees the initial adapter, byte for byte."""
    kinds = sorted(MALFORMED)
    seen = []

    def answer(i, message):
        if message.metadata.message_type == "train":
            return MALFORMED[kinds[(len(seen) * 3 + i) % len(kinds)]]()
        return RecordDict({"metrics": MetricRecord({"num-examples": 5, "val-accuracy": 0.5})})

    s = AdapterFedAvg(wire="int8", min_available_nodes=3)
    initial = to_record(GLOBAL, "fp32")
    result = s.start(
        ReplayGrid(answer), initial, num_rounds=3, evaluate_fn=lambda rnd, arrays: seen.append(arrays) or None
    )
    assert len(seen) == 4
    assert all(from_record(a).keys() == GLOBAL.keys() for a in seen)
    assert all(a[k].data == initial[k].data for a in seen for k in GLOBAL)
    assert len(result.arrays) == 0  # nothing aggregated: the server loop keeps the adapter it had


@pytest.mark.parametrize("aggregation", ["trimmed_mean", "median"])
def test_robust_combiners_ignore_a_poisoned_minority(aggregation):
    from cotune.federation.strategies.factory import build_strategy

    goods = [honest(seed) for seed in range(4)]
    poisoned = {k: GLOBAL[k] + 3 * (goods[0][k] - GLOBAL[k]) for k in GLOBAL}  # under the norm limit
    s = build_strategy(
        FederationConfig(aggregation=aggregation, trim_fraction=0.2), "fp32", num_sampled=5, min_available_nodes=1
    )
    s.current = {k: v.copy() for k, v in GLOBAL.items()}
    replies = [reply(content(to_record(u, "fp32"), partition=i), node=i + 1) for i, u in enumerate([*goods, poisoned])]
    state = from_record(s.aggregate_train(1, replies)[0])
    stacked = {k: np.stack([g[k] for g in goods]) for k in GLOBAL}
    for k in GLOBAL:  # each coordinate stays within the honest silos' range
        assert np.all(state[k] >= stacked[k].min(0) - 1e-7) and np.all(state[k] <= stacked[k].max(0) + 1e-7)


def test_federation_config_names_the_bad_key():
    from cotune.config.errors import ConfigError
    from cotune.config.loader import from_dict

    for bad, key in (({"aggregation": "krum"}, "aggregation"), ({"trim_fraction": 0.5}, "trim_fraction"),
                     ({"clip_norm": -1.0}, "clip_norm"), ({"max_message_bytes": -1}, "max_message_bytes"),
                     ({"quorum": 1.5}, "quorum"), ({"norm_action": "drop"}, "norm_action"),
                     ({"max_examples_multiple": 0.5}, "max_examples_multiple"),
                     ({"registered_examples": [10, 0]}, "registered_examples"),
                     ({"norm_history_rounds": -1}, "norm_history_rounds")):
        with pytest.raises(ConfigError, match=key):
            from_dict(FederationConfig, bad)
    assert from_dict(FederationConfig, {}) == FederationConfig()

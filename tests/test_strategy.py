"""AdapterFedAvg: weighted averaging of decoded adapters, and replies that must not touch the global state."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from cotune.config.federation import FederationConfig
from cotune.federation.records import from_record, to_record
from cotune.federation.strategies.adapter_fedavg import AdapterFedAvg

GLOBAL = {"a.lora_A.weight": np.zeros((2, 4), np.float32), "a.lora_B.weight": np.zeros((4, 2), np.float32)}


pytestmark = pytest.mark.usefixtures("flower_task_identity")


def _reply(arrays: ArrayRecord, num_examples=10, node=1, partition=0) -> Message:
    request = Message(content=RecordDict({}), dst_node_id=node, message_type="train")
    metrics = MetricRecord({"num-examples": num_examples, "partition-id": partition, "train-loss": 1.0})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=request)


def _strategy(rows, **federation):
    strategy = AdapterFedAvg(wire="fp32", log_row=rows.append, min_available_nodes=1, min_train_nodes=1,
                             federation=FederationConfig(**federation))
    strategy.current = {k: v.copy() for k, v in GLOBAL.items()}
    return strategy


def test_weighted_by_example_counts_in_any_wire_format():
    """Claims within the operator's registry weigh as claimed."""
    ones = {k: np.ones_like(v) for k, v in GLOBAL.items()}
    threes = {k: 3 * np.ones_like(v) for k, v in GLOBAL.items()}
    rows = []
    arrays, _ = _strategy(rows, registered_examples=[30, 10]).aggregate_train(
        1, [_reply(to_record(ones, "int8"), 30), _reply(to_record(threes, "fp16"), 10, node=2, partition=1)]
    )
    averaged = from_record(arrays)
    for key in GLOBAL:
        assert np.allclose(averaged[key], 1.5, atol=0.02)  # (30 * 1 + 10 * 3) / 40
    assert [r["client"] for r in rows if r["kind"] == "client_train"] == [0, 1]


def _bad(kind: str) -> ArrayRecord:
    state = {k: np.ones_like(v) for k, v in GLOBAL.items()}
    if kind == "missing_key":
        state.pop("a.lora_B.weight")
    elif kind == "extra_key":
        state["b.lora_A.weight"] = np.ones((2, 4), np.float32)
    elif kind == "wrong_shape":
        state["a.lora_A.weight"] = np.ones((3, 4), np.float32)
    elif kind == "nan":
        state["a.lora_A.weight"][0, 0] = np.nan
    elif kind == "inf":
        state["a.lora_B.weight"][1, 1] = np.inf
    return to_record(state, "fp32")


@pytest.mark.parametrize("kind", ["missing_key", "extra_key", "wrong_shape", "nan", "inf", "zero_examples"])
def test_malformed_update_is_rejected_and_state_kept(kind):
    rows = []
    strategy = _strategy(rows)
    reply = _reply(_bad("none"), num_examples=0) if kind == "zero_examples" else _reply(_bad(kind))
    arrays, metrics = strategy.aggregate_train(1, [reply])
    assert arrays is None and metrics is None
    assert all(np.array_equal(strategy.current[k], GLOBAL[k]) for k in GLOBAL)
    assert "rejected" in rows[0]


def test_one_bad_update_does_not_spoil_the_good_ones():
    good = {k: np.full_like(v, 2.0) for k, v in GLOBAL.items()}
    replies = [_reply(_bad("nan")), _reply(to_record(good, "fp32"), node=2), _reply(to_record(good, "int8"), node=3)]
    arrays, _ = _strategy([]).aggregate_train(1, replies)  # 2 of 3: the default quorum (a strict majority)
    assert all(np.allclose(v, 2.0, atol=0.01) for v in from_record(arrays).values())


def test_record_bytes_reflect_the_wire_format():
    from cotune.federation.records import record_bytes

    state = {"w": np.ones((64, 8), np.float32)}
    header = record_bytes(to_record(state, "fp32")) - 2048  # each array travels as .npy: header + payload
    assert 0 < header <= 128
    assert record_bytes(to_record(state, "fp16")) == 1024 + header
    assert record_bytes(ArrayRecord({"w": Array(np.ones((64, 8), np.int8))})) == 512 + header


def test_the_mean_does_not_depend_on_the_order_replies_arrive_in():
    """Replies come back in the order Flower pulled them; fp32 sums in another order differ in the last bits, and a
    resumed run would then not equal an uninterrupted one."""
    rng = np.random.default_rng(0)
    states = [{k: rng.normal(0, 0.02, v.shape).astype(np.float32) for k, v in GLOBAL.items()} for _ in range(4)]
    replies = [_reply(to_record(s, "fp32"), 10 + i, node=100 - i, partition=i) for i, s in enumerate(states)]
    results = set()
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]):
        arrays, _ = _strategy([]).aggregate_train(1, [replies[i] for i in order])
        results.add(b"".join(v.tobytes() for _, v in sorted(from_record(arrays).items())))
    assert len(results) == 1


def test_an_error_reply_without_content_is_logged_and_the_others_averaged():
    """What a SuperNode that died mid-round sends back (Flower's NODE_UNAVAILABLE): an error, no content."""
    good = {k: np.full_like(v, 2.0) for k, v in GLOBAL.items()}
    request = Message(content=RecordDict({}), dst_node_id=9, message_type="train")
    dead = Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="Node Unavailable"), reply_to=request)
    rows = []
    strategy = _strategy(rows)
    arrays, _ = strategy.aggregate_train(1, [dead, *(_reply(to_record(good, "fp32"), node=n) for n in (2, 3))])
    assert all(np.allclose(v, 2.0) for v in from_record(arrays).values())
    (failed,) = [r for r in rows if r["kind"] == "client_train" and "rejected" in r]
    assert failed["client"] == -1 and failed["node"] == 9 and "Node Unavailable" in failed["rejected"]
    assert strategy.aggregate_evaluate(1, [Message(Error(code=ErrorCode.NODE_UNAVAILABLE), reply_to=request)]) is None


def test_a_round_with_fewer_acceptable_updates_than_the_minimum_keeps_the_global_adapter():
    good = {k: np.full_like(v, 2.0) for k, v in GLOBAL.items()}
    rows = []
    strategy = AdapterFedAvg(wire="fp32", log_row=rows.append, min_available_nodes=1, min_train_nodes=2)
    strategy.current = {k: v.copy() for k, v in GLOBAL.items()}
    arrays, _ = strategy.aggregate_train(1, [_reply(_bad("nan")), _reply(to_record(good, "fp32"), node=2)])
    assert arrays is None
    (summary,) = [r for r in rows if r["kind"] == "aggregate"]
    assert summary["accepted"] == 0 and summary["too_few"] == "1 acceptable updates, 2 needed"

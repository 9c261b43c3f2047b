"""AdapterFedAvg: weighted averaging of decoded adapters, and replies that must not touch the global state."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from cotune.federation.records import from_record, to_record
from cotune.federation.strategies.adapter_fedavg import AdapterFedAvg

GLOBAL = {"a.lora_A.weight": np.zeros((2, 4), np.float32), "a.lora_B.weight": np.zeros((4, 2), np.float32)}


@pytest.fixture(autouse=True)
def _flower_task_identity():
    """Messages outside a running app need the identity Flower's runtime would set."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _reply(arrays: ArrayRecord, num_examples=10, node=1, partition=0) -> Message:
    request = Message(content=RecordDict({}), dst_node_id=node, message_type="train")
    metrics = MetricRecord({"num-examples": num_examples, "partition-id": partition, "train-loss": 1.0})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=request)


def _strategy(rows):
    strategy = AdapterFedAvg(wire="fp32", log_row=rows.append, min_available_nodes=1)
    strategy.current = {k: v.copy() for k, v in GLOBAL.items()}
    return strategy


def test_weighted_by_example_counts_in_any_wire_format():
    ones = {k: np.ones_like(v) for k, v in GLOBAL.items()}
    threes = {k: 3 * np.ones_like(v) for k, v in GLOBAL.items()}
    rows = []
    arrays, _ = _strategy(rows).aggregate_train(
        1, [_reply(to_record(ones, "int8"), 30), _reply(to_record(threes, "fp16"), 10, node=2, partition=1)]
    )
    averaged = from_record(arrays)
    for key in GLOBAL:
        assert np.allclose(averaged[key], 1.5, atol=0.02)  # (30 * 1 + 10 * 3) / 40
    assert [r["client"] for r in rows] == [0, 1]


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
    arrays, _ = _strategy([]).aggregate_train(1, [_reply(_bad("nan")), _reply(to_record(good, "fp32"), node=2)])
    assert all(np.allclose(v, 2.0) for v in from_record(arrays).values())


def test_record_bytes_reflect_the_wire_format():
    from cotune.federation.records import record_bytes

    state = {"w": np.ones((64, 8), np.float32)}
    header = record_bytes(to_record(state, "fp32")) - 2048  # each array travels as .npy: header + payload
    assert 0 < header <= 128
    assert record_bytes(to_record(state, "fp16")) == 1024 + header
    assert record_bytes(ArrayRecord({"w": Array(np.ones((64, 8), np.int8))})) == 512 + header

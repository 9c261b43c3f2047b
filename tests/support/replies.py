"""Training replies for validation tests: every kind of malformed reply (`MALFORMED`, each a builder), and the
pieces to wrap any content as a silo's reply to an AdapterFedAvg that starts from `GLOBAL`."""

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from cotune.config.federation import FederationConfig
from cotune.federation.records import to_record
from cotune.federation.strategies.adapter_fedavg import AdapterFedAvg
from cotune.quantization.wire import encode
from support.silos import A, B, GLOBAL, State, honest


def content(arrays: ArrayRecord | None, examples: float | None = 10, partition: int = 0) -> RecordDict:
    records = {}
    if arrays is not None:
        records["arrays"] = arrays
    if examples is not None:
        records["metrics"] = MetricRecord({"num-examples": examples, "partition-id": partition, "train-loss": 1.0})
    return RecordDict(records)


def record(state: State) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})


def reply(body: RecordDict, node: int) -> Message:
    request = Message(content=RecordDict({}), dst_node_id=node, message_type="train")
    return Message(body, reply_to=request)


def strategy(rows: list, **federation) -> AdapterFedAvg:
    """quorum 0 unless given: these rounds mix a few honest replies with many hostile ones on purpose (with the
    default strict-majority quorum such a round is skipped, tests/test_reliability_hostile.py)."""
    config = FederationConfig(**{"quorum": 0.0, **federation})
    s = AdapterFedAvg(wire="fp32", log_row=rows.append, min_available_nodes=1, min_train_nodes=1, federation=config)
    s.current = {k: v.copy() for k, v in GLOBAL.items()}
    return s


def _with(**changes) -> State:
    state = honest(99)
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


def _int8(mutate) -> ArrayRecord:
    arrays = encode(honest(99), "int8")
    mutate(arrays)
    return record(arrays)


def _nan_at(key, index):
    value = honest(99)[key].copy()
    value[index] = np.nan
    return value


def _set(arrays, key, value):
    arrays[key] = value


MALFORMED = {
    "missing_key": lambda: content(record(_with(**{B: None}))),
    "extra_key": lambda: content(record(_with(**{"other.lora_A.weight": np.ones((4, 16), np.float32)}))),
    "wrong_shape": lambda: content(record(_with(**{A: np.zeros((5, 16), np.float32)}))),
    "nan": lambda: content(record(_with(**{A: _nan_at(A, (0, 0))}))),
    "inf": lambda: content(record(_with(**{B: np.full((16, 4), np.inf, np.float32)}))),
    "float64": lambda: content(record(_with(**{A: GLOBAL[A].astype(np.float64)}))),
    "int32": lambda: content(record(_with(**{A: np.zeros((4, 16), np.int32)}))),
    "int8_without_scales": lambda: content(_int8(lambda a: a.pop(A + ".q8scale"))),
    "int8_wrong_scale_count": lambda: content(_int8(lambda a: _set(a, A + ".q8scale", a[A + ".q8scale"][:2]))),
    "int8_nan_scale": lambda: content(_int8(lambda a: _set(a, A + ".q8scale", np.full(4, np.nan, np.float32)))),
    "plain_and_int8_twice": lambda: content(_int8(lambda a: _set(a, A, GLOBAL[A]))),
    "oversized": lambda: content(record(_with(padding=np.zeros(1 << 18, np.float32)))),
    "undecodable": lambda: content(
        ArrayRecord({A: Array("float32", (4, 16), "numpy.ndarray", b"\x93NUMPY garbage"), B: Array(GLOBAL[B])})
    ),
    "no_arrays_record": lambda: content(None),
    "two_array_records": lambda: RecordDict({**content(to_record(honest(99), "fp32")), "extra": record(GLOBAL)}),
    "no_metrics": lambda: content(to_record(honest(99), "fp32"), examples=None),
    "zero_examples": lambda: content(to_record(honest(99), "fp32"), examples=0),
    "negative_examples": lambda: content(to_record(honest(99), "fp32"), examples=-5),
    "nan_examples": lambda: content(to_record(honest(99), "fp32"), examples=float("nan")),
}

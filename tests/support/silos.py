"""Scripted silos for strategy tests: honest and hostile training replies in the real reply format, and a grid
that plays them through Flower's own round loop (`Strategy.start`), including silos that never answer."""

from collections.abc import Callable
from uuid import uuid4

import numpy as np
from flwr.app import Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

from cotune.federation.records import from_record, to_record

A, B = "layer.lora_A.weight", "layer.lora_B.weight"
GLOBAL = {A: np.linspace(-0.1, 0.1, 64, dtype=np.float32).reshape(4, 16), B: np.zeros((16, 4), np.float32)}
State = dict[str, np.ndarray]


def honest(seed: int, scale: float = 0.01, base: State | None = None) -> State:
    """`base` (GLOBAL) plus a small random step: what a silo's training returns."""
    rng = np.random.default_rng(seed)
    return {k: (v + rng.normal(0, scale, v.shape)).astype(np.float32) for k, v in (base or GLOBAL).items()}


def scaled(state: State, factor: float, base: State | None = None) -> State:
    """`base` (GLOBAL) plus `factor` x the step `state` took from it: a poisoned, outsized update."""
    base = base or GLOBAL
    return {k: (base[k] + factor * (state[k] - base[k])).astype(np.float32) for k in base}


def distance(a: State, b: State) -> float:
    return float(np.sqrt(sum(np.sum((a[k].astype(np.float64) - b[k]) ** 2) for k in GLOBAL)))


def mean(states: list[State]) -> State:
    return {k: np.mean([s[k] for s in states], axis=0) for k in GLOBAL}


def train_content(state: State, examples: float = 128, partition: int = 0, wire: str = "fp32") -> RecordDict:
    metrics = MetricRecord({"num-examples": examples, "partition-id": partition, "train-loss": 1.0})
    return RecordDict({"arrays": to_record(state, wire), "metrics": metrics})


def train_reply(state: State, node: int, examples: float = 128, partition: int | None = None) -> Message:
    request = Message(content=RecordDict({}), dst_node_id=node, message_type="train")
    return Message(train_content(state, examples, node - 1 if partition is None else partition), reply_to=request)


EVAL = RecordDict({"metrics": MetricRecord({"num-examples": 5, "val-accuracy": 0.5})})


class ScriptedGrid:
    """Nodes 1..n; `answer(node, server_round, received)` gives a train reply's content (`received`: the global
    adapter the message carried), an `Error` (a silo whose training raised, or Flower's NODE_UNAVAILABLE), or None
    for a silo that never answers (it timed out or disconnected: Flower returns nothing for it). As Flower's grids
    do, each pushed message gets its id, and a NODE_UNAVAILABLE reply is the SuperLink's (its own node id)."""

    def __init__(self, n: int, answer: Callable[[int, int, State], RecordDict | Error | None]) -> None:
        self.n, self.answer = n, answer

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        replies = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = str(uuid4())
            if m.metadata.message_type != "train":
                replies.append(Message(EVAL, reply_to=m))
                continue
            received = from_record(m.content["arrays"])
            body = self.answer(m.metadata.dst_node_id, int(m.content["config"]["server-round"]), received)
            if isinstance(body, Error) and body.code == ErrorCode.NODE_UNAVAILABLE:
                replies.append(create_message_error_unavailable_res_message(m.metadata, "node_unavail"))
            elif body is not None:
                replies.append(Message(body, reply_to=m))
        return replies

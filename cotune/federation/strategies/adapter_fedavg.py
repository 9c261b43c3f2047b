"""FedAvg over adapter tensors: Flower's FedAvg hooks, with wire decoding, reply validation and a server step.

Replies are validated (`cotune.federation.validation`: layout, size, wire dtypes, shapes, finite values, example
count, update norm against the round's other updates), optionally norm-clipped, and combined in fp32 — weighted
by each silo's example count here, in partition order; subclasses combine robustly. A rejected or failed reply is
excluded with a logged reason; with fewer than `min_train_nodes` acceptable updates left (cotune sets it from
clients.min_clients) the global adapter stays as it was. `server_step` (FedCoLLM distillation, CrossLM) runs on
the combined adapter.
"""

import logging
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from cotune.federation.config import FederationConfig
from cotune.federation.records import from_record, to_record
from cotune.federation.validation import (
    METRICS,
    WireSchema,
    decode_reply,
    evaluation_problem,
    examples_problem,
    norm_outliers,
    update_norm,
)
from cotune.quantization.wire import WireFormat

log = logging.getLogger(__name__)
State = dict[str, np.ndarray]
ServerStep = Callable[[int, State], State]
RoundLogger = Callable[[dict], None]
TrainExtras = Callable[[], ConfigRecord]


def weighted_average(updates: list[State], weights: list[float]) -> State:
    total = float(sum(weights))
    return {k: sum(w * u[k] for u, w in zip(updates, weights)) / total for k in updates[0]}


def clip_to_norm(update: State, reference: State, norm: float, max_norm: float) -> State:
    """`update` moved back toward `reference` so that its distance is at most `max_norm`."""
    if norm <= max_norm:
        return update
    scale = max_norm / norm
    return {k: (reference[k] + scale * (update[k] - reference[k])).astype(np.float32) for k in reference}


def _metrics(content: RecordDict) -> MetricRecord:
    record = content.metric_records.get(METRICS)
    return record if isinstance(record, MetricRecord) else MetricRecord()


def client_id(metrics: Mapping) -> int:
    """The partition id a reply claims, for the log only (-1 when it is not a finite number)."""
    value = metrics.get("partition-id", -1)
    return int(value) if isinstance(value, (int, float)) and np.isfinite(value) else -1


def reply_order(msg: Message) -> tuple[int, int]:
    """Replies arrive in the order they happened to be pulled; summing fp32 updates in another order changes the
    last bits of the mean. Combining in partition order makes a round's result reproducible (a resumed run equals
    an uninterrupted one byte for byte)."""
    return client_id(_metrics(msg.content)), msg.metadata.src_node_id


def metrics_row(row: dict, metrics: Mapping) -> dict:
    """A log row with a silo's metrics; the silo's keys cannot overwrite the server's (round, kind, ...)."""
    return {**{k.replace("-", "_"): v for k, v in metrics.items()}, **row}


def scalar_metrics(metrics: Mapping) -> RecordDict:
    """A reply's numeric metrics alone, as Flower's metric averaging takes them: lists of a length a silo chose,
    or extra records, would break it."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return RecordDict({METRICS: MetricRecord(numbers)})


class AdapterFedAvg(FedAvg):
    aggregation = "fedavg"

    def __init__(
        self,
        wire: WireFormat,
        round_offset: int = 0,
        server_step: ServerStep | None = None,
        log_row: RoundLogger | None = None,
        train_extras: TrainExtras | None = None,
        federation: FederationConfig | None = None,
        **fedavg_kwargs,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self.wire, self.round_offset = wire, round_offset
        self.server_step, self.log_row = server_step, log_row or (lambda row: None)
        self.train_extras = train_extras
        self.federation = federation or FederationConfig()
        self.current: State = {}  # the global adapter as silos received it this round: the updates' reference
        self.accepted = 0  # updates combined in the last aggregation (DP accounting needs it)
        self._round_start = time.perf_counter()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        if self.train_extras is not None:
            config = ConfigRecord({**config, **self.train_extras()})
        sent = self._wire(arrays)
        self.current = from_record(sent)
        self._round_start = time.perf_counter()
        return super().configure_train(server_round + self.round_offset, sent, config, grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        return super().configure_evaluate(server_round + self.round_offset, self._wire(arrays), config, grid)

    def _wire(self, arrays: ArrayRecord) -> ArrayRecord:
        return to_record(from_record(arrays), self.wire)

    def combine(self, updates: list[State], weights: list[float]) -> State:
        """Accepted updates -> the new adapter. Under DP every silo weighs the same: the noise is calibrated to
        a plain mean of clipped updates."""
        return weighted_average(updates, [1.0] * len(weights) if self.federation.dp else weights)

    def _row(self, server_round: int, msg: Message) -> dict:
        client = client_id(_metrics(msg.content)) if msg.has_content() else -1
        return {"round": server_round, "kind": "client_train", "client": client, "node": msg.metadata.src_node_id}

    def _reject(self, row: dict, reason: str) -> None:
        log.warning("round %d: update from node %s rejected: %s", row["round"], row["node"], reason)
        self.log_row({**row, "rejected": reason})

    def log_failures(self, server_round: int, failed: Iterable[Message]) -> None:
        """Error replies (a silo's exception; Flower's NODE_UNAVAILABLE for a silo that died) carry no content:
        a `client_train` row each, with the error's last line."""
        for msg in failed:
            last_line = (msg.error.reason or "").strip().splitlines()[-1:] or [""]  # not Ray's whole traceback
            self._reject(self._row(server_round, msg), f"client error: {last_line[0][:200]}")

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        valid, failed = self._check_and_log_replies(replies, is_train=True, validate=False)
        valid.sort(key=reply_order)
        self.log_failures(server_round, failed)
        schema = WireSchema.of(self.current, self.federation.max_message_bytes)
        decoded: dict[int, tuple[Message, State]] = {}
        for i, msg in enumerate(valid):
            state, reason = decode_reply(msg.content, schema)
            reason = reason or examples_problem(msg.content)
            if reason:
                self._reject(self._row(server_round, msg), reason)
            else:
                decoded[i] = (msg, state)
        norms = {i: update_norm(state, self.current) for i, (_, state) in decoded.items()}
        for i, reason in norm_outliers(norms, self.federation.max_update_norm_multiple).items():
            self._reject(self._row(server_round, decoded.pop(i)[0]), reason)
        updates, weights, contents = [], [], []
        for i, (msg, state) in decoded.items():
            metrics = _metrics(msg.content)
            self.log_row(metrics_row(self._row(server_round, msg), metrics))
            if self.federation.clip_norm > 0:
                state = clip_to_norm(state, self.current, norms[i], self.federation.clip_norm)
            updates.append(state)
            weights.append(float(metrics["num-examples"]))
            contents.append(scalar_metrics(metrics))
        needed = max(1, self.min_train_nodes)
        self.accepted = len(updates) if len(updates) >= needed else 0
        self.log_aggregate(
            server_round,
            rejected=len(valid) - len(updates),
            failed=len(failed),
            median_update_norm=float(np.median([norms[i] for i in decoded])) if decoded else None,
            **({"too_few": f"{len(updates)} acceptable updates, {needed} needed"} if not self.accepted else {}),
        )
        if not self.accepted:
            log.warning("round %d: %d acceptable updates of the %d needed; the global adapter is unchanged",
                        server_round, len(updates), needed)
            return None, None
        return self.finish(server_round, self.combine(updates, weights), contents)

    def log_aggregate(self, server_round: int, **facts) -> None:
        """One `aggregate` row per round: how many updates went in, and the training exchange's seconds."""
        seconds = round(time.perf_counter() - self._round_start, 3)
        row = {"round": server_round, "kind": "aggregate", "aggregation": self.aggregation, "accepted": self.accepted}
        self.log_row({**row, **facts, "seconds": seconds})

    def finish(
        self, server_round: int, combined: State, contents: list[RecordDict]
    ) -> tuple[ArrayRecord, MetricRecord | None]:
        """The server step on the combined adapter, and the record the next round starts from; `contents` are
        the accepted replies' `scalar_metrics`."""
        if self.server_step is not None:
            combined = self.server_step(server_round, combined)
        return to_record(combined, "fp32"), self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        replies, _ = self._check_and_log_replies(replies, is_train=False, validate=False)
        valid = []
        for msg in replies:
            if problem := evaluation_problem(msg.content):
                node = msg.metadata.src_node_id
                log.warning("round %d: evaluation from node %s ignored: %s", server_round, node, problem)
                continue
            valid.append(msg)
            metrics = msg.content["metrics"]
            self.log_row(
                {
                    "round": server_round,
                    "kind": "client_eval",
                    "client": client_id(metrics),
                    "val_accuracy": float(metrics["val-accuracy"]),
                    "num_examples": int(metrics["num-examples"]),
                }
            )
        contents = [scalar_metrics(msg.content["metrics"]) for msg in valid]
        return self.evaluate_metrics_aggr_fn(contents, self.weighted_by_key) if contents else None

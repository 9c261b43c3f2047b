"""FedAvg over adapter tensors: Flower's FedAvg hooks, with wire decoding, reply checks and a server step.

Replies are decoded from their wire format, checked against the global adapter's schema, and averaged in fp32
weighted by each silo's example count. A reply that fails a check is excluded with a logged reason; if none
is left the global adapter stays as it was. `server_step` (FedCoLLM distillation, CrossLM) runs on the average.
"""

import logging
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from cotune.federation.records import from_record, to_record
from cotune.quantization.wire import WireFormat

log = logging.getLogger(__name__)
State = dict[str, np.ndarray]
ServerStep = Callable[[int, State], State]
RoundLogger = Callable[[dict], None]
TrainExtras = Callable[[], ConfigRecord]


def check_update(update: State, reference: State) -> str | None:
    """Why an update cannot be averaged into `reference`, or None if it can."""
    if set(update) != set(reference):
        missing, extra = sorted(set(reference) - set(update)), sorted(set(update) - set(reference))
        return f"adapter keys differ: missing {missing[:3]}, unexpected {extra[:3]}"
    for key, value in update.items():
        if value.shape != reference[key].shape:
            return f"{key}: shape {value.shape}, expected {reference[key].shape}"
        if not np.isfinite(value).all():
            return f"{key}: non-finite values"
    return None


def weighted_average(updates: list[State], weights: list[float]) -> State:
    total = float(sum(weights))
    return {k: sum(w * u[k] for u, w in zip(updates, weights)) / total for k in updates[0]}


class AdapterFedAvg(FedAvg):
    def __init__(
        self,
        wire: WireFormat,
        round_offset: int = 0,
        server_step: ServerStep | None = None,
        log_row: RoundLogger | None = None,
        train_extras: TrainExtras | None = None,
        **fedavg_kwargs,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self.wire, self.round_offset = wire, round_offset
        self.server_step, self.log_row = server_step, log_row or (lambda row: None)
        self.train_extras = train_extras
        self.current: State = {}

    def start(self, grid: Grid, initial_arrays: ArrayRecord, *args, **kwargs):
        self.current = from_record(initial_arrays)
        return super().start(grid, initial_arrays, *args, **kwargs)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        if self.train_extras is not None:
            config = ConfigRecord({**config, **self.train_extras()})
        return super().configure_train(server_round + self.round_offset, self._wire(arrays), config, grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        return super().configure_evaluate(server_round + self.round_offset, self._wire(arrays), config, grid)

    def _wire(self, arrays: ArrayRecord) -> ArrayRecord:
        return to_record(from_record(arrays), self.wire)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        updates, weights, contents = [], [], []
        for msg in valid:
            metrics = msg.content["metrics"]
            client = int(metrics.get("partition-id", -1))
            update = from_record(msg.content["arrays"])
            reason = check_update(update, self.current)
            if reason is None and not float(metrics.get("num-examples", 0)) > 0:
                reason = f"num-examples must be > 0, got {metrics.get('num-examples')}"
            row = {"round": server_round, "kind": "client_train", "client": client, "node": msg.metadata.src_node_id}
            if reason:
                log.warning("round %d: update from node %s rejected: %s", server_round, msg.metadata.src_node_id, reason)
                self.log_row({**row, "rejected": reason})
                continue
            self.log_row({**row, **{k.replace("-", "_"): v for k, v in metrics.items()}})
            updates.append(update)
            weights.append(float(metrics["num-examples"]))
            contents.append(msg.content)
        if not updates:
            log.warning("round %d: no acceptable update; the global adapter is unchanged", server_round)
            return None, None
        averaged = weighted_average(updates, weights)
        if self.server_step is not None:
            averaged = self.server_step(server_round, averaged)
        self.current = averaged
        return to_record(averaged, "fp32"), self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        valid, _ = self._check_and_log_replies(replies, is_train=False, validate=False)
        for msg in valid:
            metrics = msg.content["metrics"]
            self.log_row(
                {
                    "round": server_round,
                    "kind": "client_eval",
                    "client": int(metrics.get("partition-id", -1)),
                    "val_accuracy": float(metrics["val-accuracy"]),
                    "num_examples": int(metrics["num-examples"]),
                }
            )
        contents = [msg.content for msg in valid]
        return self.evaluate_metrics_aggr_fn(contents, self.weighted_by_key) if contents else None

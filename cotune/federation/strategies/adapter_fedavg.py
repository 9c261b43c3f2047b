"""FedAvg over adapter tensors: Flower's FedAvg hooks, with wire decoding, reply validation and a server step.

Replies are validated (`cotune.federation.validation`: layout, size, wire dtypes, shapes, finite values, example
count, update norm against references a hostile minority cannot move), outsized ones rejected or norm-clipped, and
the rest combined in fp32 — weighted here by each silo's example count, capped at what it may claim, in partition
order; subclasses combine robustly. Every sampled silo ends the round accepted, rejected (with the reason) or missing
(`strategies/ledger.py`), in the round's `aggregate` row. A round closes on a quorum of the sampled silos
(federation.quorum, and clients.min_clients as a floor); with fewer acceptable updates the global adapter stays as it
was. `server_step` (FedCoLLM distillation, CrossLM) runs on the combined adapter.
"""

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from cotune.config.federation import FederationConfig
from cotune.federation.records import from_record, to_record
from cotune.federation.strategies.ledger import ACCEPTED, MISSING, NO_REPLY, REJECTED, RoundLedger
from cotune.federation.validation import (
    METRICS,
    WireSchema,
    claim_caps,
    decode_reply,
    evaluation_problem,
    examples_problem,
    norm_outliers,
    norm_references,
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
    weighted = True  # combine() weighs by example counts (the robust combiners do not)

    def __init__(
        self,
        wire: WireFormat,
        round_offset: int = 0,
        server_step: ServerStep | None = None,
        log_row: RoundLogger | None = None,
        train_extras: TrainExtras | None = None,
        federation: FederationConfig | None = None,
        min_clients: int = 0,
        registered_examples: list[int] | None = None,
        norm_history: Iterable[list[float]] = (),
        **fedavg_kwargs,
    ) -> None:
        """`min_clients` (clients.min_clients): a floor on the accepted updates a round needs, on top of the
        quorum; Flower's own `min_train_nodes` only decides how many silos are sampled. `registered_examples`:
        each partition's example count as the server knows it (the simulation's partition sizes), used when
        federation.registered_examples is empty. `norm_history`: the accepted `update_norm`s of the rounds already
        closed, per round (a resumed run keeps its trusted reference)."""
        super().__init__(**fedavg_kwargs)
        self.wire, self.round_offset = wire, round_offset
        self.server_step, self.log_row = server_step, log_row or (lambda row: None)
        self.train_extras = train_extras
        self.federation = federation or FederationConfig()
        self.min_clients = min_clients
        self.registered_examples = list(self.federation.registered_examples or registered_examples or [])
        self.current: State = {}  # the global adapter as silos received it this round: the updates' reference
        self.accepted = 0  # updates combined in the last aggregation (DP accounting needs it)
        self.ledger = RoundLedger()  # this round's sampled silos and what became of each
        self.instructions: list[Message] = []  # this round's train messages
        # Accepted norms of the last closed rounds: the reference colluders inside one round cannot move.
        self.norm_history: deque[list[float]] = deque(norm_history, maxlen=self.federation.norm_history_rounds)
        self._round_start = time.perf_counter()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        if self.train_extras is not None:
            config = ConfigRecord({**config, **self.train_extras()})
        sent = self._wire(arrays)
        self.current = from_record(sent)
        self._round_start = time.perf_counter()
        messages = list(super().configure_train(server_round + self.round_offset, sent, config, grid))
        self.ledger = RoundLedger(sampled=[m.metadata.dst_node_id for m in messages])
        self.instructions = messages  # the grid gives each its message id as it pushes it
        return messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        return super().configure_evaluate(server_round + self.round_offset, self._wire(arrays), config, grid)

    def _wire(self, arrays: ArrayRecord) -> ArrayRecord:
        return to_record(from_record(arrays), self.wire)

    def combine(self, updates: list[State], weights: list[float]) -> State:
        """Accepted updates -> the new adapter. Under DP every silo weighs the same: the noise is calibrated to
        a plain mean of clipped updates."""
        return weighted_average(updates, [1.0] * len(weights) if self.federation.dp else weights)

    def needed(self) -> int:
        """Accepted updates this round needs to close: the quorum of the sampled silos, and clients.min_clients."""
        return max(self.federation.quorum_of(self.ledger.num_sampled()), self.min_clients)

    def trusted_norm(self) -> float | None:
        """The median accepted update norm of the last closed rounds, None before the first (or when off)."""
        norms = [n for round_norms in self.norm_history for n in round_norms]
        return float(np.median(norms)) if norms and self.federation.norm_history_rounds else None

    def sender(self, msg: Message) -> int:
        """The silo a reply answers for. A dead silo's NODE_UNAVAILABLE reply comes from the SuperLink's own node
        id, so the node is the one the instruction it answers went to."""
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in self.instructions if m.metadata.message_id}
        return sent_to.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)

    def _row(self, server_round: int, msg: Message) -> dict:
        client = client_id(_metrics(msg.content)) if msg.has_content() else -1
        return {"round": server_round, "kind": "client_train", "client": client, "node": self.sender(msg)}

    def _reject(self, row: dict, reason: str, failed: bool = False) -> None:
        log.warning("round %d: update from node %s rejected: %s", row["round"], row["node"], reason)
        self.ledger.reject(row["node"], row["client"], reason, failed)
        self.log_row({**row, "status": REJECTED, "rejected": reason})

    def log_failures(self, server_round: int, failed: Iterable[Message]) -> None:
        """Error replies (a silo's exception; Flower's NODE_UNAVAILABLE for a silo that died) carry no content:
        a `client_train` row each, with the error's last line."""
        for msg in failed:
            last_line = (msg.error.reason or "").strip().splitlines()[-1:] or [""]  # not Ray's whole traceback
            self._reject(self._row(server_round, msg), f"client error: {last_line[0][:200]}", failed=True)

    def log_missing(self, server_round: int) -> None:
        """A `client_train` row for each sampled silo that sent nothing at all (counted as not combined)."""
        for node in self.ledger.missing():
            log.warning("round %d: node %s sent no reply", server_round, node)
            row = {"round": server_round, "kind": "client_train", "client": -1, "node": node}
            self.log_row({**row, "status": MISSING, "rejected": NO_REPLY})

    def _weights(self, server_round: int, accepted: list[tuple[Message, dict]]) -> list[float]:
        """Each accepted reply's example count as it weighs, with the reason in its row when lowered: at most the
        count registered for its partition when there is a registry, else at most max_examples_multiple x the
        median claim of the round's other silos."""
        claims = {i: float(_metrics(msg.content)["num-examples"]) for i, (msg, _) in enumerate(accepted)}
        registry = self.registered_examples
        caps = claim_caps(claims, 0 if registry else self.federation.max_examples_multiple)
        weights = []
        for i, (_, row) in enumerate(accepted):
            known = bool(registry) and 0 <= row["client"] < len(registry)
            cap = float(registry[row["client"]] if known else min(registry)) if registry else caps[i]
            weight = min(claims[i], cap)
            if weight < claims[i]:
                if known:
                    why = f"the {cap:.6g} registered for partition {row['client']}"
                elif registry:
                    why = f"{cap:.6g}, the smallest registered count (partition {row['client']} is not registered)"
                else:
                    multiple = self.federation.max_examples_multiple
                    why = f"{multiple:g} x the median claim of the other silos ({cap / multiple:.6g})"
                row["examples_capped"] = f"claimed {claims[i]:.6g} examples, weighs as {weight:.6g}: capped at {why}"
                log.warning("round %d: node %s: %s", server_round, row["node"], row["examples_capped"])
            weights.append(weight)
        return weights

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
        multiple, clip_outliers = self.federation.max_update_norm_multiple, self.federation.norm_action == "clip"
        trusted = self.trusted_norm()  # from the rounds before this one
        references = norm_references(norms, trusted)
        clipped: dict[int, str] = {}
        for i, reason in norm_outliers(norms, multiple, trusted).items():
            if clip_outliers:
                clipped[i] = f"{reason}: clipped to {multiple * references[i]:.4g}"
            else:
                self._reject(self._row(server_round, decoded.pop(i)[0]), reason)
        accepted: list[tuple[Message, dict]] = []
        updates, kept_norms = [], []
        for i, (msg, state) in decoded.items():
            row, norm = metrics_row(self._row(server_round, msg), _metrics(msg.content)), norms[i]
            if i in clipped:
                bound = multiple * references[i]
                state, norm = clip_to_norm(state, self.current, norm, bound), bound
                row["norm_clipped"] = clipped[i]
                log.warning("round %d: node %s: %s", server_round, row["node"], clipped[i])
            if self.federation.clip_norm > 0:
                state = clip_to_norm(state, self.current, norm, self.federation.clip_norm)
            accepted.append((msg, row))
            updates.append(state)
            kept_norms.append(norm)
            self.ledger.accept(row["node"], row["client"])
        weights = self._weights(server_round, accepted)
        weighted = self.weighted and not self.federation.dp  # else every accepted update weighs the same
        total = sum(weights) or 1.0
        for (_, row), weight, norm in zip(accepted, weights, kept_norms):
            share = weight / total if weighted else 1 / len(weights)
            self.log_row({**row, "status": ACCEPTED, "weight_share": round(share, 6), "update_norm": norm})
        self.log_missing(server_round)
        needed = self.needed()
        self.accepted = len(updates) if len(updates) >= needed else 0
        if self.accepted:
            self.norm_history.append(kept_norms)
        self.log_aggregate(
            server_round,
            median_update_norm=float(np.median([norms[i] for i in decoded])) if decoded else None,
            trusted_update_norm=trusted,
            needed=needed,
            **self.ledger.facts(),
            **({"too_few": f"{len(updates)} acceptable updates, {needed} needed"} if not self.accepted else {}),
        )
        if not self.accepted:
            log.warning("round %d: %d acceptable updates of the %d needed; the global adapter is unchanged",
                        server_round, len(updates), needed)
            return None, None
        contents = [scalar_metrics(_metrics(msg.content)) for msg, _ in accepted]
        return self.finish(server_round, self.combine(updates, weights), contents)

    def log_aggregate(self, server_round: int, **facts) -> None:
        """One `aggregate` row per round: how many updates went in, what became of each sampled silo, and the
        training exchange's seconds. The ledger starts afresh for the next round."""
        seconds = round(time.perf_counter() - self._round_start, 3)
        row = {"round": server_round, "kind": "aggregate", "aggregation": self.aggregation, "accepted": self.accepted}
        self.log_row({**row, **facts, "seconds": seconds})
        self.ledger = RoundLedger()

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
                    # the report's "where the time went" counts silo evaluation from these
                    **({"eval_seconds": float(metrics["eval-seconds"])} if "eval-seconds" in metrics else {}),
                }
            )
        contents = [scalar_metrics(msg.content["metrics"]) for msg in valid]
        return self.evaluate_metrics_aggr_fn(contents, self.weighted_by_key) if contents else None

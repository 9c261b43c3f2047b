"""FedAvg whose training exchange runs Flower's SecAgg+ protocol: the server learns the mean of the silos' updates
and never one silo's update or adapter.

Flower 1.41 ships SecAgg+ only for the legacy API: `SecAggPlusWorkflow` needs a `LegacyContext` holding a legacy
`flwr.server.strategy.Strategy` (configure_fit / aggregate_fit over FitIns / FitRes), and `secaggplus_mod` reads
the legacy FitRes record layout. The Message-API strategies (`flwr.serverapp.strategy`) have no SecAgg+ path. So
this strategy keeps the Message-API round (Strategy.start, evaluation, checkpoints) and swaps only the training
exchange: `start` hands Strategy.start a grid whose `send_and_receive`, given the round's train messages, runs the
workflow's four exchanges (setup, share keys, collect masked vectors, unmask) through a one-round legacy shim, and
keeps the unmasked mean for `aggregate_train`. Silos need `cotune.federation.privacy.secaggplus_when_asked`.

Silos mask their update (reply - global), not their adapter: updates are small, so SecAgg+'s fixed grid (every
value clipped to +-secagg_clipping_range, 2^22 levels) resolves them finely. Every silo weighs 1: under SecAgg+
the server could not check a claimed example count, and equal weights bound what one silo can do; the clipping
bounds each value of its update. What SecAgg+ costs: no per-update validation, norm check or robust combining
(there is no single update to look at); the mean is checked as a whole.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common import ConfigRecord, FitIns, Parameters, parameters_to_ndarrays
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from cotune.federation.strategies.adapter_fedavg import (
    AdapterFedAvg,
    State,
    client_id,
    metrics_row,
    scalar_metrics,
)
from cotune.federation.strategies.ledger import ACCEPTED
from cotune.federation.validation import check_update

log = logging.getLogger(__name__)
NUM_SHARES = 1.0  # every sampled silo holds a share of every neighbour's key (the neighbourhood is everyone)
RECONSTRUCTION_THRESHOLD = 0.67  # shares needed to unmask: tolerates a third of the silos dropping mid-protocol


@dataclass
class SecAggOutcome:
    sampled: int  # silos the round's train messages went to
    mean: list[np.ndarray] | None  # the unmasked mean update, tensors in sorted-key order; None if halted
    clients: list[tuple[int, dict]] = field(default_factory=list)  # (node id, metrics) of contributing silos


class _OneRound(LegacyFedAvg):
    """The legacy strategy SecAggPlusWorkflow drives: it names the sampled nodes and receives the mean."""

    def __init__(self, node_ids: list[int]) -> None:
        super().__init__()
        self.node_ids, self.outcome = node_ids, SecAggOutcome(len(node_ids), None)

    def configure_fit(self, server_round, parameters, client_manager):
        # The workflow reads only `node_id` from a proxy; the real train content replaces FitIns (see below).
        return [(SimpleNamespace(node_id=n), FitIns(Parameters([], ""), {})) for n in self.node_ids]

    def aggregate_fit(self, server_round, results, failures):
        if results:
            self.outcome.mean = parameters_to_ndarrays(results[0][1].parameters)  # every result holds the mean
            self.outcome.clients = [(proxy.node_id, dict(res.metrics)) for proxy, res in results]
        return None, {}


class _TrainContentWorkflow(SecAggPlusWorkflow):
    """SecAgg+ whose masked-vector stage carries cotune's own train message content (arrays + config) instead of
    legacy FitIns, so the silo's train function reads the same message in every mode."""

    def __init__(self, contents: dict[int, RecordDict], **kwargs) -> None:
        super().__init__(**kwargs)
        self.contents = contents

    def setup_stage(self, grid, context, state) -> bool:
        ok = super().setup_stage(grid, context, state)
        state.nid_to_fitins = {nid: self.contents[nid] for nid in state.nid_to_fitins}
        return ok


def run_secaggplus(grid: Grid, messages: list[Message], clipping_range: float, timeout: float | None) -> SecAggOutcome:
    """One SecAgg+ training exchange over `messages` (one per sampled node)."""
    # One RecordDict per node: the workflow writes each node's key shares into its content.
    contents = {m.metadata.dst_node_id: RecordDict(dict(m.content.items())) for m in messages}
    server_round = int(messages[0].content["config"]["server-round"])
    shim = _OneRound(list(contents))
    server_context = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
    context = LegacyContext(server_context, strategy=shim)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    workflow = _TrainContentWorkflow(
        contents,
        num_shares=NUM_SHARES,
        reconstruction_threshold=RECONSTRUCTION_THRESHOLD,
        clipping_range=clipping_range,
        max_weight=1.0,  # silos send weight 1 (see the module docstring)
        timeout=timeout,
    )
    try:
        workflow(grid, context)
    except (ValueError, TypeError, KeyError, IndexError) as err:
        # A silo's malformed protocol message (keys, shares, a masked vector of the wrong shape) must cost this
        # round, not the run: Flower's workflow does not guard against it.
        log.warning("round %d: SecAgg+ failed on a malformed silo message: %r", server_round, err)
        shim.outcome.mean = None
    return shim.outcome


class _SecAggGrid:
    """The grid as Strategy.start sees it: a round's train messages go through SecAgg+ (the outcome is left on the
    strategy, the call returns no reply to aggregate); every other call goes to the real grid."""

    def __init__(self, grid: Grid, strategy: "SecAggPlusFedAvg") -> None:
        self._grid, self._strategy = grid, strategy

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        if not messages or any(m.metadata.message_type != MessageType.TRAIN for m in messages):
            return list(self._grid.send_and_receive(messages, timeout=timeout))
        clipping_range = self._strategy.federation.secagg_clipping_range
        self._strategy.outcome = run_secaggplus(self._grid, messages, clipping_range, timeout)
        return []


class SecAggPlusFedAvg(AdapterFedAvg):
    aggregation = "secagg+"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.outcome: SecAggOutcome | None = None

    def start(self, grid: Grid, initial_arrays: ArrayRecord, *args, **kwargs):
        return super().start(_SecAggGrid(grid, self), initial_arrays, *args, **kwargs)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        outcome, self.outcome = self.outcome or SecAggOutcome(0, None), None
        for node, metrics in outcome.clients:
            row = {"round": server_round, "kind": "client_train", "client": client_id(metrics), "node": node}
            self.ledger.accept(node, row["client"])
            self.log_row({**metrics_row(row, metrics), "status": ACCEPTED})
        self.log_missing(server_round)  # sampled silos that dropped out of the protocol
        mean, reason = self._unflatten(outcome.mean)
        if mean is not None and len(outcome.clients) < (needed := self.needed()):
            mean, reason = None, f"{len(outcome.clients)} silos completed the protocol, {needed} needed"
        self.accepted = len(outcome.clients) if mean is not None else 0
        facts = self.ledger.facts()
        # A silo that dropped out of the protocol sent nothing usable: missing, and (as before) counted as failed;
        # without the sample (driven without configure_train), the protocol's own count of the silos that dropped.
        facts["failed"] = facts["missing"] if self.ledger.sampled else outcome.sampled - len(outcome.clients)
        self.log_aggregate(server_round, **facts, **({"rejected_mean": reason} if reason else {}))
        if mean is None:
            log.warning("round %d: no usable SecAgg+ mean (%s); the global adapter is unchanged", server_round, reason)
            return None, None
        return self.finish(server_round, mean, [scalar_metrics(m) for _, m in outcome.clients])

    def _unflatten(self, tensors: list[np.ndarray] | None) -> tuple[State | None, str | None]:
        if tensors is None:
            return None, "the protocol halted (too few silos completed it)"
        keys = sorted(self.current)
        if len(tensors) != len(keys):
            return None, f"{len(tensors)} tensors for {len(keys)} adapter keys"
        mean = {k: self.current[k] + np.asarray(t, dtype=np.float32) for k, t in zip(keys, tensors)}
        reason = check_update(mean, self.current)
        return (None, reason) if reason else (mean, None)

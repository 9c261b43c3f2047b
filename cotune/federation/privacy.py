"""Differential privacy and SecAgg+ wiring, on Flower's own mods and strategy wrappers.

DP is central DP with client-side fixed clipping: each silo clips its update (reply - global) to the clipping norm
with Flower's `fixedclipping_mod` before anything leaves the node, and Flower's
`DifferentialPrivacyClientSideFixedClipping` adds Gaussian noise of std noise_multiplier * clipping_norm / n to the
mean. Client-side rather than server-side clipping: the server never holds an unclipped update, and Flower's
server-side wrapper clips replies before our validation could reject a malformed one.

Epsilon is tracked by a small RDP accountant (below): Flower 1.41's own `RdpAccountant` needs the `dp-accounting`
package (its `flwr[dp]` extra), whose pin attrs<24 would downgrade attrs 26 in this environment, and Flower's
wrappers refuse an accountant unless the strategy uses FedAvg's own `aggregate_train`.

SecAgg+ (Flower's `secaggplus_mod` on silos; see `strategies/secaggplus_fedavg.py` for the server) is switched on
per message: the mods below act only on train messages that ask for them, so one ClientApp serves every mode.
"""

import math
from collections.abc import Iterable

import numpy as np
from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common.recorddict_compat import fitres_to_recorddict
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from cotune.config.federation import FederationConfig
from cotune.federation.records import from_record, to_record
from cotune.federation.strategies.adapter_fedavg import AdapterFedAvg, ServerStep
from cotune.federation.validation import ARRAYS, METRICS

# Renyi orders searched for the tightest conversion; any order gives a valid bound, so a dense grid only helps.
RDP_ORDERS = 1 + np.logspace(-3, 4, 4000)


class GaussianRDPAccountant:
    """Client-level (epsilon, delta) of a sequence of Gaussian releases, each with its own noise multiplier.

    The Gaussian mechanism with noise multiplier z has Renyi DP alpha / (2 z^2) at every order alpha (Mironov
    2017); releases compose by adding those, and the sum converts to (epsilon, delta) with the bound of Canonne,
    Kamath & Steinke 2020 (the one Google's dp-accounting uses). No sampling amplification is claimed, so the
    figure is an upper bound when only a fraction of silos trains each round.
    """

    def __init__(self, multipliers: Iterable[float] = ()) -> None:
        self.multipliers: list[float] = []
        for z in multipliers:
            self.compose(z)

    def compose(self, noise_multiplier: float) -> None:
        if not noise_multiplier > 0:
            raise ValueError(f"a Gaussian release needs a noise multiplier > 0, got {noise_multiplier}")
        self.multipliers.append(float(noise_multiplier))

    def epsilon(self, delta: float) -> float:
        if not self.multipliers:
            return 0.0
        a = RDP_ORDERS
        rdp = a * sum(1.0 / (2 * z * z) for z in self.multipliers)
        eps = rdp + np.log1p(-1 / a) - (math.log(delta) + np.log(a)) / (a - 1)
        return float(max(0.0, eps.min()))


class AdapterClientSideDP(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed-clipping DP around an AdapterFedAvg, plus what cotune needs on top:

    - the server step (FedCoLLM, CrossLM) runs on the *noised* mean — post-processing keeps the guarantee, while
      a step before the noise would release something of unbounded sensitivity;
    - each release is accounted with its effective noise multiplier z * accepted / sampled: rejected or missing
      replies shrink the mean's denominator, so the same noise protects less;
    - a `dp` row per round in metrics.jsonl with the cumulative epsilon at `delta`.
    """

    def __init__(
        self,
        strategy: AdapterFedAvg,
        federation: FederationConfig,
        num_sampled_clients: int,
        server_step: ServerStep | None = None,
        prior_multipliers: Iterable[float] = (),
    ) -> None:
        super().__init__(
            strategy, federation.dp_noise_multiplier, federation.dp_clipping_norm, num_sampled_clients
        )
        self.inner, self.server_step, self.delta = strategy, server_step, federation.dp_delta
        self.rdp = GaussianRDPAccountant(prior_multipliers)  # not `accountant`: Flower's own attribute

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        # Flower's wrapper skips a round with any error reply; a silo that died is accounted for below instead (it
        # weakens the release like a rejected reply), so the round goes on with the others.
        replies = list(replies)
        current = server_round + self.inner.round_offset
        failed = [msg for msg in replies if msg.has_error()]
        self.inner.log_failures(current, failed)
        arrays, metrics = super().aggregate_train(server_round, [msg for msg in replies if not msg.has_error()])
        if arrays is None:
            return None, metrics  # nothing released, nothing spent
        effective = self.noise_multiplier * self.inner.accepted / self.num_sampled_clients
        self.rdp.compose(effective)
        self.inner.log_row(
            {
                "round": current,
                "kind": "dp",
                "noise_multiplier": effective,
                "clipping_norm": self.clipping_norm,
                "epsilon": self.rdp.epsilon(self.delta),
                "delta": self.delta,
                "releases": len(self.rdp.multipliers),
                "failed_replies": len(failed),
            }
        )
        if self.server_step is not None:
            arrays = to_record(self.server_step(current, from_record(arrays)), "fp32")
        return arrays, metrics


def dp_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's fixedclipping_mod, on the train messages that carry a clipping norm (the DP wrapper adds it)."""
    config = msg.content.config_records.get("config")
    if config is not None and KEY_CLIPPING_NORM in config:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def _as_fitres(request: Message, reply: Message) -> Message:
    """secaggplus_mod reads the legacy FitRes layout: add it, holding the update (reply - received global, fp32,
    sorted-key order: the order the server unflattens the sum in) with weight 1. An update, not the adapter: it
    is small, so SecAgg+'s fixed quantization grid resolves it finely. The mod then empties every array record,
    so no tensor leaves in the clear."""
    if reply.has_error():
        return reply
    trained, received = from_record(reply.content[ARRAYS]), from_record(request.content[ARRAYS])
    fitres = FitRes(
        status=Status(Code.OK, ""),
        parameters=ndarrays_to_parameters([trained[k] - received[k] for k in sorted(trained)]),
        num_examples=1,
        metrics=dict(reply.content[METRICS]),
    )
    for name, record in fitres_to_recorddict(fitres, keep_input=False).items():
        reply.content[name] = record
    return reply


def is_secagg_message(msg: Message) -> bool:
    """A train message of a SecAgg+ round: it carries the protocol's config record."""
    return RECORD_KEY_CONFIGS in msg.content.config_records


def secaggplus_when_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's secaggplus_mod, on the train messages of a SecAgg+ round."""
    if not is_secagg_message(msg):
        return call_next(msg, context)
    return secaggplus_mod(msg, context, lambda m, c: _as_fitres(m, call_next(m, c)))


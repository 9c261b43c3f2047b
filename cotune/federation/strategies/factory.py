"""The server's strategy for a [federation] section: combiner, SecAgg+ exchange, DP wrapper."""

from collections.abc import Iterable

from flwr.serverapp.strategy import Strategy

from cotune.config.errors import ConfigError
from cotune.config.federation import FederationConfig
from cotune.federation.privacy import AdapterClientSideDP
from cotune.federation.strategies.adapter_fedavg import AdapterFedAvg, ServerStep
from cotune.federation.strategies.adapter_median import AdapterMedian
from cotune.federation.strategies.adapter_trimmed_mean import AdapterTrimmedMean
from cotune.federation.strategies.secaggplus_fedavg import SecAggPlusFedAvg
from cotune.quantization.wire import WireFormat

COMBINERS: dict[str, type[AdapterFedAvg]] = {
    "fedavg": AdapterFedAvg,
    "trimmed_mean": AdapterTrimmedMean,
    "median": AdapterMedian,
}


def build_strategy(
    federation: FederationConfig,
    wire: WireFormat,
    num_sampled: int,
    server_step: ServerStep | None = None,
    dp_history: Iterable[float] = (),
    **adapter_kwargs,
) -> Strategy:
    """`adapter_kwargs` go to AdapterFedAvg (round_offset, log_row, train_extras, min_clients, FedAvg's own
    arguments); `dp_history` are the effective noise multipliers of rounds already released (resume keeps epsilon
    whole)."""
    if federation.dp and wire == "int8":
        # Flower's clipping works tensor by tensor on what travels: int8 codes and their scales are not an adapter.
        raise ConfigError("quantization.wire", "fp32 or fp16 when federation.dp_noise_multiplier > 0", wire)
    cls = SecAggPlusFedAvg if federation.secagg else COMBINERS[federation.aggregation]
    if not federation.dp:
        return cls(wire=wire, federation=federation, server_step=server_step, **adapter_kwargs)
    inner = cls(wire=wire, federation=federation, **adapter_kwargs)
    return AdapterClientSideDP(inner, federation, num_sampled, server_step, dp_history)

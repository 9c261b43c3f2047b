"""Coordinate-wise trimmed mean of validated adapter updates (Flower's FedTrimmedAvg arithmetic).

Each coordinate drops its `trim_fraction` highest and lowest values across silos before averaging, so a few
poisoned updates that pass validation cannot drag the global adapter far. Example counts do not weigh in: a
silo's claimed count is one more thing it could inflate.
"""

import numpy as np
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

from cotune.federation.strategies.adapter_fedavg import AdapterFedAvg, State


class AdapterTrimmedMean(AdapterFedAvg):
    aggregation = "trimmed_mean"
    weighted = False

    def combine(self, updates: list[State], weights: list[float]) -> State:
        cut = self.federation.trim_fraction
        return {k: trim_mean(np.stack([u[k] for u in updates]), cut).astype(np.float32) for k in updates[0]}

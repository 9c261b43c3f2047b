"""Coordinate-wise median of validated adapter updates (Flower's FedMedian arithmetic).

The most robust of the three combiners (up to half the silos may be poisoned) and the noisiest with honest,
non-IID silos; example counts do not weigh in.
"""

import numpy as np

from cotune.federation.strategies.adapter_fedavg import AdapterFedAvg, State


class AdapterMedian(AdapterFedAvg):
    aggregation = "median"
    weighted = False

    def combine(self, updates: list[State], weights: list[float]) -> State:
        return {k: np.median(np.stack([u[k] for u in updates]), axis=0).astype(np.float32) for k in updates[0]}

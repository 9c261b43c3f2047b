"""Seeded partitions of a labelled pool over N clients: IID, or Dirichlet(alpha) label skew."""

import numpy as np

from cotune.config.schema import DataConfig

MAX_DIRICHLET_DRAWS = 100


def iid_partition(num_examples: int, num_clients: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet_partition(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_examples: int = DataConfig.min_client_examples
) -> list[np.ndarray]:
    """Per class, split its examples over clients by proportions ~ Dir(alpha); redraw until each client has
    `min_examples`, as in Hsu et al. (2019). Smaller alpha: each client sees mostly one label."""
    if alpha <= 0:
        raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(MAX_DIRICHLET_DRAWS):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_examples:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"could not give each of {num_clients} clients {min_examples} examples with alpha={alpha} "
        f"from {len(labels)} examples; raise alpha or lower the client count"
    )

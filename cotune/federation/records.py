"""Adapter tensors and the run config as Flower records (the only things that cross the network)."""

import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

from cotune.config import CotuneConfig, from_dict, to_dict
from cotune.quantization.wire import WireFormat, decode, encode

CONFIG_KEY = "cotune-config"
SYNTHETIC_TEXTS, SYNTHETIC_LABELS = "synthetic-texts", "synthetic-labels"


def to_record(state: dict[str, np.ndarray], fmt: WireFormat) -> ArrayRecord:
    """Encode fp32 adapter tensors in wire format `fmt`."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in encode(state, fmt).items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """fp32 adapter tensors from a record in any wire format."""
    return decode({k: v.numpy() for k, v in record.items()})


def record_bytes(record: ArrayRecord) -> int:
    """Payload bytes of the tensors in a record (what the wire format decides)."""
    return sum(len(array.data) for array in record.values())


def config_record(cfg: CotuneConfig) -> ConfigRecord:
    """The server's resolved config travels with each message, so silos need no copy of the server's files."""
    return ConfigRecord({CONFIG_KEY: json.dumps(to_dict(cfg), separators=(",", ":"))})


def config_from_record(record: ConfigRecord) -> CotuneConfig:
    return from_dict(CotuneConfig, json.loads(str(record[CONFIG_KEY])))


def samples_record(texts: list[str], labels: list[int]) -> ConfigRecord:
    """Synthetic samples (LLM-generated, never private) as they travel to silos: for scoring or for training."""
    return ConfigRecord({SYNTHETIC_TEXTS: list(texts), SYNTHETIC_LABELS: [int(y) for y in labels]})


def samples_from_record(record: ConfigRecord) -> tuple[list[str], list[int]]:
    if SYNTHETIC_TEXTS not in record:
        return [], []
    texts, labels = list(record[SYNTHETIC_TEXTS]), [int(y) for y in record[SYNTHETIC_LABELS]]
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} synthetic texts arrived with {len(labels)} labels")
    return texts, labels

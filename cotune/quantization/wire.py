"""Adapter compression on the wire: what a silo sends and receives each round.

int8 is symmetric absmax with one fp32 scale per slice along a matrix's *shorter* axis (per rank row of lora_A,
per rank column of lora_B): LoRA matrices are dense and thin, so r scales cost little and keep the round-trip
error far below the update itself while quartering the bytes.
"""

from typing import Literal

import numpy as np

WireFormat = Literal["fp32", "fp16", "int8"]
Q8_SUFFIX, SCALE_SUFFIX = ".q8", ".q8scale"


def encode(state: dict[str, np.ndarray], fmt: WireFormat) -> dict[str, np.ndarray]:
    if fmt == "fp32":
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
    if fmt == "fp16":
        return {k: v.astype(np.float16) for k, v in state.items()}
    if fmt == "int8":
        out = {}
        for key, value in state.items():
            rows = _as_rows(value)
            scale = np.abs(rows).max(axis=1, keepdims=True).astype(np.float32) / 127.0
            safe = np.where(scale == 0, 1.0, scale)
            out[key + Q8_SUFFIX] = _from_rows(np.clip(np.round(rows / safe), -127, 127).astype(np.int8), value.shape)
            out[key + SCALE_SUFFIX] = scale.reshape(-1)
        return out
    raise ValueError(f"unknown wire format {fmt!r}: expected fp32, fp16 or int8")


def decode(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """fp32 tensors from any wire format (the format is recognisable from keys and dtypes)."""
    out = {}
    for key, value in arrays.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        if key.endswith(Q8_SUFFIX):
            name = key[: -len(Q8_SUFFIX)]
            if name + SCALE_SUFFIX not in arrays:
                raise ValueError(f"int8 tensor {name} arrived without its scales")
            scale = arrays[name + SCALE_SUFFIX].astype(np.float32)
            rows = _as_rows(value).astype(np.float32)
            if scale.size != rows.shape[0]:
                raise ValueError(f"int8 tensor {name}: {scale.size} scales for {rows.shape[0]} slices")
            out[name] = _from_rows(rows * scale.reshape(-1, 1), value.shape)
        else:
            out[key] = np.asarray(value, dtype=np.float32)
    return out


def _as_rows(value: np.ndarray) -> np.ndarray:
    """2-D view whose rows are the slices along the shorter axis of a matrix (1 row for vectors)."""
    if value.ndim == 2 and value.shape[0] > value.shape[1]:
        return value.T
    return value.reshape(value.shape[0], -1) if value.ndim > 1 else value.reshape(1, -1)


def _from_rows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) == 2 and shape[0] > shape[1]:
        return np.ascontiguousarray(rows.T)
    return rows.reshape(shape)


def wire_bytes(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(a.nbytes for a in arrays.values()))

"""Audit of what a silo sent: does a serialized message hold any of its private texts or their token ids?"""

from collections.abc import Iterable

import numpy as np

WINDOW = 8  # consecutive token ids: a shorter run can occur in a payload by chance


def _id_encodings(ids: list[int]) -> list[bytes]:
    """Byte forms a token-id sequence could take in a serialized message: fixed-width integers and floats, and
    protobuf varints (plain and zigzag, as Flower packs int lists)."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    fixed = [np.asarray(ids, dtype=d).tobytes() for d in ("<i8", "<i4", "<u2", "<f4", "<f8")]
    return [*fixed, b"".join(varint(i) for i in ids), b"".join(varint(2 * i) for i in ids)]


def private_data_in(payload: bytes, texts: Iterable[str], token_ids: Iterable[list[int]]) -> list[str]:
    """The private texts (UTF-8) and every run of WINDOW consecutive token ids of them (`token_ids`, one list per
    text) that occur in `payload`, e.g. a serialized reply message."""
    found = [f"text: {t[:40]!r}" for t in texts if t and t.encode() in payload]
    for ids in token_ids:
        for start in range(max(0, len(ids) - WINDOW + 1)):
            run = ids[start : start + WINDOW]
            if any(form in payload for form in _id_encodings(run)):
                found.append(f"token ids {run}")
                break
    return found

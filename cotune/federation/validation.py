"""What a silo's training reply must look like before any of it touches the global adapter.

A reply is checked in the order that keeps a hostile one cheapest to refuse: record layout, byte size (before
decoding anything), array names, dtypes and shapes exactly as one of the wire formats produces them, then the
decoded values (finite), its example count, and finally its update norm against the round's other updates.
Every check returns a reason string, so a rejection is logged with what was wrong.

Two numbers a silo chooses weigh in the round beyond its tensors: its update's size and its claimed example
count. Both are judged against references a hostile *minority* cannot move: medians over the round's other replies
(leave-one-out), and for norms also the accepted norms of earlier rounds, which a majority of honest silos set.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from cotune.quantization.wire import Q8_SUFFIX, SCALE_SUFFIX, decode, encode

State = dict[str, np.ndarray]
ARRAYS, METRICS = "arrays", "metrics"
PLAIN_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))  # fp32 and fp16 wire formats
NPY_HEADER = 128  # each array travels as .npy: a header of 128 bytes (numpy pads it to 64) before the payload


@dataclass(frozen=True)
class WireSchema:
    """What a correct reply may carry for each adapter tensor — plain float32/float16 under its own name, or int8
    codes plus fp32 scales (the three wire formats; silos may use any) — and the byte limit of a reply."""

    reference: dict[str, tuple[int, ...]]  # adapter key -> shape
    quantized: dict[str, tuple[np.dtype, tuple[int, ...]]]  # int8 keys (codes, scales) -> dtype, shape
    max_bytes: int

    @classmethod
    def of(cls, reference: State, max_bytes: int = 0) -> "WireSchema":
        """Encoding the reference itself yields the int8 layout exactly; `max_bytes` 0: twice the largest correct
        reply (fp32, plus a header per array)."""
        quantized = {k: (a.dtype, a.shape) for k, a in encode(reference, "int8").items()}
        limit = max_bytes or 2 * sum(v.size * 4 + 2 * NPY_HEADER for v in reference.values())
        return cls({k: v.shape for k, v in reference.items()}, quantized, limit)

    def expected(self, key: str) -> tuple[tuple[np.dtype, ...], tuple[int, ...]]:
        if key in self.reference:
            return PLAIN_DTYPES, self.reference[key]
        dtype, shape = self.quantized[key]
        return (dtype,), shape


def check_update(update: State, reference: State) -> str | None:
    """Why a decoded update cannot be averaged into `reference`, or None if it can."""
    if set(update) != set(reference):
        missing, extra = sorted(set(reference) - set(update)), sorted(set(update) - set(reference))
        return f"adapter keys differ: missing {missing[:3]}, unexpected {extra[:3]}"
    for key, value in update.items():
        if value.shape != reference[key].shape:
            return f"{key}: shape {value.shape}, expected {reference[key].shape}"
        if not np.isfinite(value).all():
            return f"{key}: non-finite values"
    return None


def _layout_problem(record: ArrayRecord, schema: WireSchema) -> str | None:
    size = sum(len(array.data) for array in record.values())
    if size > schema.max_bytes:
        return f"arrays take {size:,} bytes, more than the limit of {schema.max_bytes:,}"
    got = set(record.keys())
    for key in sorted(got):
        if key.endswith(Q8_SUFFIX) and key[: -len(Q8_SUFFIX)] + SCALE_SUFFIX not in got:
            return f"int8 tensor {key[: -len(Q8_SUFFIX)]} arrived without its scales"
    unexpected = sorted(got - set(schema.reference) - set(schema.quantized))
    missing = [k for k in schema.reference if k not in got and k + Q8_SUFFIX not in got]
    twice = [k for k in schema.reference if k in got and k + Q8_SUFFIX in got]
    if unexpected or missing or twice:
        return (
            f"array keys differ from the adapter: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"twice {twice[:3]}"
        )
    return None


def decode_reply(content: RecordDict, schema: WireSchema) -> tuple[State | None, str | None]:
    """The fp32 adapter a training reply carries, or None and why it is unusable."""
    if set(content.array_records) != {ARRAYS}:
        return None, f"expected exactly one array record '{ARRAYS}', got {sorted(content.array_records)}"
    record = content.array_records[ARRAYS]
    if problem := _layout_problem(record, schema):
        return None, problem
    raw = {}
    for key, array in record.items():
        try:
            value = array.numpy()
        except (TypeError, ValueError, OSError) as err:
            return None, f"{key}: undecodable array ({err})"
        dtypes, shape = schema.expected(key)
        if value.dtype not in dtypes:
            return None, f"{key}: dtype {value.dtype}, the wire formats send {' or '.join(map(str, dtypes))}"
        if value.shape != shape:
            return None, f"{key}: shape {value.shape}, expected {shape}"
        raw[key] = value
    state = decode(raw)
    bad = next((k for k, v in state.items() if not np.isfinite(v).all()), None)
    return (None, f"{bad}: non-finite values") if bad else (state, None)


def examples_problem(content: RecordDict) -> str | None:
    """The example count weighs the update: it must be a finite number > 0."""
    metrics = content.metric_records.get(METRICS)
    if not isinstance(metrics, MetricRecord):
        return f"reply carries no '{METRICS}' record"
    value = metrics.get("num-examples")
    if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        return f"num-examples must be a finite number > 0, got {value!r}"
    return None


def evaluation_problem(content: RecordDict) -> str | None:
    """An evaluation reply feeds the logged validation accuracy: a fraction, over a positive example count."""
    if problem := examples_problem(content):
        return problem
    accuracy = content.metric_records[METRICS].get("val-accuracy")
    if not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1:
        return f"val-accuracy must be a fraction in [0, 1], got {accuracy!r}"
    return None


def update_norm(update: State, reference: State) -> float:
    """L2 norm of update - reference over every tensor, in float64 (fp32 sums lose digits on large adapters)."""
    return float(np.sqrt(sum(np.sum((update[k].astype(np.float64) - reference[k]) ** 2) for k in reference)))


def median_of_others(values: Mapping[int, float], key: int) -> float:
    """The median of every value but `key`'s: the reference for one reply, which that reply cannot shift.

    Leave-one-out, so that with two silos the outsized one is still judged against the other (a plain median would
    sit halfway). With h hostile replies of n, the others' median stays among honest values while h < (n + 1) / 2.
    """
    return float(np.median([v for k, v in values.items() if k != key]))


def norm_references(norms: Mapping[int, float], trusted: float | None = None) -> dict[int, float]:
    """The norm each update is judged against: the median of the round's other updates, lowered to `trusted` (the
    median accepted norm of earlier rounds) when that is smaller. Colluders vouch for each other in a round's
    medians as soon as they are half of it; they cannot raise a reference that earlier rounds' majority set, and
    taking the smaller of the two means neither reference can be used to loosen the other."""
    if len(norms) < 2 and not trusted:
        return {}
    out = {}
    for key in norms:
        references = [median_of_others(norms, key)] if len(norms) >= 2 else []
        if trusted:
            references.append(trusted)
        out[key] = min(references)
    return out


def norm_outliers(norms: Mapping[int, float], multiple: float, trusted: float | None = None) -> dict[int, str]:
    """Updates whose norm exceeds `multiple` x their reference (`norm_references`), with the reason.

    A reference of 0 says nothing about scale and rejects nothing; `multiple` 0 turns the check off.
    """
    if multiple <= 0:
        return {}
    out = {}
    for key, reference in norm_references(norms, trusted).items():
        norm = norms[key]
        if reference > 0 and norm > multiple * reference:
            earlier = trusted and reference == trusted
            source = "the trusted norm of earlier rounds" if earlier else "the median of the other updates"
            out[key] = f"update norm {norm:.4g} exceeds {multiple:g} x {source} ({reference:.4g})"
    return out


def claim_caps(claims: Mapping[int, float], multiple: float) -> dict[int, float]:
    """The most each reply's claimed example count may weigh: `multiple` x the median claim of the round's other
    replies. FedAvg weighs a silo by a number it reports itself; without a cap one claim of 10^12 makes the global
    adapter that silo's own. Leave-one-out for the reason of `median_of_others`; a reply alone (or `multiple` 0)
    is not capped."""
    if multiple <= 0 or len(claims) < 2:
        return {key: float("inf") for key in claims}
    return {key: multiple * median_of_others(claims, key) for key in claims}

"""Dense replacements for vLLM's CPU LoRA ops (vllm.lora.ops.torch_ops), used inside the vLLM server process.

Why: on CPU, vLLM applies LoRA through `PunicaWrapperCPU`, whose torch ops gather a full copy of the adapter
weights for every token (`lora_weights[token_indices]`, shape [tokens, rank, hidden]) and then run one tiny
matrix product per token (`einsum("bi,boi->bo")`). With 256 decoding sequences that is 256 weight copies per
LoRA module per layer per step; measured on SmolLM2-135M it cut generation with an adapter from ~200 to ~80 tok/s.
Every token of a CrossLM batch uses the same adapter, so the same result is one matrix product per adapter slot
present in the batch (the batch's rows grouped by slot), with no weight copies.

Semantics follow vLLM's documented meaning of the index tensors: row i uses slot `indices[i]`, and -1 means "no
LoRA" (nothing is added; a shrink writes zeros). vLLM's own torch ops instead index slot -1 as Python does (the
last slot); the two agree whenever no row has -1, which is what the tests check against vLLM itself.

This module imports only torch at import time, so that it loads in the vLLM environment; `install()` imports vLLM.
"""

from collections.abc import Callable

import torch

MARKER = "cotune: dense CPU LoRA ops installed"
_OPS = ("sgmv_shrink", "sgmv_expand", "sgmv_expand_slice", "bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def _slots(weights: torch.Tensor) -> torch.Tensor:
    """[slots, out, in] from vLLM's stacked [slots, 1, out, in] (or already 3-d) LoRA weights."""
    return weights.squeeze(1) if weights.dim() == 4 else weights


def _grouped(indices: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """(slot, rows) for each slot >= 0 present in `indices`; rows None means every row uses that slot."""
    present = torch.unique(indices).tolist()
    if len(present) == 1:
        return [] if present[0] < 0 else [(present[0], None)]
    return [(slot, (indices == slot).nonzero().squeeze(1)) for slot in present if slot >= 0]


def bgmv_shrink(
    inputs: torch.Tensor, lora_a_weights: torch.Tensor, output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor, scaling: float = 1.0,
) -> None:  # fmt: skip
    """output[:, :rank] = scaling * inputs @ A[slot].T per row (zeros for rows without LoRA)."""
    weights = _slots(lora_a_weights)
    rank = weights.shape[1]
    out = output_tensor[:, :rank]
    x = inputs.to(dtype=output_tensor.dtype)
    groups = _grouped(lora_indices_tensor)
    if not (len(groups) == 1 and groups[0][1] is None):
        out.zero_()
    for slot, rows in groups:
        w = weights[slot].to(dtype=output_tensor.dtype)
        if rows is None:
            out.copy_(scaling * (x @ w.t()))
        else:
            out[rows] = scaling * (x[rows] @ w.t())


def bgmv_expand_slice(
    inputs: torch.Tensor, lora_b_weights: torch.Tensor, output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor, slice_offset: int, slice_size: int, add_inputs: bool = True,
) -> None:  # fmt: skip
    """output[:, offset:offset+size] (+)= inputs @ B[slot].T per row; rows without LoRA get nothing added
    (or zeros when not adding)."""
    weights = _slots(lora_b_weights)
    out = output_tensor[:, slice_offset : slice_offset + slice_size]
    x = inputs.to(dtype=output_tensor.dtype)
    groups = _grouped(lora_indices_tensor)
    if not add_inputs and not (len(groups) == 1 and groups[0][1] is None):
        out.zero_()
    for slot, rows in groups:
        w = weights[slot, :slice_size].to(dtype=output_tensor.dtype)
        if rows is None:
            product = x @ w.t()
            out.add_(product) if add_inputs else out.copy_(product)
        elif add_inputs:
            out[rows] += x[rows] @ w.t()
        else:
            out[rows] = x[rows] @ w.t()


def bgmv_expand(
    inputs: torch.Tensor, lora_b_weights: torch.Tensor, output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor, add_inputs: bool = True,
) -> None:  # fmt: skip
    """bgmv_expand_slice over the columns the adapter and the output share (vLLM pads them differently)."""
    common = min(_slots(lora_b_weights).shape[1], output_tensor.shape[1])
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, 0, common, add_inputs)


def _per_token(indices: torch.Tensor, seq_len_tensor: torch.Tensor) -> torch.Tensor:
    """The per-sequence slot indices of vLLM's prefill metadata, repeated for each token of the sequence."""
    return torch.repeat_interleave(indices, seq_len_tensor)


def sgmv_shrink(
    inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
    batches, max_seq_length, token_nums, scaling,
) -> None:  # fmt: skip
    bgmv_shrink(inputs, lora_a_weights, output_tensor, _per_token(lora_indices_tensor, seq_len_tensor), scaling)


def sgmv_expand(
    inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
    batches, max_seq_length, token_nums, add_inputs=False,
) -> None:  # fmt: skip
    bgmv_expand(inputs, lora_b_weights, output_tensor, _per_token(lora_indices_tensor, seq_len_tensor), add_inputs)


def sgmv_expand_slice(
    inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
    batches, max_seq_length, token_nums, slice_offset, slice_size, add_inputs=False,
) -> None:  # fmt: skip
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor, indices, slice_offset, slice_size, add_inputs)


def _with_fallback(dense: Callable, original: Callable) -> Callable:
    """`dense`, except for shapes it was not written for (one input row broadcast to many output rows, as
    vLLM's embedding path can pass), which go to vLLM's `original`."""

    def op(inputs: torch.Tensor, weights: torch.Tensor, output: torch.Tensor, *args, **kwargs) -> None:
        if inputs.dim() != 2 or inputs.shape[0] != output.shape[0] or weights.dim() not in (3, 4):
            return original(inputs, weights, output, *args, **kwargs)
        return dense(inputs, weights, output, *args, **kwargs)

    op.__name__ = op.__qualname__ = dense.__name__
    op.__doc__ = dense.__doc__
    return op


def stacked_weights(
    lora_a_stacked: tuple[torch.Tensor, ...], lora_b_stacked: tuple[torch.Tensor, ...], slot: int,
    output_slices: tuple[int, ...], dtype: torch.dtype, cache: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(A^T, B^T) of one slot with every slice of the layer side by side: A^T [in, slices*rank] and a
    block-diagonal B^T [slices*rank, sum(output_slices)], so that a layer's LoRA is two matrix products.

    `cache` keeps them per layer and slot until vLLM writes into the stacked weights (a new adapter in the slot
    bumps the tensors' version counters, which the cache key holds)."""
    version = tuple(t._version for t in (*lora_a_stacked, *lora_b_stacked))
    key = (id(lora_a_stacked[0]), slot, dtype)
    if cache is not None and key in cache and cache[key][0] == version:
        return cache[key][1], cache[key][2]
    rank = _slots(lora_a_stacked[0]).shape[1]
    a_t = torch.cat([_slots(a)[slot] for a in lora_a_stacked]).t().to(dtype=dtype).contiguous()
    b_t = torch.zeros(rank * len(output_slices), sum(output_slices), dtype=dtype)
    offset = 0
    for i, (b, size) in enumerate(zip(lora_b_stacked, output_slices, strict=True)):
        b_t[i * rank : (i + 1) * rank, offset : offset + size] = _slots(b)[slot, :size].t()
        offset += size
    if cache is not None:
        cache[key] = (version, a_t, b_t)
    return a_t, b_t


def fused_lora_linear(
    y: torch.Tensor, x: torch.Tensor, lora_a_stacked: tuple[torch.Tensor, ...],
    lora_b_stacked: tuple[torch.Tensor, ...], scale: float, output_slices: tuple[int, ...],
    groups: list[tuple[int, torch.Tensor | None]], add_inputs: bool = True, cache: dict | None = None,
) -> None:  # fmt: skip
    """y[:, slice i] (+)= (x @ A_i[slot].T * scale) @ B_i[slot].T for each row's slot, in y's dtype.

    The hot path of a LoRA'd linear layer: all slices (q, k, v or gate, up) at once, two matrix products per slot
    in `groups` (from `_grouped` of the step's token indices) instead of a handful of small ops per slice; on two
    cores the fixed cost of each small op, not the arithmetic, is what LoRA costs.
    """
    x2 = x.reshape(-1, x.shape[-1]).to(dtype=y.dtype)
    out = y.view(-1, y.shape[-1])[:, : sum(output_slices)]
    if not add_inputs and not (len(groups) == 1 and groups[0][1] is None):
        out.zero_()
    for slot, rows in groups:
        a_t, b_t = stacked_weights(lora_a_stacked, lora_b_stacked, slot, output_slices, y.dtype, cache)
        h = (x2 if rows is None else x2[rows]) @ a_t
        if scale != 1.0:
            h.mul_(scale)
        product = h @ b_t
        if rows is None:
            out.add_(product) if add_inputs else out.copy_(product)
        elif add_inputs:
            out[rows] += product
        else:
            out[rows] = product


def install() -> list[str]:
    """Point vLLM's CPU punica wrapper at the dense ops; returns what was patched. Safe to call twice.

    Patched: the six torch ops (in vllm.lora.ops.torch_ops and as imported by punica_cpu), and on
    PunicaWrapperCPU `update_metadata` (groups the step's token indices once per step) and `add_lora_linear`
    (fused dense shrink + expand). Raises ImportError where vLLM lacks these modules (another version).
    """
    import vllm.lora.ops.torch_ops as torch_ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    patched = []
    dense = globals()
    for module in (torch_ops, punica_cpu):
        for name in _OPS:
            current = getattr(module, name, None)
            if current is None or getattr(current, "__module__", "") == __name__:
                continue
            setattr(module, name, _with_fallback(dense[name], current))
            patched.append(f"{module.__name__}.{name}")
    wrapper = punica_cpu.PunicaWrapperCPU
    if getattr(wrapper.update_metadata, "__module__", "") != __name__:
        wrapper.update_metadata = _grouping_update(wrapper.update_metadata)
        wrapper.add_lora_linear = _dense_add_lora_linear(wrapper.add_lora_linear)
        patched += [f"{wrapper.__qualname__}.update_metadata", f"{wrapper.__qualname__}.add_lora_linear"]
    return patched


def _grouping_update(original: Callable) -> Callable:
    def update_metadata(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        indices = self.token_lora_indices
        self._cotune_rows = indices.shape[0]
        self._cotune_groups = _grouped(indices)

    return update_metadata


def _dense_add_lora_linear(original: Callable) -> Callable:
    def add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *, buffer=None, **kwargs):
        rows = x.reshape(-1, x.shape[-1]).shape[0]
        if getattr(self, "_cotune_rows", -1) != rows or y.reshape(-1, y.shape[-1]).shape[0] != rows:
            return original(
                self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer, **kwargs
            )
        if not hasattr(self, "_cotune_cache"):
            self._cotune_cache = {}
        groups, add_inputs = self._cotune_groups, kwargs.get("add_inputs", True)
        fused_lora_linear(
            y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, groups, add_inputs, self._cotune_cache
        )
        return None

    return add_lora_linear

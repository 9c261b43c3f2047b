"""cotune's dense CPU LoRA ops for vLLM: same results as a per-token reference and as vLLM's own torch ops."""

import subprocess
import textwrap

import pytest
import torch

from cotune.config.server import ServerConfig
from cotune.server_vllm.vllm_cpu import LAUNCHER, server_entry
from cotune.server_vllm.vllm_cpu import lora_ops
from cotune.server_vllm.vllm_server import find_vllm_python

SLOTS, TOKENS, HIDDEN, RANK = 3, 10, 24, 4
INDEX_CASES = {
    "one_slot": [1] * TOKENS,
    "mixed": [0, 0, 2, 2, 2, 1, 0, 1, 1, 2],
    "with_no_lora": [-1, -1, 0, 0, 2, 2, -1, 1, 1, -1],
    "no_lora_only": [-1] * TOKENS,
}


def reference_linear(x, a_stacked, b_stacked, scale, slices, indices):
    """Per-token LoRA delta of one layer: row i gets (x_i A_s^T scale) B_s^T for its slot s, nothing for -1."""
    delta = torch.zeros(x.shape[0], sum(slices), dtype=torch.float64)
    for i, slot in enumerate(indices):
        if slot < 0:
            continue
        offset = 0
        for a, b, size in zip(a_stacked, b_stacked, slices, strict=True):
            h = x[i].double() @ a[slot, 0].double().t() * scale
            delta[i, offset : offset + size] = h @ b[slot, 0, :size].double().t()
            offset += size
    return delta


def stacked(slices, seed):
    g = torch.Generator().manual_seed(seed)
    a = tuple(torch.randn(SLOTS, 1, RANK, HIDDEN, generator=g) for _ in slices)
    b = tuple(torch.randn(SLOTS, 1, size, RANK, generator=g) for size in slices)
    return a, b


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
@pytest.mark.parametrize("add_inputs", [True, False])
@pytest.mark.parametrize("cached", [True, False])
def test_fused_linear_equals_per_token_reference(case, add_inputs, cached):
    indices = torch.tensor(INDEX_CASES[case])
    slices = (8, 4, 4)  # a qkv-like layer: three slices of different widths
    a, b = stacked(slices, seed=0)
    x = torch.randn(TOKENS, HIDDEN, generator=torch.Generator().manual_seed(1))
    y0 = torch.randn(TOKENS, sum(slices), generator=torch.Generator().manual_seed(2))
    y = y0.clone()
    cache = {} if cached else None
    if cached:  # a stale entry for the same layer: must be rebuilt after the slot's weights changed
        lora_ops.fused_lora_linear(y.clone(), x, a, b, 0.5, slices, lora_ops._grouped(indices), True, cache)
        for tensor in (*a, *b):
            tensor.mul_(0.5)
    lora_ops.fused_lora_linear(y, x, a, b, 0.5, slices, lora_ops._grouped(indices), add_inputs, cache)
    delta = reference_linear(x, a, b, 0.5, slices, INDEX_CASES[case])
    expected = (y0.double() + delta) if add_inputs else delta
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
def test_shrink_then_expand_slice_equals_reference(case):
    indices = torch.tensor(INDEX_CASES[case])
    a, b = stacked((8,), seed=3)
    x = torch.randn(TOKENS, HIDDEN, generator=torch.Generator().manual_seed(4))
    buffer = torch.full((TOKENS, RANK), 7.0)  # stale values: a shrink overwrites every row
    lora_ops.bgmv_shrink(x, a[0], buffer, indices, 0.25)
    y = torch.zeros(TOKENS, 12)
    lora_ops.bgmv_expand_slice(buffer, b[0], y, indices, 2, 8, add_inputs=True)
    delta = reference_linear(x, a, b, 0.25, (8,), INDEX_CASES[case])
    torch.testing.assert_close(y[:, 2:10].double(), delta, rtol=1e-5, atol=1e-4)
    assert not y[:, :2].any() and not y[:, 10:].any()


def test_sgmv_expands_sequence_indices_to_tokens():
    a, b = stacked((6,), seed=5)
    x = torch.randn(TOKENS, HIDDEN, generator=torch.Generator().manual_seed(6))
    per_seq, lengths = torch.tensor([2, -1, 0]), torch.tensor([3, 3, 4])
    buffer, y = torch.zeros(TOKENS, RANK), torch.zeros(TOKENS, 6)
    lora_ops.sgmv_shrink(x, a[0], buffer, None, lengths, per_seq, 3, 4, TOKENS, 1.0)
    lora_ops.sgmv_expand(buffer, b[0], y, None, lengths, per_seq, 3, 4, TOKENS, add_inputs=True)
    delta = reference_linear(x, a, b, 1.0, (6,), [2, 2, 2, -1, -1, -1, 0, 0, 0, 0])
    torch.testing.assert_close(y.double(), delta, rtol=1e-5, atol=1e-4)


def test_server_entry_uses_the_launcher_only_for_dense_lora():
    assert server_entry(True) == [str(LAUNCHER)] and LAUNCHER.is_file()
    assert server_entry(False) == ["-m", "vllm.entrypoints.openai.api_server"]
    assert ServerConfig().cpu_dense_lora is True


VS_VLLM = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, sys.argv[1])
    import lora_ops
    from vllm.lora.ops import torch_ops as stock
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 32, generator=g, dtype=torch.bfloat16)
    a = torch.randn(2, 1, 8, 32, generator=g, dtype=torch.bfloat16)
    b = torch.randn(2, 1, 40, 8, generator=g, dtype=torch.bfloat16)
    lengths, per_seq = torch.tensor([5, 7]), torch.tensor([1, 0])
    results = []
    for ops in (stock, lora_ops):
        buffer, y = torch.zeros(12, 8), torch.ones(12, 48, dtype=torch.bfloat16)
        ops.sgmv_shrink(x, a, buffer, None, lengths, per_seq, 2, 7, 12, 0.5)
        ops.sgmv_expand_slice(buffer, b, y, None, lengths, per_seq, 2, 7, 12, 4, 40, True)
        results.append((buffer, y.float()))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=2e-2, atol=5e-2)
    patched = lora_ops.install()
    assert lora_ops.install() == [], "a second install must patch nothing"
    assert punica_cpu.sgmv_shrink.__module__ == "lora_ops" and punica_cpu.PunicaWrapperCPU.add_lora_linear.__module__ == "lora_ops"
    print(len(patched))
    """
)


@pytest.mark.vllm
def test_dense_ops_equal_vllm_torch_ops_and_install_patches_the_cpu_wrapper():
    python = find_vllm_python(ServerConfig().vllm_python)
    if python is None:
        pytest.skip("no .venv-vllm")
    done = subprocess.run(
        [str(python), "-c", VS_VLLM, str(LAUNCHER.parent)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "14"

"""GPU-host configs cannot run here (no GPU, no hub), but everything short of fetching their weights must work:
they validate, and their quantization settings load a model through the same loader the CPU path uses."""

from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch

from cotune.config import load_config
from cotune.quantization.loading import bnb_config, load_causal_lm

GPU_CONFIGS = sorted(Path("configs").glob("gpu-*.toml"))


def test_there_are_gpu_configs():
    assert len(GPU_CONFIGS) >= 2


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.stem)
def test_gpu_config_quantization_loads_through_the_shared_loader(path, tiny_path):
    cfg = load_config(path)
    q = cfg.quantization
    for precision in (q.slm_load, q.llm_load):
        settings = bnb_config(precision, q.compute_dtype, q.double_quant)
        assert settings.load_in_4bit and settings.bnb_4bit_quant_type == "nf4"
        assert settings.bnb_4bit_use_double_quant == q.double_quant
        model = load_causal_lm(tiny_path, precision, q.compute_dtype, q.double_quant)
        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert layers and all(not m.support_avx512bf16_for_cpu for m in layers)
        assert layers[0].compute_dtype == getattr(torch, q.compute_dtype)


def test_int8_loading_works_on_cpu(tiny_path):
    model = load_causal_lm(tiny_path, "int8")
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()

"""Qwen2 (the SLM of configs/gpu-qwen2.5-7b.toml) through the model builder: q/k/v biases, merged and runtime
adapters, on a tiny random Qwen2 with the SmolLM2 tokenizer."""

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from cotune.edge_runtime import EdgeModel
from cotune.export import export_edge_model
from cotune.lm.merge import merged_model

PROMPT = "Review: A warm, funny and sharply written comedy.\nSentiment (positive or negative):"


@pytest.fixture(scope="module")
def qwen2(tiny_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen2")
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=256, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # non-zero q/k/v biases: the export must keep them
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(root / "base"), lora).save_pretrained(root / "lora")
    return root / "base", root / "lora"


@pytest.mark.parametrize("mode", ["merged", "runtime"])
def test_qwen2_exports_with_parity(qwen2, tmp_path, tokenizer, mode):
    base, lora = qwen2
    result = export_edge_model(base, lora, tmp_path / mode, "fp32", 4, 32, adapter_mode=mode)
    assert result.parity["greedy_token_agreement"] == 1.0 and result.parity["max_abs_logit_diff"] < 1e-4
    ids = tokenizer(PROMPT, add_special_tokens=False).input_ids
    with torch.no_grad():
        want = merged_model(base, lora)(torch.tensor([ids])).logits[0, -1].numpy()
    for backend in ("genai", "session"):
        assert np.abs(EdgeModel(result.path, backend).next_token_logits(ids) - want).max() < 1e-4

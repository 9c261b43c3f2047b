"""The HF fallback engine: batched left-padded generation, adapters by name, errors naming their cause."""

import pytest
import torch
from support.lora_adapters import greedy_one_by_one, save_lora_adapter

from cotune.config.server import ServerConfig
from cotune.server_vllm.engine import Sampling, open_engine
from cotune.server_vllm.errors import AdapterError, PromptTooLongError

PROMPTS = ["Write a short positive movie review:\n", "Hello", "The film was long, slow and in the end it"]
GREEDY = Sampling(n=2, temperature=0, max_tokens=8)


@pytest.fixture(scope="module")
def adapters(tiny_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    merged = {}
    for seed in (1, 2):
        merged[seed] = save_lora_adapter(tiny_path, root / f"a{seed}", seed=seed).merge_and_unload().eval()
    return root, merged


@pytest.fixture(scope="module")
def engine(tiny_path, tmp_path_factory):
    with open_engine(ServerConfig(backend="hf", hf_batch_size=2), tiny_path, tmp_path_factory.mktemp("run")) as eng:
        yield eng


def test_greedy_with_adapter_equals_the_merged_model_and_base_stays_base(engine, adapters, tiny_path, tokenizer):
    root, merged = adapters
    base_before = engine.generate(PROMPTS, GREEDY)
    engine.load_adapter("llm", root / "a1")
    with_adapter = engine.generate(PROMPTS, GREEDY, adapter="llm")
    reference = greedy_one_by_one(merged[1], tokenizer, PROMPTS, GREEDY.max_tokens)
    assert with_adapter == [[text, text] for text in reference]
    assert engine.generate(PROMPTS, GREEDY) == base_before
    assert base_before != with_adapter


def test_loading_under_a_used_name_replaces_the_adapter(engine, adapters, tokenizer):
    root, merged = adapters
    engine.load_adapter("swap", root / "a1")
    engine.load_adapter("swap", root / "a2")
    reference = greedy_one_by_one(merged[2], tokenizer, PROMPTS, GREEDY.max_tokens)
    assert [texts[0] for texts in engine.generate(PROMPTS, GREEDY, adapter="swap")] == reference


def test_sampling_gives_n_full_length_samples_and_counts_tokens(engine):
    sampling = Sampling(n=3, temperature=1.0, top_p=0.9, max_tokens=6, min_tokens=6)
    before = engine.generated_tokens
    out = engine.generate(PROMPTS, sampling)
    assert [len(samples) for samples in out] == [3, 3, 3]
    assert engine.generated_tokens - before == len(PROMPTS) * 3 * 6
    assert len({text for samples in out for text in samples}) > 3  # sampled, not copies


def test_same_seed_same_samples(tiny_path, tmp_path):
    sampling = Sampling(n=2, temperature=1.0, max_tokens=5)
    runs = []
    for _ in range(2):
        with open_engine(ServerConfig(backend="hf", seed=3), tiny_path, tmp_path) as eng:
            runs.append(eng.generate(PROMPTS, sampling))
    assert runs[0] == runs[1]


def test_unknown_adapter_and_too_long_prompt_name_the_cause(engine):
    with pytest.raises(AdapterError, match="'nope' is not loaded"):
        engine.generate(PROMPTS, GREEDY, adapter="nope")
    long_prompt = "word " * 3000
    with pytest.raises(PromptTooLongError, match=r"prompt 1 has \d+ tokens.*context of 2048 tokens"):
        engine.generate(["short", long_prompt], GREEDY)


def test_bf16_engine_generates(tiny_path, tmp_path):
    with open_engine(ServerConfig(backend="hf", hf_dtype="bfloat16"), tiny_path, tmp_path) as eng:
        assert eng.model.dtype == torch.bfloat16
        assert len(eng.generate(PROMPTS[:1], Sampling(max_tokens=3))[0]) == 1


@pytest.mark.parametrize("merge", [True, False])
def test_merged_and_unmerged_adapter_agree_and_base_weights_come_back_bit_for_bit(adapters, tiny_path, tmp_path, merge):
    root, merged = adapters
    cfg = ServerConfig(backend="hf", hf_batch_size=2, hf_merge_adapter=merge)
    with open_engine(cfg, tiny_path, tmp_path) as engine:
        before = {k: v.clone() for k, v in engine.model.state_dict().items()}
        engine.load_adapter("llm", root / "a1")
        with_adapter = engine.generate(PROMPTS, GREEDY, adapter="llm")
        after = {k.replace(".base_layer", ""): v for k, v in engine.model.state_dict().items()}
        layer = next(m for m in engine._peft.modules() if hasattr(m, "merged"))
        assert not layer.merged, "the adapter must not stay merged after generate"
    reference = greedy_one_by_one(merged[1], engine.tokenizer, PROMPTS, GREEDY.max_tokens)
    assert with_adapter == [[text, text] for text in reference]
    assert sum(key.endswith("q_proj.weight") for key in before) > 0
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} changed"

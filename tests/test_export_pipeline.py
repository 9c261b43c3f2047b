"""`cotune export`: LoRA merge + ONNX export with a KV cache, parity with PyTorch, quantization, bad inputs.

Tiny models only: the random-init tiny Llama (model-builder path) and a tiny random GPT-2 built here on the
SmolLM2 tokenizer (transformers-exporter path), each with a random LoRA whose B is non-zero, so the merge
changes the model and parity would catch an export of the unmerged base.
"""

import hashlib
import json
import os

import numpy as np
import onnx
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from cotune.cli import main
from cotune.edge_runtime import EdgeModel
from cotune.export import ExportInputError, export_edge_model
from cotune.lm.merge import merged_model
from cotune.models import resolve_model

LLAMA_TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]


def save_random_lora(base, out, targets, fan_in_fan_out=False):
    """A LoRA with random A and B (peft's init_lora_weights=False): merging it really changes the model."""
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False, fan_in_fan_out=fan_in_fan_out)
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama_lora(tiny_path, tmp_path_factory):
    return save_random_lora(tiny_path, tmp_path_factory.mktemp("lora") / "llama", LLAMA_TARGETS)


@pytest.fixture(scope="module")
def llama_fp32(tiny_path, llama_lora, tmp_path_factory):
    return export_edge_model(tiny_path, llama_lora, tmp_path_factory.mktemp("edge") / "llama-fp32", "fp32", 20, 64)


@pytest.fixture(scope="module")
def gpt2_base(tiny_path, tmp_path_factory):
    """A tiny random GPT-2 (an architecture the model builder lacks) on the SmolLM2 tokenizer."""
    out = tmp_path_factory.mktemp("gpt2") / "base"
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=2, n_positions=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def gpt2_lora(gpt2_base):
    return save_random_lora(gpt2_base, gpt2_base.parent / "lora", ["c_attn", "c_fc"], fan_in_fan_out=True)


def test_llama_fp32_greedy_tokens_equal_pytorch(llama_fp32, llama_lora):
    """20 prompts x 64 greedy tokens. Not luck on random weights: the smallest top-2 logit gap over those 1,280
    steps is 2e-4 (PyTorch, measured), some 200 times the export's logit error (1e-6)."""
    parity = llama_fp32.parity
    assert parity["prompts"] == 20 and parity["tokens_per_prompt"] == 64
    assert parity["greedy_token_agreement"] == 1.0
    assert parity["prompts_all_tokens_equal"] == 20
    assert parity["max_abs_logit_diff"] < 1e-5
    assert parity["runtime_backend"] == "genai"
    manifest = json.loads((llama_fp32.path / "manifest.json").read_text())
    assert manifest["parity"] == parity and manifest["precision"] == "fp32"
    assert manifest["adapter"]["sha256"] == hashlib.sha256((llama_lora / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert manifest["sizes"]["model_bytes"] == llama_fp32.size_bytes > 0
    for name in ("model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "manifest.json"):
        assert (llama_fp32.path / name).is_file(), name


def test_export_carries_the_merged_lora_not_the_base(llama_fp32, tiny_path, llama_lora, tokenizer):
    """Free-running PyTorch generate on the merged model gives the export's tokens; the base alone does not."""
    merged, base = merged_model(tiny_path, llama_lora), merged_model(tiny_path, None)
    edge = EdgeModel(llama_fp32.path)
    ids = tokenizer("Review: a film to remember.\nSentiment (positive or negative):", add_special_tokens=False).input_ids
    x = torch.tensor([ids])
    with torch.no_grad():
        want = merged.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=32, do_sample=False)[0, len(ids) :]
        merged_logits, base_logits = merged(x).logits[0].numpy(), base(x).logits[0].numpy()
    assert list(edge.stream_tokens(ids, 32, stop_at_eos=False)) == want.tolist()
    exported = edge.sequence_logits(ids)
    assert np.abs(exported - merged_logits).max() < 1e-3
    assert np.abs(exported - base_logits).max() > 0.1  # the LoRA moved the logits; the export has it


def matmuls(folder):
    """{node name: (op type, bits)} of the MatMul-family nodes of an exported graph."""
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph

    def bits(node):
        return next((a.i for a in node.attribute if a.name == "bits"), None)

    return {n.name: (n.op_type, bits(n)) for n in graph.node if "MatMul" in n.op_type}


def test_llama_int8_int4_export_smaller_and_run(tiny_path, llama_lora, llama_fp32, tmp_path):
    int8 = export_edge_model(tiny_path, llama_lora, tmp_path / "int8", "int8", 2, 16)
    int4 = export_edge_model(tiny_path, llama_lora, tmp_path / "int4", "int4", 2, 16)
    assert int4.size_bytes < 0.25 * llama_fp32.size_bytes  # the tied 49152-row table is 4-bit and shared
    assert int8.size_bytes < 1.3 * llama_fp32.size_bytes
    for result in (int8, int4):
        assert result.manifest["precision"] == result.precision
        assert 0 < result.parity["greedy_token_agreement"] <= 1
        for backend in ("genai", "session"):
            assert len(EdgeModel(result.path, backend).generate("The capital of France is", 8, stop_at_eos=False).token_ids) == 8
    # int8: every projection but the down projections (massive activations) runs on int8
    ops8 = matmuls(int8.path)
    assert {n for n, (op, _) in ops8.items() if op == "MatMul"} == {f"/model/layers.{i}/mlp/down_proj/MatMul" for i in (0, 1)}
    assert sum(op == "MatMulInteger" for op, _ in ops8.values()) == 9  # 2 x (qkv, o, gate, up) + lm_head
    # int4: 4-bit blocks, with the builder's mixed-precision 8-bit ones; the lm_head reads the 4-bit shared table
    ops4 = matmuls(int4.path)
    assert {op for op, _ in ops4.values()} == {"MatMulNBits"}
    assert {bits for _, bits in ops4.values()} == {4, 8}
    assert ops4["/lm_head/MatMul_Q4"] == ("MatMulNBits", 4)


def test_bitsandbytes_base_is_dequantized_before_the_merge(tiny_path, llama_lora, llama_fp32, tmp_path, tokenizer):
    """An NF4 checkpoint as base: dequantized to fp32, LoRA merged, exported with parity to that merged model."""
    from cotune.quantization.loading import load_causal_lm

    nf4 = tmp_path / "nf4"
    load_causal_lm(tiny_path, "nf4", device="cpu").save_pretrained(nf4)
    tokenizer.save_pretrained(nf4)
    result = export_edge_model(nf4, llama_lora, tmp_path / "edge", "fp32", 4, 16)
    assert result.manifest["source_model"]["dequantized_from_bitsandbytes"] is True
    assert result.parity["greedy_token_agreement"] == 1.0 and result.parity["max_abs_logit_diff"] < 1e-5
    ids = tokenizer("The quick brown fox", add_special_tokens=False).input_ids
    rounding = np.abs(EdgeModel(result.path).sequence_logits(ids) - EdgeModel(llama_fp32.path).sequence_logits(ids))
    assert rounding.max() > 1e-3  # the 4-bit weights, not the fp32 ones, went into the export


def test_gpt2_export_through_transformers_exporter(gpt2_base, gpt2_lora, tmp_path):
    fp32 = export_edge_model(gpt2_base, gpt2_lora, tmp_path / "fp32", "fp32", 20, 64)
    assert fp32.parity["greedy_token_agreement"] == 1.0 and fp32.parity["prompts_all_tokens_equal"] == 20
    assert fp32.parity["runtime_backend"] == "session"
    assert (fp32.path / "edge_config.json").is_file() and not (fp32.path / "genai_config.json").exists()
    assert "transformers" in fp32.manifest["exporter"]
    int4 = export_edge_model(gpt2_base, gpt2_lora, tmp_path / "int4", "int4", 2, 16)
    assert int4.size_bytes < 0.5 * fp32.size_bytes
    assert len(EdgeModel(int4.path).generate("Once upon a time", 8, stop_at_eos=False).token_ids) == 8


def test_cli_export_then_edge_generate(tiny_path, llama_lora, tmp_path, capsys):
    """`cotune export` writes a folder `cotune edge generate` runs; a second export replaces the whole first one."""
    out = tmp_path / "cli"
    export = ["export", "--base", str(tiny_path), "--adapter", str(llama_lora), "--out", str(out), "--precision", "int4",
              "--parity-prompts", "1", "--parity-tokens", "4"]  # fmt: skip
    assert main(export) == 0
    assert f"edge model: {out} (int4" in capsys.readouterr().out
    prompt = "The capital of France is"
    assert main(["edge", "generate", "--model", str(out), "--prompt", prompt, "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr()
    assert printed.out == EdgeModel(out).generate(prompt, 6).text + "\n"
    assert "tokens/s" in printed.err
    (out / "stale.txt").write_text("from the first export")
    assert main(export) == 0
    assert (out / "manifest.json").is_file() and not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli"]  # no staging folder left behind


def test_cli_bad_input_is_a_clear_error(tiny_path, tmp_path, capsys, no_export_work):
    out = tmp_path / "out"
    assert main(["export", "--base", str(tiny_path), "--adapter", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert f"cotune: error: adapter folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert main(["export", "--base", str(tmp_path / "no-model"), "--no-adapter", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- bad input: refused before any export work
@pytest.fixture
def no_export_work(monkeypatch):
    """Fail the test if the merge starts."""

    def forbidden(*args, **kwargs):
        raise AssertionError("export work started despite bad input")

    monkeypatch.setattr("cotune.lm.merge.merged_model", forbidden)


def assert_nothing_written(parent):
    assert not any(parent.iterdir()), list(parent.iterdir())


def test_unsupported_precision(tiny_path, llama_lora, tmp_path, no_export_work):
    with pytest.raises(ExportInputError, match="precision 'int2' is not supported"):
        export_edge_model(tiny_path, llama_lora, tmp_path / "out", "int2")
    assert_nothing_written(tmp_path)


def test_missing_adapter_and_missing_files(tiny_path, llama_lora, tmp_path, no_export_work):
    out = tmp_path / "out"
    with pytest.raises(ExportInputError, match="does not exist"):
        export_edge_model(tiny_path, tmp_path / "nowhere", out, "fp32")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((llama_lora / "adapter_config.json").read_text())
    with pytest.raises(ExportInputError, match="no adapter_model.safetensors"):
        export_edge_model(tiny_path, broken, out, "fp32")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_edge_model(str(tmp_path / "no-model"), llama_lora, out, "fp32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_adapter_with_other_shapes(tiny_path, tmp_path, no_export_work):
    wide = resolve_model("tiny-llama-wide")  # hidden 256 instead of 128
    lora = save_random_lora(wide, tmp_path / "wide-lora", LLAMA_TARGETS)
    with pytest.raises(ExportInputError, match=r"does not fit base .* has shape \(\d+, \d+\), the base"):
        export_edge_model(tiny_path, lora, tmp_path / "out", "fp32")
    assert not (tmp_path / "out").exists()


def test_adapter_with_other_target_modules(tiny_path, gpt2_lora, tmp_path, no_export_work):
    with pytest.raises(ExportInputError, match="c_attn .* is not a linear layer of the base"):
        export_edge_model(tiny_path, gpt2_lora, tmp_path / "out", "fp32")
    assert_nothing_written(tmp_path)


def test_unsupported_architecture(tmp_path, no_export_work):
    base = tmp_path / "bert"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert"}))
    with pytest.raises(ExportInputError, match="architecture BertForMaskedLM is not supported"):
        export_edge_model(base, None, tmp_path / "out", "fp32")
    assert not (tmp_path / "out").exists()


def test_output_folder_with_other_files_is_refused(tiny_path, llama_lora, tmp_path, no_export_work):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportInputError, match="not empty and holds no cotune export"):
        export_edge_model(tiny_path, llama_lora, out, "fp32")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_failure_mid_export_leaves_no_output(tiny_path, llama_lora, tmp_path, monkeypatch):
    """A crash mid-export keeps the previous export as it was, removes the staging folder, and shows the log."""

    def crash(*args, **kwargs):
        os.write(2, b"writing layer 7 of 9\n")  # as native code would: straight to the file descriptor
        raise RuntimeError("builder crashed")

    monkeypatch.setattr("cotune.export.genai_builder.export_with_builder", crash)
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"precision": "int4"}')
    with pytest.raises(RuntimeError, match="builder crashed") as failure:
        export_edge_model(tiny_path, llama_lora, out, "fp32", 0)
    assert "writing layer 7 of 9" in "\n".join(failure.value.__notes__)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert (out / "manifest.json").read_text() == '{"precision": "int4"}'

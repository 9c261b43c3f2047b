"""`--adapter-mode runtime`: one quantized base with LoRA inputs, adapters as `.onnx_adapter` files switched at
runtime on both backends, each equal to the PyTorch model with that adapter merged."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from cotune.cli import main
from cotune.data.rotten_tomatoes import TASK
from cotune.edge_runtime import EdgeClassifier, EdgeModel
from cotune.export import ExportInputError, export_edge_model
from cotune.lm.merge import merged_model
from cotune.export.runtime_adapter import RuntimeAdapterError, runtime_tensors, write_beside, write_runtime_adapter

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPT = "Review: The pacing drags but the ending lands.\nSentiment (positive or negative):"


def random_lora(base, out, seed, targets, **kwargs):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False, **kwargs)
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_path, tmp_path_factory):
    """Two adapters that differ in seed, targets and scaling (rsLoRA): switching must change the model."""
    root = tmp_path_factory.mktemp("adapters")
    first = random_lora(tiny_path, root / "first", 1, ALL_LINEAR)
    second = random_lora(tiny_path, root / "second", 2, ["q_proj", "v_proj", "up_proj"], use_rslora=True)
    return first, second


@pytest.fixture(scope="module")
def runtime_fp32(tiny_path, adapters, tmp_path_factory):
    out = tmp_path_factory.mktemp("edge") / "runtime"
    return export_edge_model(tiny_path, adapters[0], out, "fp32", 8, 32, task=TASK, adapter_mode="runtime")


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def test_runtime_export_parity_and_manifest(runtime_fp32):
    parity = runtime_fp32.parity
    assert parity["greedy_token_agreement"] == 1.0 and parity["max_abs_logit_diff"] < 1e-5
    manifest = runtime_fp32.manifest
    assert manifest["adapter_mode"] == "runtime" and manifest["runtime_adapter"]["default"] == "adapters/adapter.onnx_adapter"
    assert manifest["runtime_adapter"]["modules_with_inputs"] == 14  # 2 layers x 7 linear layers
    assert (runtime_fp32.path / "adapters" / "adapter.onnx_adapter").is_file()
    assert manifest["task"]["labels"] == list(TASK.labels)
    session = ort.InferenceSession(str(runtime_fp32.path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == {"input_ids", "attention_mask"} | {
        f"past_key_values.{i}.{kv}" for i in (0, 1) for kv in ("key", "value")
    }  # the LoRA inputs are optional (empty defaults): a plain caller feeds what it always fed
    assert len(session.get_overridable_initializers()) == 28


@pytest.mark.parametrize("backend", ["genai", "session"])
def test_switch_adapters_at_runtime(runtime_fp32, adapters, tiny_path, tokenizer, tmp_path, backend):
    """One loaded base; default adapter, a second one, the bare base, and back: each equals PyTorch's merged model."""
    second = write_runtime_adapter(adapters[1], tmp_path / "second.onnx_adapter")
    ids = tokenizer(PROMPT, add_special_tokens=False).input_ids
    model = EdgeModel(runtime_fp32.path, backend)
    references = {"first": merged_model(tiny_path, adapters[0]), "second": merged_model(tiny_path, adapters[1])}
    references["base"] = merged_model(tiny_path, None)
    seen = {}
    for name, adapter in (("first", "default"), ("second", second), ("base", None), ("first", runtime_fp32.path / "adapters/adapter.onnx_adapter")):
        if adapter != "default":
            model.set_adapter(adapter)
        want = torch_logits(references[name], ids)
        assert np.abs(model.next_token_logits(ids) - want[-1]).max() < 1e-4, name
        with torch.no_grad():
            x = torch.tensor([ids])
            greedy = references[name].generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False)
        assert model.generate(ids, 12, stop_at_eos=False).token_ids == greedy[0, len(ids) :].tolist(), name
        seen[name] = model.next_token_logits(ids)
    assert np.abs(seen["first"] - seen["second"]).max() > 1e-2 and np.abs(seen["first"] - seen["base"]).max() > 1e-2


def test_classifier_switches_adapters(runtime_fp32, adapters, tmp_path):
    second = write_runtime_adapter(adapters[1], tmp_path / "second.onnx_adapter")
    texts = ["A triumph.", "Tedious and hollow.", "Better than the book."]
    classifier = EdgeClassifier(runtime_fp32.path)
    first_probs = classifier.probabilities(texts)
    classifier.set_adapter(second)
    assert np.abs(classifier.probabilities(texts) - EdgeClassifier(runtime_fp32.path, adapter=second).probabilities(texts)).max() < 1e-6
    assert np.abs(classifier.probabilities(texts) - first_probs).max() > 1e-4


def test_runtime_adapter_file_contents(adapters, tmp_path):
    """lora_A transposed; lora_B transposed with peft's scaling in it (alpha / sqrt(r) under rsLoRA)."""
    from safetensors.numpy import load_file

    raw = load_file(str(adapters[1] / "adapter_model.safetensors"))
    tensors = runtime_tensors(adapters[1])
    module = "model.layers.1.self_attn.q_proj"
    a = raw[f"base_model.model.{module}.lora_A.weight"]
    b = raw[f"base_model.model.{module}.lora_B.weight"]
    np.testing.assert_array_equal(tensors[f"lora.{module}.A"], a.T)
    np.testing.assert_allclose(tensors[f"lora.{module}.B"], b.T * 16 / np.sqrt(8), rtol=1e-6)
    assert len(tensors) == 2 * 2 * 3
    written = write_runtime_adapter(adapters[1], tmp_path / "a.onnx_adapter", version=7)
    read = ort.AdapterFormat.read_adapter(str(written))
    assert read.get_adapter_version() == 7 and set(read.get_parameters()) == set(tensors)
    assert [p.name for p in tmp_path.iterdir()] == ["a.onnx_adapter"]  # no partial file left
    with pytest.raises(RuntimeAdapterError, match="must end in .onnx_adapter"):
        write_runtime_adapter(adapters[1], tmp_path / "a.bin")


def test_int4_runtime_base_with_fp32_adapter(tiny_path, adapters, runtime_fp32, tmp_path, tokenizer):
    """The int4 runtime base is the int4 base model's file plus LoRA branches; the adapter stays fp32 and is
    a small file; both backends agree and the adapter moves the logits."""
    result = export_edge_model(tiny_path, adapters[0], tmp_path / "int4", "int4", 2, 16, adapter_mode="runtime")
    plain = export_edge_model(tiny_path, None, tmp_path / "int4-base", "int4", 0)
    assert result.size_bytes < 1.05 * plain.size_bytes
    adapter_bytes = (result.path / "adapters" / "adapter.onnx_adapter").stat().st_size
    assert adapter_bytes < 0.2 * result.size_bytes
    ids = tokenizer(PROMPT, add_special_tokens=False).input_ids
    genai, session = EdgeModel(result.path, "genai"), EdgeModel(result.path, "session")
    assert np.abs(genai.next_token_logits(ids) - session.next_token_logits(ids)).max() < 1e-3
    bare = EdgeModel(result.path, "session", adapter=None).next_token_logits(ids)
    assert np.abs(bare - EdgeModel(plain.path, "session").next_token_logits(ids)).max() < 1e-4
    assert np.abs(bare - session.next_token_logits(ids)).max() > 1e-2


def test_merged_folder_refuses_an_adapter(tiny_path, adapters, tmp_path):
    merged = export_edge_model(tiny_path, adapters[0], tmp_path / "merged", "fp32", 0)
    write_runtime_adapter(adapters[1], tmp_path / "b.onnx_adapter")
    with pytest.raises(ValueError, match="no LoRA inputs"):
        EdgeModel(merged.path, adapter=tmp_path / "b.onnx_adapter")


def test_runtime_mode_refused_for_transformers_exporter(tiny_path, adapters, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    base = tmp_path / "gpt2"
    tok = AutoTokenizer.from_pretrained(tiny_path)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64)).save_pretrained(base)
    tok.save_pretrained(base)
    with pytest.raises(ExportInputError, match="no runtime LoRA inputs"):
        export_edge_model(base, None, tmp_path / "out", "fp32", adapter_mode="runtime")
    with pytest.raises(ExportInputError, match="adapter mode 'lazy' is not supported"):
        export_edge_model(tiny_path, adapters[0], tmp_path / "out", "fp32", adapter_mode="lazy")
    assert not (tmp_path / "out").exists()


def test_cli_runtime_export_and_adapter_switch(tiny_path, adapters, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["export", "--base", str(tiny_path), "--adapter", str(adapters[0]), "--out", str(out), "--precision", "int4",
            "--adapter-mode", "runtime", "--parity-prompts", "1", "--parity-tokens", "4"]  # fmt: skip
    assert main(argv) == 0
    assert "(int4, runtime" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"]["name"] == "rotten-tomatoes"  # from the config's data section
    second = write_runtime_adapter(adapters[1], tmp_path / "second.onnx_adapter")
    outputs = []
    for extra in ([], ["--adapter", str(second)], ["--no-adapter"]):
        assert main(["edge", "generate", "--model", str(out), "--prompt", PROMPT, "--max-new-tokens", "8", *extra]) == 0
        outputs.append(capsys.readouterr().out)
    for extra, text in zip(([], ["--adapter", str(second)]), outputs):
        assert main(["edge", "classify", "--model", str(out), "--text", "Great.", *extra]) == 0
        assert capsys.readouterr().out.split("\t")[0] in TASK.labels
    want = [EdgeModel(out, adapter=a).generate(PROMPT, 8).text + "\n" for a in ("default", second, None)]
    assert outputs == want


def test_write_beside_a_round_folder(adapters, tmp_path):
    """What the job calls per round: the file lands next to the PEFT folder; prompt tuning writes nothing."""
    import shutil

    round_dir = tmp_path / "round_003"
    shutil.copytree(adapters[0], round_dir / "slm_adapter")
    written = write_beside(round_dir / "slm_adapter", version=3)
    assert written == round_dir / "slm_adapter.onnx_adapter"
    assert ort.AdapterFormat.read_adapter(str(written)).get_adapter_version() == 3
    prompt = tmp_path / "prompt"
    prompt.mkdir()
    (prompt / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING"}))
    assert write_beside(prompt) is None and not (tmp_path / "prompt.onnx_adapter").exists()
    with pytest.raises(RuntimeAdapterError, match="no adapter_config.json"):
        write_beside(tmp_path / "missing")


def test_app_example_without_torch(runtime_fp32, adapters, tmp_path):
    """The README's app example, in a process where torch cannot be imported: classify with the folder's own
    adapter, switch to another adapter file, classify again."""
    import subprocess
    import sys

    from support.no_torch import NO_TORCH

    second = write_runtime_adapter(adapters[1], tmp_path / "round_002.onnx_adapter")
    app = NO_TORCH + (
        "import json\n"
        "from cotune.edge_runtime import EdgeClassifier\n"
        f"clf = EdgeClassifier({str(runtime_fp32.path)!r})\n"
        "texts = ['A small gem.', 'Unwatchable.']\n"
        "before = [r.probabilities for r in clf.classify(texts)]\n"
        f"clf.set_adapter({str(second)!r})\n"
        "after = [r.probabilities for r in clf.classify(texts)]\n"
        "print(json.dumps([before, after, 'torch' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", app], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before, after, torch_loaded = json.loads(done.stdout)
    assert not torch_loaded
    texts = ["A small gem.", "Unwatchable."]
    assert before[0] == pytest.approx(EdgeClassifier(runtime_fp32.path).classify(texts)[0].probabilities)
    assert after[1] == pytest.approx(EdgeClassifier(runtime_fp32.path, adapter=second).classify(texts)[1].probabilities)
    assert before != after

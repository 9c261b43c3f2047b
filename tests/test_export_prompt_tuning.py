"""Prompt-tuned adapters export too: the soft prompt ships as its KV cache (`prompt_prefix.npz`), and the folder
generates and classifies as peft's prompt-tuned forward does."""

import numpy as np
import pytest
import torch
from peft import PeftModel, PromptTuningConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM

from cotune.data.rotten_tomatoes import TASK
from cotune.edge_runtime import EdgeClassifier, EdgeModel
from cotune.export import ExportInputError, export_edge_model

TEXTS = ["A triumph.", "Tedious and hollow.", "I laughed, I cried, I bought the soundtrack.", "Unwatchable."]


def save_prompt_adapter(base, out, tokens=6, seed=3):
    """A soft prompt with random (not token-initialized) rows, so it visibly changes the model."""
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=tokens))  # fmt: skip
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.normal_(0, 1)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def prompt_adapter(tiny_path, tmp_path_factory):
    return save_prompt_adapter(tiny_path, tmp_path_factory.mktemp("prompt") / "adapter")


@pytest.fixture(scope="module")
def reference(tiny_path, prompt_adapter):
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_path), str(prompt_adapter)).eval()


def test_prompt_tuned_export_equals_peft(tiny_path, prompt_adapter, reference, tokenizer, tmp_path):
    result = export_edge_model(tiny_path, prompt_adapter, tmp_path / "pt", "fp32", 8, 32, task=TASK)
    assert result.manifest["adapter_mode"] == "prompt_prefix" and result.manifest["prompt_prefix"]["virtual_tokens"] == 6
    assert result.manifest["adapter"]["peft_type"] == "PROMPT_TUNING"
    assert result.parity["greedy_token_agreement"] == 1.0 and result.parity["max_abs_logit_diff"] < 1e-5
    assert result.parity["runtime_backend"] == "session"
    model = EdgeModel(result.path)
    ids = tokenizer(TASK.prompt(TEXTS[0]), add_special_tokens=False).input_ids
    with torch.no_grad():
        want = reference(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        base = reference.get_base_model()(torch.tensor([ids])).logits[0, -1].numpy()
    got = model.next_token_logits(ids)
    assert np.abs(got - want).max() < 1e-4 and np.abs(got - base).max() > 1e-2  # the soft prompt is in effect
    label_ids = list(EdgeClassifier(result.path).task.label_token_ids)
    rows = []
    for text in TEXTS:
        with torch.no_grad():
            logits = reference(input_ids=torch.tensor([tokenizer(TASK.prompt(text), add_special_tokens=False).input_ids])).logits
        rows.append(torch.softmax(logits[0, -1, label_ids], -1).numpy())
    assert np.abs(EdgeClassifier(result.path, batch_size=3).probabilities(TEXTS) - np.stack(rows)).max() < 1e-5
    with pytest.raises(ValueError, match="cannot run under onnxruntime-genai"):
        EdgeModel(result.path, "genai")


def test_prompt_tuned_int4_export_runs(tiny_path, prompt_adapter, tmp_path):
    result = export_edge_model(tiny_path, prompt_adapter, tmp_path / "int4", "int4", 2, 8)
    assert len(EdgeModel(result.path).generate("The capital of France is", 6, stop_at_eos=False).token_ids) == 6


def test_prompt_adapter_for_another_base(tmp_path):
    from cotune.models import resolve_model

    wide = resolve_model("tiny-llama-wide")  # hidden 256
    adapter = save_prompt_adapter(wide, tmp_path / "wide")
    with pytest.raises(ExportInputError, match="prompt_embeddings .* hidden size"):
        export_edge_model(resolve_model("tiny-llama"), adapter, tmp_path / "out", "fp32")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_prompt_tuned_job_exports_at_the_end(tmp_path):
    """`cotune run` with lora.method=prompt_tuning used to train every round and fail at the final export."""
    import json

    from cotune.config import load_config
    from cotune.run.job import run_job

    cfg = load_config("configs/smoke.toml", [
        "lora.method='prompt_tuning'", "lora.num_virtual_tokens=4", "rounds.num_rounds=1", "server.backend='hf'",
        "export.enabled=true", "export.precision='int4'", "export.parity_prompts=2", "export.parity_tokens=8",
    ])  # fmt: skip
    run_dir = run_job(cfg, tmp_path)
    manifest = json.loads((run_dir / "edge" / "manifest.json").read_text())
    assert manifest["adapter_mode"] == "prompt_prefix" and manifest["prompt_prefix"]["virtual_tokens"] == 4
    assert json.loads((run_dir / "metrics.json").read_text())["edge"]["tokens_per_s"] > 0
    assert len(EdgeModel(run_dir / "edge").generate("The capital of France is", 4, stop_at_eos=False).token_ids) == 4

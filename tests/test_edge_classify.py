"""The task card and the torch-free classifier: an exported folder labels text exactly as cotune evaluates it, from
Python (`EdgeClassifier`) and from `cotune edge classify`, in a process where torch cannot be imported."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from support.no_torch import NO_TORCH

from cotune.cli import main
from cotune.data.encoding import label_token_ids
from cotune.data.rotten_tomatoes import TASK
from cotune.data.tasks import ClassificationTask
from cotune.lm import evaluate
from cotune.edge_runtime import EdgeClassifier, TaskCard, read_task_card
from cotune.export import export_edge_model
from cotune.lm.merge import merged_model

REVIEWS = [
    "A triumph from start to finish.", "Tedious and hollow.", "I laughed, I cried, I bought the soundtrack.",
    "The script is a mess, and the second half is worse than the first, which is saying something.",
    "Gorgeous to look at, empty inside.", "A small gem.", "Unwatchable.", "Better than the book.", "Fine.",
]  # fmt: skip


@pytest.fixture(scope="module")
def lora(tiny_path, tmp_path_factory):
    """A random LoRA (B non-zero): the classifier must see the tuned model, not the base."""
    torch.manual_seed(5)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    out = tmp_path_factory.mktemp("lora") / "lora"
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def edge_dir(tiny_path, lora, tmp_path_factory):
    out = tmp_path_factory.mktemp("edge") / "fp32"
    return export_edge_model(tiny_path, lora, out, "fp32", 0, task=TASK, max_length=24).path


def test_task_card_in_manifest(edge_dir, tokenizer):
    card = read_task_card(edge_dir)
    assert card.labels == TASK.labels and card.label_words == TASK.label_words and card.template == TASK.template
    assert list(card.label_token_ids) == label_token_ids(tokenizer, TASK)
    assert card.max_length == 24
    assert card.prompt("  Great fun. ") == TASK.prompt("Great fun.")
    assert json.loads((edge_dir / "manifest.json").read_text())["task"] == card.to_dict()


def test_classifier_equals_pytorch_evaluation(edge_dir, tiny_path, lora, tokenizer):
    """fp32: the same predictions as cotune.lm.evaluate, probabilities to float error, at any batch size
    (the longest review is cut to max_length from the left, as the PyTorch batches are)."""
    reference = merged_model(tiny_path, lora)
    want = evaluate.label_probabilities(reference, tokenizer, TASK, REVIEWS, max_length=24)
    for batch_size in (1, 4, 16):
        got = EdgeClassifier(edge_dir, batch_size=batch_size).probabilities(REVIEWS)
        assert got.argmax(1).tolist() == want.argmax(1).tolist()
        assert np.abs(got - want).max() < 1e-5
    base = evaluate.label_probabilities(merged_model(tiny_path, None), tokenizer, TASK, REVIEWS, max_length=24)
    assert np.abs(base - want).max() > 1e-3  # the LoRA matters: the export carries it
    labels = [i % 2 for i in range(len(REVIEWS))]
    accuracy = evaluate.label_word_accuracy(
        reference, tokenizer, TASK, Dataset.from_dict({"text": REVIEWS, "label": labels}), max_length=24
    )
    results = EdgeClassifier(edge_dir).classify(REVIEWS)
    assert np.mean([r.index == y for r, y in zip(results, labels)]) == pytest.approx(accuracy)
    assert all(r.label == TASK.labels[r.index] and sum(r.probabilities.values()) == pytest.approx(1) for r in results)


def test_folder_without_task_card(tiny_path, tmp_path):
    out = export_edge_model(tiny_path, None, tmp_path / "plain", "fp32", 0).path
    with pytest.raises(ValueError, match="no task card"):
        EdgeClassifier(out)


def test_task_card_rejects_bad_cards():
    good = dict(name="t", labels=["a", "b"], label_words=["x", "y"], template="{text}", label_token_ids=[1, 2], max_length=8)
    assert TaskCard.from_dict(good).labels == ("a", "b")
    with pytest.raises(ValueError, match="label token ids must differ"):
        TaskCard.from_dict({**good, "label_token_ids": [3, 3]})
    with pytest.raises(ValueError, match="one token id each"):
        TaskCard.from_dict({**good, "label_token_ids": [1]})
    with pytest.raises(ValueError, match="lacks"):
        TaskCard.from_dict({k: v for k, v in good.items() if k != "template"})


def test_user_task_card(tiny_path, tmp_path, tokenizer):
    """A user's task (three labels, own template) travels in the card as the run defined it."""
    task = ClassificationTask("tickets", ("auth", "billing", "other"), ("login", "invoice", "misc"), "Ticket: {text}\nQueue ({choices}):")
    out = export_edge_model(tiny_path, None, tmp_path / "tickets", "fp32", 0, task=task, max_length=64).path
    classifier = EdgeClassifier(out)
    assert classifier.task.prompt("I cannot sign in") == task.prompt("I cannot sign in")
    results = classifier.classify(["I cannot sign in", "Charge twice"])
    assert {r.label for r in results} <= set(task.labels) and len(results[0].probabilities) == 3


def _no_torch_cli(*args: str) -> subprocess.CompletedProcess:
    code = NO_TORCH + "from cotune.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_cli_classify_and_generate_without_torch(edge_dir, tmp_path):
    """`cotune edge classify|generate` in a process where `import torch` fails: what an app's environment has."""
    assert "torch is not installed here" in subprocess.run(
        [sys.executable, "-c", NO_TORCH + "import torch"], capture_output=True, text=True
    ).stderr
    texts = tmp_path / "texts.jsonl"
    texts.write_text("\n".join([json.dumps({"text": REVIEWS[0]}), json.dumps(REVIEWS[1]), ""]))
    done = _no_torch_cli("edge", "classify", "--model", str(edge_dir), "--file", str(texts), "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    want = EdgeClassifier(edge_dir).classify(REVIEWS[:2])
    assert [r["label"] for r in rows] == [w.label for w in want] and [r["text"] for r in rows] == REVIEWS[:2]
    assert rows[0]["probabilities"] == pytest.approx(want[0].probabilities)
    done = _no_torch_cli("edge", "classify", "--model", str(edge_dir), "--text", REVIEWS[0], "--text", REVIEWS[1])
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == [w.label for w in want]
    done = _no_torch_cli("edge", "generate", "--model", str(edge_dir), "--prompt", "Once upon a time", "--max-new-tokens", "4")
    assert done.returncode == 0 and "tokens/s" in done.stderr, done.stderr


def test_cli_classify_bad_file(edge_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    assert main(["edge", "classify", "--model", str(edge_dir), "--file", str(bad)]) == 2
    assert f"{bad}:2: expected a JSON string or an object with a string 'text'" in capsys.readouterr().err
    assert main(["edge", "classify", "--model", str(edge_dir), "--file", str(bad), "--text-field", "body"]) == 2

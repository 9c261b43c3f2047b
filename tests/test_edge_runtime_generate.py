"""The device-side runtime: torch-free import, both backends, greedy/sampled/streamed decoding, ORT-side scoring
equal to the PyTorch evaluation, and `cotune edge generate`."""

import subprocess
import sys

import numpy as np
import pytest
from datasets import Dataset

from cotune.cli import build_parser
from cotune.data.encoding import label_token_ids
from cotune.data.rotten_tomatoes import TASK
from cotune.edge_runtime import EdgeModel, Sampling, measure_decode_speed
from cotune.edge_runtime.sampling import pick_token
from cotune.edge_runtime.scoring import label_predictions, label_word_accuracy, perplexity
from cotune.export import export_edge_model

PROMPT = "Review: The pacing drags but the ending lands.\nSentiment (positive or negative):"
REVIEWS = [
    "A triumph from start to finish.", "Tedious and hollow.", "I laughed, I cried, I bought the soundtrack.",
    "The script is a mess.", "Gorgeous to look at, empty inside.", "A small gem.", "Unwatchable.",
    "Better than the book.",
]  # fmt: skip


@pytest.fixture(scope="module")
def edge_dir(tiny_path, tmp_path_factory):
    """The tiny Llama exported at fp32 (model builder: runs under both backends)."""
    return export_edge_model(tiny_path, None, tmp_path_factory.mktemp("edge") / "tiny", "fp32", 0).path


def test_import_pulls_no_torch():
    code = "import sys, cotune.edge_runtime, cotune.edge_runtime.scoring; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr


def test_greedy_same_tokens_on_both_backends(edge_dir):
    genai, session = EdgeModel(edge_dir, "genai", 2), EdgeModel(edge_dir, "session", 2)
    a = genai.generate(PROMPT, 24, stop_at_eos=False)
    b = session.generate(PROMPT, 24, stop_at_eos=False)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 24
    assert np.abs(genai.next_token_logits(PROMPT) - session.next_token_logits(PROMPT)).max() < 1e-4


@pytest.mark.parametrize("backend", ["genai", "session"])
def test_sampling_is_seeded(edge_dir, backend):
    model = EdgeModel(edge_dir, backend)
    hot = dict(do_sample=True, temperature=2.0, top_p=0.95)
    first = model.generate(PROMPT, 16, Sampling(seed=7, **hot), stop_at_eos=False).token_ids
    again = model.generate(PROMPT, 16, Sampling(seed=7, **hot), stop_at_eos=False).token_ids
    other = model.generate(PROMPT, 16, Sampling(seed=8, **hot), stop_at_eos=False).token_ids
    greedy = model.generate(PROMPT, 16, stop_at_eos=False).token_ids
    assert first == again
    assert first != other and first != greedy


def test_streamed_text_is_the_decoded_generation(edge_dir):
    model = EdgeModel(edge_dir)
    pieces = list(model.stream_text("Once upon a time", 20))
    assert "".join(pieces) == model.generate("Once upon a time", 20).text
    assert len(pieces) > 1  # streamed, not one final string


def test_pick_token_filters():
    logits = np.array([0.0, 3.0, 2.9, -1.0])
    rng = np.random.default_rng(0)
    assert pick_token(logits, Sampling(), rng) == 1
    assert {pick_token(logits, Sampling(True, top_k=1, seed=0), rng) for _ in range(20)} == {1}
    assert {pick_token(logits, Sampling(True, top_p=0.01), rng) for _ in range(20)} == {1}
    assert {pick_token(logits, Sampling(True, top_k=2), rng) for _ in range(200)} == {1, 2}
    with pytest.raises(ValueError, match="temperature"):
        Sampling(True, temperature=0)


def test_scoring_equals_pytorch_evaluation(edge_dir, tiny_path, tokenizer):
    """The ORT-side label-word accuracy and perplexity reproduce cotune.lm.evaluate's."""
    from transformers import AutoModelForCausalLM

    from cotune.lm import evaluate

    torch_model = AutoModelForCausalLM.from_pretrained(tiny_path)
    labels = [i % 2 for i in range(len(REVIEWS))]
    test = Dataset.from_dict({"text": REVIEWS, "label": labels})
    model = EdgeModel(edge_dir)
    ids = label_token_ids(tokenizer, TASK)
    prompts = [TASK.prompt(t) for t in REVIEWS]
    torch_probs = evaluate.label_probabilities(torch_model, tokenizer, TASK, REVIEWS)
    assert label_predictions(model, prompts, ids).tolist() == torch_probs.argmax(1).tolist()
    assert label_word_accuracy(model, prompts, labels, ids) == pytest.approx(
        evaluate.label_word_accuracy(torch_model, tokenizer, TASK, test)
    )
    assert perplexity(model, REVIEWS) == pytest.approx(evaluate.perplexity(torch_model, tokenizer, REVIEWS), rel=1e-4)


def test_bad_runtime_input(edge_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EdgeModel(tmp_path / "missing")
    (tmp_path / "tokenizer.json").write_text((edge_dir / "tokenizer.json").read_text())
    with pytest.raises(FileNotFoundError, match="neither genai_config.json nor edge_config.json"):
        EdgeModel(tmp_path)
    with pytest.raises(ValueError, match="exceed the context"):
        EdgeModel(edge_dir).generate(PROMPT, 4096)


def test_cli_edge_generate(edge_dir, capsys):
    parser = build_parser()
    args = parser.parse_args(["edge", "generate", "--model", str(edge_dir), "--prompt", PROMPT, "--max-new-tokens", "8",
                              "--sample", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3"])  # fmt: skip
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() and "tokens/s" in captured.err
    args = parser.parse_args(["edge", "generate", "--model", str(edge_dir), "--prompt", "x", "--sample", "--top-p", "2"])
    assert args.func(args) == 2
    assert "top_p" in capsys.readouterr().err


def test_measure_decode_speed(edge_dir):
    speed = measure_decode_speed(edge_dir, PROMPT, new_tokens=16)
    assert speed.tokens_per_s > 0 and speed.threads >= 1
    assert measure_decode_speed(edge_dir, PROMPT, new_tokens=4, threads=1).threads == 1
    with pytest.raises(ValueError, match="threads"):
        measure_decode_speed(edge_dir, PROMPT, threads=0)

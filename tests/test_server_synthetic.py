"""Synthetic data: label-conditioned prompts, cleaning, filters, deduplication, provenance columns."""

from pathlib import Path

from cotune.data import ClassificationTask
from cotune.config.server import ServerConfig
from cotune.server_vllm.engine import GenerationEngine, Sampling, open_engine
from cotune.algorithms.crosslm.generation import (
    FEATURES, SampleFilters, clean_sample, generate_synthetic, round_sampling,
)
from cotune.config.crosslm import CrossLMConfig

TASK = ClassificationTask(
    name="movies",
    labels=("rotten", "fresh"),
    label_words=("negative", "positive"),
    template="Review: {text}\nSentiment ({choices}):",
    item="movie review",
)


class ScriptedEngine(GenerationEngine):
    """Returns fixed completions per prompt, recording what it was asked."""

    backend = "scripted"

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies, self.calls, self.generated_tokens = replies, [], 0

    def generate(self, prompts, sampling, adapter=None):
        self.calls.append((prompts, sampling, adapter))
        return [self.replies[p][: sampling.n] for p in prompts]

    def load_adapter(self, name: str, path: str | Path) -> None:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


def test_prompts_are_label_conditioned_and_samples_filtered_with_provenance():
    negative, positive = TASK.generation_prompt(0), TASK.generation_prompt(1)
    assert negative == "Write a short negative movie review:\n"
    engine = ScriptedEngine(
        {
            negative: [
                ' "A dull, lifeless film with no heart at all."\n\nWrite a short negative movie review:',
                "A dull, lifeless film with NO heart at all!",  # duplicate after normalization
                "Bad.",  # too short
                "   ",  # empty
            ],
            positive: [
                "Write a short positive movie review: it was great fun",  # echoes the instruction
                "A warm and funny story that stays with you.",
                "Sharp writing and a superb cast make it a joy.",
                "Sharp writing and a superb cast make it a joy to watch from start to end, truly.",
            ],
        }
    )
    sampling = Sampling(n=4, temperature=0.9, top_p=0.95, max_tokens=48)
    data = generate_synthetic(
        engine, TASK, sampling, adapter="r2", round_index=2, filters=SampleFilters(min_words=3, max_words=12)
    )
    assert engine.calls == [([negative, positive], sampling, "r2")]
    assert data.features == FEATURES
    assert data["text"] == [
        "A dull, lifeless film with no heart at all.",
        "A warm and funny story that stays with you.",
        "Sharp writing and a superb cast make it a joy.",
    ]
    assert data["label"] == [0, 1, 1]
    assert data["label_word"] == ["negative", "positive", "positive"]
    assert data["prompt"] == [negative, positive, positive]
    assert set(data["backend"]) == {"scripted"} and set(data["adapter_version"]) == {"r2"} and set(data["round"]) == {2}


def test_clean_sample_keeps_the_first_paragraph_on_one_line():
    assert clean_sample("  'Great\nacting.'  \n \nNext review:") == "Great acting."


def test_with_the_hf_engine_every_label_is_requested(tiny_path, tmp_path):
    with open_engine(ServerConfig(backend="hf"), tiny_path, tmp_path) as engine:
        sampling = Sampling(n=3, temperature=1.0, max_tokens=12, min_tokens=12)
        data = generate_synthetic(engine, TASK, sampling, filters=SampleFilters(min_words=1))
    assert 1 <= len(data) <= 6
    assert set(data["backend"]) == {"hf"} and set(data["adapter_version"]) == {"base"}
    assert set(data["label"]) <= {0, 1}
    assert all(text == clean_sample(text) and text for text in data["text"])


def test_filters_come_from_the_crosslm_config_with_the_former_defaults():
    assert SampleFilters.of(CrossLMConfig()) == SampleFilters(min_words=4, max_words=0)
    assert SampleFilters.of(CrossLMConfig(min_words=2, max_words=9)) == SampleFilters(2, 9)
    assert round_sampling(CrossLMConfig()) == Sampling(n=16, temperature=0.9, top_p=0.95, max_tokens=48)

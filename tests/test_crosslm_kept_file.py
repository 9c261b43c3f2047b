"""The kept synthetic set survives a round checkpoint, including a round that kept nothing."""

from datasets import Dataset

from cotune.algorithms.crosslm.step import read_kept


def test_a_kept_set_reads_back_as_written(tmp_path):
    kept = Dataset.from_dict({"text": ["great film", "dull plot"], "label": [1, 0], "score": [0.9, 0.7]})
    kept.to_json(tmp_path / "synthetic.jsonl")
    assert read_kept(tmp_path / "synthetic.jsonl").to_dict() == kept.to_dict()


def test_an_empty_kept_set_reads_back_empty(tmp_path):
    kept = Dataset.from_dict({"text": ["great film"], "label": [1], "score": [0.9]}).select([])
    kept.to_json(tmp_path / "synthetic.jsonl")  # writes an empty file, which Dataset.from_json cannot read
    assert len(read_kept(tmp_path / "synthetic.jsonl")) == 0

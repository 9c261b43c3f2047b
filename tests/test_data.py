import json

import numpy as np
import pytest

from cotune.config import load_config
from cotune.data import build_splits
from cotune.data.encoding import IGNORE, answer_span, encode_batch, label_token_ids, task_batch
from cotune.data.partition import dirichlet_partition, iid_partition
from cotune.data.rotten_tomatoes import load_reviews


def test_rotten_tomatoes_is_read_offline():
    reviews = load_reviews()
    assert 12_000 < len(reviews) <= 12_808
    labels = np.asarray(reviews["label"])
    assert set(labels) == {0, 1} and 0.5 < labels.mean() < 0.65  # fresh 7,403 vs rotten 5,405


def test_splits_are_disjoint_balanced_and_reproducible():
    cfg = load_config(None, ["data.test_size=200", "data.public_size=300"])
    a, b = build_splits(cfg.data, 3), build_splits(cfg.data, 3)
    assert sum(a.test["label"]) == 100 and len(a.test) == 200 and len(a.public) == 300
    texts = [set(a.test["text"]), set(a.public["text"])]
    texts += [set(c.train["text"]) | set(c.val["text"]) for c in a.clients]
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            assert not texts[i] & texts[j], (i, j)
    assert [c.train["text"] for c in a.clients] == [c.train["text"] for c in b.clients]
    other = build_splits(load_config(None, ["data.seed=1"]).data, 3)
    assert other.clients[0].train["text"] != a.clients[0].train["text"]


def test_dirichlet_skews_labels_and_iid_does_not():
    labels = np.random.default_rng(0).integers(0, 2, 6000)
    skewed = dirichlet_partition(labels, 3, alpha=0.3, seed=0)
    iid = iid_partition(len(labels), 3, seed=0)
    assert sorted(np.concatenate(skewed).tolist()) == list(range(6000))
    spread = lambda parts: np.ptp([labels[p].mean() for p in parts])  # noqa: E731
    assert spread(skewed) > 0.3 > 0.05 > spread(iid)
    assert all(np.array_equal(x, y) for x, y in zip(skewed, dirichlet_partition(labels, 3, 0.3, seed=0)))


def test_user_jsonl_with_field_mapping(tmp_path):
    path = tmp_path / "tickets.jsonl"
    rows = [{"body": f"ticket {i} {'refund' if i % 2 else 'login'}", "queue": "billing" if i % 2 else "auth"} for i in range(400)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = load_config(
        None,
        [
            "data.task='file'", f"data.path='{path}'", "data.text_field='body'", "data.label_field='queue'",
            "data.labels=['auth', 'billing']", "data.label_words=['login', 'money']", "data.test_size=40",
            "data.public_size=40", "data.partition='iid'",
        ],
    )
    splits = build_splits(cfg.data, 2)
    assert splits.task.label_words == ("login", "money")
    assert splits.task.prompt("hello").startswith("Text: hello")
    assert len(splits.test) == 40 and sum(len(c.train) + len(c.val) for c in splits.clients) == 320


def test_user_file_errors_name_the_problem(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nhi,spam\nyo,ham\n")
    base = ["data.task='file'", f"data.path='{path}'"]
    with pytest.raises(ValueError, match=r"labels \['spam'\] are not in data.labels"):
        build_splits(load_config(None, base + ["data.labels=['ham', 'eggs']"]).data, 2)
    with pytest.raises(ValueError, match="no column 'body'"):
        build_splits(load_config(None, base + ["data.labels=['ham','spam']", "data.text_field='body'"]).data, 2)


def test_encode_batch_left_pads_and_masks_all_but_the_answer(tokenizer):
    batch = encode_batch(tokenizer, ["a b c d e f", "x"], [" positive", " negative"], max_length=32)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert mask[1, 0] == 0 and mask[:, -1].all()
    assert answer_span(labels) == 1
    assert labels[:, -1].tolist() == [tokenizer(" positive").input_ids[0], tokenizer(" negative").input_ids[0]]
    assert (labels[:, :-1] == IGNORE).all()
    assert batch["position_ids"][1, -1] == int(mask[1].sum()) - 1


def test_long_prompts_are_cut_from_the_left_keeping_the_answer(tokenizer, smoke_splits):
    task = smoke_splits.task
    batch = task_batch(tokenizer, task, ["word " * 500], [1], max_length=24)
    assert batch["input_ids"].shape[1] == 24
    assert batch["labels"][0, -1] == label_token_ids(tokenizer, task)[1]

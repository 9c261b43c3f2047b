"""The run's summary (`metrics.json`) and `report.md`, computed from what the run wrote to disk."""

import json
from pathlib import Path

from cotune.run.metrics import MetricsLog


def summarize(run_dir: Path, local_only: dict[str, float], wall_seconds: float, extra: dict | None = None) -> dict:
    rows = MetricsLog(run_dir / "metrics.jsonl").rows()
    global_rows = sorted((r for r in rows if r["kind"] == "global"), key=lambda r: r["round"])
    train_rows = [r for r in rows if r["kind"] == "client_train" and "rejected" not in r]
    rounds = sorted({r["round"] for r in global_rows if r["round"] > 0})
    per_round = []
    for rnd in rounds:
        trained = [r for r in train_rows if r["round"] == rnd]
        per_round.append(
            {
                "round": rnd,
                "test_accuracy": next(r["test_accuracy"] for r in global_rows if r["round"] == rnd),
                "clients": len(trained),
                "bytes_up": sum(int(r["bytes_up"]) for r in trained),
                "mean_train_loss": sum(r["train_loss"] for r in trained) / max(len(trained), 1),
            }
        )
    zero_shot = next((r["test_accuracy"] for r in global_rows if r["round"] == 0), None)
    summary = {
        "slm_accuracy": {
            "zero_shot": zero_shot,
            "local_only": sum(local_only.values()) / len(local_only) if local_only else None,
            "fedavg": global_rows[-1]["test_accuracy"] if rounds else None,
        },
        "slm_accuracy_per_client": {"local_only": local_only},
        "rounds": per_round,
        "wall_seconds": round(wall_seconds, 1),
    }
    if extra:
        summary.update(extra)
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def render_report(run_dir: Path, summary: dict, title: str) -> Path:
    acc = summary["slm_accuracy"]
    lines = [
        f"# {title}",
        "",
        "Label-word accuracy of the SLM on the held-out test split (no silo and no server step saw it).",
        "",
        "| SLM | test accuracy |",
        "|---|---|",
        f"| zero-shot | {_pct(acc['zero_shot'])} |",
    ]
    for client, value in sorted(summary["slm_accuracy_per_client"]["local_only"].items()):
        lines.append(f"| local-only, silo {client} (same budget, no federation) | {_pct(value)} |")
    lines += [
        f"| local-only, mean over silos | {_pct(acc['local_only'])} |",
        f"| FedAvg global adapter | {_pct(acc['fedavg'])} |",
        "",
        "| round | global test accuracy | silos | bytes up (all silos) | mean train loss |",
        "|---|---|---|---|---|",
    ]
    for r in summary["rounds"]:
        lines.append(
            f"| {r['round']} | {_pct(r['test_accuracy'])} | {r['clients']} | {r['bytes_up']:,} | {r['mean_train_loss']:.3f} |"
        )
    lines += ["", f"Wall time: {summary['wall_seconds']:.0f} s.", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path

"""The run's summary (`metrics.json`), its plot and `report.md`, computed from what the run wrote to disk."""

import json
from pathlib import Path

from cotune.run.folder import PLOT, REPORT, SUMMARY, metrics_log


def _by_kind(rows: list[dict], kind: str) -> list[dict]:
    return sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["round"])


def round_table(rows: list[dict]) -> list[dict]:
    """Per round: global SLM accuracy, bytes per direction, and the FedCoLLM / CrossLM figures when present."""
    global_rows = {r["round"]: r for r in _by_kind(rows, "global")}
    kd = {r["round"]: r for r in _by_kind(rows, "fedcollm")}
    cross = {r["round"]: r for r in _by_kind(rows, "crosslm")}
    aggregates = {r["round"]: r for r in _by_kind(rows, "aggregate")}
    table = []
    for rnd in sorted(k for k in global_rows if k > 0):
        trained = [r for r in rows if r["kind"] == "client_train" and r["round"] == rnd and "rejected" not in r]
        entry = {
            "round": rnd,
            "test_accuracy": global_rows[rnd]["test_accuracy"],
            "clients": len(trained),
            "rejected": sum(1 for r in rows if r["kind"] == "client_train" and r["round"] == rnd and "rejected" in r),
            "bytes_up": sum(int(r["bytes_up"]) for r in trained) + cross.get(rnd, {}).get("bytes_up_scores", 0),
            "bytes_down": sum(int(r.get("bytes_down", 0)) for r in trained) + cross.get(rnd, {}).get("bytes_down_samples", 0),
            "mean_train_loss": sum(r["train_loss"] for r in trained) / max(len(trained), 1),
        }
        if rnd in aggregates:
            a = aggregates[rnd]
            entry["silos"] = {k: a.get(k, 0) for k in ("sampled", "accepted", "rejected", "missing")}
            if "too_few" in a:
                entry["too_few"] = a["too_few"]
        if rnd in kd:
            k = kd[rnd]
            entry["distilled"] = {
                d: {
                    "distilled": k[f"{d}_distilled"], "examples": k[f"{d}_examples"],
                    "holdout_before": k.get(f"{d}_holdout_before"), "holdout_after": k.get(f"{d}_holdout_after"),
                    "kept": bool(k.get(f"{d}_kept", True)),
                }
                for d in ("llm_to_slm", "slm_to_llm")
            }
        if rnd in cross:
            entry["crosslm"] = {k: v for k, v in cross[rnd].items() if k not in ("time", "round", "kind")}
        table.append(entry)
    return table


def no_round_aggregated(rows: list[dict]) -> str | None:
    """Why a federation's final adapter is its initial one, or None: a job whose every round was skipped (every
    silo's update failed, was rejected or missing) has nothing to report, and its figures would read as results."""
    aggregates = _by_kind(rows, "aggregate")
    if not aggregates or any(r["accepted"] for r in aggregates):  # a replayed round that aggregated counts too
        return None
    reasons: dict[int, str] = {}
    for r in aggregates:
        reasons.setdefault(r["round"], r.get("too_few", "no update aggregated"))
    return "; ".join(f"round {rnd}: {reason}" for rnd, reason in reasons.items())


# Phases timed inside a federation, besides silo work (which the silos report in their replies).
SILO_PHASES = {"client_train": ("silo_training", "train_seconds"), "client_eval": ("silo_eval", "eval_seconds")}


def collect_time_rows(run_dir: Path, folders: dict[str, Path]) -> list[dict]:
    """Every `time` row of the job (its own and each run's), plus silo training and evaluation from the silos'
    reply rows; an update read back from the reuse folder costs nothing and is counted as such."""
    rows: list[dict] = []
    for folder in {run_dir, *folders.values()}:
        for r in metrics_log(folder).rows():
            if r["kind"] == "time":
                rows.append(r)
            elif r["kind"] in SILO_PHASES and "rejected" not in r:
                phase, key = SILO_PHASES[r["kind"]]
                if key in r:
                    reused = bool(r.get("reused"))
                    seconds = 0.0 if reused else float(r[key])
                    rows.append({"phase": phase, "seconds": seconds, "round": r["round"], "reused": reused})
    return rows


def time_table(rows: list[dict], wall_seconds: float) -> list[dict]:
    """Seconds per phase, largest first, with their share of the wall time; phases that ran beside others
    (`overlapped`) are listed but not counted; what no phase covers (Flower, Ray, process starts) is 'other'."""
    totals: dict[str, dict] = {}
    for r in rows:
        if r["phase"] == "federation":
            continue  # contains the phases below
        entry = totals.setdefault(r["phase"], {"phase": r["phase"], "seconds": 0.0, "count": 0, "reused": 0})
        entry["seconds"] += r["seconds"]
        entry["count"] += 1
        entry["reused"] += int(bool(r.get("reused")))
        entry["overlapped"] = bool(r.get("overlapped"))
    table = sorted(totals.values(), key=lambda e: -e["seconds"])
    counted = sum(e["seconds"] for e in table if not e["overlapped"])
    table.append({"phase": "other", "seconds": max(wall_seconds - counted, 0.0), "count": 1, "reused": 0,
                  "overlapped": False})
    for e in table:
        e["seconds"] = round(e["seconds"], 1)
        e["share"] = round(e["seconds"] / wall_seconds, 3) if wall_seconds > 0 and not e["overlapped"] else None
    return table


def summarize(run_dir: Path, algorithm: str, local_only: dict[str, float], wall_seconds: float) -> dict:
    rows = metrics_log(run_dir).rows()
    rounds = round_table(rows)
    zero_shot = next((r["test_accuracy"] for r in _by_kind(rows, "global") if r["round"] == 0), None)
    summary: dict = {
        "algorithm": algorithm,
        "slm_accuracy": {
            "zero_shot": zero_shot,
            "local_only": sum(local_only.values()) / len(local_only) if local_only else None,
            algorithm: rounds[-1]["test_accuracy"] if rounds else None,
        },
        "slm_accuracy_per_client": {"local_only": local_only},
        "rounds": rounds,
        "wall_seconds": round(wall_seconds, 1),
    }
    llm = {r["stage"]: r for r in _by_kind(rows, "llm")}
    if llm:
        summary["llm_accuracy"] = {stage: r["test_accuracy"] for stage, r in llm.items()}
        ppl = {("before" if stage == "zero_shot" else stage): r["generalization_ppl"] for stage, r in llm.items()}
        summary["llm_generalization_ppl"] = ppl
    trained = [r for r in rows if r["kind"] == "client_train" and "rejected" not in r and not r.get("reused")]
    steps = sum(int(r.get("train_steps", 0)) for r in trained)
    if steps:
        summary["silo_step_seconds"] = round(sum(float(r["train_seconds"]) for r in trained) / steps, 3)
    return summary


def write_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def plot_rounds(run_dir: Path, summary: dict) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not summary["rounds"]:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [0] + [r["round"] for r in summary["rounds"]]
    ax.plot(xs, [summary["slm_accuracy"]["zero_shot"]] + [r["test_accuracy"] for r in summary["rounds"]], "o-",
            label=f"global SLM ({summary['algorithm']})")
    if summary["slm_accuracy"]["local_only"] is not None:
        ax.axhline(summary["slm_accuracy"]["local_only"], ls="--", c="gray", label="local-only (mean)")
    if "llm_accuracy" in summary:
        ax.plot([0, xs[-1]], [summary["llm_accuracy"].get("zero_shot"), summary["llm_accuracy"].get("after")], "s:",
                label="LLM")
    ax.set_xlabel("round")
    ax.set_ylabel("held-out test accuracy")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = run_dir / PLOT
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render_report(run_dir: Path, summary: dict, title: str) -> Path:
    acc = summary["slm_accuracy"]
    lines = [
        f"# {title}",
        "",
        "Label-word accuracy on the held-out test split (no silo and no server step saw it).",
        "",
        "| SLM | test accuracy |",
        "|---|---|",
        f"| zero-shot | {_pct(acc['zero_shot'])} |",
    ]
    for client, value in sorted(summary["slm_accuracy_per_client"]["local_only"].items()):
        lines.append(f"| local-only, silo {client} (same budget, no federation) | {_pct(value)} |")
    lines.append(f"| local-only, mean over silos | {_pct(acc['local_only'])} |")
    for name, value in acc.items():
        if name not in ("zero_shot", "local_only"):
            lines.append(f"| {name} global adapter | {_pct(value)} |")
    if "llm_accuracy" in summary:
        llm, ppl = summary["llm_accuracy"], summary["llm_generalization_ppl"]
        lines += [
            "",
            "| LLM | test accuracy | perplexity on plot summaries (other domain) |",
            "|---|---|---|",
            f"| zero-shot | {_pct(llm.get('zero_shot'))} | {ppl.get('before', float('nan')):.2f} |",
        ]
        if "public_only" in llm:
            lines.append(f"| trained on the public split alone (same steps, CE only) | {_pct(llm['public_only'])} | |")
        lines.append(f"| after co-tuning | {_pct(llm.get('after'))} | {ppl.get('after', float('nan')):.2f} |")
    lines += [
        "",
        "| round | global SLM accuracy | silos accepted / rejected / missing of sampled | bytes up | "
        "bytes down | mean train loss |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["rounds"]:
        silos = r.get("silos")
        accounted = (
            f"{silos['accepted']} / {silos['rejected']} / {silos['missing']} of {silos['sampled']}"
            if silos else f"{r['clients']} / {r['rejected']} / ? of ?"
        )
        lines.append(
            f"| {r['round']} | {_pct(r['test_accuracy'])} | {accounted} | {r['bytes_up']:,} | {r['bytes_down']:,} | {r['mean_train_loss']:.3f} |"
        )
    for r in summary["rounds"]:
        if "too_few" in r:
            lines.append(f"\nRound {r['round']} kept the previous global adapter: {r['too_few']}.")
    cross = [r for r in summary["rounds"] if "crosslm" in r]
    if cross:
        lines += [
            "",
            "| round | generated | mean silo score | accepted | kept for silos | LLM / SLM agree with the kept "
            "samples' labels | SLM test accuracy without -> with them |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in cross:
            c = r["crosslm"]
            probe = (
                f"{_pct(c['slm_accuracy_without_synthetic'])} -> {_pct(c['slm_accuracy_with_synthetic'])}"
                if "slm_accuracy_with_synthetic" in c else "-"
            )
            lines.append(
                f"| {r['round']} | {c.get('generated', 0)} | {c.get('mean_score', float('nan')):.3f} | "
                f"{_pct(c.get('acceptance_rate'))} | {c.get('kept', 0)} | "
                f"{_pct(c.get('llm_agrees_with_label'))} / {_pct(c.get('slm_agrees_with_label'))} | {probe} |"
            )
    if "edge" in summary:
        e = summary["edge"]
        lines += [
            "",
            f"Edge model ({e['precision']} ONNX): `{e['path']}`, {e['size_mb']} MB, {e['tokens_per_s']} tokens/s "
            f"(batch 1, {e['threads']} threads, ONNX Runtime).",
        ]
    kd = [r for r in summary["rounds"] if "distilled" in r]
    if kd:
        lines += [
            "",
            "FedCoLLM: examples distilled (teacher better) / seen, and the student's accuracy on the public hold-out "
            "before -> after (a direction that lowered it was undone).",
            "",
            "| round | LLM -> SLM | SLM -> LLM |",
            "|---|---|---|",
        ]
        for r in kd:
            cells = []
            for d in (r["distilled"]["llm_to_slm"], r["distilled"]["slm_to_llm"]):
                check = "" if d["holdout_before"] is None else (
                    f"; {_pct(d['holdout_before'])} -> {_pct(d['holdout_after'])}{'' if d['kept'] else ' (undone)'}"
                )
                cells.append(f"{d['distilled']} / {d['examples']}{check}")
            lines.append(f"| {r['round']} | {cells[0]} | {cells[1]} |")
    if plot_rounds(run_dir, summary):
        lines += ["", "![accuracy per round](accuracy.png)"]
    lines += ["", "## Performance", ""]
    if summary.get("time"):
        lines += ["Where the time went (the whole job: every run, baselines, export):", "",
                  "| phase | seconds | share of wall time | times (reused) |", "|---|---|---|---|"]
        for e in summary["time"]:
            share = "beside other work" if e["share"] is None else f"{100 * e['share']:.1f}%"
            lines.append(f"| {e['phase']} | {e['seconds']:,.1f} | {share} | {e['count']} ({e['reused']}) |")
        lines.append("")
    if "silo_step_seconds" in summary:
        lines.append(f"Silo step (trained, not reused): {summary['silo_step_seconds']:.2f} s.")
    lines += [f"Wall time: {summary['wall_seconds']:.0f} s.", ""]
    path = run_dir / REPORT
    path.write_text("\n".join(lines))
    return path

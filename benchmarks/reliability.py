"""Reliability of the federation, side by side in one run, on the tiny model in Flower's simulation engine:

- malformed replies: the test matrix of hostile training replies (tests/test_validation_matrix.py, the same cases
  the tests assert on) plus a norm outlier and malformed CrossLM score vectors, through the real checks;
- faults in a real simulation: of 4 silos (min_clients 2) one raises mid-round and one sends a malformed update
  every round; rounds lost are rounds whose global adapter did not advance;
- kill + resume: `cotune run` 3 rounds straight, and again killed after round 1 then `cotune run --resume`;
  checkpoints compared byte for byte;
- privacy: plain, with DP, with SecAgg+ (3 silos, 2 rounds each); every reply any silo sends is captured
  serialized and searched for private text and its token ids; ratios of the warm (second) round's training
  exchange to the plain one's (the first round also starts Ray's actor and loads the model);
- scale: 3, 10, 30 silos, 1 step each: the first round's seconds (the figure asked for, cold) and the second's
  (warm), and the server process's peak RSS.

Each simulation runs in its own process (its own Ray, its own peak RSS). Writes benchmarks/results/reliability.json.
    .venv/bin/python benchmarks/reliability.py [--clients 3 10 30]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "reliability.json"
SMOKE = str(ROOT / "configs" / "smoke.toml")
# One step per silo and small evaluation sets: the round's shape, not its learning, is measured.
FAST = [
    "train.steps=1",
    "data.max_client_examples=16",
    "data.client_val_fraction=0.01",
    "data.test_size=16",
    "quantization.wire='fp32'",  # the same wire in every mode (DP clips plain tensors)
    "run.algorithm='fedavg'",
    "run.baselines=false",
]
MB = 1024 * 1024


# ---------------------------------------------------------------- one simulation (runs in a child process)


def _faulty_client_app():
    """cotune's ClientApp, except that silo 1 dies mid-round and silo 2 sends a malformed update every round.
    Defined here (in __main__), so Ray ships it to its actors by value."""
    from flwr.app import Array
    from flwr.clientapp import ClientApp

    from cotune.federation import client_app as cotune_client

    app = ClientApp()

    @app.train()
    def train(msg, context):
        partition = int(context.node_config["partition-id"])
        if partition == 1:
            raise RuntimeError("silo killed mid-round")
        reply = cotune_client.train(msg, context)
        if partition == 2:  # round 1: NaNs; round 2: float64 tensors
            arrays = reply.content["arrays"]
            key = next(iter(arrays.keys()))
            value = arrays[key].numpy().astype(np.float64)
            if int(msg.content["config"]["server-round"]) % 2:
                value = value.astype(np.float32)
                value.flat[0] = np.nan
            arrays[key] = Array(value)
        return reply

    app.evaluate()(cotune_client.evaluate)
    return app


class CapturingGrid:
    """The server's grid, keeping every reply a silo sends, serialized as on the wire."""

    def __init__(self, grid) -> None:
        self._grid, self.payloads = grid, []

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.common.serde import message_to_proto

        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.payloads += [message_to_proto(r).SerializeToString() for r in replies]
        return replies


def count_leaks(cfg, payloads: list[bytes]) -> int:
    from transformers import AutoTokenizer

    from cotune.data import build_splits
    from cotune.federation.privacy import private_data_in
    from cotune.models import resolve_model

    splits = build_splits(cfg.data, cfg.clients.num_clients)
    texts = [t for c in splits.clients for part in (c.train, c.val) for t in part["text"]]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.models.slm, cfg.models.cache_dir))
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return sum(len(private_data_in(payload, texts, ids)) for payload in payloads)


def run_simulation_child(spec: dict) -> dict:
    """One simulated federation as `spec` says; returns its timings, memory and what the silos sent."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _memory import PeakRSS
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from cotune.config import load_config
    from cotune.federation.client_app import app as client_app
    from cotune.federation.config import FederationConfig
    from cotune.federation.server_loop import run_rounds
    from cotune.run.metrics import MetricsLog

    n = spec["clients"]
    overrides = [*FAST, f"clients.num_clients={n}", f"rounds.num_rounds={spec['rounds']}"]
    cfg = load_config(SMOKE, [*overrides, f"clients.min_clients={spec.get('min_clients', 0)}"])
    cfg.federation = FederationConfig(**spec.get("federation", {}))
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    captured: list[CapturingGrid] = []
    server = ServerApp()

    @server.main()
    def main(grid, context):
        captured.append(CapturingGrid(grid))
        run_rounds(captured[0], cfg, run_dir)

    cpus = os.cpu_count() or 1
    rss = PeakRSS().start()
    start = time.perf_counter()
    run_simulation(
        server_app=server,
        client_app=_faulty_client_app() if spec.get("faults") else client_app,
        num_supernodes=n,
        backend_config={
            "client_resources": {"num_cpus": cpus, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": False},
        },
    )
    wall = time.perf_counter() - start
    peak = rss.stop()
    rows = MetricsLog(run_dir / "metrics.jsonl").rows()
    aggregates = {r["round"]: r for r in rows if r["kind"] == "aggregate"}
    global_times = {r["round"]: r["time"] for r in rows if r["kind"] == "global"}
    rounds = range(1, spec["rounds"] + 1)
    rejected = [r for r in rows if r["kind"] == "client_train" and "rejected" in r]
    out = {
        "clients": n,
        "wall_s": round(wall, 2),
        "train_exchange_s": [aggregates[r]["seconds"] if r in aggregates else None for r in rounds],
        "round_s": [round(global_times[r] - global_times[r - 1], 2) if r in global_times else None for r in rounds],
        "accepted": [aggregates[r]["accepted"] if r in aggregates else 0 for r in rounds],
        "rejected_malformed": sum(1 for r in rejected if not r["rejected"].startswith("client error")),
        "client_errors": sum(1 for r in rejected if r["rejected"].startswith("client error")),
        "server_peak_rss_mb": round(peak / MB, 1),
        "server_rss_growth_mb": round((peak - rss.baseline) / MB, 1),
        "epsilon": [r["epsilon"] for r in rows if r["kind"] == "dp"],
        "replies_captured": len(captured[0].payloads) if captured else 0,
    }
    if spec.get("audit") and captured:
        out["private_text_leaks"] = count_leaks(cfg, captured[0].payloads)
    out["rounds_lost"] = sum(1 for a in out["accepted"] if not a)
    return out


def simulate(spec: dict) -> dict:
    """`run_simulation_child` in a fresh process."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        spec = {**spec, "result": result.name}
        log = Path(spec["run_dir"]).with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(spec)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        if proc.returncode != 0:
            raise RuntimeError(f"simulation {spec} failed; see {log}")
        return json.loads(Path(result.name).read_text())


# ---------------------------------------------------------------- parts run by the parent


def malformed_replies() -> dict:
    """The hostile-reply matrix through AdapterFedAvg, one reply per round alone; a norm outlier among honest
    replies; malformed CrossLM score vectors through score_problem."""
    sys.path.insert(0, str(ROOT / "tests"))
    from flwr.supercore.task_identity import TaskIdentity
    from test_validation_matrix import GLOBAL, MALFORMED, content, honest, reply, strategy

    from cotune.algorithms.crosslm.scores import score_problem
    from cotune.federation.records import to_record

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    outcome = {}
    for kind, make in MALFORMED.items():
        rows = []
        arrays, _ = strategy(rows).aggregate_train(1, [reply(make(), node=7)])
        outcome[kind] = arrays is None and any("rejected" in r for r in rows if r["kind"] == "client_train")
    goods = [reply(content(to_record(honest(s), "fp32")), node=s + 1) for s in range(3)]
    outlier = {k: GLOBAL[k] + 1000 * (honest(0)[k] - GLOBAL[k]) for k in GLOBAL}
    rows = []
    strategy(rows).aggregate_train(1, [*goods, reply(content(to_record(outlier, "fp32")), node=99)])
    outcome["norm_outlier"] = [r["node"] for r in rows if "rejected" in r and r["kind"] == "client_train"] == [99]
    samples = 6
    bad_scores = {
        "scores_wrong_length": [0.5] * (samples - 1),
        "scores_nan": [0.5] * (samples - 1) + [float("nan")],
        "scores_inf": [float("inf")] + [0.5] * (samples - 1),
        "scores_above_one": [1.5] + [0.5] * (samples - 1),
        "scores_negative": [-0.1] + [0.5] * (samples - 1),
        "scores_2d": [[0.5] * samples],
    }
    for kind, scores in bad_scores.items():
        outcome[kind] = score_problem(scores, samples) is not None
    return outcome


def _cotune_run(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cotune", "run", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=ROOT,
    )


def _kill_tree(proc: subprocess.Popen) -> None:
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def kill_and_resume(root: Path) -> dict:
    """As tests/test_federation_sim.py::test_killed_run_resumes_to_the_identical_state, on the FAST settings."""
    from cotune.run.checkpoint import load_adapter_tensors

    common = ["-c", SMOKE, *[a for o in FAST for a in ("--set", o)], "--set", "rounds.num_rounds=3"]
    start = time.perf_counter()
    straight = _cotune_run([*common, "--set", f"run.output_root='{root / 'a'}'"])
    if straight.wait(timeout=900) != 0:
        return {"resume_state_identical": False, "error": "the uninterrupted run failed"}
    interrupted = _cotune_run([*common, "--set", f"run.output_root='{root / 'b'}'"])
    deadline = time.time() + 900
    while not list((root / "b").glob("*/checkpoints/round_001/round.json")):
        if interrupted.poll() is not None or time.time() > deadline:
            return {"resume_state_identical": False, "error": "the run to kill ended before round 1 completed"}
        time.sleep(0.5)
    _kill_tree(interrupted)
    (run_b,) = (root / "b").iterdir()
    killed_before_end = not (run_b / "global_adapter").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "cotune", "run", "--resume", str(run_b)], capture_output=True, timeout=900, cwd=ROOT
    )
    (run_a,) = (root / "a").iterdir()
    identical = resumed.returncode == 0 and killed_before_end
    for rnd in (1, 2, 3):
        folder = f"checkpoints/round_{rnd:03d}"
        if not (run_b / folder).is_dir():
            identical = False
            continue
        a, b = load_adapter_tensors(run_a / folder, "slm_adapter"), load_adapter_tensors(run_b / folder, "slm_adapter")
        identical &= a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)
    return {"resume_state_identical": bool(identical), "kill_resume_seconds": round(time.perf_counter() - start, 1)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10, 30])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        Path(spec["result"]).write_text(json.dumps(run_simulation_child(spec)))
        return

    started, load_before = time.perf_counter(), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="cotune-reliability-"))
    malformed = malformed_replies()
    print("malformed:", sum(malformed.values()), "of", len(malformed), "rejected", flush=True)

    modes = {"plain": {}, "dp": {"dp_noise_multiplier": 1.0, "dp_clipping_norm": 0.05}, "secagg": {"secagg": True}}
    privacy = {}
    for mode, federation in modes.items():
        spec = {"clients": 3, "rounds": 2, "federation": federation, "audit": True, "run_dir": str(work / mode)}
        privacy[mode] = simulate(spec)
        print(mode, privacy[mode], flush=True)
    scale = {3: privacy["plain"]}
    for n in args.clients:
        if n not in scale:
            scale[n] = simulate({"clients": n, "rounds": 2, "run_dir": str(work / f"scale_{n}")})
            print("scale", n, scale[n], flush=True)
    faults = simulate({"clients": 4, "rounds": 2, "min_clients": 2, "faults": True, "run_dir": str(work / "faults")})
    print("faults", faults, flush=True)
    resume = kill_and_resume(work / "resume")
    print("resume", resume, flush=True)

    plain = privacy["plain"]
    result = {
        "deployment_processes": None,  # measured by the deployment helper's tests, not exposed here
        "malformed_total": len(malformed),
        "malformed_rejected": sum(malformed.values()),
        "malformed_kinds": malformed,
        "malformed_rejected_in_simulation": faults["rejected_malformed"],
        "rounds_lost_on_client_kill": faults["rounds_lost"],
        "client_kill_run": faults,
        **resume,
        "unauthenticated_node_refused": None,  # deployment (SuperNode auth) is another helper's benchmark
        "private_text_leaks": sum(p["private_text_leaks"] for p in privacy.values()),
        "private_text_replies_audited": sum(p["replies_captured"] for p in privacy.values()),
        "tls_round_time_ratio": None,  # needs the deployment engine with TLS: not measured here
        "dp_round_time_ratio": _ratio(privacy["dp"]["train_exchange_s"][1], plain["train_exchange_s"][1]),
        "secagg_round_time_ratio": _ratio(privacy["secagg"]["train_exchange_s"][1], plain["train_exchange_s"][1]),
        "dp_round_ratio_whole_round": _ratio(privacy["dp"]["round_s"][1], plain["round_s"][1]),
        "secagg_round_ratio_whole_round": _ratio(privacy["secagg"]["round_s"][1], plain["round_s"][1]),
        "dp_epsilon_per_round": privacy["dp"]["epsilon"],
        "dp_settings": {**modes["dp"], "dp_delta": 1e-5, "accountant": "cotune GaussianRDPAccountant (RDP)"},
        "privacy_runs": privacy,
        "scale": {
            str(n): {
                "round_seconds": s["round_s"][0],
                "train_exchange_seconds": s["train_exchange_s"][0],
                "warm_round_seconds": s["round_s"][1],
                "warm_train_exchange_seconds": s["train_exchange_s"][1],
                "server_peak_rss_mb": s["server_peak_rss_mb"],
                "server_rss_growth_mb": s["server_rss_growth_mb"],
                "wall_seconds": s["wall_s"],
            }
            for n, s in sorted(scale.items())
        },
        "settings": {"config": "configs/smoke.toml", "overrides": FAST, "threads": os.cpu_count()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "benchmark_seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work)  # run folders and logs; kept when a part fails, for its log
    print(json.dumps({k: v for k, v in result.items() if k not in ("privacy_runs", "client_kill_run")}, indent=2))


if __name__ == "__main__":
    main()

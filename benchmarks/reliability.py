"""Reliability of the federation, on the tiny model, in Flower's simulation engine and its deployment engine:

- malformed replies: the matrix of hostile training replies (tests/support/replies.py, the same cases
  tests/test_validation_matrix.py asserts on) plus a norm outlier and malformed CrossLM score vectors, through the
  real checks;
- deployment: SuperLink, 3 SuperNodes and `flwr run` as real processes on 127.0.0.1, once with TLS (a fresh test
  CA) and SuperNode authentication, once without either; every process of the deployment is counted, a SuperNode
  with an unregistered key and one without a key must be refused, and in the TLS run silo 2 is SIGKILLed as its
  round-3 training starts; rounds lost are rounds whose global adapter did not advance;
- faults in a simulation: of 4 silos (min_clients 2) one raises mid-round and one sends a malformed update every
  round;
- kill + resume: `cotune run` 2 rounds straight (algorithm cotune: FedCoLLM and CrossLM, so the LLM adapter and
  the synthetic set are part of the state), and again killed after round 1 then `cotune run --resume`; each
  round's SLM adapter, LLM adapter and synthetic set compared by SHA-256;
- privacy: plain, with DP, with SecAgg+ (3 silos, 2 rounds each); every reply any silo sends is captured
  serialized and searched for private text and its token ids; overhead ratios of the warm (second) round's
  training exchange to the plain one's (the first round also starts Ray's actor and loads the model); TLS: the
  mean round of the TLS deployment over the mean round of the plain one (rounds 1-2, before the kill);
- scale: 3, 10, 30 silos, 1 step each: the first round's seconds (cold) and the second's (warm), and the server
  process's peak RSS.

- a hostile minority (issue 9): a silo claiming 10^12 examples, 2 of 5 silos sending x10^6 updates (and 2 of 3
  after an honest round), one NaN silo of 3 for 5 rounds, a silo that never answers: through AdapterFedAvg and
  Flower's own round loop (`Strategy.start`), silos scripted in the real reply format (tests/support/silos.py);
- clean stop: `cotune run` (CrossLM on the real vLLM server, tiny model) sent SIGTERM mid-round 2; every process
  that carries the run's environment tag is counted after it exits; then `cotune run --resume`;
- soak: 50 rounds of a 3-silo simulation; the server process's RSS and open files at each training exchange, and
  the round times.

Each simulation runs in its own process (its own Ray, its own peak RSS). Writes benchmarks/results/reliability.json
(`--parts issue9` runs only the last three, `--parts hostile|stop|soak` one of them, and updates their keys in
the existing file).
    .venv/bin/python benchmarks/reliability.py [--clients 3 10 30] [--parts all|issue9] [--soak-rounds 50]
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/support: the scripted silos, replies and processes the tests use
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


class ProbingGrid:
    """The server's grid, noting this process's RSS and open files as each round's training exchange starts."""

    def __init__(self, grid) -> None:
        self._grid, self.samples, self.payloads = grid, [], []
        self._process = psutil.Process()

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train":
            self.samples.append((self._process.memory_info().rss, self._process.num_fds()))
        return self._grid.send_and_receive(messages, timeout=timeout)


def count_leaks(cfg, payloads: list[bytes]) -> int:
    from support.leaks import private_data_in
    from transformers import AutoTokenizer

    from cotune.data import build_splits
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
    from cotune.config.federation import FederationConfig
    from cotune.federation.server_loop import run_rounds
    from cotune.metrics_log import MetricsLog
    from cotune.run.folder import outputs

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
        captured.append(ProbingGrid(grid) if spec.get("soak") else CapturingGrid(grid))
        run_rounds(captured[0], cfg, outputs(run_dir))

    cpus = os.cpu_count() or 1
    os.environ.setdefault("RAY_worker_niceness", "0")  # as cotune.run.simulation.simulate: silos at nice 0
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
    if spec.get("soak") and captured:
        out["rss_mb_per_round"] = [round(rss / MB, 1) for rss, _ in captured[0].samples]
        out["open_files_per_round"] = [fds for _, fds in captured[0].samples]
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
    from flwr.supercore.task_identity import TaskIdentity
    from support.replies import MALFORMED, content, reply, strategy
    from support.silos import GLOBAL, honest

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


# FedCoLLM and CrossLM on the HF engine, cut to a few steps and samples: the state's parts, not its quality.
RESUME = [
    *[o for o in FAST if not o.startswith("run.algorithm")],
    "run.algorithm='cotune'",
    "server.backend='hf'",
    "fedcollm.steps=1",
    "crosslm.samples_per_label=4",
    "crosslm.max_new_tokens=8",
    "crosslm.llm_steps=1",
]
STATE_FILES = ("slm_adapter/adapter_model.safetensors", "llm_adapter/adapter_model.safetensors", "synthetic.jsonl")


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def kill_and_resume(root: Path, rounds: int = 2) -> dict:
    """As tests/test_federation_sim.py::test_killed_run_resumes_to_the_identical_state, on RESUME settings."""
    from support.processes import kill_session

    common = ["-c", SMOKE, *[a for o in RESUME for a in ("--set", o)], "--set", f"rounds.num_rounds={rounds}"]
    start = time.perf_counter()
    straight = _cotune_run([*common, "--set", f"run.output_root='{root / 'a'}'"])
    if straight.wait(timeout=900) != 0:
        return {"resume_state_identical": False, "resume_error": "the uninterrupted run failed"}
    interrupted = _cotune_run([*common, "--set", f"run.output_root='{root / 'b'}'"])
    deadline = time.time() + 900
    while not list((root / "b").glob("*/checkpoints/round_001/round.json")):
        if interrupted.poll() is not None or time.time() > deadline:
            return {"resume_state_identical": False, "resume_error": "the run to kill ended before round 1"}
        time.sleep(0.2)
    kill_session(interrupted)
    (run_b,) = (root / "b").iterdir()
    resumed_from = max(json.loads(p.read_text())["round"] for p in run_b.glob("checkpoints/round_*/round.json"))
    killed_before_end = not (run_b / "global_adapter").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "cotune", "run", "--resume", str(run_b)], capture_output=True, timeout=900, cwd=ROOT
    )
    (run_a,) = (root / "a").iterdir()
    compared = [f"round_{r:03d}/{name}" for r in range(1, rounds + 1) for name in STATE_FILES]
    digests = {c: (_digest(run_a / "checkpoints" / c), _digest(run_b / "checkpoints" / c)) for c in compared}
    differing = [c for c, (a, b) in digests.items() if a is None or a != b]
    return {
        "resume_state_identical": resumed.returncode == 0 and killed_before_end and not differing,
        "resume_detail": {
            "killed_after_round": resumed_from,
            "resumed_returncode": resumed.returncode,
            "compared": compared,
            "differing": differing,
            "seconds": round(time.perf_counter() - start, 1),
        },
    }


# ---------------------------------------------------------------- issue 9: a hostile minority, a clean stop, a soak


def hostile_minority() -> dict:
    """The findings of issue 9 as measurements, through the strategy cotune's server builds."""
    from flwr.supercore.task_identity import TaskIdentity
    from support.silos import GLOBAL, ScriptedGrid, distance, honest, mean, scaled, train_content, train_reply

    from cotune.config.federation import FederationConfig
    from cotune.federation.records import from_record, to_record
    from cotune.federation.strategies.factory import build_strategy

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1

    def strategy(rows: list, n: int, **federation):
        # As cotune's server loop builds it by default: every silo sampled (min_train_nodes = n).
        s = build_strategy(FederationConfig(**federation), "fp32", num_sampled=n, log_row=rows.append,
                           min_train_nodes=n, min_available_nodes=n)
        s.current = {k: v.copy() for k, v in GLOBAL.items()}
        return s

    def abuse_share(**federation) -> float:
        own = honest(7)  # the abuser's step; the two honest silos send the global back unchanged
        replies = [train_reply(GLOBAL, 1), train_reply(GLOBAL, 2), train_reply(own, 3, examples=1e12)]
        state = from_record(strategy([], 3, **federation).aggregate_train(1, replies)[0])
        step = sum(float(np.sum((state[k] - GLOBAL[k]) * (own[k] - GLOBAL[k]))) for k in GLOBAL)
        return step / sum(float(np.sum((own[k] - GLOBAL[k]) ** 2)) for k in GLOBAL)

    goods, rows = [honest(i) for i in range(3)], []
    replies = [train_reply(u, i + 1) for i, u in enumerate([*goods, *(scaled(honest(10 + i), 1e6) for i in range(2))])]
    arrays, _ = strategy(rows, 5).aggregate_train(1, replies)
    colluders_out = sorted(r["node"] for r in rows if r["kind"] == "client_train" and "rejected" in r) == [4, 5]
    off_honest = distance(from_record(arrays), mean(goods)) / distance(goods[0], GLOBAL) if arrays else None

    rows = []
    s = strategy(rows, 3)  # 2 of 3 at x10^6 in round 2, after an honest round 1
    s.aggregate_train(1, [train_reply(honest(i), i + 1) for i in range(3)])
    colluders = [train_reply(scaled(honest(21 + i), 1e6), i + 2) for i in range(2)]
    s.aggregate_train(2, [train_reply(honest(20), 1), *colluders])
    majority_out = sorted(r["node"] for r in rows if r["kind"] == "client_train" and r["round"] == 2
                          and "rejected" in r) == [2, 3]

    def play(answer, rounds: int) -> list[dict]:
        rows = []
        s = strategy(rows, 3)
        s.start(ScriptedGrid(3, answer), to_record(GLOBAL, "fp32"), num_rounds=rounds)
        return [r for r in rows if r["kind"] == "aggregate"]

    def nan_silo(node, rnd, got):
        state = honest(node + 10 * rnd, base=got)
        if node == 3:
            state["layer.lora_A.weight"][0, 0] = np.nan
        return train_content(state, partition=node - 1)

    blocked = play(nan_silo, rounds=5)
    silent = play(lambda node, rnd, got: None if node == 3 else train_content(honest(node, base=got)), rounds=3)
    logged = all(a["missing"] == 1 and any(e["node"] == 3 and e["status"] == "missing" for e in a["silos"])
                 for a in silent)
    return {
        "weight_abuse_share": round(abuse_share(), 4),
        "weight_abuse_share_registered": round(abuse_share(registered_examples=[128, 128, 128]), 4),
        "weight_abuse_share_claims_trusted": round(abuse_share(max_examples_multiple=0), 4),
        "colluding_outliers_rejected": colluders_out and off_honest is not None and off_honest <= 1.0,
        "colluding_distance_in_honest_steps": round(off_honest, 4) if off_honest is not None else None,
        "colluding_majority_after_honest_round_rejected": majority_out,
        "rounds_blocked_by_one_bad_reply": sum(1 for a in blocked if not a["accepted"]),
        "rounds_with_one_bad_reply": len(blocked),
        "missing_silos_logged": logged and len(silent) == 3,
    }


def _tagged(tag: str) -> list[psutil.Process]:
    """Living processes whose environment carries the benchmark's tag (every descendant of the job inherits it)."""
    from cotune.federation.deployment.processes import marked_processes

    return marked_processes(tag, "COTUNE_BENCH_TAG")


# CrossLM on the real vLLM server (tiny model, fp32, eager: the quickest start), 2 rounds.
SIGTERM_RUN = [
    *[o for o in FAST if not o.startswith("run.algorithm")],
    "run.algorithm='crosslm'", "server.backend='vllm'", "server.dtype='float32'", "server.enforce_eager=true",
    "server.max_model_len=256", "server.max_num_batched_tokens=1024", "server.vllm_start_timeout_s=600.0",
    "crosslm.samples_per_label=4", "crosslm.max_new_tokens=8", "crosslm.llm_steps=1", "rounds.num_rounds=2",
]  # fmt: skip


def sigterm_and_resume(root: Path) -> dict:
    """`cotune run` with a real vLLM server, SIGTERM to its pid once round 1 is checkpointed (round 2 is then in
    progress), every process of the job counted after it exits; then `--resume`."""
    tag = uuid.uuid4().hex
    env = {**os.environ, "COTUNE_BENCH_TAG": tag}
    args = ["-c", SMOKE, *[a for o in SIGTERM_RUN for a in ("--set", o)], "--set", f"run.output_root='{root}'"]
    job = subprocess.Popen([sys.executable, "-m", "cotune", "run", *args], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, out = time.time() + 1200, {}
    while not list(root.glob("*/checkpoints/round_001/round.json")):
        if job.poll() is not None or time.time() > deadline:
            for proc in _tagged(tag):
                proc.kill()
            return {"processes_left_after_sigterm": None, "resume_after_sigterm_ok": False,
                    "sigterm_error": f"the run ended or stalled before round 1 (code {job.poll()})"}
        time.sleep(0.5)
    before = _tagged(tag)
    out["processes_of_the_job_at_sigterm"] = len(before)
    out["vllm_processes_at_sigterm"] = sum(1 for p in before if "vllm" in " ".join(p.cmdline()))
    sent = time.perf_counter()
    job.send_signal(signal.SIGTERM)
    out["exit_code_after_sigterm"] = job.wait(timeout=300)
    out["seconds_to_exit_after_sigterm"] = round(time.perf_counter() - sent, 1)
    time.sleep(2.0)
    left = _tagged(tag)
    out["processes_left_after_sigterm"] = len(left)
    out["processes_left_kinds"] = sorted({p.name() for p in left})
    for proc in left:  # not the job's doing any more: leave the host clean for what follows
        proc.kill()
    (run_dir,) = root.iterdir()
    out["killed_before_end"] = not (run_dir / "global_adapter").exists()
    start = time.perf_counter()
    resumed = subprocess.run([sys.executable, "-m", "cotune", "run", "--resume", str(run_dir)], cwd=ROOT, env=env,
                             capture_output=True, timeout=1800)
    rounds = {json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "global"}
    out["resume_after_sigterm_ok"] = (resumed.returncode == 0 and out["killed_before_end"]
                                      and (run_dir / "global_adapter").is_dir() and {1, 2} <= rounds)
    out["resume_seconds"] = round(time.perf_counter() - start, 1)
    out["processes_left_after_resume"] = len(_tagged(tag))
    return out


def soak(root: Path, rounds: int) -> dict:
    """`rounds` rounds of a 3-silo simulation: is the server flat (RSS, open files) and its round time steady?"""
    run = simulate({"clients": 3, "rounds": rounds, "soak": True, "run_dir": str(root)})
    rss, fds, times = run["rss_mb_per_round"], run["open_files_per_round"], run["round_s"]
    return {
        "soak_rounds": rounds,
        "soak_rss_growth_ratio": round(rss[-1] / rss[9], 4),
        "soak_open_files_growth": fds[-1] - fds[9],
        "soak_round_time_ratio": round(float(np.mean(times[-10:])) / float(np.mean(times[9:19])), 4),
        "soak_detail": {"rss_mb_per_round": rss, "open_files_per_round": fds, "round_s": times,
                        "wall_s": run["wall_s"]},
    }


# ---------------------------------------------------------------- deployment engine (real processes)


def _process_kind(proc: psutil.Process) -> str | None:
    """Which Flower program a deployment process runs (`flower-superlink`, `flwr-clientapp`, ...); None for helpers
    such as `file` (Python's platform module runs it)."""
    for arg in proc.cmdline()[:3]:
        name = Path(arg).name
        if name.startswith(("flower-", "flwr")):
            return name
    return None


class Census(threading.Thread):
    """Every Flower process of a deployment, sampled each `interval` s (a ClientApp process lives for one message).
    A process is counted as what it was last seen running: a child forked by a SuperExec shows its parent's command
    until it execs its own."""

    def __init__(self, marker: str, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.marker, self.interval, self.kinds = marker, interval, {}
        self.done = threading.Event()

    def run(self) -> None:
        from cotune.federation.deployment.processes import marked_processes

        while not self.done.wait(self.interval):
            for proc in marked_processes(self.marker):
                try:
                    self.kinds[proc.pid] = _process_kind(proc)
                except psutil.Error:
                    continue

    def stop(self) -> dict[str, int]:
        self.done.set()
        self.join()
        kinds = [kind for kind in self.kinds.values() if kind is not None]
        return {kind: kinds.count(kind) for kind in sorted(set(kinds))}


def _refused(deployment) -> bool:
    """A SuperNode with a key the operator never registered, and one with no key, both exit refused."""
    intruder = deployment.start_supernode(90, deployment.node_key("intruder"), wait=False)
    keyless = deployment.start_supernode(91, None, wait=False)
    for node in (intruder, keyless):
        node.popen.wait(timeout=180)
    return (
        intruder.popen.returncode != 0
        and keyless.popen.returncode != 0
        and "Failed to activate SuperNode" in intruder.output()
        and "All SuperNodes must be registered via the CLI" in keyless.output()
    )


def deploy(root: Path, secure: bool, rounds: int, kill_round: int | None = None) -> dict:
    """One deployment of 3 silos on 127.0.0.1; `kill_round`: SIGKILL silo 2 as that round's training starts."""
    from support.deployment import LocalDeployment

    from cotune.config import dump_toml, load_config
    from cotune.metrics_log import MetricsLog

    cfg = load_config(SMOKE, [*FAST, f"rounds.num_rounds={rounds}", "clients.min_clients=2",
                              "clients.round_timeout_s=400.0"])
    root.mkdir(parents=True, exist_ok=True)
    config, run_dir = root / "deploy.toml", root / "run"
    config.write_text(dump_toml(cfg))
    out: dict = {"tls": secure, "node_auth": secure, "silos": 3, "rounds": rounds}
    start = time.perf_counter()
    with LocalDeployment(root / "deploy", tls=secure, node_auth=secure) as deployment:
        deployment.start_superlink()
        deployment.start_silos(3)
        if secure:
            out["unauthenticated_node_refused"] = _refused(deployment)
        census = Census(deployment.marker)
        census.start()
        run = deployment.submit(config, run_dir)
        killed_at = None
        if kill_round is not None:
            # Each round starts one ClientApp per message on a silo: training, then evaluation.
            pattern = rf"(?s)(?:Start `flwr-clientapp` process.*){{{2 * kill_round - 1}}}"
            deployment.supernodes[2].wait_for_output(pattern, 900)
            deployment.supernodes[2].kill()
            killed_at = time.time()
        run.popen.wait(timeout=1200)
        kinds = census.stop()
        (row,) = deployment.runs()
    rows = MetricsLog(run_dir / "metrics.jsonl").rows()
    times = {r["round"]: r["time"] for r in rows if r["kind"] == "global"}
    accepted = {r["round"]: r["accepted"] for r in rows if r["kind"] == "aggregate"}
    out.update(
        status=row["status"],
        wall_s=round(time.perf_counter() - start, 1),
        round_s=[round(times[r] - times[r - 1], 2) if r in times and r - 1 in times else None
                 for r in range(1, rounds + 1)],
        accepted=[accepted.get(r, 0) for r in range(1, rounds + 1)],
        processes=sum(kinds.values()),
        process_kinds=kinds,
    )
    out["rounds_lost"] = sum(1 for a in out["accepted"] if not a)
    if killed_at is not None:
        out["killed_silo_in_round"] = kill_round
        out["round_completed_s_after_kill"] = round(times[rounds] - killed_at, 1) if rounds in times else None
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10, 30])
    parser.add_argument("--parts", choices=["all", "issue9", *ISSUE9_PARTS], default="all")
    parser.add_argument("--soak-rounds", type=int, default=50)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        Path(spec["result"]).write_text(json.dumps(run_simulation_child(spec)))
        return
    if args.parts != "all":
        issue9(args.soak_rounds, ISSUE9_PARTS if args.parts == "issue9" else (args.parts,))
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
    secure = deploy(work / "deploy_tls", secure=True, rounds=3, kill_round=3)
    print("deployment, TLS + node auth", secure, flush=True)
    insecure = deploy(work / "deploy_plain", secure=False, rounds=2)
    print("deployment, plain", insecure, flush=True)

    plain = privacy["plain"]
    clean = slice(0, 2)  # rounds 1-2: before the kill
    result = {
        "deployment_processes": secure["processes"],
        "deployment_process_kinds": secure["process_kinds"],
        "deployment_completed": secure["status"] == insecure["status"] == "finished:completed",
        "malformed_total": len(malformed),
        "malformed_rejected": sum(malformed.values()),
        "malformed_kinds": malformed,
        "malformed_rejected_in_simulation": faults["rejected_malformed"],
        "rounds_lost_on_client_kill": secure["rounds_lost"],
        "client_kill_round_completed_s_after_kill": secure["round_completed_s_after_kill"],
        "rounds_lost_on_client_error_in_simulation": faults["rounds_lost"],
        **resume,
        "unauthenticated_node_refused": secure["unauthenticated_node_refused"],
        "private_text_leaks": sum(p["private_text_leaks"] for p in privacy.values()),
        "private_text_replies_audited": sum(p["replies_captured"] for p in privacy.values()),
        "tls_round_time_ratio": _ratio(np.mean(secure["round_s"][clean]), np.mean(insecure["round_s"][clean])),
        "dp_round_time_ratio": _ratio(privacy["dp"]["train_exchange_s"][1], plain["train_exchange_s"][1]),
        "secagg_round_time_ratio": _ratio(privacy["secagg"]["train_exchange_s"][1], plain["train_exchange_s"][1]),
        "dp_round_ratio_whole_round": _ratio(privacy["dp"]["round_s"][1], plain["round_s"][1]),
        "secagg_round_ratio_whole_round": _ratio(privacy["secagg"]["round_s"][1], plain["round_s"][1]),
        "dp_epsilon_per_round": privacy["dp"]["epsilon"],
        "dp_settings": {**modes["dp"], "dp_delta": 1e-5, "accountant": "cotune GaussianRDPAccountant (RDP)"},
        "deployment_runs": {"tls_node_auth": secure, "plain": insecure},
        "client_fault_run": faults,
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
        "settings": {"config": "configs/smoke.toml", "overrides": FAST, "resume_overrides": RESUME,
                     "threads": os.cpu_count()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "benchmark_seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work)  # run folders and logs; kept when a part fails, for its log
    details = ("privacy_runs", "client_fault_run", "deployment_runs", "malformed_kinds")
    print(json.dumps({k: v for k, v in result.items() if k not in details}, indent=2))


def wait_for_quiet(limit: float = 1.0, patience_s: float = 240.0) -> list[float]:
    """The 1-minute load average once it is below `limit` (figures from a busy host mislead), or after `patience_s`."""
    deadline = time.time() + patience_s
    while os.getloadavg()[0] >= limit and time.time() < deadline:
        time.sleep(10)
    return [round(x, 2) for x in os.getloadavg()]


ISSUE9_PARTS = ("hostile", "stop", "soak")


def issue9(soak_rounds: int, parts: tuple[str, ...] = ISSUE9_PARTS) -> None:
    """The hostile-minority, clean-stop and soak keys, merged into the existing results file after each part."""
    started, load_before = time.perf_counter(), wait_for_quiet()
    work = Path(tempfile.mkdtemp(prefix="cotune-reliability9-"))

    def save(part: dict) -> None:
        result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        result.update(part)
        result["issue9_settings"] = {"sigterm_run": SIGTERM_RUN, "soak": {"config": "configs/smoke.toml",
                                                                          "overrides": FAST, "clients": 3}}
        result["issue9_load_average_before"] = load_before
        result["issue9_load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        result["issue9_seconds"] = round(time.perf_counter() - started, 1)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in part.items() if k != "soak_detail"}, indent=2), flush=True)

    if "hostile" in parts:
        save(hostile_minority())
    if "stop" in parts:
        save(sigterm_and_resume(work / "sigterm"))
    if "soak" in parts:
        save(soak(work / "soak", soak_rounds))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

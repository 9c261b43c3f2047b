"""Stopping a job leaks nothing (issue 9): SIGTERM or Ctrl-C on `cotune run` stops every process the job started,
including a server in a session of its own (as vLLM's is), within a bounded time; `--resume` then completes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from cotune.federation.deployment.processes import marked_processes

ROOT = Path(__file__).resolve().parent.parent

FAKE_JOB = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    if "ignore-term" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    server = subprocess.Popen(sleeper, start_new_session=True)  # what a SIGTERM to the job's group misses
    worker = subprocess.Popen(sleeper)
    with open(sys.argv[1], "w") as f:
        f.write(f"{os.getpid()} {server.pid} {worker.pid}")
    if "watch" in sys.argv:
        from cotune.federation.deployment.supervisor import watch_supervisor
        watch_supervisor(interval=0.2)
    if "exit" in sys.argv:
        sys.exit(0)  # a job that ends but forgets its server
    time.sleep(600)
    """
)
DRIVER = (
    "import sys; from cotune.federation.deployment.supervisor import supervise; "
    "sys.exit(supervise([sys.executable, *sys.argv[1:]], grace=float({grace})))"
)


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def supervised(tmp_path: Path, *modes: str, grace: float = 15.0) -> tuple[subprocess.Popen, list[int]]:
    script, pid_file = tmp_path / "job.py", tmp_path / "pids"
    script.write_text(FAKE_JOB)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(grace=grace), str(script), str(pid_file), *modes])
    wait_for(pid_file)
    time.sleep(0.3)  # the job's children exist once the file is written; let the driver reach its wait loop
    return proc, [int(p) for p in pid_file.read_text().split()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_job_and_its_own_session_server(tmp_path, sig):
    proc, pids = supervised(tmp_path)
    start = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 128 + sig
    assert time.monotonic() - start < 15
    assert not alive(pids)


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    proc, pids = supervised(tmp_path, "ignore-term", grace=1.0)
    start = time.monotonic()
    proc.terminate()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert 1.0 <= time.monotonic() - start < 15
    assert not alive(pids)


def test_a_job_whose_supervisor_is_killed_stops_itself_and_its_server(tmp_path):
    """SIGKILL to `cotune run` alone (`timeout -s KILL`, `kill -9 PID`): the supervisor cannot sweep; the job does."""
    proc, pids = supervised(tmp_path, "watch")
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pids)


def test_what_a_finished_job_left_running_is_stopped(tmp_path):
    proc, pids = supervised(tmp_path, "exit")
    assert proc.wait(timeout=60) == 0
    assert not alive(pids)


# ---------------------------------------------------------------- the real job, with a stand-in vLLM server


def job_processes(tag: str) -> list[psutil.Process]:
    return marked_processes(tag, "COTUNE_STOP_TEST")


@pytest.mark.slow
def test_sigterm_mid_round_leaves_no_process_and_resume_completes(tmp_path):
    """`cotune run` (CrossLM on a stand-in vLLM server that runs in its own session, as vLLM does) stopped with
    SIGTERM after round 1's checkpoint: no process of the job survives, and `--resume` finishes the run."""
    from support.stand_in_vllm import install

    python = install(tmp_path)
    tag = uuid.uuid4().hex
    env = {**os.environ, "COTUNE_STOP_TEST": tag, "STAND_IN_PIDS": str(tmp_path / "pids")}
    overrides = [
        "train.steps=1", "data.max_client_examples=16", "data.test_size=16", "run.algorithm='crosslm'",
        "run.baselines=false", "run.compare=[]", "export.enabled=false", "rounds.num_rounds=2",
        "server.backend='vllm'", f"server.vllm_python='{python}'", "crosslm.samples_per_label=2",
        "crosslm.max_new_tokens=4", "crosslm.llm_steps=1", f"run.output_root='{tmp_path / 'runs'}'",
    ]  # fmt: skip
    command = [sys.executable, "-m", "cotune", "run", "-c", "configs/smoke.toml"]
    command += [a for o in overrides for a in ("--set", o)]
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not list((tmp_path / "runs").glob("*/checkpoints/round_001/round.json")):
        assert job.poll() is None, job.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "round 1 never completed"
        time.sleep(0.2)
    server_pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert alive(server_pids)  # the stand-in server and its worker run while the job does
    stopped_at = time.monotonic()
    job.terminate()
    assert job.wait(timeout=120) == 128 + signal.SIGTERM
    assert time.monotonic() - stopped_at < 60
    assert not job_processes(tag) and not alive(server_pids)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "global_adapter").exists()  # stopped mid-run, not after it
    resumed = subprocess.run([sys.executable, "-m", "cotune", "run", "--resume", str(run_dir)], cwd=ROOT, env=env,
                             capture_output=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert (run_dir / "global_adapter").is_dir()
    rounds = {json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "global"}
    assert {1, 2} <= rounds
    assert not job_processes(tag)


def test_sigterm_on_cotune_server_stops_the_superlink_and_what_it_started(tmp_path):
    """`cotune server` (a SuperLink, which starts its SuperExec in a session of its own): SIGTERM leaves nothing."""
    from cotune.processes import free_port

    tag = uuid.uuid4().hex
    env = {**os.environ, "COTUNE_STOP_TEST": tag}
    command = [sys.executable, "-m", "cotune", "server", "--insecure", "--port", str(free_port()),
               "--database", str(tmp_path / "state.db")]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "Uvicorn running on" not in log.read_text(errors="replace") or len(job_processes(tag)) < 3:
        assert server.poll() is None, log.read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        time.sleep(0.2)
    started = len(job_processes(tag))
    server.terminate()
    assert server.wait(timeout=60) == 128 + signal.SIGTERM
    time.sleep(0.5)
    assert started >= 3 and not job_processes(tag)  # supervisor, flower-superlink, flower-superexec

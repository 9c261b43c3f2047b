"""cotune under Flower's deployment engine: a SuperLink, one SuperNode per silo and `flwr run`, as real processes
on 127.0.0.1 with TLS from a test CA and SuperNode authentication."""

import time
import tomllib
from pathlib import Path

import psutil
import pytest
import tomli_w
from support.deployment import LocalDeployment
from support.processes import ManagedProcess

from cotune.federation.deployment.processes import marked_processes
from cotune.metrics_log import MetricsLog

SMOKE = Path("configs/smoke.toml").resolve()
RUN_TIMEOUT = 600


@pytest.fixture
def no_orphans():
    """Fails the test if a process it started (directly or not) outlives it."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    assert [p for p in psutil.Process().children(recursive=True) if p.pid not in before and _running(p)] == []


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_completed(deployment: LocalDeployment, run: ManagedProcess) -> None:
    """`flwr run --stream` exits 0 whether the run completed or failed: the run's status tells."""
    run.popen.wait(timeout=RUN_TIMEOUT)
    (row,) = deployment.runs()
    assert run.popen.returncode == 0 and row["status"] == "finished:completed", run.output()[-3000:]


def _rows(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in MetricsLog(run_dir / "metrics.jsonl").rows() if r["kind"] == kind]


def _config(tmp_path: Path, **clients) -> Path:
    """configs/smoke.toml with one step per silo and small sets: the deployment, not the learning, is tested."""
    settings = tomllib.loads(SMOKE.read_text())
    settings["train"]["steps"] = 1
    settings["data"].update(max_client_examples=16, test_size=16)
    settings.setdefault("clients", {}).update(clients)
    path = tmp_path / "deploy.toml"
    path.write_text(tomli_w.dumps(settings))
    return path


CLIENTAPP_STARTED = r"Start `flwr-clientapp` process"


@pytest.mark.slow
def test_three_silos_over_tls_with_node_auth_complete_two_rounds_one_silo_killed_in_the_second(tmp_path, no_orphans):
    """Round 1 with all three silos; in round 2 silo 2 is SIGKILLed as its training starts. Its heartbeats stop,
    the SuperLink marks it offline (2 x 30 s) and its pending message comes back as a NODE_UNAVAILABLE error
    reply, so round 2 aggregates the other two (min_clients = 2) well before the round timeout."""
    config = _config(tmp_path, min_clients=2, round_timeout_s=400.0)
    run_dir, victim = tmp_path / "run", 2
    start = time.monotonic()
    with LocalDeployment(tmp_path / "deploy") as deployment:
        deployment.start_superlink()
        deployment.start_silos(3)
        run = deployment.submit(config, run_dir)
        # The victim's third ClientApp process is its round-2 training (round 1: train, evaluate).
        deployment.supernodes[victim].wait_for_output(rf"(?s)(?:{CLIENTAPP_STARTED}.*){{3}}", RUN_TIMEOUT)
        deployment.supernodes[victim].kill()
        killed_at = time.time()
        _wait_completed(deployment, run)
        assert "https://127.0.0.1" in deployment.superlink.output()
    print(f"deployment test wall time {time.monotonic() - start:.1f} s")

    assert (run_dir / "global_adapter" / "adapter_config.json").is_file()
    assert sorted(r["round"] for r in _rows(run_dir, "global")) == [0, 1, 2]
    train = _rows(run_dir, "client_train")
    accepted = sorted((r["round"], r["client"]) for r in train if "rejected" not in r)
    assert accepted == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]
    (dead,) = [r for r in train if "rejected" in r]
    assert dead["round"] == 2 and "Node Unavailable" in dead["rejected"]
    assert [(r["round"], r["accepted"]) for r in _rows(run_dir, "aggregate")] == [(1, 3), (2, 2)]
    evaluated = sorted((r["round"], r["client"]) for r in _rows(run_dir, "client_eval"))
    assert evaluated == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]
    (final,) = [r for r in _rows(run_dir, "global") if r["round"] == 2]
    print(f"round 2 completed {final['time'] - killed_at:.1f} s after the kill")
    assert final["time"] - killed_at < 400
    assert marked_processes(deployment.marker) == []


@pytest.mark.slow
def test_supernode_with_an_unregistered_key_is_refused(tmp_path, no_orphans):
    with LocalDeployment(tmp_path / "deploy") as deployment:
        deployment.start_superlink()
        registered = deployment.node_key("registered")
        deployment.register(registered)
        good = deployment.start_supernode(0, registered)
        intruder = deployment.start_supernode(1, deployment.node_key("intruder"), wait=False)
        keyless = deployment.start_supernode(2, None, wait=False)
        for node in (intruder, keyless):
            node.popen.wait(timeout=120)
            assert node.popen.returncode != 0
        assert "Failed to activate SuperNode" in intruder.output()  # its key is unknown to the SuperLink
        assert "No SuperNode found with the given public key" in deployment.superlink.output()
        assert "All SuperNodes must be registered via the CLI" in keyless.output()  # self-registration is off
        assert good.alive()
    assert marked_processes(deployment.marker) == []

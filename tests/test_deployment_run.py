"""cotune under Flower's deployment engine: a SuperLink, one SuperNode per silo and `flwr run`, as real processes
on 127.0.0.1 with TLS from a test CA and SuperNode authentication."""

import time
import tomllib
from pathlib import Path

import psutil
import pytest
import tomli_w

from cotune.federation.deployment.local import LocalDeployment
from cotune.federation.deployment.processes import ManagedProcess, marked_processes
from cotune.run.metrics import MetricsLog

SMOKE = Path("configs/smoke.toml").resolve()
RUN_TIMEOUT = 600


@pytest.fixture
def no_orphans():
    """Fails the test if a process it started (directly or not) outlives it."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []


def _wait_completed(deployment: LocalDeployment, run: ManagedProcess) -> None:
    """`flwr run --stream` exits 0 whether the run completed or failed: the run's status tells."""
    run.popen.wait(timeout=RUN_TIMEOUT)
    (row,) = deployment.runs()
    assert run.popen.returncode == 0 and row["status"] == "finished:completed", run.output()[-3000:]


def _rows(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in MetricsLog(run_dir / "metrics.jsonl").rows() if r["kind"] == kind]


@pytest.mark.slow
def test_three_silos_run_two_rounds_over_tls_with_node_auth(tmp_path, no_orphans):
    run_dir = tmp_path / "run"
    start = time.monotonic()
    with LocalDeployment(tmp_path / "deploy") as deployment:
        deployment.start_superlink()
        deployment.start_silos(3)
        _wait_completed(deployment, deployment.submit(SMOKE, run_dir))
    print(f"deployment test wall time {time.monotonic() - start:.1f} s")

    assert (run_dir / "global_adapter" / "adapter_config.json").is_file()
    train = sorted((r["round"], r["client"]) for r in _rows(run_dir, "client_train"))
    assert train == [(r, c) for r in (1, 2) for c in range(3)]
    evaluated = sorted((r["round"], r["client"]) for r in _rows(run_dir, "client_eval"))
    assert evaluated == train
    assert sorted(r["round"] for r in _rows(run_dir, "global")) == [0, 1, 2]
    assert "https://127.0.0.1" in deployment.superlink.output()
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


@pytest.mark.slow
def test_silo_killed_mid_round_the_round_completes_with_the_others(tmp_path, no_orphans):
    """The dead node's heartbeats stop; once the SuperLink marks it offline (2 x 30 s) its pending message comes
    back as a NODE_UNAVAILABLE error and the round aggregates the replies it has, well before the round timeout."""
    settings = tomllib.loads(SMOKE.read_text())
    settings["rounds"]["num_rounds"] = 1
    settings.setdefault("clients", {}).update(min_clients=2, round_timeout_s=400.0)
    config = tmp_path / "one_round.toml"
    config.write_text(tomli_w.dumps(settings))
    run_dir, victim = tmp_path / "run", 2
    with LocalDeployment(tmp_path / "deploy") as deployment:
        deployment.start_superlink()
        deployment.start_silos(3)
        run = deployment.submit(config, run_dir)
        deployment.supernodes[victim].wait_for_output(r"Start `flwr-clientapp` process", 300)
        deployment.supernodes[victim].kill()
        killed_at = time.time()
        _wait_completed(deployment, run)

    train = _rows(run_dir, "client_train")
    assert sorted(r["client"] for r in train if "rejected" not in r) == [0, 1]
    assert [r for r in train if "Node Unavailable" in r.get("rejected", "")]  # the dead node's error reply
    assert sorted(r["client"] for r in _rows(run_dir, "client_eval")) == [0, 1]
    (final,) = [r for r in _rows(run_dir, "global") if r["round"] == 1]
    print(f"round 1 completed {final['time'] - killed_at:.1f} s after the kill")
    assert final["time"] - killed_at < 400
    assert (run_dir / "global_adapter" / "adapter_config.json").is_file()
    assert marked_processes(deployment.marker) == []

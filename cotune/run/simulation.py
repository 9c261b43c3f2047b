"""Run the ServerApp and N ClientApps in Flower's simulation engine on this machine."""

import os
from pathlib import Path

from flwr.simulation import run_simulation

from cotune.config import CotuneConfig
from cotune.federation.client_app import app as client_app
from cotune.run.server_app import build_server_app
from cotune.server_vllm.engine import GenerationEngine


def simulate(cfg: CotuneConfig, run_dir: Path, engine: GenerationEngine | None = None) -> None:
    """Silos run one at a time, each with every core: on a small CPU host that beats sharing cores.

    Ray starts its workers at nice 15, as background work; here they do the job's main work (silo training), and
    at nice 15 any other process on the host starves them. Set RAY_worker_niceness yourself to choose otherwise.
    """
    cpus = os.cpu_count() or 1
    os.environ.setdefault("RAY_worker_niceness", "0")
    run_simulation(
        server_app=build_server_app(cfg, run_dir, engine),
        client_app=client_app,
        num_supernodes=cfg.clients.num_clients,
        backend_config={
            "client_resources": {"num_cpus": cpus, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": True},
        },
    )

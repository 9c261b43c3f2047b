"""A whole deployment on one host: SuperLink, one SuperNode per silo and `flwr run`, as real processes.

It runs the command lines a multi-machine setup runs (see docs/deployment.md) on 127.0.0.1 with free ports, a
development CA and freshly generated node keys, so tests exercise TLS and SuperNode authentication for real.
"""

import json
import subprocess
import uuid
from pathlib import Path

from cotune.federation.deployment import commands
from cotune.federation.deployment.flower_home import write_connection
from cotune.federation.deployment.node_keys import NodeKey, write_node_key
from cotune.federation.deployment.processes import flower_env, stop_marked
from cotune.federation.deployment.tls import TlsFiles, write_dev_certificates
from cotune.processes import free_port
from support.processes import ManagedProcess

HOST = "127.0.0.1"
CONNECTION = "cotune-local"
SUPERLINK_READY = r"Uvicorn running on"
SUPERNODE_READY = r"SuperNode ID: \d+"


class LocalDeployment:
    """Use as a context manager: whatever was started is stopped on exit, including orphaned children."""

    def __init__(self, root: Path, tls: bool = True, node_auth: bool = True, start_timeout: float = 90.0) -> None:
        self.root, self.start_timeout = root, start_timeout
        self.marker = uuid.uuid4().hex
        self.home = root / "flwr_home"
        self.env = flower_env(self.marker, self.home)
        self.tls: TlsFiles | None = write_dev_certificates(root / "tls", [HOST, "localhost"]) if tls else None
        self.node_auth = node_auth
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.superlink: ManagedProcess | None = None
        self.supernodes: dict[int, ManagedProcess] = {}

    def __enter__(self) -> "LocalDeployment":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_superlink(self) -> ManagedProcess:
        write_connection(self.home, CONNECTION, self.address, self.tls.ca_cert if self.tls else None)
        options = commands.SuperLinkOptions(host=HOST, port=self.port, tls=self.tls, node_auth=self.node_auth)
        self.superlink = self._start("superlink", commands.superlink_command(options))
        self.superlink.wait_for_output(SUPERLINK_READY, self.start_timeout)
        return self.superlink

    def node_key(self, name: str) -> NodeKey:
        return write_node_key(self.root / "node_keys", name)

    def register(self, key: NodeKey) -> None:
        self._flwr(commands.register_command(key.public, CONNECTION))

    def start_supernode(self, partition_id: int, key: NodeKey | None, wait: bool = True) -> ManagedProcess:
        options = commands.SuperNodeOptions(
            superlink=self.address, partition_id=partition_id,
            root_certificates=self.tls.ca_cert if self.tls else None,
            private_key=key.private if key else None, runtime_port=free_port(), max_retries=3,
        )
        node = self._start(f"supernode-{partition_id}", commands.supernode_command(options))
        self.supernodes[partition_id] = node
        if wait:
            node.wait_for_output(SUPERNODE_READY, self.start_timeout)
        return node

    def start_silos(self, num_silos: int) -> None:
        """A registered key per silo (when node auth is on) and a SuperNode holding partition 0..num_silos-1."""
        for partition_id in range(num_silos):
            key = self.node_key(f"silo{partition_id}") if self.node_auth else None
            if key is not None:
                self.register(key)
            self.start_supernode(partition_id, key, wait=False)
        for node in self.supernodes.values():
            node.wait_for_output(SUPERNODE_READY, self.start_timeout)

    def submit(self, cotune_config: Path | None, run_dir: Path, app_dir: Path | None = None) -> ManagedProcess:
        """`flwr run --stream` of `app_dir` (default: this cotune source folder). The returned process exits when
        the run ends, whether it completed or failed (see `runs`); its log is the ServerApp's."""
        command = commands.run_command(app_dir or commands.default_app_dir(), CONNECTION, cotune_config, run_dir)
        return self._start("run", command)

    def runs(self) -> list[dict]:
        """`flwr ls` rows (`run-id`, `status`, ...)."""
        return json.loads(self._flwr(commands.list_runs_command(CONNECTION)))["runs"]

    def stop(self) -> None:
        for node in self.supernodes.values():
            node.stop()
        if self.superlink is not None:
            self.superlink.stop()
        stop_marked(self.marker)

    def _start(self, name: str, command: list[str]) -> ManagedProcess:
        return ManagedProcess(name, command, self.root / "logs" / f"{name}.log", self.env)

    def _flwr(self, command: list[str]) -> str:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{commands.render(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

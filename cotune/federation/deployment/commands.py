"""The Flower 1.41 command lines cotune runs, built in one place so the CLI prints exactly what it starts.

In 1.41 a SuperLink serves its Fleet (SuperNodes), Control (`flwr` CLI) and Runtime (its own ServerApp
processes) APIs over HTTP(S) on one `--host/--port`; the gRPC `--fleet-api-*` flags are deprecated and ignored.
SuperNode authentication (`--enable-supernode-auth`) requires TLS, and only keys registered beforehand with
`flwr supernode register` may connect. Each SuperNode also serves a local Runtime API for its ClientApp processes
(`--port`), so SuperNodes sharing a host need distinct ports.
"""

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from cotune.federation.deployment.tls import TlsFiles

DEFAULT_CONNECTION = "cotune"  # the `flwr` connection name cotune writes and submits to unless told another


def executable(name: str) -> str:
    """A Flower console script from this interpreter's environment when there is one, else from PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def default_app_dir() -> Path:
    """The folder `flwr run` builds into a FAB: the source checkout holding cotune's pyproject.toml."""
    root = Path(__file__).resolve().parents[3]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app]" not in pyproject.read_text():
        raise FileNotFoundError(f"no Flower app (pyproject.toml with [tool.flwr.app]) at {root}: "
                                "pass the cotune source folder explicitly")
    return root


def render(command: list[str]) -> str:
    return shlex.join(command)


@dataclass(frozen=True)
class SuperLinkOptions:
    host: str = "0.0.0.0"
    port: int = 9091
    tls: TlsFiles | None = None
    node_auth: bool = True
    database: Path | None = None


def superlink_command(opts: SuperLinkOptions) -> list[str]:
    """`flower-superlink`; without runtime dependency installation it runs the ServerApp in this environment
    (with it, every run would get a fresh uv environment, which ignores a local CPU torch wheel)."""
    command = [executable("flower-superlink"), "--host", opts.host, "--port", str(opts.port),
               "--disable-runtime-dependency-installation"]
    if opts.tls is None:
        if opts.node_auth:
            raise ValueError("SuperNode authentication needs TLS: give the SuperLink certificates")
        command.append("--insecure")
    else:
        command += ["--ssl-ca-certfile", str(opts.tls.ca_cert), "--ssl-certfile", str(opts.tls.server_cert),
                    "--ssl-keyfile", str(opts.tls.server_key)]
    if opts.node_auth:
        command.append("--enable-supernode-auth")
    if opts.database is not None:
        command += ["--database", str(opts.database)]
    return command


@dataclass(frozen=True)
class SuperNodeOptions:
    superlink: str
    partition_id: int
    root_certificates: Path | None = None
    private_key: Path | None = None
    runtime_port: int = 9094
    max_retries: int | None = None


def supernode_command(opts: SuperNodeOptions) -> list[str]:
    """`flower-supernode` for one silo; its node config carries the partition the ClientApp trains on."""
    command = [executable("flower-supernode"), "--superlink", opts.superlink,
               "--node-config", f"partition-id={opts.partition_id}", "--port", str(opts.runtime_port)]
    if opts.root_certificates is None:
        command.append("--insecure")
    else:
        command += ["--root-certificates", str(opts.root_certificates)]
    if opts.private_key is not None:
        command += ["--auth-supernode-private-key", str(opts.private_key)]
    if opts.max_retries is not None:
        command += ["--max-retries", str(opts.max_retries)]
    return command


def register_command(public_key: Path, connection: str) -> list[str]:
    """`flwr supernode register`: allow the silo holding the matching private key to connect."""
    return [executable("flwr"), "supernode", "register", str(public_key), connection]


def run_command(app_dir: Path, connection: str, cotune_config: Path | None, run_dir: Path | None,
                stream: bool = True) -> list[str]:
    """`flwr run`: build the app folder into a FAB and start it on the SuperLink.

    Both run-config paths are read by the ServerApp, i.e. on the SuperLink's host. Values go as TOML strings,
    one `--run-config` each (a single argument ending in `.toml` would be read as a file of overrides).
    """
    command = [executable("flwr"), "run", str(app_dir), connection]
    for key, value in (("cotune-config", cotune_config), ("run-dir", run_dir)):
        text = str(value or "")
        if '"' in text:  # Flower splits key="value" pairs with a regex that stops at the first quote
            raise ValueError(f"{key}: a path with a double quote cannot go through --run-config: {text}")
        command += ["--run-config", f"{key}={json.dumps(text)}"]  # a JSON string is a TOML basic string
    return command + (["--stream"] if stream else [])


def list_runs_command(connection: str) -> list[str]:
    return [executable("flwr"), "ls", connection, "--format", "json"]

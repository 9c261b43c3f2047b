"""Finding and stopping what is left of a deployment or a job, wherever its processes were reparented.

SuperLinks and SuperNodes start their SuperExec (and through it the ServerApp/ClientApp processes) in new
sessions, so signalling a process group misses them, and a SuperNode that exits early leaves its SuperExec
running until that notices. Every process started in an environment from `flower_env(marker)` carries the
marker, and its children inherit it: `marked_processes` finds whatever is left of a deployment, wherever it was
reparented.
"""

import os
import sys
from pathlib import Path

import psutil

from cotune.processes import stop

MARKER = "COTUNE_DEPLOYMENT"


def flower_env(marker: str | None = None, home: Path | None = None) -> dict[str, str]:
    """This environment with its scripts first on PATH (a SuperLink starts `flower-superexec` by name) and, when
    given, the deployment marker and FLWR_HOME (where `flwr` reads connections and SuperNodes unpack apps)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    if marker is not None:
        env[MARKER] = marker
    if home is not None:
        env["FLWR_HOME"] = str(home)
    return env


def marked_processes(marker: str, variable: str = MARKER) -> list[psutil.Process]:
    """Running processes whose environment variable `variable` is `marker` (this user's only: others' are
    unreadable)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(variable) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_marked(
    marker: str, grace: float = 10.0, variable: str = MARKER, exclude: tuple[int, ...] = ()
) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL after `grace`, to every process left of a deployment (or of a job: `variable`) but
    the pids in `exclude`; returns those it found."""
    found = [p for p in marked_processes(marker, variable) if p.pid not in exclude]
    stop(found, grace)
    return found

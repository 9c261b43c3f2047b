"""Flower processes started, watched and stopped from Python, with their logs in files.

SuperLinks and SuperNodes start their SuperExec (and through it the ServerApp/ClientApp processes) in new
sessions, so signalling a process group misses them, and a SuperNode that exits early leaves its SuperExec
running until that notices. Every process started here carries a marker in its environment, which children
inherit: `marked_processes` finds whatever is left of a deployment, wherever it was reparented.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
    _signal_and_reap(found, signal.SIGTERM, grace)
    return found


class ManagedProcess:
    """One long-running Flower command whose stdout and stderr go to `log`."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.command, self.log = name, command, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def wait_for_output(self, pattern: str, timeout: float) -> re.Match[str]:
        """Block until the log matches `pattern`; fail early, with the log's tail, if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            if match := re.search(pattern, self.output()):
                return match
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with code {self.popen.returncode} before printing "
                                   f"{pattern!r}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not print {pattern!r} within {timeout:.0f} s:\n"
                                   f"{self.output()[-3000:]}")
            time.sleep(0.2)

    def tree(self) -> list[psutil.Process]:
        """This process and everything it started that is still running."""
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the whole tree (Flower shuts down cleanly on it), SIGKILL to what is left after `grace`."""
        _signal_and_reap(self.tree(), signal.SIGTERM, grace)
        self.popen.poll()

    def kill(self) -> None:
        """SIGKILL the whole tree at once: a silo that loses power, not one that shuts down."""
        _signal_and_reap(self.tree(), signal.SIGKILL, 5.0)
        self.popen.poll()


def _signal_and_reap(procs: list[psutil.Process], sig: signal.Signals, grace: float) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5.0)


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with `start_new_session=True`, its group, and descendants that left the group:
    a server that loses power mid-round."""
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()

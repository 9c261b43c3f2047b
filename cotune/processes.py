"""Child processes that leave nothing behind: a free port to start one on, and stopping a process tree whole.

A server cotune starts (vLLM, a SuperLink, a job) starts processes of its own, and some of them leave its
process group (vLLM's engine, Flower's SuperExec) or are reparented when their parent dies first; a stop that
signals only the child, or only its group, leaves those running. So a stop signals every process it can find,
SIGTERM first and SIGKILL for what is left after a grace period, and waits until they are gone.
"""

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable

import psutil

_KILL_WAIT_S = 5.0  # after SIGKILL: only the kernel's own delay


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def living(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those still running; zombies count as gone (an init that never reaps them must not fail a stop)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def tree(pid: int) -> list[psutil.Process]:
    """The process `pid` and every descendant it has now; empty once it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop(processes: Iterable[psutil.Process], grace: float, group: int | None = None) -> list[psutil.Process]:
    """SIGTERM to each process (and to the process group `group`, when given), SIGKILL to whatever is still
    running after `grace` seconds; returns, once all are gone, those that needed the SIGKILL."""
    processes = list({p.pid: p for p in processes}.values())
    _signal(processes, signal.SIGTERM, group)
    left = _wait_gone(processes, grace)
    if left or group is not None:  # a group may hold processes no one listed: it gets SIGKILL whatever happened
        _signal(left, signal.SIGKILL, group)
        _wait_gone(left, _KILL_WAIT_S)
    return left


def stop_session(
    child: subprocess.Popen, grace: float, known: Iterable[psutil.Process] = ()
) -> list[psutil.Process]:
    """Stop a child started with `start_new_session=True` and all it started, reaping the child: its group
    reaches what left the tree, the tree what left the group, and `known` (descendants seen earlier) what was
    reparented when its parent died. Returns those that needed SIGKILL."""
    killed = stop([*known, *tree(child.pid)], grace, group=child.pid)
    child.wait()
    return killed


def _signal(processes: list[psutil.Process], sig: signal.Signals, group: int | None) -> None:
    if group is not None:
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass
    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def _wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Those still running after up to `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while (alive := living(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive

"""Processes that tests and benchmarks start and stop: Flower commands with their logs in files, and a server
that loses power mid-round."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil

from cotune.processes import stop, tree


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with `start_new_session=True`, its group, and descendants that left the group:
    a server that loses power mid-round."""
    family = tree(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


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

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the whole tree (Flower shuts down cleanly on it), SIGKILL to what is left after `grace`."""
        stop(tree(self.pid), grace)
        self.popen.poll()

    def kill(self) -> None:
        """SIGKILL the whole tree at once: a silo that loses power, not one that shuts down."""
        kill_session(self.popen)

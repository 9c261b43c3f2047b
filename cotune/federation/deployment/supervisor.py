"""A job run as a child process that is stopped whole: nothing it started outlives it.

A job starts processes that do not die with it: the vLLM server runs in a session of its own (so that stopping
it can signal its whole group), and a SIGTERM to the job's process group does not reach it; Ray's driver turns
SIGTERM into `sys.exit`, which then waits for Flower's non-daemon ServerApp thread until the round's timeout.
Neither can be fixed from inside the job's own process. So `cotune run` runs the job as a child whose environment
carries a marker that every descendant inherits (vLLM copies the environment, Ray's raylet and workers too), and
on SIGTERM, SIGINT or SIGHUP the supervisor passes SIGTERM on, gives the job `grace` seconds to unwind (it stops
its engine), then stops every process that still carries the marker, wherever it was reparented. Checkpoints are
written to a temporary folder and renamed (cotune.checkpoints), so the last completed round survives any stop
and `--resume` continues from it. A supervisor that is itself SIGKILLed cannot sweep: the job watches for that
(`watch_supervisor`) and then stops the rest of the job itself.
"""

import logging
import os
import signal
import subprocess
import threading
import time
import uuid

import psutil

from cotune.federation.deployment.processes import stop_marked

log = logging.getLogger(__name__)
JOB_MARKER = "COTUNE_JOB"  # set in the job's environment; a process that has it is the job (or its descendant)
SUPERVISOR_PID = "COTUNE_JOB_SUPERVISOR"  # the supervisor's pid, so that only its direct child watches it
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_S = 15.0  # the job's own unwinding (engine stop) before the sweep
KILL_GRACE_S = 10.0  # SIGTERM to SIGKILL, for what the sweep finds


def in_job() -> bool:
    """True in a supervised job's process (and its descendants): they must not supervise themselves again."""
    return JOB_MARKER in os.environ


def watch_supervisor(interval: float = 1.0) -> threading.Thread | None:
    """In the job: if the supervisor disappears (SIGKILLed, so it could not sweep), stop every other process of the
    job (the vLLM server, Ray) and exit, rather than run on unsupervised. Polls the parent pid: the job is
    reparented only when its supervisor is gone. None (no watch) in a process that is not the supervisor's child."""
    parent, marker = os.getppid(), os.environ[JOB_MARKER]
    if os.environ.get(SUPERVISOR_PID) != str(parent):
        return None

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.error("the supervising `cotune run` is gone: stopping the job and everything it started")
        stop_marked(marker, KILL_GRACE_S, JOB_MARKER, exclude=(os.getpid(),))
        os._exit(128 + signal.SIGKILL)

    thread = threading.Thread(target=watch, name="cotune-supervisor-watch", daemon=True)
    thread.start()
    return thread


def supervise(command: list[str], grace: float = GRACE_S, env: dict[str, str] | None = None) -> int:
    """Run `command` (in `env`, default this environment) as the job and return its exit code (128 + the signal's
    number when stopped by one)."""
    marker = f"job-{uuid.uuid4().hex}"
    environment = {**(os.environ if env is None else env), JOB_MARKER: marker, SUPERVISOR_PID: str(os.getpid())}
    child = subprocess.Popen(command, env=environment)
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        if not stopping:
            log.warning("%s: stopping the job (pid %d) and everything it started", signal.Signals(signum).name,
                        child.pid)
        stopping.append(signum)
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        deadline = None
        while child.poll() is None:
            if stopping and deadline is None:
                deadline = time.monotonic() + grace
            if deadline is not None and time.monotonic() > deadline:
                log.warning("the job did not exit within %.0f s of the signal: stopping its processes", grace)
                break
            time.sleep(0.1)
    finally:
        left = stop_marked(marker, KILL_GRACE_S, JOB_MARKER)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if left and not stopping:
        log.warning("the job left %d processes running (stopped now): %s", len(left), _names(left))
    if stopping:
        return 128 + stopping[0]
    code = child.returncode
    return 128 - code if code < 0 else code


def _names(processes: list[psutil.Process]) -> str:
    names = []
    for proc in processes:
        try:
            names.append(f"{proc.pid} {proc.name()}")
        except psutil.Error:  # gone already: the pid is enough
            names.append(str(proc.pid))
    return ", ".join(names)

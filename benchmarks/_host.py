"""Benchmarks measure on a quiet host: wait for the 1-minute load average to fall, and record it."""

import os
import time


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def wait_for_quiet(limit: float = 1.0, timeout_s: float = 900.0, poll_s: float = 10.0) -> float:
    """Block until the 1-minute load average is below `limit` (or `timeout_s` passed); returns it."""
    deadline = time.monotonic() + timeout_s
    while loadavg() >= limit and time.monotonic() < deadline:
        print(f"waiting for a quiet host: load average {loadavg()} >= {limit}", flush=True)
        time.sleep(poll_s)
    return loadavg()

"""Peak resident memory of this process over a span of a benchmark.

On Linux the kernel keeps the exact peak (VmHWM) and lets a process reset it (`clear_refs` = 5): no transient
peak is missed, however short. Elsewhere a thread samples the resident set every few milliseconds, which can miss
a peak that a sample falls beside.
"""

import threading
import time
from pathlib import Path

import psutil

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _kernel_peak() -> int | None:
    """VmHWM in bytes, or None where the kernel does not report it."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_kernel_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _kernel_peak() is not None


class PeakRSS:
    """Peak resident memory (bytes) between start() and stop(); `baseline` is the value at start()."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s, self.baseline, self.peak = interval_s, 0, 0
        self.exact = False
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return self._process.memory_info().rss

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval_s)

    def start(self) -> "PeakRSS":
        self.exact = _reset_kernel_peak()
        self.baseline = self.peak = self.rss()
        if not self.exact:
            self._thread.start()
        return self

    def stop(self) -> int:
        if self.exact:
            self.peak = max(self.peak, _kernel_peak() or 0)
        else:
            self._stop.set()
            self._thread.join()
        return self.peak

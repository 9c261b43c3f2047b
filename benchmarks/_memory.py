"""Peak-RSS sampling for benchmarks: a thread reads this process's resident set every few milliseconds."""

import threading
import time

import psutil


class PeakRSS:
    """Peak resident memory (bytes) between start() and stop(), sampled; also the value at start()."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s, self.baseline, self.peak = interval_s, 0, 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self.interval_s)

    def start(self) -> "PeakRSS":
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak

"""metrics.jsonl: one JSON object per line (per round and per client), appended and flushed as it happens.

Rows of kind `time` say where the job's seconds went: `{"kind": "time", "phase": ..., "seconds": ..., "round": ...}`
(round 0 for what happens before the first round; `scope: "job"` for the job's own phases, which a resumed
run's clean-up keeps).
"""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **row}) + "\n")

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def time_row(self, phase: str, seconds: float, server_round: int = 0, **facts) -> None:
        self.write({"round": server_round, "kind": "time", "phase": phase, "seconds": round(seconds, 3), **facts})

    @contextmanager
    def timed(self, phase: str, server_round: int = 0, **facts) -> Iterator[None]:
        """Times the block as a `time` row, written only if the block completes."""
        start = time.perf_counter()
        yield
        self.time_row(phase, time.perf_counter() - start, server_round, **facts)

    def drop_rounds_after(self, last_round: int) -> None:
        """On resume: rows of a round that did not complete are dropped, so the log matches the restored state;
        the job's own rows (`scope: "job"`) are kept."""
        kept = [r for r in self.rows() if r.get("round", 0) <= last_round or r.get("scope") == "job"]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

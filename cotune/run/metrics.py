"""metrics.jsonl: one JSON object per line (per round and per client), appended and flushed as it happens."""

import json
import time
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

    def drop_rounds_after(self, last_round: int) -> None:
        """On resume: rows of a round that did not complete are dropped, so the log matches the restored state."""
        kept = [r for r in self.rows() if r.get("round", 0) <= last_round]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

"""Per-round checkpoints: the global SLM adapter as a PEFT folder, written atomically after each round completes.

`--resume` continues from the newest complete checkpoint; a round interrupted mid-way leaves no checkpoint.
"""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

ROUND_DIR = "round_{:03d}"
DONE = "round.json"


class Checkpoints:
    def __init__(self, root: Path) -> None:
        """`root`: the folder the `round_NNN` checkpoints go in (the run folder's layout names it)."""
        self.root = root

    def save(self, server_round: int, write_folder: Callable[[Path], None]) -> Path:
        """`write_folder(path)` writes the round's artifacts (e.g. `model.save_pretrained`)."""
        target = self.root / ROUND_DIR.format(server_round)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_folder(tmp)
        (tmp / DONE).write_text(json.dumps({"round": server_round}))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        return target

    def latest(self) -> tuple[int, Path] | None:
        # round_NNN only: a round_NNN.tmp folder holds a round that was never moved into place
        done = sorted(p.parent for p in self.root.glob(f"round_[0-9][0-9][0-9]/{DONE}"))
        if not done:
            return None
        return int(json.loads((done[-1] / DONE).read_text())["round"]), done[-1]

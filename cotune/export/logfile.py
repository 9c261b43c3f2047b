"""Send an exporter's chatter (progress bars per tensor, quantizer INFO lines, torch.onnx banners) to a log file.

The exporters print from Python, from logging handlers, and from C++; redirecting the file descriptors 1 and 2
catches all three, so the exporters can run in-process (no second torch import) and quiet. Only the descriptors
move, never `sys.stdout`/`sys.stderr`: a logging handler made inside (the model builder calls basicConfig) would
keep writing to the closed log file afterwards. The log lives in the staging folder, which a failed export
removes: the error carries the log's tail as a note.
"""

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

TAIL_CHARS = 3000


def _flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    _flush()
    saved = os.dup(1), os.dup(2)
    try:
        with log.open("a") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                _flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    except Exception as err:
        err.add_note(f"end of the exporters' output ({log.name}):\n{log.read_text(errors='replace')[-TAIL_CHARS:]}")
        raise
    finally:
        for fd in saved:
            os.close(fd)

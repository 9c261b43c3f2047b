"""Send an exporter's chatter (progress bars per tensor, quantizer INFO lines, torch.onnx banners) to a log file.

The exporters print from Python, from logging handlers made long ago, and from C++; only redirecting the file
descriptors 1 and 2 catches all three, so the exporters can run in-process (no second torch import) and quiet.
The log lives in the staging folder, which a failed export removes: an error carries the log's tail as a note.
"""

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

TAIL_CHARS = 3000


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with log.open("a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sink.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    except Exception as err:
        err.add_note(f"end of the exporters' output ({log.name}):\n{log.read_text(errors='replace')[-TAIL_CHARS:]}")
        raise
    finally:
        for fd in saved:
            os.close(fd)

"""The CLI's logging: cotune's own records at INFO, every library's at WARNING, everything at DEBUG with `-v`.

Libraries log their routine at INFO (alembic's plugin setup when Flower's database layer loads, Flower's strategy
banner with the whole config); at the CLI's INFO they drowned cotune's progress lines.
"""

import logging
import os

OWN = "cotune"
FLOWER = "flwr"


def _is(name: str, logger: str) -> bool:
    return name == logger or name.startswith(logger + ".")


class LibraryFilter(logging.Filter):
    """Passes cotune's records from INFO and other libraries' from WARNING (all with `verbose`). Drops Flower's:
    Flower prints them through its own console handler (level: FLWR_LOG_LEVEL), so ours printed each twice, and
    its DEBUG lines too, since its logger sets its own level."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if _is(record.name, FLOWER):
            return False
        if self.verbose:
            return True
        return record.levelno >= (logging.INFO if _is(record.name, OWN) else logging.WARNING)


def configure_logging(verbose: bool) -> None:
    """Logging for this process; a process that already has handlers (an embedding app, pytest) keeps its own."""
    if logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(LibraryFilter(verbose))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    logging.getLogger(OWN).setLevel(logging.DEBUG if verbose else logging.INFO)


def set_flower_log_level(verbose: bool) -> None:
    """Flower's console level (WARNING; DEBUG with `verbose`) for this process and those it starts, Ray's workers
    included: Flower reads FLWR_LOG_LEVEL when first imported in each. A user's own setting wins."""
    os.environ.setdefault("FLWR_LOG_LEVEL", "DEBUG" if verbose else "WARNING")

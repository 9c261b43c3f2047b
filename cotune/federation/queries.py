"""Server -> silo questions other than train/evaluate: CrossLM asks each silo to score synthetic samples."""

import logging

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from cotune.config import CotuneConfig
from cotune.federation.records import config_record, samples_record

log = logging.getLogger(__name__)


def ask_scores(grid: Grid, cfg: CotuneConfig, texts: list[str], labels: list[int]) -> dict[int, list[float]]:
    """Scores per silo (keyed by partition id); silos that fail or time out are left out, with a log line."""
    content = RecordDict({"config": config_record(cfg), "samples": samples_record(texts, labels)})
    messages = [
        Message(content=content, message_type=MessageType.QUERY, dst_node_id=node) for node in grid.get_node_ids()
    ]
    scores: dict[int, list[float]] = {}
    for reply in grid.send_and_receive(messages, timeout=cfg.clients.round_timeout_s):
        if reply.has_error():
            log.warning("silo node %s could not score: %s", reply.metadata.src_node_id, reply.error.reason)
            continue
        metrics = reply.content["metrics"]
        scores[int(metrics.get("partition-id", reply.metadata.src_node_id))] = list(metrics.get("scores", []))
    return scores

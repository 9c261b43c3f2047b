"""The silo side as a Flower ClientApp: the same object runs in simulation and under a SuperNode.

Which partition a node holds comes from its node config (`partition-id`, set by the simulation engine or by
`flower-supernode --node-config "partition-id=N"`); everything else comes with the server's message, including
whether DP clipping or SecAgg+ applies (the train mods act only on messages that ask for them).
"""

import time

from datasets import Dataset
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from cotune.algorithms.crosslm.feedback import intended_label_probability
from cotune.algorithms.crosslm.mixing import mix_in
from cotune.config import CotuneConfig, dump_toml
from cotune.data import build_splits
from cotune.lm.adapted_lm import AdaptedLM
from cotune.edge_client.silo import Silo
from cotune.federation.privacy import dp_clipping_mod, is_secagg_message, secaggplus_when_asked
from cotune.federation.records import (
    config_from_record,
    from_record,
    record_bytes,
    samples_from_record,
    to_record,
)

app = ClientApp()
LOCAL_ADAPTER = "local-adapter"
_LOADED: dict = {}


def _silo(cfg: CotuneConfig, context: Context) -> Silo:
    """The SLM stays loaded across rounds in a long-lived client process, shared by the partitions it serves
    (a simulation actor serves several); a new config reloads it."""
    key = dump_toml(cfg)
    if _LOADED.get("key") != key:
        _LOADED.clear()
        _LOADED.update(key=key, slm=AdaptedLM.load(cfg), splits=build_splits(cfg.data, cfg.clients.num_clients))
    partition_id = int(context.node_config["partition-id"])
    if partition_id not in _LOADED:
        _LOADED[partition_id] = Silo(cfg, partition_id, _LOADED["slm"], _LOADED["splits"], mix_in=mix_in)
    return _LOADED[partition_id]


@app.train(mods=[secaggplus_when_asked, dp_clipping_mod])
def train(msg: Message, context: Context) -> Message:
    cfg = config_from_record(msg.content["config"])
    silo = _silo(cfg, context)
    server_round = int(msg.content["config"]["server-round"])
    texts, labels = samples_from_record(msg.content["config"])
    synthetic = Dataset.from_dict({"text": texts, "label": labels}) if texts else None
    start = time.perf_counter()
    result = silo.train_round(from_record(msg.content["arrays"]), server_round, synthetic)
    local_state = silo.slm.state()
    context.state[LOCAL_ADAPTER] = to_record(local_state, "fp32")  # kept on the node for CrossLM scoring
    # Under SecAgg+ the reply never leaves the node in the clear (the mod masks it): keep full precision.
    reply = to_record(local_state, "fp32" if is_secagg_message(msg) else cfg.quantization.wire)
    metrics = MetricRecord(
        {
            "num-examples": len(silo.train_data),
            "partition-id": silo.partition_id,
            "train-loss": result.mean_loss,
            "train-last-loss": result.last_loss,
            "examples-seen": result.examples_seen,
            "train-seconds": time.perf_counter() - start,
            "train-steps": result.steps,
            "reused": int(result.reused),
            "bytes-up": record_bytes(reply),
            "bytes-down": record_bytes(msg.content["arrays"]) + sum(len(t.encode()) + 8 for t in texts),
            "synthetic-examples": len(texts),
        }
    )
    return Message(RecordDict({"arrays": reply, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg = config_from_record(msg.content["config"])
    silo = _silo(cfg, context)
    start = time.perf_counter()
    accuracy = silo.evaluate(from_record(msg.content["arrays"]))
    metrics = MetricRecord(
        {
            "num-examples": len(silo.val_data),
            "partition-id": silo.partition_id,
            "val-accuracy": accuracy,
            "eval-seconds": time.perf_counter() - start,
        }
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


@app.query()
def score(msg: Message, context: Context) -> Message:
    """CrossLM: rate the server's synthetic samples with this silo's SLM; only the scores go back."""
    cfg = config_from_record(msg.content["config"])
    silo = _silo(cfg, context)
    texts, labels = samples_from_record(msg.content["samples"])
    if LOCAL_ADAPTER not in context.state:
        raise RuntimeError("asked to score before this silo trained in this run")
    scores = []
    if texts:
        silo.slm.set_state(from_record(context.state[LOCAL_ADAPTER]))  # the SLM as trained here this round
        scores = intended_label_probability(silo.slm, silo.task, texts, labels, cfg)
    metrics = MetricRecord({"partition-id": silo.partition_id, "scores": [float(s) for s in scores]})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)

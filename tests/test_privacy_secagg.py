"""SecAgg+ with Flower's own protocol on both sides (silos: secaggplus_mod through our mod; server: the workflow
through our strategy), silos faked without a model: the mean is right, no tensor reaches the server in the clear,
and a silo that drops out or sends a malformed protocol message costs at most its round."""

import numpy as np
import pytest
from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage

from support.local_grid import LocalGrid

from cotune.config.federation import FederationConfig
from cotune.federation.privacy import secaggplus_when_asked
from cotune.federation.records import from_record, to_record
from cotune.federation.strategies.factory import build_strategy

A, B = "layer.lora_A.weight", "layer.lora_B.weight"
GLOBAL = {A: np.linspace(-0.1, 0.1, 64, dtype=np.float32).reshape(4, 16), B: np.zeros((16, 4), np.float32)}


pytestmark = pytest.mark.usefixtures("flower_task_identity")


def trained(node: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(node)
    return {k: (v + rng.normal(0, 0.01, v.shape)).astype(np.float32) for k, v in GLOBAL.items()}


def fake_silos(drop: int | None = None, corrupt: int | None = None) -> ClientApp:
    """Silos whose training yields `trained(node)`; node `drop` fails while training (stage 2), node `corrupt`
    sends a masked vector of the wrong shape."""

    def corrupting(msg, context, call_next):
        reply = call_next(msg, context)
        configs = reply.content.config_records.get(RECORD_KEY_CONFIGS) if reply.has_content() else None
        if context.node_id == corrupt and configs is not None and Key.MASKED_PARAMETERS in configs:
            configs[Key.MASKED_PARAMETERS] = list(configs[Key.MASKED_PARAMETERS])[:1]
        return reply

    app = ClientApp()

    @app.train(mods=[corrupting, secaggplus_when_asked])
    def train(msg, context):
        if context.node_id == drop:
            raise RuntimeError("silo dropped mid-protocol")
        metrics = MetricRecord({"num-examples": 10 * context.node_id, "partition-id": context.node_id})
        return Message(RecordDict({"arrays": to_record(trained(context.node_id), "fp32"), "metrics": metrics}),
                       reply_to=msg)

    return app


def secagg_round(app: ClientApp, nodes=(1, 2, 3)):
    rows, grid = [], LocalGrid(app, {n: n for n in nodes})
    strategy = build_strategy(FederationConfig(secagg=True), "int8", num_sampled=len(nodes), log_row=rows.append,
                              min_available_nodes=len(nodes), fraction_evaluate=0.0)
    result = strategy.start(grid, to_record(GLOBAL, "fp32"), num_rounds=1)
    return grid, rows, result


def test_the_mean_of_the_updates_and_nothing_in_the_clear():
    grid, rows, result = secagg_round(fake_silos())
    stage2 = [r for r in grid.requests if "arrays" in r.content]
    received = from_record(stage2[0].content["arrays"])  # the int8-decoded global every silo started from
    expected = {k: received[k] + np.mean([trained(n)[k] - received[k] for n in (1, 2, 3)], axis=0) for k in GLOBAL}
    mean = from_record(result.arrays)
    for k in GLOBAL:
        np.testing.assert_allclose(mean[k], expected[k], atol=1e-6)  # equal weights, whatever the example counts
    assert [r["accepted"] for r in rows if r["kind"] == "aggregate"] == [3]
    assert {r["client"] for r in rows if r["kind"] == "client_train"} == {1, 2, 3}
    assert all(len(rec) == 0 for r in grid.replies for rec in r.content.array_records.values())
    for node in (1, 2, 3):  # not even a slice of a silo's adapter or update travels
        for k, v in trained(node).items():
            for chunk in (v.tobytes()[:32], (v - received[k]).astype(np.float32).tobytes()[:32]):
                assert not any(chunk in payload for payload in grid.sent)


def test_a_silo_dropping_mid_protocol_leaves_the_mean_of_the_others():
    grid, rows, result = secagg_round(fake_silos(drop=3))
    stage2 = [r for r in grid.requests if "arrays" in r.content]
    received = from_record(stage2[0].content["arrays"])
    expected = {k: received[k] + np.mean([trained(n)[k] - received[k] for n in (1, 2)], axis=0) for k in GLOBAL}
    mean = from_record(result.arrays)
    for k in GLOBAL:
        np.testing.assert_allclose(mean[k], expected[k], atol=1e-6)
    (summary,) = [r for r in rows if r["kind"] == "aggregate"]
    assert summary["accepted"] == 2 and summary["failed"] == 1


def test_a_malformed_masked_vector_costs_the_round_not_the_run():
    _, rows, result = secagg_round(fake_silos(corrupt=2))
    assert len(result.arrays) == 0  # no aggregate: the global adapter stays as it was
    (summary,) = [r for r in rows if r["kind"] == "aggregate"]
    assert summary["accepted"] == 0 and "rejected_mean" in summary


"""How the server's aggregation grows with the number of silos: memory linear in the replies it holds, and the
checks still catching a poisoned minority among many. (Round time and server RSS of whole simulated rounds at
3, 10 and 30 silos: benchmarks/reliability.py.)"""

import tracemalloc

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict

from cotune.config.federation import FederationConfig
from cotune.federation.records import from_record, to_record
from cotune.federation.strategies.adapter_fedavg import AdapterFedAvg

GLOBAL = {f"layers.{i}.lora_{ab}.weight": np.zeros((8, 512) if ab == "A" else (512, 8), np.float32)
          for i in range(4) for ab in "AB"}
ADAPTER_BYTES = sum(v.nbytes for v in GLOBAL.values())

pytestmark = pytest.mark.usefixtures("flower_task_identity")


def replies(n: int, poisoned: int = 0, wire: str = "int8") -> list[Message]:
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        scale = 100.0 if i < poisoned else 0.01
        state = {k: (v + rng.normal(0, scale, v.shape)).astype(np.float32) for k, v in GLOBAL.items()}
        request = Message(content=RecordDict({}), dst_node_id=i + 1, message_type="train")
        metrics = MetricRecord({"num-examples": 10, "partition-id": i})
        out.append(Message(RecordDict({"arrays": to_record(state, wire), "metrics": metrics}), reply_to=request))
    return out


def aggregation_peak_bytes(n: int) -> int:
    strategy = AdapterFedAvg(wire="int8", min_available_nodes=1)
    strategy.current = {k: v.copy() for k, v in GLOBAL.items()}
    batch = replies(n)
    tracemalloc.start()
    arrays, _ = strategy.aggregate_train(1, batch)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert arrays is not None
    return peak


def test_server_memory_per_silo_stays_within_a_few_adapters():
    small, large = aggregation_peak_bytes(3), aggregation_peak_bytes(30)
    per_silo = (large - small) / 27
    assert per_silo < 2 * ADAPTER_BYTES  # the decoded fp32 copy of each reply; temporaries are per reply


def test_poisoned_minority_among_thirty_silos_is_rejected():
    rows = []
    strategy = AdapterFedAvg(wire="int8", log_row=rows.append, min_available_nodes=1, federation=FederationConfig())
    strategy.current = {k: v.copy() for k, v in GLOBAL.items()}
    arrays, _ = strategy.aggregate_train(1, replies(30, poisoned=5))
    rejected = sorted(r["client"] for r in rows if r["kind"] == "client_train" and "rejected" in r)
    assert rejected == [0, 1, 2, 3, 4]
    state = from_record(arrays)
    assert max(float(np.abs(v).max()) for v in state.values()) < 0.1  # the honest silos' noise level

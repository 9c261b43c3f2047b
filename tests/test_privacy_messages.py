"""Whole rounds through the real ClientApp (tiny model, two silos in this process, every message serialized
both ways as on the wire): plain, DP and SecAgg+ modes. Checks what the server gets — clipped updates under DP,
no adapter at all under SecAgg+ but the right mean — and that no reply carries private text or its token ids."""

import numpy as np
import pytest
from flwr.app import Message, RecordDict
from flwr.common.serde import message_to_proto
from support.leaks import private_data_in
from support.local_grid import LocalGrid
from transformers import AutoTokenizer

from cotune.config import load_config
from cotune.data import build_splits
from cotune.lm.adapted_lm import AdaptedLM
from cotune.federation.client_app import LOCAL_ADAPTER, app
from cotune.config.federation import FederationConfig
from cotune.federation.queries import ask_scores
from cotune.federation.records import config_record, from_record, samples_record, to_record
from cotune.federation.strategies.factory import build_strategy
from cotune.federation.validation import update_norm
from cotune.models import resolve_model

pytestmark = pytest.mark.usefixtures("flower_task_identity")
NODES = {11: 0, 22: 1}  # node id -> partition id


SMOKE = ["train.steps=1", "clients.num_clients=2", "data.max_client_examples=16", "data.client_val_fraction=0.005"]


@pytest.fixture(scope="module")
def cfg():
    return load_config("configs/smoke.toml", SMOKE)


@pytest.fixture(scope="module")
def initial(cfg):
    return AdaptedLM.load(cfg).state()


def one_round(cfg, initial, federation: FederationConfig) -> tuple[LocalGrid, list[dict], object]:
    rows, grid = [], LocalGrid(app, NODES)
    strategy = build_strategy(
        federation, cfg.quantization.wire, num_sampled=2, log_row=rows.append, min_available_nodes=2, min_train_nodes=2,
        min_evaluate_nodes=2,
    )
    result = strategy.start(
        grid, to_record(initial, "fp32"), num_rounds=1, timeout=120,
        train_config=config_record(cfg), evaluate_config=config_record(cfg),
    )
    scores = ask_scores(grid, cfg, ["A public, synthetic review.", "Another one."], [0, 1])  # CrossLM's query
    assert sorted(scores) == sorted(NODES.values())
    return grid, rows, result


@pytest.fixture(scope="module")
def rounds(cfg, initial, flower_task_identity):
    fp32 = load_config("configs/smoke.toml", [*SMOKE, "quantization.wire='fp32'"])  # DP clips plain tensors
    return {
        "plain": one_round(cfg, initial, FederationConfig()),
        "dp": one_round(fp32, initial, FederationConfig(dp_noise_multiplier=1.0, dp_clipping_norm=0.01)),
        "secagg": one_round(cfg, initial, FederationConfig(secagg=True)),
    }


def test_plain_round_averages_both_silos(rounds):
    _, rows, result = rounds["plain"]
    assert [r["accepted"] for r in rows if r["kind"] == "aggregate"] == [2]
    assert len(result.arrays) > 0


def test_dp_round_gets_only_clipped_updates_and_reports_epsilon(rounds):
    grid, rows, result = rounds["dp"]
    train = [(q, r) for q, r in zip(grid.requests, grid.replies) if q.metadata.message_type == "train"]
    assert len(train) == 2
    for request, reply in train:
        norm = update_norm(from_record(reply.content["arrays"]), from_record(request.content["arrays"]))
        assert norm <= 0.01 * (1 + 1e-5)
    (dp,) = [r for r in rows if r["kind"] == "dp"]
    assert dp["noise_multiplier"] == 1.0 and 0 < dp["epsilon"] < 10 and dp["releases"] == 1
    assert len(result.arrays) > 0


def test_secagg_round_reveals_no_adapter_but_yields_the_mean(rounds):
    grid, rows, result = rounds["secagg"]
    train_replies = [r for r in grid.replies if r.metadata.message_type == "train"]
    assert len(train_replies) == 8  # four SecAgg+ stages, two silos
    assert all(len(record) == 0 for r in train_replies for record in r.content.array_records.values())
    assert {r["node"] for r in rows if r["kind"] == "client_train"} == set(NODES)
    local = [from_record(grid.contexts[node].state[LOCAL_ADAPTER]) for node in NODES]
    mean = from_record(result.arrays)
    for key in mean:  # equal weights; SecAgg+'s grid is 2 / 2^22 wide
        np.testing.assert_allclose(mean[key], (local[0][key] + local[1][key]) / 2, atol=1e-6)
    assert [r["accepted"] for r in rows if r["kind"] == "aggregate"] == [2]


@pytest.fixture(scope="module")
def private(cfg):
    splits = build_splits(cfg.data, cfg.clients.num_clients)
    parts = [split for p in NODES.values() for split in (splits.clients[p].train, splits.clients[p].val)]
    texts = [t for part in parts for t in part["text"]]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.models.slm))
    return texts, [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_the_audit_finds_private_data_when_it_is_there(private):
    texts, ids = private
    leaky = RecordDict({"config": samples_record([texts[3]], [0]), "ids": samples_record([], [])})
    leaky["ids"]["token-ids"] = ids[5][:10]
    payload = message_to_proto(Message(leaky, dst_node_id=1, message_type="train")).SerializeToString()
    found = private_data_in(payload, texts, ids)
    assert any(f.startswith("text") for f in found) and any(f.startswith("token ids") for f in found)


@pytest.mark.parametrize("mode", ["plain", "dp", "secagg"])
def test_no_reply_carries_private_text_or_token_ids(rounds, private, mode):
    grid, _, _ = rounds[mode]
    assert len(grid.sent) >= 6  # train, evaluate and query replies of both silos at least
    texts, ids = private
    leaks = [found for payload in grid.sent for found in private_data_in(payload, texts, ids)]
    assert leaks == []

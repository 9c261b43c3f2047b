"""A hostile or failing minority of silos cannot take over the mean, vouch for its own outliers, block a round or
vanish without a trace (issue 9). Each silo speaks the real reply format except for its one defect."""

import numpy as np
import pytest
from support.silos import GLOBAL, ScriptedGrid, distance, honest, mean, scaled, train_content, train_reply

from cotune.config.federation import FederationConfig
from cotune.federation.records import from_record, to_record
from cotune.federation.strategies.adapter_fedavg import AdapterFedAvg
from cotune.federation.strategies.factory import build_strategy

pytestmark = pytest.mark.usefixtures("flower_task_identity")


def strategy(rows: list, **federation) -> AdapterFedAvg:
    config = FederationConfig(**federation)
    s = AdapterFedAvg(wire="fp32", log_row=rows.append, min_available_nodes=1, federation=config)
    s.current = {k: v.copy() for k, v in GLOBAL.items()}
    return s


def _rows(rows: list, kind: str) -> list[dict]:
    return [r for r in rows if r["kind"] == kind]


def share_of(global_after: dict, direction: dict) -> float:
    """How much of `direction` (a silo's step away from GLOBAL) the new global adapter took."""
    step = {k: global_after[k].astype(np.float64) - GLOBAL[k] for k in GLOBAL}
    d = {k: direction[k].astype(np.float64) - GLOBAL[k] for k in GLOBAL}
    return float(sum(np.sum(step[k] * d[k]) for k in GLOBAL) / sum(np.sum(d[k] ** 2) for k in GLOBAL))


# ---------------------------------------------------------------- 1. weights a silo cannot inflate


def _weight_abuse(rows: list, **federation) -> float:
    """Two honest silos send the global back unchanged, one claims 10^12 examples for its own step."""
    own = honest(7)
    replies = [train_reply(GLOBAL, 1), train_reply(GLOBAL, 2), train_reply(own, 3, examples=1e12)]
    arrays, _ = strategy(rows, **federation).aggregate_train(1, replies)
    return share_of(from_record(arrays), own)


def test_a_claimed_example_count_cannot_take_over_the_mean():
    rows = []
    share = _weight_abuse(rows)
    assert share <= 0.5 + 1e-6  # 2 x the others' median claim: at most as much as the two honest silos together
    (abuser,) = [r for r in _rows(rows, "client_train") if r["node"] == 3]
    assert "claimed 1e+12 examples" in abuser["examples_capped"] and abuser["weight_share"] == pytest.approx(0.5)
    assert all("examples_capped" not in r for r in _rows(rows, "client_train") if r["node"] != 3)


def test_registered_counts_bound_claims_exactly():
    rows = []
    assert _weight_abuse(rows, registered_examples=[128, 128, 128]) == pytest.approx(1 / 3, abs=1e-6)
    (abuser,) = [r for r in _rows(rows, "client_train") if r["node"] == 3]
    assert "registered for partition 2" in abuser["examples_capped"]


def test_trusting_claims_is_what_let_one_silo_take_over():
    assert _weight_abuse([], max_examples_multiple=0) == pytest.approx(1.0, abs=1e-6)  # the finding, as it was


def test_honest_counts_within_the_cap_weigh_as_claimed():
    rows = []
    replies = [train_reply(honest(i), i + 1, examples=100 + 50 * i) for i in range(3)]  # 100, 150, 200
    strategy(rows).aggregate_train(1, replies)
    shares = [r["weight_share"] for r in _rows(rows, "client_train")]
    assert shares == pytest.approx([100 / 450, 150 / 450, 200 / 450], abs=1e-6)


# ---------------------------------------------------------------- 2. norm checks a minority cannot move


def test_two_colluding_outliers_of_five_are_rejected_and_the_mean_stays_honest():
    goods = [honest(i) for i in range(3)]
    bads = [scaled(honest(10 + i), 1e6) for i in range(2)]
    replies = [train_reply(s, i + 1) for i, s in enumerate([*goods, *bads])]
    rows = []
    arrays, _ = strategy(rows).aggregate_train(1, replies)
    rejected = sorted(r["node"] for r in _rows(rows, "client_train") if "rejected" in r)
    assert rejected == [4, 5]
    assert distance(from_record(arrays), mean(goods)) <= distance(goods[0], GLOBAL)  # within one honest step


def test_colluders_who_are_half_of_a_round_cannot_outvote_earlier_rounds():
    """2 of 3 at x10^6 vouch for each other in the round's medians; the accepted norms of round 1 do not move."""
    rows = []
    s = strategy(rows)
    s.aggregate_train(1, [train_reply(honest(i), i + 1) for i in range(3)])
    honest_two = honest(20)
    replies = [train_reply(honest_two, 1), *(train_reply(scaled(honest(21 + i), 1e6), i + 2) for i in range(2))]
    arrays, _ = s.aggregate_train(2, replies)
    rejected = [r for r in _rows(rows, "client_train") if r["round"] == 2 and "rejected" in r]
    assert sorted(r["node"] for r in rejected) == [2, 3]
    assert all("trusted norm of earlier rounds" in r["rejected"] for r in rejected)
    # One honest reply of three is below the quorum: the round is skipped, the global adapter untouched.
    assert arrays is None and "too_few" in _rows(rows, "aggregate")[-1]
    s.federation.quorum = 0.0  # an operator who accepts any one valid update gets the honest one alone
    arrays, _ = s.aggregate_train(2, replies)
    assert distance(from_record(arrays), honest_two) < 1e-6


def test_without_history_colluders_who_are_half_of_a_round_pass():
    """What `norm_history_rounds` buys: with it off, the 2-of-3 collusion of the test above is accepted."""
    rows = []
    s = strategy(rows, norm_history_rounds=0)
    s.aggregate_train(1, [train_reply(honest(i), i + 1) for i in range(3)])
    replies = [train_reply(honest(20), 1), *(train_reply(scaled(honest(21 + i), 1e6), i + 2) for i in range(2))]
    s.aggregate_train(2, replies)
    assert not [r for r in _rows(rows, "client_train") if "rejected" in r] and not s.norm_history


def test_outliers_can_be_clipped_to_their_bound_instead():
    goods = [honest(i) for i in range(3)]
    replies = [train_reply(s, i + 1) for i, s in enumerate([*goods, *(scaled(honest(10 + i), 1e6) for i in range(2))])]
    rows = []
    arrays, _ = strategy(rows, norm_action="clip").aggregate_train(1, replies)
    clipped = [r for r in _rows(rows, "client_train") if "norm_clipped" in r]
    assert sorted(r["node"] for r in clipped) == [4, 5]
    assert not [r for r in _rows(rows, "client_train") if "rejected" in r]
    step = distance(goods[0], GLOBAL)
    # Each clipped update is at most 10 x the honest median from GLOBAL; five weigh equally.
    assert distance(from_record(arrays), mean(goods)) <= (2 * 10 * 1.2 * step + 2 * step) / 5


@pytest.mark.parametrize(("aggregation", "trim", "tolerated"), [("median", 0.0, True), ("trimmed_mean", 0.4, True),
                                                               ("trimmed_mean", 0.2, False)])
def test_robust_combiners_tolerate_what_they_claim(aggregation, trim, tolerated):
    """With the norm check off, 2 hostile of 5 pushing the same way: the median tolerates any minority (< 1/2),
    a trimmed mean only as many per side as it trims (trim_fraction x n): 0.4 cuts 2, 0.2 cuts 1."""
    goods = [honest(i) for i in range(3)]
    hostile = [scaled(honest(10), 50.0 + i) for i in range(2)]
    federation = FederationConfig(aggregation=aggregation, trim_fraction=trim, max_update_norm_multiple=0)
    s = build_strategy(federation, "fp32", num_sampled=5, min_available_nodes=1)
    s.current = {k: v.copy() for k, v in GLOBAL.items()}
    state = from_record(s.aggregate_train(1, [train_reply(u, i + 1) for i, u in enumerate([*goods, *hostile])])[0])
    stacked = {k: np.stack([g[k] for g in goods]) for k in GLOBAL}
    within = all(np.all(state[k] >= stacked[k].min(0) - 1e-7) and np.all(state[k] <= stacked[k].max(0) + 1e-7)
                 for k in GLOBAL)
    assert within == tolerated


# ---------------------------------------------------------------- 3. quorum, 4. every silo accounted for


def _play(answer, rounds: int = 1, n: int = 3, **kwargs) -> tuple[list, object]:
    """Through Flower's own round loop, with the arguments cotune's server loop passes by default
    (min_train_nodes and min_available_nodes: every silo)."""
    rows = []
    s = AdapterFedAvg(wire="int8", log_row=rows.append, min_train_nodes=n, min_available_nodes=n, **kwargs)
    result = s.start(ScriptedGrid(n, answer), to_record(GLOBAL, "fp32"), num_rounds=rounds)
    return rows, result


def _nan(received):
    state = honest(5, base=received)
    state["layer.lora_A.weight"][0, 0] = np.nan
    return state


def test_one_nan_silo_of_three_does_not_block_the_round():
    rows, result = _play(lambda node, rnd, got: train_content(_nan(got) if node == 3 else honest(node, base=got)))
    assert len(result.arrays) > 0
    (summary,) = _rows(rows, "aggregate")
    assert (summary["accepted"], summary["rejected"], summary["needed"], summary["sampled"]) == (2, 1, 2, 3)


def test_below_the_quorum_the_round_is_skipped_with_a_reason():
    rows, result = _play(lambda node, rnd, got: train_content(_nan(got) if node > 1 else honest(node, base=got)))
    assert len(result.arrays) == 0
    (summary,) = _rows(rows, "aggregate")
    assert summary["accepted"] == 0 and summary["too_few"] == "1 acceptable updates, 2 needed"


def test_min_clients_is_a_floor_on_top_of_the_quorum():
    answer = lambda node, rnd, got: train_content(_nan(got) if node == 3 else honest(node, base=got))  # noqa: E731
    rows, result = _play(answer, min_clients=3)
    assert len(result.arrays) == 0 and _rows(rows, "aggregate")[0]["too_few"] == "2 acceptable updates, 3 needed"


def test_a_silo_that_never_answers_is_logged_as_missing():
    def answer(node, rnd, got):
        if node == 3:
            return None  # timed out: Flower hands the strategy nothing for it
        return train_content(_nan(got) if node == 2 and rnd == 2 else honest(node + rnd, base=got), partition=node - 1)

    rows, result = _play(answer, rounds=2)
    assert len(result.arrays) > 0
    first, second = _rows(rows, "aggregate")
    assert (first["sampled"], first["accepted"], first["rejected"], first["missing"]) == (3, 2, 0, 1)
    assert (second["sampled"], second["valid"], second["rejected"], second["missing"]) == (3, 1, 1, 1)
    assert [(e["node"], e["status"]) for e in first["silos"]] == [(3, "missing"), (1, "accepted"), (2, "accepted")]
    assert "non-finite" in next(e["reason"] for e in second["silos"] if e["node"] == 2)
    missing = [r for r in _rows(rows, "client_train") if r.get("status") == "missing"]
    assert [(r["round"], r["node"]) for r in missing] == [(1, 3), (2, 3)]
    assert all("no reply" in r["rejected"] for r in missing)  # the report counts it as not combined


def test_a_dead_silo_is_one_failed_entry_under_its_own_node():
    """The SuperLink answers for a silo that died (NODE_UNAVAILABLE from its own node id): the silo is failed, once,
    under the node the instruction went to, not also missing."""
    from flwr.app import Error
    from flwr.common.constant import ErrorCode

    def answer(node, rnd, got):
        if node == 3:
            return Error(code=ErrorCode.NODE_UNAVAILABLE, reason="Node Unavailable")
        return train_content(honest(node, base=got), partition=node - 1)

    rows, result = _play(answer, min_clients=2)
    assert len(result.arrays) > 0
    (dead,) = [r for r in _rows(rows, "client_train") if "rejected" in r]
    assert dead["node"] == 3 and "Node Unavailable" in dead["rejected"]
    (summary,) = _rows(rows, "aggregate")
    assert (summary["accepted"], summary["failed"], summary["missing"]) == (2, 1, 0)


def test_under_dp_an_error_reply_is_failed_not_missing():
    """The DP wrapper logs error replies itself before the inner strategy aggregates: still one entry per silo."""
    from flwr.app import Error
    from flwr.common.constant import ErrorCode

    def answer(node, rnd, got):
        if node == 3:
            return Error(code=ErrorCode.NODE_UNAVAILABLE, reason="Node Unavailable")
        return train_content(honest(node, base=got), partition=node - 1)

    rows = []
    federation = FederationConfig(dp_noise_multiplier=0.1, dp_clipping_norm=1.0)
    s = build_strategy(federation, "fp32", num_sampled=3, log_row=rows.append, min_train_nodes=3, min_available_nodes=3)
    result = s.start(ScriptedGrid(3, answer), to_record(GLOBAL, "fp32"), num_rounds=1)
    assert len(result.arrays) > 0
    (summary,) = _rows(rows, "aggregate")
    assert (summary["accepted"], summary["failed"], summary["missing"], summary["sampled"]) == (2, 1, 0, 3)
    assert [e["status"] for e in summary["silos"]] == ["rejected", "accepted", "accepted"]  # node 3: client -1

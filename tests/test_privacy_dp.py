"""Differential privacy: the RDP accountant, the client clipping mod, and Flower's DP wrapper around our strategy."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from cotune.config.errors import ConfigError
from cotune.config.loader import from_dict
from cotune.config.federation import FederationConfig
from cotune.federation.privacy import GaussianRDPAccountant, dp_clipping_mod
from cotune.federation.records import from_record, to_record
from cotune.federation.strategies.factory import build_strategy
from cotune.federation.validation import update_norm

KEY = "layer.lora_B.weight"
GLOBAL = {KEY: np.zeros((64, 256), np.float32)}

pytestmark = pytest.mark.usefixtures("flower_task_identity")


# epsilon at delta = 1e-5 from Google's dp-accounting 0.6.0 (RdpAccountant, GaussianDpEvent), computed once
# in a separate environment; our denser order grid may only be tighter, never looser.
@pytest.mark.parametrize(
    "multipliers, reference",
    [([1.0], 4.728507), ([1.0] * 10, 19.053598), ([0.5], 10.725510), ([2.0, 1.0, 0.7], 9.526521)],
)
def test_accountant_matches_dp_accounting(multipliers, reference):
    epsilon = GaussianRDPAccountant(multipliers).epsilon(1e-5)
    assert reference * 0.999 <= epsilon <= reference + 1e-9


def test_accountant_composes_and_rejects_no_noise():
    a = GaussianRDPAccountant()
    assert a.epsilon(1e-5) == 0.0
    a.compose(1.0)
    one = a.epsilon(1e-5)
    a.compose(1.0)
    assert a.epsilon(1e-5) > one and a.epsilon(1e-3) < a.epsilon(1e-5)
    with pytest.raises(ValueError):
        a.compose(0.0)


def _train_message(arrays: ArrayRecord, config: dict) -> Message:
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(config)})
    return Message(content=content, dst_node_id=3, message_type="train")


def _trained(msg: Message, context: Context, shift: float = 2.0) -> Message:
    state = {k: v + shift for k, v in from_record(msg.content["arrays"]).items()}
    metrics = MetricRecord({"num-examples": 10, "partition-id": 0})
    return Message(RecordDict({"arrays": to_record(state, "fp32"), "metrics": metrics}), reply_to=msg)


def test_clipping_mod_clips_only_when_asked():
    context = Context(run_id=1, node_id=3, node_config={}, state=RecordDict(), run_config={})
    sent = to_record(GLOBAL, "fp32")
    plain = dp_clipping_mod(_train_message(sent, {"server-round": 1}), context, _trained)
    assert update_norm(from_record(plain.content["arrays"]), GLOBAL) == pytest.approx(2.0 * 128, rel=1e-6)
    clipped = dp_clipping_mod(_train_message(sent, {KEY_CLIPPING_NORM: 0.5}), context, _trained)
    assert update_norm(from_record(clipped.content["arrays"]), GLOBAL) == pytest.approx(0.5, rel=1e-5)


class ReplayGrid:
    def __init__(self, answer, nodes=4):
        self.answer, self.nodes, self.configs = answer, nodes, []

    def get_node_ids(self):
        return list(range(1, self.nodes + 1))

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.configs += [dict(m.content["config"]) for m in messages if m.metadata.message_type == "train"]
        return [Message(self.answer(i, m), reply_to=m) for i, m in enumerate(messages)]


def _clipped_update(i: int, clip: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    delta = rng.normal(size=GLOBAL[KEY].shape).astype(np.float32)
    return {KEY: GLOBAL[KEY] + delta * (clip / np.linalg.norm(delta))}


def _run_dp(answer, noise=1.0, clip=0.5, prior=(), server_step=None):
    rows = []
    strategy = build_strategy(
        FederationConfig(dp_noise_multiplier=noise, dp_clipping_norm=clip), "fp32", num_sampled=4,
        server_step=server_step, dp_history=prior, log_row=rows.append, min_available_nodes=4,
    )
    grid = ReplayGrid(answer)
    result = strategy.start(grid, to_record(GLOBAL, "fp32"), num_rounds=1)
    return rows, result, grid


def _answer(clip, bad_node=None):
    def answer(i, message):
        if message.metadata.message_type != "train":
            return RecordDict({"metrics": MetricRecord({"num-examples": 5, "val-accuracy": 0.5})})
        update = _clipped_update(i, clip)
        examples = 0 if i == bad_node else 10 * (i + 1)  # unequal counts: DP must average them equally
        return RecordDict({"arrays": to_record(update, "fp32"), "metrics": MetricRecord({"num-examples": examples})})

    return answer


def test_dp_wrapper_sends_the_clipping_norm_adds_calibrated_noise_and_accounts():
    rows, result, grid = _run_dp(_answer(0.5))
    assert all(c[KEY_CLIPPING_NORM] == 0.5 for c in grid.configs)
    clean = np.mean([_clipped_update(i, 0.5)[KEY] for i in range(4)], axis=0)  # equal weights under DP
    noise = from_record(result.arrays)[KEY] - clean
    assert abs(noise.mean()) < 0.01 and noise.std() == pytest.approx(1.0 * 0.5 / 4, rel=0.05)
    (dp,) = [r for r in rows if r["kind"] == "dp"]
    assert dp["noise_multiplier"] == 1.0 and dp["epsilon"] == pytest.approx(GaussianRDPAccountant([1.0]).epsilon(1e-5))


def test_a_rejected_reply_weakens_the_release_and_the_accountant_says_so():
    rows, _, _ = _run_dp(_answer(0.5, bad_node=2), prior=[1.0])
    (dp,) = [r for r in rows if r["kind"] == "dp"]
    assert dp["noise_multiplier"] == pytest.approx(0.75)  # 3 of 4 sampled silos averaged
    assert dp["releases"] == 2 and dp["epsilon"] == pytest.approx(GaussianRDPAccountant([1.0, 0.75]).epsilon(1e-5))


def test_the_server_step_runs_on_the_noised_mean():
    seen = []

    def step(server_round, state):
        seen.append(state[KEY].copy())
        return {KEY: state[KEY] + 1.0}

    _, result, _ = _run_dp(_answer(0.5), server_step=step)
    clean = np.mean([_clipped_update(i, 0.5)[KEY] for i in range(4)], axis=0)
    (before_step,) = seen
    assert np.std(before_step - clean) > 0.1  # the step saw noise of std 0.125 already added
    np.testing.assert_allclose(from_record(result.arrays)[KEY], before_step + 1.0, rtol=1e-6)


def test_dp_refuses_int8_on_the_wire_and_incompatible_options():
    with pytest.raises(ConfigError, match="quantization.wire"):
        build_strategy(FederationConfig(dp_noise_multiplier=1.0), "int8", num_sampled=3)
    for bad in ({"aggregation": "median"}, {"secagg": True}):
        with pytest.raises(ConfigError, match="aggregation|secagg"):
            from_dict(FederationConfig, {"dp_noise_multiplier": 1.0, **bad})
    with pytest.raises(ConfigError, match="clip_norm"):
        from_dict(FederationConfig, {"secagg": True, "clip_norm": 1.0})
    with pytest.raises(ConfigError, match="max_update_norm_multiple"):
        from_dict(FederationConfig, {"max_update_norm_multiple": 0.5})


def test_a_silo_that_died_costs_its_share_of_the_release_not_the_round():
    answer = _answer(0.5)

    def dying(i, message):
        if i == 3 and message.metadata.message_type == "train":
            return Error(code=ErrorCode.NODE_UNAVAILABLE, reason="Node Unavailable")
        return answer(i, message)

    rows, result, _ = _run_dp(dying)
    assert len(result.arrays) > 0
    (dp,) = [r for r in rows if r["kind"] == "dp"]
    assert dp["noise_multiplier"] == pytest.approx(0.75) and dp["failed_replies"] == 1
    (dead,) = [r for r in rows if r["kind"] == "client_train" and "rejected" in r]
    assert "Node Unavailable" in dead["rejected"]

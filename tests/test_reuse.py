"""Work done once per job: a silo update read back from the reuse folder is the update training computes."""

import dataclasses

import numpy as np

from cotune.lm.adapted_lm import AdaptedLM
from cotune.edge_client.silo import Silo
from cotune.memo import Memo, fingerprint


def _with_reuse(cfg, folder):
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, reuse_dir=str(folder)))


def test_a_reused_update_equals_a_recomputed_one(tmp_path, smoke_cfg, smoke_splits):
    cfg = _with_reuse(smoke_cfg, tmp_path)
    slm = AdaptedLM.load(cfg)
    initial = {k: v.copy() for k, v in slm.state().items()}
    silo = Silo(cfg, 0, slm, smoke_splits)
    first = silo.train_round(initial, 1)
    computed = fingerprint(slm.state())
    again = silo.train_round(initial, 1)
    assert not first.reused and again.reused and again.mean_loss == first.mean_loss
    assert fingerprint(slm.state()) == computed
    # recomputed from scratch, without the reuse folder: the same bytes
    fresh = Silo(smoke_cfg, 0, AdaptedLM.load(smoke_cfg), smoke_splits)
    assert not fresh.train_round(initial, 1).reused
    assert fingerprint(fresh.slm.state()) == computed


def test_another_start_or_round_is_not_mistaken_for_a_reusable_one(tmp_path, smoke_cfg, smoke_splits):
    cfg = _with_reuse(smoke_cfg, tmp_path)
    slm = AdaptedLM.load(cfg)
    initial = {k: v.copy() for k, v in slm.state().items()}
    silo = Silo(cfg, 1, slm, smoke_splits)
    silo.train_round(initial, 1)
    moved = {k: v + (1e-3 if "lora_A" in k else 0) for k, v in initial.items()}
    assert not silo.train_round(moved, 1).reused
    assert not silo.train_round(initial, 2).reused
    assert not Silo(cfg, 2, slm, smoke_splits).train_round(initial, 1).reused


def test_memo_values_survive_and_arrays_are_exact(tmp_path):
    memo = Memo(tmp_path)
    calls = []
    assert memo.value("k", lambda: calls.append(1) or {"a": 1.5}) == ({"a": 1.5}, False)
    assert Memo(tmp_path).value("k", lambda: calls.append(1) or {"a": 0}) == ({"a": 1.5}, True)
    assert calls == [1]
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    memo.put_arrays("u", arrays, {"steps": 2})
    got, facts = memo.arrays("u")
    assert np.array_equal(got["w"], arrays["w"]) and facts == {"steps": 2}
    assert memo.arrays("missing") is None
    assert fingerprint({"w": arrays["w"]}) != fingerprint({"w": arrays["w"] + 1})

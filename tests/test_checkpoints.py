"""Checkpoints: only rounds moved into place count; a folder left half-written by a kill does not."""

from cotune.checkpoints import Checkpoints


def test_latest_ignores_a_round_that_was_never_moved_into_place(tmp_path):
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    checkpoints.save(1, lambda folder: (folder / "adapter.bin").write_bytes(b"round 1"))
    stale = tmp_path / "checkpoints" / "round_002.tmp"  # killed between writing round.json and the rename
    stale.mkdir()
    (stale / "round.json").write_text('{"round": 2}')
    assert checkpoints.latest() == (1, tmp_path / "checkpoints" / "round_001")

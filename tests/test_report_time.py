"""The report's "where the time went" table: phases summed, overlapped work not counted, the rest is 'other'."""

from cotune.run.report import time_table


def test_phases_are_summed_largest_first_and_the_remainder_is_other():
    rows = [
        {"phase": "silo_training", "seconds": 30.0},
        {"phase": "silo_training", "seconds": 0.0, "reused": True},
        {"phase": "central_eval_slm", "seconds": 10.0},
        {"phase": "engine_start", "seconds": 40.0, "overlapped": True},
        {"phase": "federation", "seconds": 55.0},  # contains the phases above: not counted again
    ]
    table = time_table(rows, wall_seconds=50.0)
    assert [(e["phase"], e["seconds"], e["share"], e["count"], e["reused"]) for e in table] == [
        ("engine_start", 40.0, None, 1, 0),
        ("silo_training", 30.0, 0.6, 2, 1),
        ("central_eval_slm", 10.0, 0.2, 1, 0),
        ("other", 10.0, 0.2, 1, 0),
    ]

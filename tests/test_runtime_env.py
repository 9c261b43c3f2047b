"""Process-wide settings cotune chooses at import: they follow the host's load and never override the user."""

import os
import subprocess
import sys

from cotune.openmp import REASON_ENV, choose_wait_policy


def _omp_policy(env: dict[str, str]) -> str:
    code = "import os, cotune; print(os.environ.get('OMP_WAIT_POLICY', 'default'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_busy_cores_make_threads_sleep_and_free_cores_keep_the_bounded_spin():
    assert choose_wait_policy(None, 1.6, 2)[0] == "PASSIVE"
    assert choose_wait_policy(None, 1.2, 2)[0] is None
    assert choose_wait_policy(None, 0.3, 2)[0] is None
    assert choose_wait_policy(None, 3.9, 8)[0] is None


def test_the_users_choice_wins_and_children_inherit_the_parents_choice():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", REASON_ENV)}
    assert _omp_policy({**env, "OMP_WAIT_POLICY": "ACTIVE"}).strip() == "ACTIVE"
    inherited = {**env, REASON_ENV: "chosen by the parent"}
    assert _omp_policy(inherited).strip() == "default"  # the parent chose the default: a child does not re-decide
    assert _omp_policy({**inherited, "OMP_WAIT_POLICY": "PASSIVE"}).strip() == "PASSIVE"

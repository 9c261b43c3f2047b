"""Process-wide defaults cotune sets at import: they must not override a user's own choice."""

import os
import subprocess
import sys


def _omp_policy(env: dict[str, str]) -> str:
    code = "import os, cotune; print(os.environ['OMP_WAIT_POLICY'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_openmp_waits_passively_unless_the_user_says_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _omp_policy(env).strip() == "PASSIVE"
    assert _omp_policy({**env, "OMP_WAIT_POLICY": "ACTIVE"}).strip() == "ACTIVE"

"""The import-linter contract in pyproject.toml: dependencies flow one way, cli -> run -> ... -> core."""

import subprocess
import sys
import tomllib
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def _lint(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT_IMPORTS, "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True, text=True)


def test_the_layers_contract_is_kept_without_ignored_imports():
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert all("ignore_imports" not in c for c in contract["contracts"])
    result = _lint(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and " kept," in result.stdout


def test_the_contract_catches_an_upward_import(tmp_path):
    """The same layers upside down must break: the contract really reads cotune's imports."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    tool["contracts"][0]["layers"].reverse()
    config = tmp_path / "pyproject.toml"
    config.write_text(tomli_w.dumps({"tool": {"importlinter": tool}}))
    result = _lint(config)
    assert result.returncode != 0
    assert "cotune.run is not allowed to import cotune.federation" in result.stdout.replace("\n", " ")

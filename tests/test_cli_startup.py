"""The CLI starts without the heavy libraries and keeps theirs logs down: `--help`, `cotune config` and a mistyped
argument import no torch, Flower, vLLM or transformers; library INFO lines stay out of stderr unless `-v`."""

import ast
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "flwr", "vllm", "transformers", "onnxruntime")
TORCH_SIDE = {"torch", "flwr", "vllm", "transformers"}
# Runs the CLI, then prints which heavy top-level packages the process imported (also after a SystemExit).
RUNNER = (
    "import sys\n"
    "from cotune.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as stop:\n"
    "    code = stop.code\n"
    f"print('IMPORTED', sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    "sys.exit(code)\n"
)


def _cli(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    done = subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, timeout=120)
    imported = done.stdout.rsplit("IMPORTED ", 1)[1]
    return done, set(ast.literal_eval(imported))


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["run", "--help"], 0),
        (["server", "--help"], 0),
        (["config"], 0),
        (["config", "--set", "lora.r=0"], 2),
        (["bogus"], 2),
        (["run", "--no-such-option"], 2),
        (["silo", "--partition-id", "1"], 2),
    ],
)
def test_cli_starts_without_heavy_libraries(args, code):
    done, imported = _cli(*args)
    assert done.returncode == code, done.stderr
    assert not imported


def test_edge_help_imports_the_runtime_not_torch():
    """`edge`'s option defaults are the runtime's own, so choosing it may load onnxruntime; never torch."""
    done, imported = _cli("edge", "generate", "--help")
    assert done.returncode == 0 and "--top-p" in done.stdout
    assert not imported & TORCH_SIDE


LOGS = (
    "import logging, sys\n"
    "from cotune.cli.logs import configure_logging\n"
    "configure_logging(verbose=sys.argv[1] == '-v')\n"
    "logging.getLogger('alembic.runtime.plugins').info('setup plugin alembic.autogenerate.schemas')\n"
    "logging.getLogger('alembic.runtime.plugins').warning('library warning')\n"
    "logging.getLogger('cotune.run.job').info('run folder: runs/x')\n"
    "logging.getLogger('cotune.run.job').debug('cotune detail')\n"
    "flwr = logging.getLogger('flwr')\n"
    "flwr.setLevel(logging.DEBUG)  # as Flower does on import\n"
    "flwr.debug('flower debug')\n"
)


def test_library_info_stays_out_unless_verbose():
    quiet = subprocess.run([sys.executable, "-c", LOGS, "-"], capture_output=True, text=True, timeout=60).stderr
    assert "run folder: runs/x" in quiet and "library warning" in quiet
    assert "setup plugin" not in quiet and "cotune detail" not in quiet and "flower debug" not in quiet
    loud = subprocess.run([sys.executable, "-c", LOGS, "-v"], capture_output=True, text=True, timeout=60).stderr
    assert "setup plugin" in loud and "cotune detail" in loud
    assert "flower debug" not in loud  # Flower prints its own records (FLWR_LOG_LEVEL), ours would repeat them


def test_run_sets_flower_log_level_for_the_job(monkeypatch):
    from cotune.cli.logs import set_flower_log_level

    monkeypatch.setenv("FLWR_LOG_LEVEL", "unset below")  # so that monkeypatch restores what was there before
    monkeypatch.delenv("FLWR_LOG_LEVEL")
    set_flower_log_level(verbose=False)
    assert os.environ["FLWR_LOG_LEVEL"] == "WARNING"
    monkeypatch.setenv("FLWR_LOG_LEVEL", "INFO")
    set_flower_log_level(verbose=True)
    assert os.environ["FLWR_LOG_LEVEL"] == "INFO"  # the user's own setting wins


def test_cli_defaults_are_the_libraries():
    """Each option's default is the one its library uses when called without it."""
    import inspect

    from cotune.cli import build_parser
    from cotune.edge_runtime import EdgeClassifier, EdgeModel, Sampling
    from cotune.federation.deployment.commands import DEFAULT_CONNECTION, SuperLinkOptions, SuperNodeOptions

    def default(func: object, name: str) -> object:
        return inspect.signature(func).parameters[name].default

    parser = build_parser()
    server = parser.parse_args(["server", "--insecure"])
    assert (server.host, server.port) == (SuperLinkOptions().host, SuperLinkOptions().port)
    silo = parser.parse_args(["silo", "--superlink", "x:1", "--partition-id", "0"])
    assert silo.runtime_port == SuperNodeOptions("x:1", 0).runtime_port
    assert parser.parse_args(["submit"]).connection == DEFAULT_CONNECTION
    gen = parser.parse_args(["edge", "generate", "--model", "m", "--prompt", "p"])
    assert Sampling(gen.sample, gen.temperature, gen.top_p, gen.top_k, gen.seed) == Sampling()
    assert (gen.backend, gen.threads) == (default(EdgeModel, "backend"), default(EdgeModel, "threads"))
    assert gen.max_new_tokens == default(EdgeModel.generate, "max_new_tokens")
    cls = parser.parse_args(["edge", "classify", "--model", "m", "--text", "t"])
    assert (cls.batch_size, cls.threads) == (default(EdgeClassifier, "batch_size"), default(EdgeClassifier, "threads"))

"""ServerConfig validation, backend choice, and the vLLM command line and environment built from it."""

import dataclasses
import os
import re
from pathlib import Path

import pytest

from cotune.config import ConfigError, load_config
from cotune.config.server import ServerConfig
from cotune.server_vllm.engine import choose_backend
from cotune.server_vllm.vllm_cpu import LAUNCHER
from cotune.server_vllm.vllm_server import cpu_list, find_vllm_python, server_command, server_env


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("server.max_lora_rank=12", "one of [1, 8, 16"),
        ("server.cpu_threads_bind='0-'", "CPU list"),
        ("server.vllm_url='localhost:8000'", "http(s):// URL"),
        ("server.max_model_len=8", "integer >= 16"),
        ("server.dtype='int8'", "one of ['bfloat16'"),
        ("server.hf_batch_size=0", "integer >= 1"),
    ],
)
def test_bad_values_name_their_key(override, expected):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"'{re.escape(key)}'.*{re.escape(expected)}"):
        load_config(None, [override])


def test_without_chunked_prefill_a_step_must_hold_a_whole_prompt():
    with pytest.raises(ConfigError, match="max_num_batched_tokens.*without chunked prefill"):
        load_config(None, ["server.enable_chunked_prefill=false", "server.max_num_batched_tokens=512"])
    load_config(None, ["server.enable_chunked_prefill=false", "server.max_num_batched_tokens=2048"])


def test_auto_backend_says_why(tmp_path):
    assert choose_backend(ServerConfig(backend="hf")) == ("hf", "server.backend = hf")
    backend, reason = choose_backend(ServerConfig(vllm_url="http://127.0.0.1:9"))
    assert backend == "vllm" and "vllm_url" in reason
    backend, reason = choose_backend(ServerConfig(vllm_python=str(tmp_path / "none" / "python")))
    assert backend == "hf" and "no vLLM environment" in reason
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    backend, reason = choose_backend(ServerConfig(vllm_python=str(python)))
    assert backend == "vllm" and str(python) in reason


def test_relative_vllm_python_is_looked_up_from_the_cwd_without_resolving_links(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_vllm_python("venv/bin/python") is None
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    os.symlink("/bin/true", tmp_path / "venv" / "bin" / "python")
    assert find_vllm_python("venv/bin/python") == tmp_path / "venv" / "bin" / "python"


def test_cpu_list_compresses_ranges():
    assert cpu_list({0, 1}) == "0-1"
    assert cpu_list({0, 1, 2, 3, 6, 8, 9}) == "0-3,6,8-9"
    assert cpu_list({5}) == "5"


def test_command_and_environment_carry_the_tuning():
    cfg = ServerConfig(dtype="float32", enforce_eager=True, enable_prefix_caching=False, max_num_seqs=64, seed=7)
    command = server_command(Path("/venv/bin/python"), Path("/m"), 1234, cfg)
    joined = " ".join(command)
    assert command[:2] == ["/venv/bin/python", str(LAUNCHER)]  # dense CPU LoRA ops installed in every vLLM process
    stock = server_command(Path("/p"), Path("/m"), 1, dataclasses.replace(cfg, cpu_dense_lora=False))
    assert stock[:3] == ["/p", "-m", "vllm.entrypoints.openai.api_server"]
    for part in ("--model /m", "--port 1234", "--seed 7", "--dtype float32", "--max-num-seqs 64", "--enable-lora",
                 "--max-lora-rank 8", "--no-enable-prefix-caching", "--enable-chunked-prefill", "--enforce-eager",
                 "--generation-config vllm"):  # fmt: skip
        assert part in joined
    assert "--enable-lora" not in server_command(Path("/p"), Path("/m"), 1, ServerConfig(enable_lora=False))
    env = server_env(cfg, Path("/venv/bin/python"))
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == cpu_list(os.sched_getaffinity(0))
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env

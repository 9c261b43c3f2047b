"""vLLM process management against a stand-in server: start timeouts, crashes, deaths mid-run, no orphans.

The stand-in is started exactly as vLLM would be (`<python> -m vllm.entrypoints.openai.api_server ...`, through a
fake interpreter) and spawns a worker process, as vLLM does.
The same paths against the real vLLM are in test_server_vllm.py.
"""

import os
import signal
import sys
import textwrap
import time

import psutil
import pytest

from cotune.server_vllm import vllm_server
from cotune.config.server import ServerConfig
from cotune.server_vllm.engine import Sampling, open_engine
from cotune.server_vllm.errors import EngineError

STAND_IN = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    mode = os.environ["STAND_IN_MODE"]
    if "ignore-term" in mode:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A worker outside the process group (found by the descendant sweep), except where the server crashes at
    # start: then it stays in the group, which the group signal reaches after the leader is gone.
    escape = mode != "crash"
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=escape)
    with open(os.environ["STAND_IN_PIDS"], "w") as f:
        f.write(f"{os.getpid()} {worker.pid}")
    print("stand-in vLLM: loading model", flush=True)
    if mode == "crash":
        sys.exit("stand-in vLLM: CUDA out of memory")
    if mode == "hang":
        time.sleep(600)

    class Handler(BaseHTTPRequestHandler):
        def reply(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self.reply({})
            else:
                self.reply({"data": [{"id": "base", "parent": None, "max_model_len": 256}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            count = len(body["prompt"]) * body["n"]
            choices = [{"index": i, "text": f"sample {i}"} for i in reversed(range(count))]
            self.reply({"choices": choices, "usage": {"completion_tokens": 2 * count}})

    port = int(sys.argv[sys.argv.index("--port") + 1])
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A fake vLLM interpreter; returns (config, pid file)."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    python.chmod(0o755)
    pids = tmp_path / "pids"
    monkeypatch.setenv("STAND_IN_PIDS", str(pids))
    return ServerConfig(backend="vllm", vllm_python=str(python), vllm_start_timeout_s=30), pids


def started_pids(pid_file) -> list[int]:
    return [int(p) for p in pid_file.read_text().split()]


def assert_all_gone(pids: list[int]) -> None:
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes survived: {alive}"


def test_generate_and_close_leave_no_process(stand_in, tiny_path, tmp_path, monkeypatch):
    cfg, pid_file = stand_in
    monkeypatch.setenv("STAND_IN_MODE", "serve")
    with open_engine(cfg, tiny_path, tmp_path / "run") as engine:
        out = engine.generate(["a", "b"], Sampling(n=2, max_tokens=4))
        pids = started_pids(pid_file)
        assert all(psutil.pid_exists(p) for p in pids)
    assert out == [["sample 0", "sample 1"], ["sample 2", "sample 3"]]
    assert engine.generated_tokens == 8
    assert_all_gone(pids)
    assert "stand-in vLLM: loading model" in (tmp_path / "run" / "vllm_server.log").read_text()


def test_start_timeout_raises_with_log_tail_and_cleans_up(stand_in, tiny_path, tmp_path, monkeypatch):
    cfg, pid_file = stand_in
    cfg.vllm_start_timeout_s = 2
    monkeypatch.setenv("STAND_IN_MODE", "hang")
    with pytest.raises(EngineError, match=r"not ready after 2 s[\s\S]*stand-in vLLM: loading model"):
        open_engine(cfg, tiny_path, tmp_path)
    assert_all_gone(started_pids(pid_file))


def test_crash_at_start_names_exit_code_and_cause(stand_in, tiny_path, tmp_path, monkeypatch):
    cfg, pid_file = stand_in
    monkeypatch.setenv("STAND_IN_MODE", "crash")
    with pytest.raises(EngineError, match=r"exited with code 1 while starting[\s\S]*CUDA out of memory"):
        open_engine(cfg, tiny_path, tmp_path)
    assert_all_gone(started_pids(pid_file))


def test_death_mid_run_raises_until_restart(stand_in, tiny_path, tmp_path, monkeypatch):
    cfg, pid_file = stand_in
    monkeypatch.setenv("STAND_IN_MODE", "serve")
    engine = open_engine(cfg, tiny_path, tmp_path)
    try:
        first = started_pids(pid_file)
        os.kill(first[0], signal.SIGKILL)
        time.sleep(0.5)
        with pytest.raises(EngineError, match=r"vLLM server died \(exit code -9\).*restart\(\)[\s\S]*vllm_server.log"):
            engine.generate(["a"], Sampling())
        engine.restart()
        assert engine.generate(["a"], Sampling()) == [["sample 0"]]
        second = started_pids(pid_file)
    finally:
        engine.close()
    assert_all_gone(first + second)


def test_server_ignoring_sigterm_is_killed(stand_in, tiny_path, tmp_path, monkeypatch):
    cfg, pid_file = stand_in
    monkeypatch.setenv("STAND_IN_MODE", "serve-ignore-term")
    monkeypatch.setattr(vllm_server, "_STOP_GRACE_S", 1.0)
    open_engine(cfg, tiny_path, tmp_path).close()
    assert_all_gone(started_pids(pid_file))


def test_endpoint_by_url_is_used_but_not_restarted(stand_in, tiny_path, tmp_path, monkeypatch):
    cfg, pid_file = stand_in
    monkeypatch.setenv("STAND_IN_MODE", "serve")
    with open_engine(cfg, tiny_path, tmp_path / "own") as owner:
        remote = ServerConfig(backend="auto", vllm_url=owner.url)
        with open_engine(remote, tiny_path, tmp_path / "remote") as engine:
            assert engine.generate(["x"], Sampling()) == [["sample 0"]]
            with pytest.raises(EngineError, match="cotune did not start it"):
                engine.restart()
        assert psutil.pid_exists(started_pids(pid_file)[0])  # closing a URL engine leaves the server alone

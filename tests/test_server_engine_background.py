"""BackgroundEngine: open_engine(..., background=True) returns at once; first use waits; start errors surface."""

import threading
import time

import pytest

from cotune.config.server import ServerConfig
from cotune.server_vllm.engine import BackgroundEngine, GenerationEngine, Sampling, open_engine
from cotune.server_vllm.errors import EngineError


class FakeEngine(GenerationEngine):
    backend = "fake"

    def __init__(self) -> None:
        self.generated_tokens, self.adapters, self.closed = 0, {}, False

    def generate(self, prompts, sampling, adapter=None):
        self.generated_tokens += len(prompts) * sampling.max_tokens
        return [[f"{adapter}:{p}"] for p in prompts]

    def load_adapter(self, name, path):
        self.adapters[name] = path

    def close(self):
        self.closed = True


def slow_start(release: threading.Event, result=FakeEngine):
    def start():
        release.wait(10)
        if isinstance(result, BaseException):
            raise result
        return result()

    return start


def test_returns_at_once_and_the_first_call_waits_for_the_start():
    release = threading.Event()
    began = time.monotonic()
    engine = BackgroundEngine("fake", slow_start(release))
    assert time.monotonic() - began < 1.0 and not engine.ready
    assert engine.startup() == {"backend": "fake", "start_s": None, "waited_s": 0.0}
    threading.Timer(0.5, release.set).start()
    assert engine.generate(["a"], Sampling(max_tokens=3), adapter="x") == [["x:a"]]
    assert engine.ready and engine.generated_tokens == 3
    info = engine.startup()
    assert info["start_s"] >= 0.4 and 0.3 <= info["waited_s"] <= info["start_s"] + 0.1
    engine.load_adapter("r1", "/adapters/r1")
    assert engine.adapters == {"r1": "/adapters/r1"}  # other attributes reach the started engine
    engine.close()
    assert engine.wait().closed


def test_a_failed_start_raises_on_first_use_and_close_does_not():
    release = threading.Event()
    release.set()
    engine = BackgroundEngine("fake", slow_start(release, EngineError("vLLM server exited with code 1")))
    with pytest.raises(EngineError, match="exited with code 1"):
        engine.generate(["a"], Sampling())
    with pytest.raises(EngineError, match="exited with code 1"):
        engine.load_adapter("r1", "/x")
    engine.close()
    assert engine.generated_tokens == 0


def test_hf_backend_loads_in_the_foreground(tiny_path, tmp_path):
    engine = open_engine(ServerConfig(backend="hf"), tiny_path, tmp_path, background=True)
    assert engine.backend == "hf" and not isinstance(engine, BackgroundEngine)
    engine.close()

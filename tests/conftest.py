"""Shared fixtures: a tiny random-init Llama on the real SmolLM2 tokenizer, and a small task split."""

import pytest
import torch
from transformers import AutoTokenizer

from cotune.config import load_config
from cotune.data import build_splits
from cotune.models import resolve_model

SMOKE = "configs/smoke.toml"


@pytest.fixture(scope="session")
def tiny_path():
    return resolve_model("tiny-llama")


@pytest.fixture(scope="session")
def tokenizer(tiny_path):
    return AutoTokenizer.from_pretrained(tiny_path)


@pytest.fixture(scope="session")
def smoke_cfg():
    return load_config(SMOKE)


@pytest.fixture(scope="session")
def smoke_splits(smoke_cfg):
    return build_splits(smoke_cfg.data, smoke_cfg.clients.num_clients)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def flower_task_identity():
    """Flower messages built outside a running app need the run identity Flower's runtime would set; module-wide,
    so that module-scoped fixtures may build messages too."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved

import subprocess
import sys

import pytest

from cotune.config import ConfigError, CotuneConfig, dump_toml, explain, load_config
from cotune.config.algorithms import ALGORITHMS, Algorithm


def test_defaults_are_valid_and_round_trip_through_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(CotuneConfig()))
    assert load_config(path) == CotuneConfig()


def test_toml_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[lora]\nr = 4\n[data]\npartition = "iid"\n')
    cfg = load_config(path, ["lora.r=16", "lora.target_modules=['q_proj']", "train.lr=1e-3"])
    assert cfg.lora.r == 16 and cfg.lora.target_modules == ["q_proj"]
    assert cfg.data.partition == "iid" and cfg.train.lr == 1e-3


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("lora.r=0", "lora.r", "> 0"),
        ("clients.num_clients=0", "clients.num_clients", ">= 1"),
        ("data.dirichlet_alpha=0", "data.dirichlet_alpha", "> 0"),
        ("data.dirichlet_alpha=-1.5", "data.dirichlet_alpha", "> 0"),
        ("lora.rank=8", "lora.rank", "one of"),
        ("nosuchsection.x=1", "nosuchsection", "one of"),
        ("lora.r='eight'", "lora.r", "an integer"),
        ("train.lr=true", "train.lr", "a number"),
        ("data.partition='random'", "data.partition", "one of ['iid', 'dirichlet']"),
        ("lora.target_modules='q_proj'", "lora.target_modules", "a list"),
        ("quantization.wire='int3'", "quantization.wire", "one of"),
        ("models.slm='./no/such/folder'", "models.slm", "existing HF model folder"),
        ("run.algorithm='fedprox'", "run.algorithm", "one of ['fedavg', 'fedcollm', 'crosslm', 'cotune']"),
        ("run.compare=['fedavg', 'fedprox']", "run.compare", "algorithms among ['fedavg', 'fedcollm', 'crosslm'"),
        ("crosslm.min_words=0", "crosslm.min_words", ">= 1"),
        ("crosslm.max_words=3", "crosslm.max_words", ">= min_words"),
    ],
)
def test_bad_values_fail_naming_the_key(override, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert err.value.key == key
    assert expected in str(err.value)


def test_the_algorithm_registry_decides_which_names_are_valid(monkeypatch):
    with pytest.raises(ConfigError, match="run.algorithm"):
        load_config(None, ["run.algorithm='fedprox'"])
    monkeypatch.setitem(ALGORITHMS, "fedprox", Algorithm(distills=False, crosslm=False, summary="FedProx"))
    cfg = load_config(None, ["run.algorithm='fedprox'", "run.compare=['fedprox', 'cotune']"])
    assert cfg.run.algorithm == "fedprox" and cfg.run.compare == ["fedprox", "cotune"]


def test_what_each_algorithm_uses():
    uses = {name: (a.uses_llm, a.distills, a.crosslm) for name, a in ALGORITHMS.items()}
    assert uses == {
        "fedavg": (False, False, False),
        "fedcollm": (True, True, False),
        "crosslm": (True, False, True),
        "cotune": (True, True, True),
    }
    (help_text,) = [h for key, _, h in explain() if key == "run.algorithm"]
    assert all(name in help_text for name in ALGORITHMS)


def test_missing_data_file_is_named():
    with pytest.raises(ConfigError, match="data.path.*existing file.*missing.jsonl"):
        load_config(None, ["data.task='file'", "data.path='missing.jsonl'", "data.labels=['a', 'b']"])


def test_missing_config_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="--config"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[lora\nr=")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_config(bad)


def test_every_option_is_documented():
    rows = explain()
    assert len(rows) > 50
    assert all(help_text for _, _, help_text in rows), [k for k, _, h in rows if not h]


def test_cli_reports_bad_config_before_work():
    proc = subprocess.run(
        [sys.executable, "-m", "cotune", "run", "--set", "lora.r=0"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "lora.r" in proc.stderr and "expected an integer > 0" in proc.stderr

"""Deployment building blocks, checked against what Flower 1.41 itself accepts (no processes started)."""

import ipaddress
import shlex

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key
from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.supernode.register import try_load_public_key
from flwr.common.config import parse_config_args

from cotune.cli import build_parser
from cotune.federation.deployment import commands
from cotune.federation.deployment.flower_home import write_connection
from cotune.federation.deployment.node_keys import write_node_key
from cotune.federation.deployment.tls import write_dev_certificates


def test_server_certificate_is_signed_by_the_ca_for_the_given_hosts(tmp_path):
    files = write_dev_certificates(tmp_path, ["127.0.0.1", "link.example.org"])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["link.example.org"]
    key = load_pem_private_key(files.server_key.read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert files.server_key.stat().st_mode & 0o077 == 0


def test_node_key_is_what_supernode_and_register_read(tmp_path):
    key = write_node_key(tmp_path, "silo0")
    private = load_ssh_private_key(key.private.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert try_load_public_key(key.public)  # flwr supernode register's own loader
    with pytest.raises(FileExistsError):
        write_node_key(tmp_path, "silo0")


def test_connection_is_read_back_by_flower_and_keeps_other_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    write_connection(tmp_path, "other", "10.0.0.1:9091", None)
    write_connection(tmp_path, "cotune", "127.0.0.1:9091", tmp_path / "ca.crt")
    conn = read_superlink_connection("cotune")
    assert conn.address == "127.0.0.1:9091" and conn.root_certificates == str(tmp_path / "ca.crt")
    assert not conn.insecure
    assert read_superlink_connection("other").insecure


def test_superlink_command_with_tls_and_node_auth(tmp_path):
    tls = write_dev_certificates(tmp_path, ["127.0.0.1"])
    command = commands.superlink_command(commands.SuperLinkOptions(port=9999, tls=tls))
    assert "--enable-supernode-auth" in command and "--disable-runtime-dependency-installation" in command
    assert command[command.index("--ssl-certfile") + 1] == str(tls.server_cert)
    assert "--insecure" not in command
    with pytest.raises(ValueError, match="needs TLS"):
        commands.superlink_command(commands.SuperLinkOptions(tls=None, node_auth=True))


def test_run_config_arguments_parse_as_flower_parses_them(tmp_path):
    config, run_dir = tmp_path / "my configs" / "smoke.toml", tmp_path / "it's a run \\ dir"
    command = commands.run_command(tmp_path, "conn", config, run_dir)
    overrides = [command[i + 1] for i, arg in enumerate(command) if arg == "--run-config"]
    assert parse_config_args(overrides) == {"cotune-config": str(config), "run-dir": str(run_dir)}
    empty = commands.run_command(tmp_path, "conn", None, None)
    assert parse_config_args([a for i, a in enumerate(empty) if empty[i - 1] == "--run-config"]) == {
        "cotune-config": "", "run-dir": ""}
    with pytest.raises(ValueError, match="double quote"):
        commands.run_command(tmp_path, "conn", tmp_path / 'a"b.toml', None)


def _cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def test_cli_prints_the_flower_commands_it_would_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    assert _cli(["certs", str(tmp_path / "tls"), "--host", "127.0.0.1"]) == 0
    assert _cli(["node-key", str(tmp_path / "keys"), "--name", "silo1"]) == 0
    capsys.readouterr()

    assert _cli(["server", "--certs", str(tmp_path / "tls"), "--port", "9555", "--dry-run"]) == 0
    server = shlex.split(capsys.readouterr().out.strip().removeprefix("$ "))
    assert server[0].endswith("flower-superlink") and "--enable-supernode-auth" in server
    assert server[server.index("--ssl-ca-certfile") + 1] == str((tmp_path / "tls" / "ca.crt").resolve())

    assert _cli(["silo", "--superlink", "link:9555", "--partition-id", "1", "--root-certificates",
                 str(tmp_path / "tls" / "ca.crt"), "--key", str(tmp_path / "keys" / "silo1"), "--dry-run"]) == 0
    silo = shlex.split(capsys.readouterr().out.strip().removeprefix("$ "))
    assert silo[silo.index("--node-config") + 1] == "partition-id=1"
    assert silo[silo.index("--auth-supernode-private-key") + 1] == str((tmp_path / "keys" / "silo1").resolve())

    assert _cli(["submit", "-c", "/srv/cotune/smoke.toml", "--superlink", "link:9555", "--root-certificates",
                 str(tmp_path / "tls" / "ca.crt"), "--dry-run"]) == 0
    submit = shlex.split(capsys.readouterr().out.strip().removeprefix("$ "))
    assert submit[1:2] == ["run"] and "cotune" in submit and "--stream" in submit
    assert read_superlink_connection("cotune").address == "link:9555"


def test_cli_refuses_a_server_without_certificates(tmp_path):
    with pytest.raises(FileNotFoundError, match="--certs"):
        _cli(["server", "--dry-run"])
    with pytest.raises(FileNotFoundError, match="not found"):
        _cli(["server", "--certs", str(tmp_path), "--dry-run"])

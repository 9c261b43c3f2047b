"""Deployment commands: each prints the Flower command line it runs, then runs it (the long-running `server` and
`silo` under a supervisor that stops everything Flower started on SIGTERM or Ctrl-C; the others become the command).

    cotune certs DIR --host HOST ...      development CA + SuperLink certificate (production: your CA's files)
    cotune node-key DIR --name silo0      a silo's SuperNode key pair
    cotune server ...                     flower-superlink, TLS + SuperNode authentication
    cotune register-silo KEY.pub ...      flwr supernode register
    cotune silo --partition-id N ...      flower-supernode for one silo
    cotune submit -c CONFIG ...           flwr run (the cotune app, streamed until it ends)

`--dry-run` prints the command without running it. See docs/deployment.md for a multi-machine walk-through.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cotune.cli.defaults import field_default, parameter_default
from cotune.cli.lazy_subcommands import add_command

if TYPE_CHECKING:
    from cotune.federation.deployment.tls import TlsFiles


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "certs", _certs_args, run_certs, help="write a development CA and a SuperLink TLS certificate")
    add_command(sub, "node-key", _node_key_args, run_node_key, help="write a silo's SuperNode authentication key pair")
    add_command(sub, "server", _server_args, run_server, help="start the SuperLink (flower-superlink)")
    add_command(sub, "register-silo", _register_args, run_register,
                help="register a silo's public key with the SuperLink")
    add_command(sub, "silo", _silo_args, run_silo, help="start one silo's SuperNode (flower-supernode)")
    add_command(sub, "submit", _submit_args, run_submit, help="start the cotune app on the SuperLink (flwr run)")


def _certs_args(parser: argparse.ArgumentParser) -> None:
    from cotune.federation.deployment.tls import write_dev_certificates

    parser.add_argument("folder", type=Path, help="where ca.crt, server.pem and server.key go")
    parser.add_argument("--host", action="append", required=True,
                        help="DNS name or IP the SuperLink is reached at (repeatable; include 127.0.0.1)")
    parser.add_argument("--days", type=int, default=parameter_default(write_dev_certificates, "days"),
                        help="validity (default: %(default)s)")


def _node_key_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path)
    parser.add_argument("--name", required=True, help="file name of the private key; the public key gets .pub")


def _server_args(parser: argparse.ArgumentParser) -> None:
    """Defaults are `SuperLinkOptions`' own."""
    from cotune.federation.deployment.commands import SuperLinkOptions
    from cotune.federation.deployment.tls import CA_CERT, SERVER_CERT, SERVER_KEY

    parser.add_argument("--host", default=field_default(SuperLinkOptions, "host"),
                        help="bind address of its one HTTPS port (default: %(default)s)")
    parser.add_argument("--port", type=int, default=field_default(SuperLinkOptions, "port"),
                        help="default: %(default)s")
    parser.add_argument("--certs", type=Path, help=f"folder with {CA_CERT}, {SERVER_CERT}, {SERVER_KEY}")
    parser.add_argument("--ssl-ca-certfile", type=Path, help="CA certificate (overrides --certs)")
    parser.add_argument("--ssl-certfile", type=Path, help="server certificate (overrides --certs)")
    parser.add_argument("--ssl-keyfile", type=Path, help="server private key (overrides --certs)")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP, no node auth (local trials only)")
    parser.add_argument("--no-node-auth", action="store_true",
                        help="accept any SuperNode (default: only keys registered with register-silo)")
    parser.add_argument("--database", type=Path, help="SQLite state file, so a restart keeps registrations")
    _add_dry_run(parser)


def _register_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("public_key", type=Path)
    _add_connection_args(parser)
    _add_dry_run(parser)


def _silo_args(parser: argparse.ArgumentParser) -> None:
    """Defaults are `SuperNodeOptions`' own."""
    from cotune.federation.deployment.commands import SuperNodeOptions

    parser.add_argument("--superlink", required=True, help="SuperLink address as host:port")
    parser.add_argument("--partition-id", type=int, required=True, help="which data partition this silo holds")
    parser.add_argument("--root-certificates", type=Path, help="CA certificate that signed the SuperLink's")
    parser.add_argument("--key", type=Path, help="this silo's private key (from node-key)")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP (local trials only)")
    parser.add_argument("--runtime-port", type=int, default=field_default(SuperNodeOptions, "runtime_port"),
                        help="local port for this silo's ClientApp processes; distinct per SuperNode on one host "
                        "(default: %(default)s)")
    _add_dry_run(parser)


def _submit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path,
                        help="cotune TOML config: a path on the SuperLink host (the ServerApp reads it there)")
    parser.add_argument("--run-dir", type=Path,
                        help="run folder: a path on the SuperLink host (default runs/<time> there)")
    parser.add_argument("--app", type=Path, help="cotune source folder to build the app from")
    parser.add_argument("--no-stream", action="store_true", help="return once the run is accepted")
    _add_connection_args(parser)
    _add_dry_run(parser)


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    from cotune.federation.deployment.commands import DEFAULT_CONNECTION

    parser.add_argument("--connection", default=DEFAULT_CONNECTION, help="flwr connection name (default: %(default)s)")
    parser.add_argument("--superlink", help="host:port; writes/updates the connection (else it must exist)")
    parser.add_argument("--root-certificates", type=Path, help="CA certificate for the connection")
    parser.add_argument("--insecure", action="store_true", help="the connection uses plain HTTP")
    parser.add_argument("--flwr-home", help="Flower config folder (default $FLWR_HOME or ~/.flwr)")


def _add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print the Flower command, do not run it")


def _exec(command: list[str], args: argparse.Namespace, home: Path | None = None) -> int:
    """Print the command; unless --dry-run, become it (returns only for --dry-run)."""
    from cotune.federation.deployment import commands
    from cotune.federation.deployment.processes import flower_env

    print(f"$ {commands.render(command)}", flush=True)
    if args.dry_run:
        return 0
    env = flower_env(home=home)
    os.execvpe(command[0], command, env)  # replaces this process: Flower gets the terminal and the signals


def _supervise(command: list[str], args: argparse.Namespace) -> int:
    """Print the command; unless --dry-run, run it under a supervisor: a SuperLink or SuperNode starts its SuperExec
    and app processes in sessions of their own, which a signal to this process group misses; on SIGTERM, SIGINT or
    SIGHUP the supervisor stops Flower and then everything it started (cotune.federation.deployment.supervisor)."""
    from cotune.federation.deployment import commands
    from cotune.federation.deployment.processes import flower_env
    from cotune.federation.deployment.supervisor import supervise

    print(f"$ {commands.render(command)}", flush=True)
    if args.dry_run:
        return 0
    return supervise(command, env=flower_env())


def _server_tls(args: argparse.Namespace) -> "TlsFiles | None":
    from cotune.federation.deployment.tls import CA_CERT, SERVER_CERT, SERVER_KEY, TlsFiles

    if args.insecure:
        return None
    defaults = [args.certs / name if args.certs else None for name in (CA_CERT, SERVER_CERT, SERVER_KEY)]
    files = [args.ssl_ca_certfile or defaults[0], args.ssl_certfile or defaults[1], args.ssl_keyfile or defaults[2]]
    if not all(files):
        raise FileNotFoundError("the SuperLink needs --certs DIR or --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile "
                                "(or --insecure for a local trial)")
    for path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"TLS file not found: {path}")
    return TlsFiles(*(Path(p).resolve() for p in files))


def _connection_home(args: argparse.Namespace) -> Path:
    """FLWR_HOME for `flwr`, with the connection written first when --superlink is given."""
    from cotune.federation.deployment.flower_home import flower_home, write_connection

    home = flower_home(args.flwr_home)
    if args.superlink:
        if not args.insecure and args.root_certificates is None:
            raise FileNotFoundError("--superlink needs --root-certificates (or --insecure)")
        write_connection(home, args.connection, args.superlink, None if args.insecure else args.root_certificates)
        print(f"connection '{args.connection}' -> {args.superlink} written to {home}", file=sys.stderr)
    return home


def run_certs(args: argparse.Namespace) -> int:
    from cotune.federation.deployment.tls import write_dev_certificates

    files = write_dev_certificates(args.folder, args.host, args.days)
    print(f"SuperLink: --ssl-ca-certfile {files.ca_cert} --ssl-certfile {files.server_cert} "
          f"--ssl-keyfile {files.server_key}")
    print(f"silos and flwr: --root-certificates {files.ca_cert}")
    return 0


def run_node_key(args: argparse.Namespace) -> int:
    from cotune.federation.deployment import commands
    from cotune.federation.deployment.node_keys import write_node_key

    try:
        key = write_node_key(args.folder, args.name)
    except FileExistsError as err:
        print(f"cotune: error: {err}", file=sys.stderr)
        return 2
    print(f"silo keeps: {key.private}  (flower-supernode --auth-supernode-private-key)")
    print(f"operator registers: {key.public}")
    print(f"  $ {commands.render(commands.register_command(key.public, commands.DEFAULT_CONNECTION))}")
    return 0


def run_server(args: argparse.Namespace) -> int:
    from cotune.federation.deployment import commands

    tls = _server_tls(args)
    options = commands.SuperLinkOptions(host=args.host, port=args.port, tls=tls,
                                        node_auth=not (args.no_node_auth or args.insecure), database=args.database)
    return _supervise(commands.superlink_command(options), args)


def run_register(args: argparse.Namespace) -> int:
    from cotune.federation.deployment import commands

    if not args.public_key.is_file():
        raise FileNotFoundError(f"public key not found: {args.public_key}")
    home = _connection_home(args)
    return _exec(commands.register_command(args.public_key.resolve(), args.connection), args, home)


def run_silo(args: argparse.Namespace) -> int:
    from cotune.federation.deployment import commands

    if not args.insecure and args.root_certificates is None:
        raise FileNotFoundError("a silo needs --root-certificates (the CA that signed the SuperLink's certificate)")
    for path in (args.root_certificates, args.key):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"file not found: {path}")
    options = commands.SuperNodeOptions(
        superlink=args.superlink, partition_id=args.partition_id,
        root_certificates=None if args.insecure else args.root_certificates.resolve(),
        private_key=args.key.resolve() if args.key else None, runtime_port=args.runtime_port,
    )
    return _supervise(commands.supernode_command(options), args)


def run_submit(args: argparse.Namespace) -> int:
    """Config and run folder are passed verbatim: they name paths on the SuperLink host, not here."""
    from cotune.federation.deployment import commands

    home = _connection_home(args)
    app_dir = args.app.resolve() if args.app else commands.default_app_dir()
    command = commands.run_command(app_dir, args.connection, args.config, args.run_dir, stream=not args.no_stream)
    return _exec(command, args, home)

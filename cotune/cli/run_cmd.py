"""`cotune run`: the main job on the embedded defaults, a TOML config, or `--resume RUN_DIR`.

The job runs in a child process under a supervisor (cotune.federation.deployment.supervisor): SIGTERM or Ctrl-C
stops it and everything it started (the vLLM server, Ray, exporters) within a bounded time, and the last completed
round's checkpoint stays for `--resume`.
"""

import argparse
import json
import sys
from pathlib import Path

from cotune.cli.common import add_config_args, config_from_args
from cotune.cli.lazy_subcommands import add_command
from cotune.cli.logs import set_flower_log_level


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "run", _arguments, run,
                help="run the federated job (defaults: SmolLM2 SLM, Rotten Tomatoes, 3 silos)")


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last round")


def job_command(args: argparse.Namespace) -> list[str]:
    """The same `cotune run` for the supervised child."""
    argv = [sys.executable, "-m", "cotune", *(["--verbose"] if getattr(args, "verbose", False) else []), "run"]
    if args.config:
        argv += ["--config", args.config]
    for override in args.overrides:
        argv += ["--set", override]
    if args.resume:
        argv += ["--resume", args.resume]
    return argv


def run(args: argparse.Namespace) -> int:
    from cotune.federation.deployment.supervisor import in_job, supervise, watch_supervisor

    if not in_job():
        if not args.resume:
            config_from_args(args)  # a bad key fails here (named, exit 2), before any process starts
        set_flower_log_level(args.verbose)  # the job and its Ray workers inherit it
        return supervise(job_command(args))
    watch_supervisor()
    from cotune.run.job import FederationFailed, resume_config, run_job

    if args.resume:
        run_dir = Path(args.resume)
        cfg = resume_config(run_dir)
    else:
        cfg, run_dir = config_from_args(args), None
    try:
        run_dir = run_job(cfg, run_dir)
    except FederationFailed as err:
        print(f"cotune: error: {err}", file=sys.stderr)
        return 1
    print((run_dir / "report.md").read_text())
    print(f"run folder: {run_dir}")
    edge = json.loads((run_dir / "metrics.json").read_text()).get("edge")
    if edge:
        print(f"edge model ({edge['precision']}): {edge['path']}  {edge['size_mb']} MB, "
              f"{edge['tokens_per_s']} tokens/s on {edge['threads']} threads")
    return 0

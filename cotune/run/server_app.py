"""The cloud side as a Flower ServerApp. `app` serves deployment (`flwr run`), where the config path and run
folder come from the run config; `build_server_app` closes over them for in-process simulation.

It lives in `run/` because it is where a deployed run's folder is made: the rounds below only get its outputs.
"""

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from cotune.config import CotuneConfig, load_config
from cotune.federation.server_loop import run_rounds
from cotune.run.folder import new_run_dir, outputs, write_config
from cotune.server_vllm.engine import GenerationEngine


def build_server_app(
    cfg: CotuneConfig | None = None, run_dir: Path | None = None, engine: GenerationEngine | None = None
) -> ServerApp:
    """With `cfg` and `run_dir` (simulation, from `cotune run`), the caller has written the folder's config;
    without them (deployment), the run config names both and the folder's config is written here."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        folder = run_dir
        config = cfg
        if config is None or folder is None:
            config = config or load_config(str(context.run_config.get("cotune-config", "")) or None)
            configured = str(context.run_config.get("run-dir", ""))
            folder = folder or (Path(configured) if configured else new_run_dir(config.run.output_root))
            write_config(folder, config)
        run_rounds(grid, config, outputs(folder), engine)

    return app


app = build_server_app()

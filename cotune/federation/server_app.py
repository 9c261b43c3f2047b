"""The cloud side as a Flower ServerApp. `app` serves deployment (`flwr run`), where the config path and run
folder come from the run config; `build_server_app` closes over them for in-process simulation."""

from datetime import datetime
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from cotune.config import CotuneConfig, dump_toml, load_config
from cotune.federation.server_loop import run_rounds
from cotune.server_vllm.engine import GenerationEngine


def new_run_dir(root: str) -> Path:
    run_dir = Path(root) / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def build_server_app(
    cfg: CotuneConfig | None = None, run_dir: Path | None = None, engine: GenerationEngine | None = None
) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = cfg or load_config(str(context.run_config.get("cotune-config", "")) or None)
        configured = str(context.run_config.get("run-dir", ""))
        folder = run_dir or (Path(configured) if configured else new_run_dir(config.run.output_root))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.toml").write_text(dump_toml(config))
        run_rounds(grid, config, folder, engine)

    return app


app = build_server_app()

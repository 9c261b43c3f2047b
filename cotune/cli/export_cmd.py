"""`cotune export`: the SLM with its adapter as an ONNX edge model (fp32 / int8 / int4), with the config's task card."""

import argparse
import json
import sys

from cotune.cli.common import add_config_args, config_from_args
from cotune.cli.defaults import literal_choices
from cotune.cli.lazy_subcommands import add_command
from cotune.config.export import ExportConfig


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "export", _arguments, run, help="merge an adapter into the SLM and export it to ONNX for devices")


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--base", help="base SLM: registry name or HF folder (default: config models.slm)")
    adapter = parser.add_mutually_exclusive_group(required=True)
    adapter.add_argument("--adapter", help="PEFT LoRA folder, e.g. runs/<run>/global_adapter")
    adapter.add_argument("--no-adapter", action="store_true", help="export the base model alone")
    parser.add_argument("--out", required=True, help="output folder (replaced if it holds a previous export)")
    parser.add_argument("--precision", choices=literal_choices(ExportConfig, "precision"),
                        help="default: config export.precision")
    parser.add_argument("--parity-prompts", type=int, help="default: config export.parity_prompts")
    parser.add_argument("--parity-tokens", type=int, help="default: config export.parity_tokens")
    parser.add_argument(
        "--adapter-mode", choices=literal_choices(ExportConfig, "adapter_mode"),
        help="merged: LoRA folded into the weights; runtime: quantized base + fp32 .onnx_adapter file switchable at "
        "runtime (default: config export.adapter_mode)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cotune.data import load_task
    from cotune.export import ExportInputError, export_edge_model

    cfg = config_from_args(args)
    try:
        task = load_task(cfg.data)[0]  # the task card: what the folder classifies, as the run tuned it
    except (ValueError, FileNotFoundError) as err:
        print(f"cotune: error: the task card needs the config's task: {err}", file=sys.stderr)
        return 2
    try:
        result = export_edge_model(
            base=args.base or cfg.models.slm,
            adapter=None if args.no_adapter else args.adapter,
            out=Path(args.out),
            precision=args.precision or cfg.export.precision,
            parity_prompts=cfg.export.parity_prompts if args.parity_prompts is None else args.parity_prompts,
            parity_tokens=cfg.export.parity_tokens if args.parity_tokens is None else args.parity_tokens,
            cache_dir=cfg.models.cache_dir,
            task=task,
            max_length=cfg.train.max_length,
            adapter_mode=args.adapter_mode or cfg.export.adapter_mode,
        )
    except ExportInputError as err:
        print(f"cotune: error: {err}", file=sys.stderr)
        return 2
    print(f"edge model: {result.path} ({result.precision}, {result.manifest['adapter_mode']}, "
          f"{result.size_bytes / 2**20:.1f} MB)")  # fmt: skip
    print(f"parity vs PyTorch: {json.dumps(result.parity)}")
    return 0

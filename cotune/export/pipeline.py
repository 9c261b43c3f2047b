"""`export_edge_model`: base SLM + LoRA adapter -> a self-contained ONNX folder for devices.

Order: check every input (no work yet) -> merge the LoRA into the fp32 base -> export with a KV cache (model
builder for Llama-family, transformers' exporter otherwise) -> quantize -> measure parity against the PyTorch
merged model -> write manifest.json -> move the finished folder into place. Everything is built in a staging
folder beside the target, so a failure at any step leaves no half-written output.

Adapter modes (model-builder architectures, Llama and Qwen2, only for the last two):
- merged (default): the LoRA folded into the fp32 weights, then quantized with them.
- runtime: the base alone is quantized; every decoder linear layer gets an fp32 LoRA branch fed from graph inputs
  (cotune.export.runtime_graph) and the adapter ships as `adapters/adapter.onnx_adapter`, switchable at runtime.
- a prompt-tuning adapter: the base is exported as it is and the soft prompt ships as its KV cache
  (`prompt_prefix.npz`, cotune.export.prompt_prefix), run by the plain-session backend.
The manifest's `task` (the task card) lets the device classify as cotune evaluated (cotune.edge_runtime.task).
"""

import json
import logging
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from cotune.config.export import ExportConfig
from cotune.config.schema import ModelsConfig, TrainConfig
from cotune.data.tasks import ClassificationTask
from cotune.edge_runtime.layout import MANIFEST
from cotune.export.folder import copy_runtime_files, file_sizes, model_bytes, move_into_place, staging_folder
from cotune.export.inputs import (
    ExportInputError, check_any_adapter, check_base, check_output, check_precision,
)  # fmt: skip
from cotune.export.logfile import output_to
from cotune.export.prompts import parity_prompts_for

log = logging.getLogger(__name__)
EXPORT_LOG = "export.log"
ADAPTER_MODES = ("merged", "runtime")
RUNTIME_ADAPTER = "adapters/adapter.onnx_adapter"  # the exported adapter, relative to the folder


@dataclass
class ExportResult:
    path: Path
    size_bytes: int  # ONNX graph + weights
    precision: str
    parity: dict
    manifest: dict


def export_edge_model(
    base: str | Path,
    adapter: str | Path | None,
    out: Path,
    precision: str = ExportConfig.precision,
    parity_prompts: int = ExportConfig.parity_prompts,
    parity_tokens: int = ExportConfig.parity_tokens,
    cache_dir: str = ModelsConfig.cache_dir,
    task: ClassificationTask | None = None,
    max_length: int = TrainConfig.max_length,
    adapter_mode: str = ExportConfig.adapter_mode,
) -> ExportResult:
    """Export `base` (a model spec or HF folder) with `adapter` to `out` at `precision`; `task` (with the token
    limit prompts are cut to) goes into the manifest as the folder's task card, and its example prompts lead the
    parity prompts."""
    from cotune.models import resolve_model

    check_precision(precision)
    if adapter_mode not in ADAPTER_MODES:
        raise ExportInputError(f"adapter mode {adapter_mode!r} is not supported: expected one of {', '.join(ADAPTER_MODES)}")
    prompts = parity_prompts_for(task)
    if not 0 <= parity_prompts <= len(prompts) or parity_tokens < 1:
        raise ExportInputError(
            f"parity: need 0..{len(prompts)} prompts and >= 1 token, got {parity_prompts} / {parity_tokens}"
        )
    out = Path(out).expanduser().resolve()
    check_output(out)
    base_info = check_base(resolve_model(str(base), cache_dir))
    adapter_info = check_any_adapter(Path(adapter).expanduser().resolve(), base_info.path) if adapter else None
    mode = "prompt_prefix" if adapter_info and adapter_info.peft_type == "PROMPT_TUNING" else adapter_mode
    if mode != "merged" and base_info.exporter != "builder":
        raise ExportInputError(
            f"base {base_info.path} ({base_info.architecture}) exports through transformers' exporter, which has no "
            f"{'runtime LoRA inputs' if mode == 'runtime' else 'prompt-tuning export'}: only model-builder architectures do"
        )

    start = time.perf_counter()
    with staging_folder(out) as stage:
        built, work = stage / "model", stage / "work"
        built.mkdir()
        work.mkdir()
        with output_to(built / EXPORT_LOG):  # exporters' progress bars and warnings
            model, parity, extra = _build(
                base_info, adapter_info, built, work, precision, prompts, parity_prompts, parity_tokens, mode, task,
                max_length,
            )
        manifest = {
            "format": "cotune-edge/1",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source_model": {
                "spec": str(base),
                "path": str(base_info.path),
                "architecture": base_info.architecture,
                "parameters": sum(p.numel() for p in model.parameters()),
                "dequantized_from_bitsandbytes": base_info.bnb_quantized,
            },
            "adapter": _adapter_entry(adapter_info, mode),
            "adapter_mode": mode,
            **extra,
            "precision": precision,
            "exporter": _exporter_name(base_info.exporter, precision),
            "runtime": "onnxruntime-genai (og.Model) or onnxruntime" if base_info.exporter == "builder" else "onnxruntime",
            "parity": parity,
            "sizes": {"model_bytes": model_bytes(built), "files": file_sizes(built)},
            "export_seconds": round(time.perf_counter() - start, 1),
            "versions": {p: version(p) for p in ("onnxruntime", "onnxruntime-genai", "transformers", "peft", "torch")},
        }
        (built / MANIFEST).write_text(json.dumps(manifest, indent=2))
        move_into_place(built, out, stage)
    log.info("edge model (%s, %.1f MB) written to %s", precision, manifest["sizes"]["model_bytes"] / 2**20, out)
    return ExportResult(out, manifest["sizes"]["model_bytes"], precision, parity, manifest)


def _adapter_entry(info, mode: str) -> dict | None:
    if info is None:
        return None
    entry = {"path": str(info.path), "sha256": info.sha256, "sha256_of": info.weights.name}
    if mode == "prompt_prefix":
        how = "soft prompt run through the fp32 base once; its per-layer KV cache ships as prompt_prefix.npz"
        return {**entry, "peft_type": "PROMPT_TUNING", "num_virtual_tokens": info.num_virtual_tokens, "export": how}
    how = {
        "merged": "peft merge_and_unload into fp32 base weights",
        "runtime": f"fp32 LoRA branches over the quantized base, weights in {RUNTIME_ADAPTER}",
    }[mode]
    return {
        **entry, "peft_type": "LORA", "rank": info.rank, "target_modules": info.target_modules,
        "lora_modules": info.lora_modules, "merge" if mode == "merged" else "export": how,
    }  # fmt: skip


def _build(
    base_info, adapter_info, built: Path, work: Path, precision: str, prompts: tuple[str, ...], parity_prompts: int,
    parity_tokens: int, mode: str, task: ClassificationTask | None, max_length: int,
):  # fmt: skip
    """Export into `built`; returns the PyTorch reference model, the parity figures and extra manifest keys.
    The first of `prompts` also serves as the transformers exporter's trace input."""
    from transformers import AutoTokenizer

    from cotune.export.genai_builder import export_with_builder
    from cotune.export.hf_exporter import export_decoder
    from cotune.lm.merge import merged_model, save_merged
    from cotune.export.parity import measure_parity
    from cotune.quantization.onnx_weights import quantize_int4_weights, quantize_int8_dynamic

    adapter_path = adapter_info.path if adapter_info else None
    model = merged_model(base_info.path, adapter_path if mode == "merged" else None)
    merged = save_merged(model, base_info.path, work / "merged")
    tokenizer = AutoTokenizer.from_pretrained(merged)
    extra: dict = {}
    if task is not None:
        from cotune.export.task_card import task_card

        extra["task"] = task_card(task, tokenizer, max_length)
    if base_info.exporter == "builder":
        export_with_builder(merged, built, precision, work)
    elif precision == "fp32":
        export_decoder(merged, built, prompts[0])
    else:
        fp32 = work / "fp32"
        export_decoder(merged, fp32, prompts[0])
        quantize = quantize_int8_dynamic if precision == "int8" else quantize_int4_weights
        quantize(fp32 / "model.onnx", built / "model.onnx")
        copy_runtime_files(fp32, built)
    reference = model
    if mode == "runtime":
        from cotune.export.inputs import _base_linear_shapes
        from cotune.export.runtime_adapter import write_runtime_adapter
        from cotune.export.runtime_graph import add_lora_inputs

        modules = add_lora_inputs(built / "model.onnx", _base_linear_shapes(base_info.path))
        extra["runtime_adapter"] = {
            "default": RUNTIME_ADAPTER if adapter_path else None,
            "format": "onnxruntime AdapterFormat (.onnx_adapter): lora.<module>.A (in, r), lora.<module>.B (r, out) "
            "with peft's scaling folded into B; cotune.export.runtime_adapter.write_runtime_adapter writes one",
            "modules_with_inputs": len(modules),
        }
        if adapter_path:
            write_runtime_adapter(adapter_path, built / RUNTIME_ADAPTER)
            reference = merged_model(base_info.path, adapter_path)
    elif mode == "prompt_prefix":
        from cotune.export.prompt_prefix import PromptTunedReference, write_prompt_prefix

        reference = PromptTunedReference(model, adapter_path)
        extra["prompt_prefix"] = {"file": "prompt_prefix.npz", "virtual_tokens": write_prompt_prefix(reference, built)}
    (built / MANIFEST).write_text(json.dumps(extra))  # the runtime reads the default adapter from it for parity
    return model, measure_parity(reference, tokenizer, built, prompts[:parity_prompts], parity_tokens), extra


def _exporter_name(exporter: str, precision: str) -> str:
    from cotune.quantization.onnx_weights import INT4_BLOCK_SIZE

    int4 = f"int4 (MatMulNBits, block {INT4_BLOCK_SIZE})"
    if exporter == "builder":
        from cotune.export.genai_builder import INT4_MIXED_PRECISION

        how = {
            "fp32": "fp32",
            "int8": "fp32 + onnxruntime quantize_dynamic int8 (down projections fp32)",
            "int4": f"{int4}, {INT4_MIXED_PRECISION}",
        }[precision]
        return f"onnxruntime-genai {version('onnxruntime-genai')} model builder: {how}"
    how = {"fp32": "", "int8": " + quantize_dynamic int8 (down projections fp32)", "int4": f" + MatMulNBitsQuantizer {int4}"}
    return f"transformers {version('transformers')} OnnxExporter (torch.onnx dynamo){how[precision]}"

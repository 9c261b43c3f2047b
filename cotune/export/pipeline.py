"""`export_edge_model`: base SLM + LoRA adapter -> a self-contained ONNX folder for devices.

Order: check every input (no work yet) -> merge the LoRA into the fp32 base -> export with a KV cache (model
builder for Llama-family, transformers' exporter otherwise) -> quantize -> measure parity against the PyTorch
merged model -> write manifest.json -> move the finished folder into place. Everything is built in a staging
folder beside the target, so a failure at any step leaves no half-written output.
"""

import json
import logging
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from cotune.edge_runtime.layout import MANIFEST
from cotune.export.folder import copy_runtime_files, file_sizes, model_bytes, move_into_place, staging_folder
from cotune.export.inputs import ExportInputError, check_adapter, check_base, check_output, check_precision
from cotune.export.logfile import output_to
from cotune.export.prompts import PARITY_PROMPTS

log = logging.getLogger(__name__)
EXPORT_LOG = "export.log"


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
    precision: str = "int4",
    parity_prompts: int = 20,
    parity_tokens: int = 64,
    cache_dir: str = "",
) -> ExportResult:
    """Merge `adapter` into `base` (a model spec or HF folder) and export it to `out` at `precision`."""
    from cotune.models import resolve_model

    check_precision(precision)
    if not 0 <= parity_prompts <= len(PARITY_PROMPTS) or parity_tokens < 1:
        raise ExportInputError(
            f"parity: need 0..{len(PARITY_PROMPTS)} prompts and >= 1 token, got {parity_prompts} / {parity_tokens}"
        )
    out = Path(out).expanduser().resolve()
    check_output(out)
    base_info = check_base(resolve_model(str(base), cache_dir))
    adapter_info = check_adapter(Path(adapter).expanduser().resolve(), base_info.path) if adapter else None

    start = time.perf_counter()
    with staging_folder(out) as stage:
        built, work = stage / "model", stage / "work"
        built.mkdir()
        work.mkdir()
        with output_to(built / EXPORT_LOG):  # exporters' progress bars and warnings
            model, parity = _build(base_info, adapter_info, built, work, precision, parity_prompts, parity_tokens)
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
            "adapter": None
            if adapter_info is None
            else {
                "path": str(adapter_info.path),
                "sha256": adapter_info.sha256,
                "sha256_of": "adapter_model.safetensors",
                "rank": adapter_info.rank,
                "target_modules": adapter_info.target_modules,
                "lora_modules": adapter_info.lora_modules,
                "merge": "peft merge_and_unload into fp32 base weights",
            },
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


def _build(base_info, adapter_info, built: Path, work: Path, precision: str, parity_prompts: int, parity_tokens: int):
    from transformers import AutoTokenizer

    from cotune.export.genai_builder import export_with_builder
    from cotune.export.hf_exporter import export_decoder
    from cotune.export.merge import merged_model, save_merged
    from cotune.export.parity import measure_parity
    from cotune.quantization.onnx_weights import quantize_int4_weights, quantize_int8_dynamic

    model = merged_model(base_info.path, adapter_info.path if adapter_info else None)
    merged = save_merged(model, base_info.path, work / "merged")
    if base_info.exporter == "builder":
        export_with_builder(merged, built, precision, work)
    elif precision == "fp32":
        export_decoder(merged, built)
    else:
        fp32 = work / "fp32"
        export_decoder(merged, fp32)
        quantize = quantize_int8_dynamic if precision == "int8" else quantize_int4_weights
        quantize(fp32 / "model.onnx", built / "model.onnx")
        copy_runtime_files(fp32, built)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    return model, measure_parity(model, tokenizer, built, parity_prompts, parity_tokens)


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

"""Llama-family export through onnxruntime-genai's model builder: GroupQueryAttention with a KV cache, and
`genai_config.json` for og.Model.

The builder is called through its Python entry points (`parse_extra_options`, `create_model`) with explicit
arguments (its `--help` crashes on Python 3.11); the caller sends its per-tensor progress output to the export log.

int4 is the builder's own: MatMulNBits blocks of 32, and for a tied embedding (SmolLM2) one shared 4-bit table
read by both GatherBlockQuantized (embedding) and MatMulNBits (lm_head) — the embedding is most of a small
model, so this is what brings int4 under a fifth of fp32. The MatMuls most sensitive to rounding (llama.cpp's
choice: qkv/v/down projections of the first and last eighth of the layers and of every third layer) are 8-bit
blocks: on the tuned SmolLM2-90M that halved the held-out predictions int4 flips against fp32 (55 -> 28 of 300)
for 6 MB. int8 is fp32 from the builder, then quantize_dynamic (cotune.quantization.onnx_weights).
"""

from pathlib import Path

from cotune.export.folder import copy_runtime_files
from cotune.quantization.onnx_weights import INT4_ACCURACY_LEVEL, INT4_BLOCK_SIZE, quantize_int8_dynamic

INT4_MIXED_PRECISION = "mixed_layers:int8"


def run_builder(merged: Path, out: Path, precision: str, cache: Path) -> None:
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    extra = ["hf_token=false"]  # a local folder: never ask the hub for credentials
    if precision == "int4":
        extra += [
            f"block_size={INT4_BLOCK_SIZE}",
            f"accuracy_level={INT4_ACCURACY_LEVEL}",
            "is_symmetric=true",  # the asymmetric (uint4) shared embedding fails to load in onnxruntime-genai 0.18
            f"matmul_mixed_precision={INT4_MIXED_PRECISION}",
        ]
    args = (None, str(merged), str(out), precision, "cpu", str(cache))
    print(f"model builder: input={merged} output={out} precision={precision} extra_options={extra}", flush=True)
    create_model(*args, **parse_extra_options(*args, extra))


def export_with_builder(merged: Path, out: Path, precision: str, work: Path) -> None:
    """Write model.onnx (+ data), genai_config.json and the tokenizer files into `out`."""
    if precision == "int8":
        fp32 = work / "fp32"
        run_builder(merged, fp32, "fp32", work / "builder-cache")
        quantize_int8_dynamic(fp32 / "model.onnx", out / "model.onnx")
        copy_runtime_files(fp32, out)
    else:
        run_builder(merged, out, precision, work / "builder-cache")

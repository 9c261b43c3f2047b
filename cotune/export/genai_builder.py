"""Llama-family export through onnxruntime-genai's model builder: GroupQueryAttention with a KV cache, and
`genai_config.json` for og.Model.

The builder runs as its own process (`python -m onnxruntime_genai.models.builder` with explicit arguments; its
`--help` crashes on Python 3.11) so that its per-tensor progress bars and quantizer logging land in a log file
at the file-descriptor level, and its memory is returned when it ends.

int4 is the builder's own: MatMulNBits blocks of 32, and for a tied embedding (SmolLM2) one shared 4-bit table
read by both GatherBlockQuantized (embedding) and MatMulNBits (lm_head) — the embedding is most of a small
model, so this is what brings int4 under a fifth of fp32. int8 is fp32 from the builder, then
quantize_dynamic (cotune.quantization.onnx_weights).
"""

import subprocess
import sys
from pathlib import Path

from cotune.export.folder import copy_runtime_files
from cotune.quantization.onnx_weights import quantize_int8_dynamic

BLOCK_SIZE = 32
ACCURACY_LEVEL = 4  # int8 activations inside MatMulNBits on CPU


def run_builder(merged: Path, out: Path, precision: str, cache: Path, log: Path) -> None:
    cmd = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(merged), "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(cache),
        "--extra_options", "hf_token=false",
    ]  # fmt: skip
    if precision == "int4":
        cmd += [f"block_size={BLOCK_SIZE}", f"accuracy_level={ACCURACY_LEVEL}", "is_symmetric=true"]
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(cmd)}\n")
        sink.flush()
        done = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"onnxruntime-genai model builder failed (exit {done.returncode}); end of {log}:\n{tail}")


def export_with_builder(merged: Path, out: Path, precision: str, work: Path, log: Path) -> None:
    """Write model.onnx (+ data), genai_config.json and the tokenizer files into `out`."""
    if precision == "int8":
        fp32 = work / "fp32"
        run_builder(merged, fp32, "fp32", work / "builder-cache", log)
        quantize_int8_dynamic(fp32 / "model.onnx", out / "model.onnx")
        copy_runtime_files(fp32, out)
    else:
        run_builder(merged, out, precision, work / "builder-cache", log)


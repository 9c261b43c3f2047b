"""A PEFT LoRA folder -> one `.onnx_adapter` file (onnxruntime's adapter format) for a runtime-adapter export.

Cheap (reads one safetensors file, writes ~the same bytes): the job can call it every round to
ship each global adapter to devices, which switch to it with `EdgeModel.set_adapter` /
`EdgeClassifier.set_adapter` over the base they already hold.

Tensor names follow the graph's LoRA inputs (cotune.export.runtime_graph): `lora.<module>.A` is lora_A
transposed, (in, r); `lora.<module>.B` is lora_B transposed and multiplied by peft's scaling (alpha / r, or
alpha / sqrt(r) with rsLoRA), (r, out). A module the adapter does not train keeps the graph's empty default and
adds nothing.
"""

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cotune.lm.adapter_folder import AdapterInfo

ADAPTER_SUFFIX = ".onnx_adapter"


class RuntimeAdapterError(ValueError):
    """A PEFT folder that cannot become a runtime adapter file."""


def lora_input_names(module: str) -> tuple[str, str]:
    """The graph inputs (A, B) of the LoRA branch of `module` (an HF module name, e.g. model.layers.0.mlp.up_proj)."""
    return f"lora.{module}.A", f"lora.{module}.B"


def _scaling(config: dict, rank: int) -> float:
    alpha = config.get("lora_alpha", rank)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def runtime_tensors(peft_folder: str | Path) -> dict[str, np.ndarray]:
    """{graph input name: fp32 array} for every LoRA module of the PEFT folder."""
    from safetensors import safe_open

    info = _read(peft_folder)
    folder, config = info.path, info.config
    if info.peft_type != "LORA":
        raise RuntimeAdapterError(f"adapter {folder} is {info.peft_type}: runtime adapter files hold LoRA only")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise RuntimeAdapterError(f"adapter {folder}: per-module rank_pattern / alpha_pattern are not supported")
    if config.get("fan_in_fan_out"):
        raise RuntimeAdapterError(f"adapter {folder}: fan_in_fan_out (GPT-2 Conv1D) LoRA has no runtime export")
    pairs: dict[str, dict[str, np.ndarray]] = {}
    with safe_open(str(info.weights), framework="numpy") as f:
        for key in info.shapes:
            module, part = info.lora.get(key, (None, None))
            if part not in ("lora_A", "lora_B"):
                raise RuntimeAdapterError(f"adapter {folder}: tensor {key} is not a LoRA A/B weight")
            pairs.setdefault(module, {})[part[-1]] = f.get_tensor(key).astype(np.float32)
    tensors = {}
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"} or pair["A"].shape[0] != pair["B"].shape[1]:
            raise RuntimeAdapterError(f"adapter {folder}: module {module} lacks a LoRA half or its ranks differ")
        a_name, b_name = lora_input_names(module)
        rank = pair["A"].shape[0]
        tensors[a_name] = np.ascontiguousarray(pair["A"].T)  # (in, r)
        tensors[b_name] = np.ascontiguousarray(pair["B"].T * np.float32(_scaling(config, rank)))  # (r, out)
    return tensors


def write_runtime_adapter(peft_folder: str | Path, out_file: str | Path, version: int = 1) -> Path:
    """Write the PEFT LoRA folder as an `.onnx_adapter` file (atomically: a reader never sees half a file).

    `version` is stored as the adapter version (e.g. the federated round). Milliseconds for a cotune adapter."""
    import onnxruntime as ort

    out = Path(out_file)
    if out.suffix != ADAPTER_SUFFIX:
        raise RuntimeAdapterError(f"runtime adapter file {out} must end in {ADAPTER_SUFFIX}")
    tensors = runtime_tensors(peft_folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(int(version))
    adapter.set_model_version(1)
    adapter.set_parameters({name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in tensors.items()})
    partial = out.with_name(out.name + ".partial")
    adapter.export_adapter(str(partial))
    os.replace(partial, out)
    return out


def write_beside(peft_folder: str | Path, version: int = 1) -> Path | None:
    """`<peft_folder>.onnx_adapter` next to a PEFT folder (e.g. checkpoints/round_003/slm_adapter ->
    slm_adapter.onnx_adapter), for a device that follows the federation round by round; None (nothing written)
    for an adapter that is not LoRA (prompt tuning ships as a KV-cache prefix at export instead)."""
    from cotune.lm.adapter_folder import AdapterFolderError, adapter_config

    folder = Path(peft_folder)
    try:
        peft_type = adapter_config(folder).get("peft_type")
    except AdapterFolderError as err:
        raise RuntimeAdapterError(str(err)) from err
    if peft_type != "LORA":
        return None
    return write_runtime_adapter(folder, folder.with_name(folder.name + ADAPTER_SUFFIX), version)


def _read(peft_folder: str | Path) -> "AdapterInfo":
    from cotune.lm.adapter_folder import AdapterFolderError, read_adapter  # peft loads torch: only when used

    try:
        return read_adapter(peft_folder)
    except AdapterFolderError as err:
        raise RuntimeAdapterError(str(err)) from err

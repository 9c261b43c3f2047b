"""Everything `cotune export` checks before it does any work: precision, base model, adapter, output folder.

The adapter check reads only file headers and the base model's config (its modules are built on the meta
device, no weights): a LoRA made for another model fails here with the module and shapes named, not after a
minute of merging and exporting.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cotune.edge_runtime.layout import MANIFEST

if TYPE_CHECKING:
    from cotune.lm.adapter_folder import AdapterInfo

PRECISIONS = ("fp32", "int8", "int4")
# Architectures exported (and tested) per path: onnxruntime-genai's model builder for Llama and Qwen2,
# transformers' own exporter (torch.onnx dynamo) for the others.
BUILDER_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
EXPORTER_ARCHITECTURES = ("GPT2LMHeadModel",)


class ExportInputError(ValueError):
    """An export input that cannot work; raised before any export work starts."""


@dataclass(frozen=True)
class BaseInfo:
    path: Path
    architecture: str
    exporter: str  # "builder" or "transformers"
    bnb_quantized: bool  # stored as bitsandbytes 4/8-bit: dequantized to fp32 before the merge


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ExportInputError(f"precision {precision!r} is not supported: expected one of {', '.join(PRECISIONS)}")


def check_base(path: Path) -> BaseInfo:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ExportInputError(f"base model folder {path} has no config.json")
    config = json.loads(config_file.read_text())
    architecture = (config.get("architectures") or ["<none>"])[0]
    if architecture in BUILDER_ARCHITECTURES:
        exporter = "builder"
    elif architecture in EXPORTER_ARCHITECTURES:
        exporter = "transformers"
    else:
        supported = ", ".join(BUILDER_ARCHITECTURES + EXPORTER_ARCHITECTURES)
        raise ExportInputError(f"base model {path}: architecture {architecture} is not supported (supported: {supported})")
    quant = config.get("quantization_config") or {}
    if quant and quant.get("quant_method") != "bitsandbytes":
        raise ExportInputError(
            f"base model {path} is quantized with {quant.get('quant_method')!r}; only fp32/bf16 or bitsandbytes "
            "checkpoints can be dequantized for the merge"
        )
    return BaseInfo(path, architecture, exporter, bool(quant))


def _base_linear_shapes(base: Path) -> dict[str, tuple[int, int]]:
    """{module name: (in_features, out_features)} of the base's linear layers (nn.Linear and GPT-2's Conv1D)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    config = AutoConfig.from_pretrained(base)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes[name] = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):
            shapes[name] = tuple(module.weight.shape)  # Conv1D stores (in, out)
    return shapes


def _read(path: Path) -> "AdapterInfo":
    from cotune.lm.adapter_folder import AdapterFolderError, read_adapter  # peft loads torch: not at import

    try:
        return read_adapter(path)
    except AdapterFolderError as err:
        raise ExportInputError(str(err)) from err


def _check_lora(info: "AdapterInfo", base: Path) -> "AdapterInfo":
    """A LoRA adapter whose every tensor fits a linear layer of `base`."""
    path = info.path
    linear = _base_linear_shapes(base)
    ranks: dict[str, dict[str, int]] = {}
    for key, shape in info.shapes.items():
        module, side = info.lora.get(key, (None, None))
        if side not in ("lora_A", "lora_B"):
            raise ExportInputError(f"adapter {path}: tensor {key} is not a LoRA A/B weight; cannot merge it")
        if module not in linear:
            raise ExportInputError(
                f"adapter {path} does not fit base {base}: module {module} (from {key}) is not a linear layer of the "
                f"base; adapter target_modules={info.config.get('target_modules')}"
            )
        fan_in, fan_out = linear[module]
        rank = shape[0] if side == "lora_A" else shape[-1]
        expected = (rank, fan_in) if side == "lora_A" else (fan_out, rank)
        if shape != expected:
            raise ExportInputError(
                f"adapter {path} does not fit base {base}: {key} has shape {shape}, the base's {module} "
                f"({fan_in} -> {fan_out}) needs {expected}"
            )
        ranks.setdefault(module, {})[side] = rank
    broken = [m for m, r in ranks.items() if set(r) != {"lora_A", "lora_B"} or r["lora_A"] != r["lora_B"]]
    if broken:
        raise ExportInputError(f"adapter {path}: LoRA pairs missing a half or with unequal ranks: {broken[:3]}")
    return info


def _check_prompt(info: "AdapterInfo", base: Path) -> "AdapterInfo":
    """A PEFT prompt-tuning adapter whose soft prompt fits the base's hidden size; headers only, no weights."""
    hidden = json.loads((base / "config.json").read_text()).get("hidden_size")
    shape = info.shapes.get("prompt_embeddings")
    if shape is None or len(shape) != 2 or shape[1] != hidden:
        raise ExportInputError(
            f"prompt-tuning adapter {info.path} does not fit base {base}: prompt_embeddings {shape}, the base's "
            f"hidden size is {hidden}"
        )
    if info.config.get("num_virtual_tokens") not in (None, shape[0]):
        raise ExportInputError(
            f"adapter {info.path}: num_virtual_tokens {info.config['num_virtual_tokens']} != {shape[0]} rows"
        )
    return info


def check_any_adapter(path: Path, base: Path) -> "AdapterInfo":
    """LoRA (merged or runtime) or prompt tuning (KV-cache prefix), by the folder's peft_type."""
    info = _read(path)
    if info.peft_type == "PROMPT_TUNING":
        return _check_prompt(info, base)
    if info.peft_type != "LORA":
        raise ExportInputError(
            f"adapter {path} is {info.peft_type}: only LoRA and prompt-tuning adapters can be exported"
        )
    return _check_lora(info, base)


def check_output(out: Path) -> None:
    """`out` may be new, empty, or a previous cotune export (replaced at the end); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise ExportInputError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportInputError(f"output folder {out} is not empty and holds no cotune export ({MANIFEST}); refusing to replace it")

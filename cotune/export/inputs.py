"""Everything `cotune export` checks before it does any work: precision, base model, adapter, output folder.

The adapter check reads only file headers and the base model's config (its modules are built on the meta
device, no weights): a LoRA made for another model fails here with the module and shapes named, not after a
minute of merging and exporting.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cotune.edge_runtime.layout import MANIFEST

PRECISIONS = ("fp32", "int8", "int4")
# Architectures exported (and tested) per path: onnxruntime-genai's model builder for Llama and Qwen2,
# transformers' own exporter (torch.onnx dynamo) for the others.
BUILDER_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
EXPORTER_ARCHITECTURES = ("GPT2LMHeadModel",)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")
PEFT_PREFIX = "base_model.model."


class ExportInputError(ValueError):
    """An export input that cannot work; raised before any export work starts."""


@dataclass(frozen=True)
class BaseInfo:
    path: Path
    architecture: str
    exporter: str  # "builder" or "transformers"
    bnb_quantized: bool  # stored as bitsandbytes 4/8-bit: dequantized to fp32 before the merge


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    sha256: str  # of adapter_model.safetensors
    rank: int
    target_modules: list[str]
    lora_modules: int


@dataclass(frozen=True)
class PromptAdapterInfo:
    path: Path
    sha256: str  # of adapter_model.safetensors
    num_virtual_tokens: int


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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def check_adapter(path: Path, base: Path) -> AdapterInfo:
    """A LoRA adapter folder whose every tensor fits a linear layer of `base`."""
    from safetensors import safe_open

    if not path.is_dir():
        raise ExportInputError(f"adapter folder {path} does not exist")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (path / name).is_file():
            raise ExportInputError(f"adapter folder {path} has no {name} (expected a PEFT adapter folder)")
    config = json.loads((path / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise ExportInputError(
            f"adapter {path} is {config.get('peft_type')}: only LoRA and prompt-tuning adapters can be exported"
        )
    with safe_open(str(path / ADAPTER_WEIGHTS), framework="numpy") as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    if not shapes:
        raise ExportInputError(f"adapter {path}: {ADAPTER_WEIGHTS} holds no tensors")
    linear = _base_linear_shapes(base)
    ranks: dict[str, dict[str, int]] = {}
    for key, shape in shapes.items():
        suffix = next((s for s in LORA_SUFFIXES if key.endswith(s)), None)
        if suffix is None or not key.startswith(PEFT_PREFIX):
            raise ExportInputError(f"adapter {path}: tensor {key} is not a LoRA A/B weight; cannot merge it")
        module = key[len(PEFT_PREFIX) : -len(suffix)]
        if module not in linear:
            raise ExportInputError(
                f"adapter {path} does not fit base {base}: module {module} (from {key}) is not a linear layer of the "
                f"base; adapter target_modules={config.get('target_modules')}"
            )
        fan_in, fan_out = linear[module]
        side = suffix[1:7]  # "lora_A" / "lora_B"
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
    targets = config.get("target_modules")
    return AdapterInfo(
        path=path,
        sha256=file_sha256(path / ADAPTER_WEIGHTS),
        rank=max(r["lora_A"] for r in ranks.values()),
        target_modules=sorted(targets) if isinstance(targets, list) else [str(targets)],
        lora_modules=len(ranks),
    )


def check_prompt_adapter(path: Path, base: Path) -> PromptAdapterInfo:
    """A PEFT prompt-tuning folder whose soft prompt fits the base's hidden size; headers only, no weights."""
    from safetensors import safe_open

    if not (path / ADAPTER_WEIGHTS).is_file():
        raise ExportInputError(f"adapter folder {path} has no {ADAPTER_WEIGHTS} (expected a PEFT adapter folder)")
    config = json.loads((path / ADAPTER_CONFIG).read_text())
    hidden = json.loads((base / "config.json").read_text()).get("hidden_size")
    with safe_open(str(path / ADAPTER_WEIGHTS), framework="numpy") as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    shape = shapes.get("prompt_embeddings")
    if shape is None or len(shape) != 2 or shape[1] != hidden:
        raise ExportInputError(
            f"prompt-tuning adapter {path} does not fit base {base}: prompt_embeddings {shape}, the base's hidden size "
            f"is {hidden}"
        )
    if config.get("num_virtual_tokens") not in (None, shape[0]):
        raise ExportInputError(f"adapter {path}: num_virtual_tokens {config['num_virtual_tokens']} != {shape[0]} rows")
    return PromptAdapterInfo(path, file_sha256(path / ADAPTER_WEIGHTS), shape[0])


def check_any_adapter(path: Path, base: Path) -> "AdapterInfo | PromptAdapterInfo":
    """LoRA (merged or runtime) or prompt tuning (KV-cache prefix), by the folder's peft_type."""
    config_file = path / ADAPTER_CONFIG
    if config_file.is_file() and json.loads(config_file.read_text()).get("peft_type") == "PROMPT_TUNING":
        return check_prompt_adapter(path, base)
    return check_adapter(path, base)


def check_output(out: Path) -> None:
    """`out` may be new, empty, or a previous cotune export (replaced at the end); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise ExportInputError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportInputError(f"output folder {out} is not empty and holds no cotune export ({MANIFEST}); refusing to replace it")

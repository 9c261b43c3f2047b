"""What an exported edge folder holds, read without torch: the ONNX file, its KV-cache shape, and the stop tokens.

Two layouts exist. The onnxruntime-genai model builder writes `genai_config.json` (og.Model reads it); the
transformers exporter path writes `edge_config.json` with the same facts in a small schema of ours. Both carry a
`manifest.json` written by `cotune export`.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from cotune.edge_runtime.prefix import PREFIX_FILE

GENAI_CONFIG = "genai_config.json"
EDGE_CONFIG = "edge_config.json"
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"


@dataclass(frozen=True)
class EdgeLayout:
    folder: Path
    onnx_file: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    context_length: int
    eos_token_ids: tuple[int, ...]
    genai: bool  # og.Model can run it (not with a soft-prompt prefix: og cannot start from a given cache)

    @property
    def onnx_path(self) -> Path:
        return self.folder / self.onnx_file


def _as_ids(value: int | list[int] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (int(value),)


def read_layout(folder: str | Path) -> EdgeLayout:
    """The layout of an exported folder; a folder that is not one is a FileNotFoundError naming what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"edge model folder {folder} does not exist")
    if not (folder / TOKENIZER).is_file():
        raise FileNotFoundError(f"{folder} has no {TOKENIZER}: not a cotune edge model folder")
    if (folder / GENAI_CONFIG).is_file():
        model = json.loads((folder / GENAI_CONFIG).read_text())["model"]
        decoder = model["decoder"]
        layout = EdgeLayout(
            folder=folder,
            onnx_file=decoder["filename"],
            num_layers=decoder["num_hidden_layers"],
            num_kv_heads=decoder["num_key_value_heads"],
            head_dim=decoder["head_size"],
            context_length=model["context_length"],
            eos_token_ids=_as_ids(model.get("eos_token_id")),
            genai=not (folder / PREFIX_FILE).is_file(),
        )
    elif (folder / EDGE_CONFIG).is_file():
        cfg = json.loads((folder / EDGE_CONFIG).read_text())
        layout = EdgeLayout(
            folder=folder,
            onnx_file=cfg["onnx_file"],
            num_layers=cfg["num_layers"],
            num_kv_heads=cfg["num_kv_heads"],
            head_dim=cfg["head_dim"],
            context_length=cfg["context_length"],
            eos_token_ids=_as_ids(cfg.get("eos_token_ids")),
            genai=False,
        )
    else:
        raise FileNotFoundError(f"{folder} has neither {GENAI_CONFIG} nor {EDGE_CONFIG}: not a cotune edge model folder")
    if not layout.onnx_path.is_file():
        raise FileNotFoundError(f"{layout.onnx_path} is missing")
    return layout

"""Can the job's final export work? Answered from the config and the SLM's config.json, before any training.

A job trains for minutes to hours and exports at the very end: an SLM architecture no exporter handles, or an
adapter mode its exporter lacks, must stop the job at the start, not after the last round. Torch-free and cheap:
a local folder's config.json is read, a hub id's from the hub cache when it is there; registry names are all
Llama. Call it again with `slm_path` once the job has resolved (downloaded) the SLM, before the first round, to
cover a hub model seen for the first time.
"""

import json
from pathlib import Path

from cotune.config.errors import ConfigError
from cotune.export.inputs import BUILDER_ARCHITECTURES, EXPORTER_ARCHITECTURES



def slm_architecture(spec: str, slm_path: Path | None = None) -> str | None:
    """The SLM's architecture without building or downloading it; None when unknown (registry names: Llama,
    which every exporter path handles)."""
    config = Path(slm_path or spec).expanduser() / "config.json"
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(spec, "config.json")
        except Exception:  # not a repo id, or no hub library: unknown
            return None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    return (json.loads(config.read_text()).get("architectures") or [None])[0]


def check_exportable(cfg, slm_path: Path | None = None) -> None:
    """Raise ConfigError if `cfg.export.enabled` and the final export cannot succeed for `cfg.models.slm`
    (`slm_path`: its resolved folder, when the caller has it)."""
    if not cfg.export.enabled:
        return
    architecture = slm_architecture(cfg.models.slm, slm_path)
    if architecture is None:
        return
    if architecture not in BUILDER_ARCHITECTURES + EXPORTER_ARCHITECTURES:
        raise ConfigError(
            "models.slm",
            f"an SLM the edge export supports ({', '.join(BUILDER_ARCHITECTURES + EXPORTER_ARCHITECTURES)}) while "
            "export.enabled = true (set export.enabled = false to train without the ONNX export)",
            f"{cfg.models.slm} ({architecture})",
        )
    if architecture in BUILDER_ARCHITECTURES:
        return
    if cfg.lora.method == "prompt_tuning":
        raise ConfigError(
            "lora.method",
            f"'lora' for an SLM of architecture {architecture}: its ONNX export (transformers' exporter) cannot "
            "ship a soft prompt (set export.enabled = false to keep prompt tuning)",
            cfg.lora.method,
        )
    if cfg.export.adapter_mode == "runtime":
        raise ConfigError(
            "export.adapter_mode",
            f"'merged' for an SLM of architecture {architecture}: runtime LoRA inputs need the model builder's graph",
            cfg.export.adapter_mode,
        )

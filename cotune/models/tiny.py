"""Tiny random-init Llama models on the real SmolLM2 tokenizer, for fast tests and smoke runs.

head_dim stays >= 32 so that vLLM's CPU attention backend accepts them.
"""

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cotune.models.cache import cached_folder
from cotune.models.smollm2 import smollm2_tokenizer

TINY_SHAPES = {
    # name: (hidden, layers, heads, kv_heads, intermediate)
    "tiny-llama": (128, 2, 4, 2, 256),
    "tiny-llama-wide": (256, 2, 4, 2, 512),
}


def build_tiny(name: str, cache_dir: str = "", seed: int = 0) -> Path:
    """A random-init Llama HF folder (fp32, tied embeddings) sharing SmolLM2's 49,152-token vocabulary."""
    hidden, layers, heads, kv_heads, inter = TINY_SHAPES[name]

    def build(out: Path) -> dict:
        tokenizer = smollm2_tokenizer(cache_dir)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            intermediate_size=inter,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return {"source": "random-init", "seed": seed, "params": sum(p.numel() for p in model.parameters())}

    return cached_folder(f"{name}-s{seed}", build, cache_dir)

"""LoRA adapters with non-zero weights, and the unbatched greedy reference the engines are compared with."""

from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM


def save_lora_adapter(base: Path, out: Path, r: int = 8, seed: int = 0, modules=("q_proj", "v_proj", "down_proj")):
    """A LoRA adapter with random non-zero A and B (so it changes outputs); returns the PeftModel."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=2 * r, target_modules=list(modules), init_lora_weights=False
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    return peft_model


def greedy_one_by_one(model, tokenizer, prompts, max_tokens):
    """Reference: unbatched (so unpadded) greedy decoding."""
    texts = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return texts

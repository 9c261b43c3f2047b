"""Prompt-tuned adapters at export: the soft prompt becomes the KV cache it leaves (cotune.edge_runtime.prefix).

The base is exported as it is; `prompt_prefix.npz` holds each layer's keys and values of the virtual tokens,
computed once in fp32 by running the base on the trained prompt embeddings. PyTorch's reference for parity is
peft's own forward (soft prompt prepended through inputs_embeds), with the virtual positions dropped.
"""

from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel

from cotune.edge_runtime.prefix import PREFIX_FILE


class PromptTunedReference(torch.nn.Module):
    """peft's prompt-tuned forward with logits for the real tokens only (what the export's runtime returns)."""

    def __init__(self, base: PreTrainedModel, adapter: Path) -> None:
        from peft import PeftModel

        super().__init__()
        self.peft = PeftModel.from_pretrained(base, str(adapter)).eval()
        self.virtual = self.peft.peft_config["default"].num_virtual_tokens

    def forward(self, input_ids: torch.Tensor):
        out = self.peft(input_ids=input_ids)
        out.logits = out.logits[:, self.virtual :]
        return out


@torch.no_grad()
def write_prompt_prefix(reference: PromptTunedReference, out: Path) -> int:
    """Run the base on the soft prompt and save every layer's KV, named as the builder's cache inputs."""
    embeddings = reference.peft.get_prompt_embedding_to_save("default").float()
    base = reference.peft.get_base_model()
    cache = base(inputs_embeds=embeddings[None], use_cache=True).past_key_values
    arrays = {}
    for i, layer in enumerate(cache.layers):
        arrays[f"past_key_values.{i}.key"] = layer.keys.float().numpy()
        arrays[f"past_key_values.{i}.value"] = layer.values.float().numpy()
    np.savez(out / PREFIX_FILE, **arrays)
    return embeddings.shape[0]

"""Parity of an export with the PyTorch merged model, measured at export time and recorded in the manifest.

- greedy_token_agreement: share of positions where the exported model's greedy tokens equal PyTorch's
  (`generate`, do_sample=False), `tokens` new tokens per prompt, both stopping at the same EOS ids; positions
  one side did not reach count as disagreements.
- max_abs_logit_diff: largest logit difference over every position of prompt + PyTorch continuation, both
  models teacher-forced on the same tokens (so it does not depend on where greedy paths part).
"""

from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from cotune.edge_runtime import EdgeModel
from cotune.export.prompts import PARITY_PROMPTS


def _until_eos(tokens: list[int], eos: tuple[int, ...]) -> list[int]:
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[:i]
    return tokens


@torch.no_grad()
def measure_parity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    edge_dir: Path,
    prompts: int,
    tokens: int,
) -> dict:
    """Compare `model` (PyTorch, fp32 merged) with the export in `edge_dir` on the first `prompts` prompts."""
    if prompts == 0:
        return {"prompts": 0}
    if prompts > len(PARITY_PROMPTS):
        raise ValueError(f"at most {len(PARITY_PROMPTS)} parity prompts are built in, {prompts} asked")
    edge = EdgeModel(edge_dir)
    eos = edge.layout.eos_token_ids
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    gen = GenerationConfig(
        max_new_tokens=tokens, do_sample=False, eos_token_id=list(eos) or None, pad_token_id=pad
    )
    agree = total = exact = 0
    max_diff = 0.0
    for prompt in PARITY_PROMPTS[:prompts]:
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        input_ids = torch.tensor([ids])
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=gen)
        expected = _until_eos(out[0, len(ids) :].tolist(), eos)
        got = list(edge.stream_tokens(ids, tokens))
        agree += sum(a == b for a, b in zip(expected, got))
        total += max(len(expected), len(got))
        exact += expected == got
        sequence = ids + expected
        reference = model(torch.tensor([sequence])).logits[0].float().numpy()
        max_diff = max(max_diff, float(np.abs(edge.sequence_logits(sequence) - reference).max()))
    return {
        "prompts": prompts,
        "tokens_per_prompt": tokens,
        "greedy_token_agreement": agree / max(total, 1),
        "prompts_all_tokens_equal": exact,
        "max_abs_logit_diff": max_diff,
        "runtime_backend": edge.backend,
    }

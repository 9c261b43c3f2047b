"""Parity of an export with the PyTorch merged model, measured at export time and recorded in the manifest.

The exported model decodes greedily (its own runtime, `tokens` new tokens per prompt, stopping at EOS); PyTorch
then scores prompt + those tokens in ONE teacher-forced forward. PyTorch's greedy decode equals the export's
exactly when, at every step, PyTorch's argmax given the same prefix is the export's token (by induction over
the steps; a stop at EOS must be PyTorch's argmax too). That checks greedy equality for a 64-token continuation
at the cost of one forward instead of 64 incremental ones.

- greedy_token_agreement: share of the export's decoding steps where PyTorch's argmax agrees (1.0 = the greedy
  continuations are identical).
- prompts_all_tokens_equal: prompts whose whole continuation agrees.
- max_abs_logit_diff: largest |logit difference| over every position of prompt + continuation.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cotune.edge_runtime import EdgeModel


@torch.no_grad()
def measure_parity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    edge_dir: Path,
    prompts: Sequence[str],
    tokens: int,
) -> dict:
    """Compare `model` (PyTorch, fp32 merged) with the export in `edge_dir` on `prompts`."""
    if not prompts:
        return {"prompts": 0}
    edge = EdgeModel(edge_dir)
    eos = edge.layout.eos_token_ids
    agree = steps = exact = 0
    max_diff = 0.0
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        got = list(edge.stream_tokens(ids, tokens))
        sequence = ids + got
        reference = model(torch.tensor([sequence])).logits[0].float().numpy()
        predicted = reference[len(ids) - 1 :].argmax(axis=1)  # PyTorch's next token after each prefix
        matches = [int(predicted[i]) == token for i, token in enumerate(got)]
        if len(got) < tokens:  # the export stopped at EOS: PyTorch must stop there too
            matches.append(int(predicted[len(got)]) in eos)
        agree, steps, exact = agree + sum(matches), steps + len(matches), exact + all(matches)
        max_diff = max(max_diff, float(np.abs(edge.sequence_logits(sequence) - reference).max()))
    return {
        "prompts": len(prompts),
        "tokens_per_prompt": tokens,
        "greedy_token_agreement": agree / max(steps, 1),
        "prompts_all_tokens_equal": exact,
        "max_abs_logit_diff": max_diff,
        "runtime_backend": edge.backend,
    }

"""Adapters through peft: attach LoRA or prompt tuning, and move adapter-only state to and from the wire."""

import numpy as np
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, PromptTuningConfig, TaskType, get_peft_model
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from transformers import PreTrainedModel

from cotune.config.schema import LoraConfig


def peft_config(cfg: LoraConfig):
    if cfg.method == "prompt_tuning":
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens)
    return PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
    )


def attach_adapter(model: PreTrainedModel, cfg: LoraConfig, gradient_checkpointing: bool = False) -> PeftModel:
    """Wrap `model` with a fresh trainable adapter over its frozen base, at the dtypes the loader chose.

    Not peft's prepare_model_for_kbit_training: it would upcast a quantized base's frozen bf16 embeddings (kept at
    the compute dtype by `load_causal_lm` for memory) back to fp32; its other steps are freezing and checkpointing.
    Checkpointing is non-reentrant: it needs no input that requires grad, and replays dropout's random state.
    """
    model.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return get_peft_model(model, peft_config(cfg))


def adapter_state(model: PeftModel) -> dict[str, np.ndarray]:
    """The adapter's tensors only (what leaves a silo), as fp32 numpy copies keyed by peft's state-dict names.

    Copies, because on CPU `.numpy()` would alias the live parameters and a kept state would change with training.
    """
    return {k: v.detach().float().cpu().numpy().copy() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: PeftModel, state: dict[str, np.ndarray]) -> None:
    """Load adapter tensors in place; a key or shape that does not fit this model is an error, never ignored."""
    own = get_peft_model_state_dict(model)
    if set(own) != set(state):
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise ValueError(f"adapter keys do not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
    tensors = {}
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(f"adapter tensor {key}: shape {tuple(value.shape)}, model expects {tuple(own[key].shape)}")
        tensors[key] = torch.as_tensor(np.asarray(value, dtype=np.float32)).to(own[key].dtype)
    set_peft_model_state_dict(model, tensors)

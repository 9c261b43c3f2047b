"""A causal LM with its adapter attached, as silos hold their SLM and the server holds both SLM and LLM.

Both go through the same quantized loader and trainer, so the server's QLoRA updates of the LLM inherit the
silos' fix for the bitsandbytes CPU trap rather than repeating it.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from cotune.config.schema import CotuneConfig
from cotune.data.tasks import ClassificationTask
from cotune.lm.adapters import adapter_state, attach_adapter, load_adapter_state
from cotune.lm.evaluate import label_probabilities, label_word_accuracy
from cotune.lm.trainer import TrainResult, sample_batches, steps_for, train_steps
from cotune.models import resolve_model
from cotune.quantization.loading import load_causal_lm


@dataclass
class AdaptedLM:

    model: torch.nn.Module
    tokenizer: AutoTokenizer

    @classmethod
    def load(cls, cfg: CotuneConfig, role: Literal["slm", "llm"] = "slm") -> "AdaptedLM":
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        path = resolve_model(getattr(cfg.models, role), cfg.models.cache_dir)
        precision = cfg.quantization.slm_load if role == "slm" else cfg.quantization.llm_load
        base = load_causal_lm(path, precision, cfg.quantization.compute_dtype, cfg.quantization.double_quant)
        torch.manual_seed(cfg.train.seed)  # identical adapter init in every silo and on the server
        return cls(attach_adapter(base, cfg.lora, cfg.train.gradient_checkpointing), AutoTokenizer.from_pretrained(path))

    def state(self) -> dict[str, np.ndarray]:
        return adapter_state(self.model)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        load_adapter_state(self.model, state)

    def accuracy(self, task: ClassificationTask, dataset: Dataset, cfg: CotuneConfig) -> float:
        return label_word_accuracy(
            self.model, self.tokenizer, task, dataset, cfg.train.eval_batch_size, cfg.train.max_length
        )

    def label_probabilities(self, task: ClassificationTask, texts: list[str], cfg: CotuneConfig) -> np.ndarray:
        return label_probabilities(
            self.model, self.tokenizer, task, texts, cfg.train.eval_batch_size, cfg.train.max_length
        )

    def train(self, task: ClassificationTask, dataset: Dataset, cfg: CotuneConfig, seed: int, desc: str) -> TrainResult:
        t = cfg.train
        torch.manual_seed(seed)  # dropout too: a resumed round replays exactly
        batches = sample_batches(self.tokenizer, task, dataset, t.batch_size, t.max_length, seed)
        steps = steps_for(len(dataset), t.steps, t.epochs, t.batch_size, t.grad_accum)
        return train_steps(
            self.model, batches, steps, t.lr, t.weight_decay, t.grad_accum, progress=cfg.run.progress, desc=desc,
            release_freed_memory=t.release_freed_memory,
        )

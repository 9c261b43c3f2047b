"""GenerationEngine in process with HF transformers: the fallback where no vLLM environment exists.

Batched `generate` with left padding, rows sorted by prompt length so that a batch pads little. Adapters are
PEFT folders loaded onto the one base model under their names; `adapter=None` runs with adapters disabled.
A LoRA adapter is merged into the base weights for the duration of a generate call (server.hf_merge_adapter):
PEFT's unmerged LoRA layers add two small matrix products per layer per step, merged weights cost nothing extra.
The base weights are restored bit for bit afterwards (saved copies, not an unmerge's float round trip).
Sampling ignores the model folder's generation_config.json, as the vLLM engine does (--generation-config vllm),
so that both backends mean the same thing by the same Sampling.
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import PeftModel, PeftType
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel

from cotune.quantization.loading import DTYPES, default_device
from cotune.server_vllm.adapters import check_adapter
from cotune.config.server import ServerConfig
from cotune.server_vllm.interface import GenerationEngine, Sampling, check_prompt_lengths
from cotune.server_vllm.errors import AdapterError


class HfEngine(GenerationEngine):
    backend = "hf"

    def __init__(self, cfg: ServerConfig, model_dir: Path) -> None:
        self.cfg, self.model_dir = cfg, Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Inference only: the configured dtype, not load_causal_lm's fp32 masters for training.
        self.model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
            self.model_dir, dtype=DTYPES[cfg.hf_dtype], device_map=default_device()
        ).eval()
        self.max_model_len = min(cfg.max_model_len, self.model.config.max_position_embeddings)
        self.generated_tokens = 0
        self._peft: PeftModel | None = None
        eos = self.model.config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos if eos is not None else self.tokenizer.eos_token_id])
        torch.manual_seed(cfg.seed)

    def load_adapter(self, name: str, path: str | Path) -> None:
        folder = Path(path).expanduser()
        check_adapter(folder, self.model_dir)
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self.model, folder, adapter_name=name).eval()
            return
        if name in self._peft.peft_config:
            self._peft.delete_adapter(name)
        self._peft.load_adapter(folder, adapter_name=name)
        self._peft.eval()

    @torch.inference_mode()
    def generate(self, prompts: list[str], sampling: Sampling, adapter: str | None = None) -> list[list[str]]:
        if adapter is not None and (self._peft is None or adapter not in self._peft.peft_config):
            loaded = sorted(self._peft.peft_config) if self._peft else []
            raise AdapterError(f"adapter {adapter!r} is not loaded (loaded: {loaded}): load_adapter first")
        ids = self.tokenizer(prompts)["input_ids"] if prompts else []
        check_prompt_lengths([len(x) for x in ids], sampling.max_tokens, self.max_model_len)
        # Greedy decoding gives n equal samples: generate once per prompt and repeat it.
        copies = sampling.n if sampling.temperature > 0 else 1
        rows = [i for i in range(len(prompts)) for _ in range(copies)]
        order = sorted(range(len(rows)), key=lambda r: -len(ids[rows[r]]))
        texts: list[str] = [""] * len(rows)
        config = self._generation_config(sampling)
        with self._adapter(adapter) as model:
            for start in range(0, len(order), self.cfg.hf_batch_size):
                chunk = order[start : start + self.cfg.hf_batch_size]
                batch = self.tokenizer.pad({"input_ids": [ids[rows[r]] for r in chunk]}, return_tensors="pt")
                batch = batch.to(model.device)
                out = model.generate(**batch, generation_config=config)
                new = out[:, batch["input_ids"].shape[1] :]
                self.generated_tokens += self._count_tokens(new)
                for r, text in zip(chunk, self.tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
                    texts[r] = text
        grouped = [texts[i * copies : (i + 1) * copies] for i in range(len(prompts))]
        return [group * (sampling.n // copies) for group in grouped]

    def close(self) -> None:
        self._peft = None
        self.model = None  # type: ignore[assignment]

    @contextlib.contextmanager
    def _adapter(self, name: str | None) -> Iterator[PreTrainedModel | PeftModel]:
        if self._peft is None:
            yield self.model
        elif name is None:
            with self._peft.disable_adapter():
                yield self._peft
        else:
            self._peft.set_adapter(name)
            if self.cfg.hf_merge_adapter and self._peft.peft_config[name].peft_type == PeftType.LORA:
                with self._merged(name):
                    yield self._peft
            else:
                yield self._peft

    @contextlib.contextmanager
    def _merged(self, name: str) -> Iterator[None]:
        """Adapter `name` merged into the base weights; afterwards the saved base weights are copied back."""
        layers = [m for m in self._peft.modules() if isinstance(m, LoraLayer) and name in m.lora_A]
        saved = [layer.get_base_layer().weight.detach().clone() for layer in layers]
        self._peft.merge_adapter([name])
        try:
            yield
        finally:
            self._peft.unmerge_adapter()
            for layer, weight in zip(layers, saved, strict=True):
                layer.get_base_layer().weight.data.copy_(weight)

    def _generation_config(self, sampling: Sampling) -> GenerationConfig:
        sample = sampling.temperature > 0
        return GenerationConfig(
            max_new_tokens=sampling.max_tokens,
            min_new_tokens=sampling.min_tokens,
            do_sample=sample,
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None,
            top_k=sampling.top_k if sample else None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self._eos),
            bos_token_id=self.tokenizer.bos_token_id,
        )

    def _count_tokens(self, new: torch.Tensor) -> int:
        """Generated tokens per row up to and including the first EOS (what follows is padding)."""
        is_eos = torch.isin(new, torch.tensor(sorted(self._eos), device=new.device))
        first = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, new.shape[1])
        return int(first.sum())

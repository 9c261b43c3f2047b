"""FedCoLLM mutual distillation settings (LLM <-> aggregated SLM on the server's public split)."""

from dataclasses import dataclass
from typing import Literal

from cotune.config.errors import require
from cotune.config.fields import option


@dataclass
class FedCoLLMConfig:
    top_k: int = option(
        128, help="Teacher logits kept per response token (capped at the vocabulary); the rest gets no mass."
    )
    temperature: float = option(2.0, help="Softening temperature T of teacher and student distributions.")
    kd_weight: float = option(
        1.0, help="lambda in L = CE + lambda * T^2 * KL(p_teacher || q_student), token means over response tokens."
    )
    order: Literal["llm_to_slm_first", "slm_to_llm_first"] = option(
        "llm_to_slm_first", help="Which direction is distilled first each round."
    )
    epochs: float = option(
        1.0, help="Passes over the public split per direction per round (rounded up to whole batches)."
    )
    steps: int = option(
        6, help="Optimizer steps per direction per round; > 0 overrides epochs (a full pass costs minutes on CPU)."
    )
    lr: float = option(2e-4, help="Learning rate of the student's LoRA during distillation.")
    batch_size: int = option(8, help="Public examples per distillation step (see mutual.encode_public_split).")

    def validate(self) -> None:
        require(self.top_k > 0, "top_k", "an integer > 0", self.top_k)
        require(self.temperature > 0, "temperature", "a number > 0", self.temperature)
        require(self.kd_weight >= 0, "kd_weight", "a number >= 0", self.kd_weight)
        require(self.epochs > 0 or self.steps > 0, "epochs", "epochs > 0 or steps > 0", self.epochs)
        require(self.steps >= 0, "steps", "an integer >= 0", self.steps)
        require(self.lr > 0, "lr", "a number > 0", self.lr)
        require(self.batch_size > 0, "batch_size", "an integer > 0", self.batch_size)

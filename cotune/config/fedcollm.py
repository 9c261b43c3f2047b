"""FedCoLLM mutual distillation settings (LLM <-> aggregated SLM on the server's public split)."""

from dataclasses import dataclass
from typing import Literal

from cotune.config.errors import require
from cotune.config.fields import option


@dataclass
class FedCoLLMConfig:
    targets: Literal["label_words", "topk"] = option(
        "label_words",
        help="What the student matches: the teacher's distribution over the task's label words at the answer "
        "position (renormalized), or its top-k tokens at every answer position (FedCoLLM's reference code).",
    )
    top_k: int = option(
        128, help="Teacher logits kept per response token when targets = 'topk' (capped at the vocabulary)."
    )
    temperature: float = option(
        1.0, help="Softening temperature T of teacher and student distributions (T = 1 suits language models)."
    )
    kd_weight: float = option(
        0.1,
        help="lambda in L = CE + lambda * T^2 * KL(p_teacher || q_student): CE-dominant, as FedMKT's 0.9 / 0.1, so "
        "the labels, not a weaker teacher's guesses, lead.",
    )
    llm_kd_weight: float = option(
        -1.0,
        help="lambda of the SLM -> LLM direction alone; < 0: kd_weight's. 0 leaves that direction the CE on the "
        "public labels, the public-only baseline's training: the SLM then teaches the LLM nothing, and what the "
        "LLM gains beyond that baseline comes from the silos through CrossLM (benchmarks/llm_kd_weight.py).",
    )
    gate: Literal["teacher_better", "none"] = option(
        "teacher_better",
        help="Distil an example only while the teacher's loss on its label is below the student's (FedMKT's "
        "DualMinCE): a teacher cannot pull the student away where the student already knows better.",
    )
    gate_loss: Literal["answer", "distilled"] = option(
        "answer",
        help="The loss the gate compares teacher and student on: their CE over the answer tokens (FedMKT's "
        "DualMinCE), or over what is distilled — the label words renormalized for targets = 'label_words' (the "
        "answer CE for 'topk'). The answer CE counts a teacher that puts more mass on the answer's format as better "
        "even where its label is the wrong one, and the KL then pulls the student toward that label. "
        "benchmarks/distill_gate.py: 'distilled' lifted the SLM's 3-seed mean 1.5 points; the LLM's figures there are "
        "CrossLM's reward step's noise, not a measured gain, so the default stays 'answer' (README).",
    )
    order: Literal["llm_to_slm_first", "slm_to_llm_first"] = option(
        "slm_to_llm_first",
        help="Which direction is distilled first each round. SLM -> LLM first: the LLM learns from the round's "
        "SLM and the public labels, then teaches the SLM in the same round (in round 1 a zero-shot LLM has "
        "nothing to teach).",
    )
    epochs: float = option(
        1.0, help="Passes over the public split per direction per round (rounded up to whole batches)."
    )
    steps: int = option(
        20,
        help="Optimizer steps of the LLM -> SLM direction per round; > 0 overrides epochs. The SLM learns the "
        "public labels here: with 12 steps at lr 2e-4 cotune stayed below FedAvg; with 20 at 5e-4 cotune is above "
        "FedAvg in every seed of benchmarks/cotune_quality.py (README, 'Co-tuning quality').",
    )
    llm_steps: int = option(
        10, help="Optimizer steps of the SLM -> LLM direction per round; 0: the same as `steps`."
    )
    lr: float = option(
        5e-4, help="Learning rate of the student's LoRA during distillation (the silos' train.lr: both train the SLM)."
    )
    holdout_size: int = option(
        0,
        help="Public examples kept out of distillation to check each direction: a direction that leaves its "
        "student less accurate on them than before is undone (0: no check). Off by default: on 100 examples the "
        "check undid helpful steps on noise (its standard error is ~5 points) and cost two evaluations a direction.",
    )
    batch_size: int = option(8, help="Public examples per distillation step (see mutual.encode_public_split).")
    report_fit: bool = option(
        False,
        help="Also log the student's CE and KL over the distilled batches before and after each direction, and "
        "the share of examples its teacher was better on: two more no-grad passes per direction (diagnostics).",
    )

    def validate(self) -> None:
        require(self.top_k > 0, "top_k", "an integer > 0", self.top_k)
        require(self.temperature > 0, "temperature", "a number > 0", self.temperature)
        require(self.kd_weight >= 0, "kd_weight", "a number >= 0", self.kd_weight)
        require(self.epochs > 0 or self.steps > 0, "epochs", "epochs > 0 or steps > 0", self.epochs)
        require(self.steps >= 0, "steps", "an integer >= 0", self.steps)
        require(self.llm_steps >= 0, "llm_steps", "an integer >= 0", self.llm_steps)
        require(self.lr > 0, "lr", "a number > 0", self.lr)
        require(self.batch_size > 0, "batch_size", "an integer > 0", self.batch_size)
        require(self.holdout_size >= 0, "holdout_size", "an integer >= 0", self.holdout_size)

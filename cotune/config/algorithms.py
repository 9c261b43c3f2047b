"""The algorithm names `run.algorithm` and `run.compare` accept, and what each one's server step uses.

The one list: config validation, the cloud side (which server steps run, whether an LLM is loaded) and the job
(whether a generation engine starts, whether the LLM baseline is measured) all read it, so a new algorithm is one
entry here plus its home in `cotune/algorithms/`.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Algorithm:
    distills: bool  # FedCoLLM's mutual distillation LLM <-> SLM after each FedAvg (cotune/algorithms/fedcollm/)
    crosslm: bool  # CrossLM's generate / score / reward step after each FedAvg (cotune/algorithms/crosslm/)
    summary: str  # one line for `cotune config --explain`

    @property
    def uses_llm(self) -> bool:
        """The server loads the LLM and updates its adapter."""
        return self.distills or self.crosslm


ALGORITHMS: dict[str, Algorithm] = {
    "fedavg": Algorithm(distills=False, crosslm=False, summary="plain FedAvg"),
    "fedcollm": Algorithm(distills=True, crosslm=False, summary="FedAvg + FedCoLLM"),
    "crosslm": Algorithm(distills=False, crosslm=True, summary="FedAvg + CrossLM"),
    "cotune": Algorithm(distills=True, crosslm=True, summary="FedAvg + FedCoLLM + CrossLM"),
}

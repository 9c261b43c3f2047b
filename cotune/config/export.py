"""Edge export settings: how the tuned SLM leaves as a quantized ONNX model."""

from dataclasses import dataclass
from typing import Literal

from cotune.config.errors import require
from cotune.config.fields import option


@dataclass
class ExportConfig:
    enabled: bool = option(True, help="`cotune run` ends by exporting the final global SLM.")
    precision: Literal["fp32", "int8", "int4"] = option("int4", help="Weight precision of the ONNX model.")
    parity_prompts: int = option(8, help="Prompts whose greedy tokens are compared with PyTorch at export.")
    parity_tokens: int = option(64, help="Greedy tokens compared per parity prompt.")
    adapter_mode: Literal["merged", "runtime"] = option(
        "merged",
        help="LoRA merged into the weights before quantization (fastest decode), or kept as an fp32 .onnx_adapter "
        "file over the quantized base, switchable at runtime (exact adapter, updates the size of the adapter).",
    )

    def validate(self) -> None:
        require(self.parity_prompts >= 0, "parity_prompts", "an integer >= 0", self.parity_prompts)
        require(self.parity_tokens > 0, "parity_tokens", "an integer > 0", self.parity_tokens)

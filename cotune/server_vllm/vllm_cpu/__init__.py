"""cotune's additions to the vLLM server process on CPU hosts: dense LoRA ops and the script that installs them.

The modules here run inside the vLLM environment (launch.py by path, lora_ops.py as its sibling): they import
torch and vLLM only, never the rest of cotune.
"""

from pathlib import Path

LAUNCHER = Path(__file__).with_name("launch.py")
STOCK_ENTRY = ("-m", "vllm.entrypoints.openai.api_server")


def server_entry(dense_lora: bool) -> list[str]:
    """What follows the vLLM python in the server command: cotune's launcher, or vLLM's own entry point."""
    return [str(LAUNCHER)] if dense_lora else list(STOCK_ENTRY)

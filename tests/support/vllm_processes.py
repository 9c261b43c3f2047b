"""vLLM processes started under this test process, to check that none outlives its engine."""

import psutil

from cotune.processes import living


def vllm_processes() -> list[psutil.Process]:
    """Living descendants of this test process that belong to vLLM."""
    found = []
    for child in living(psutil.Process().children(recursive=True)):
        try:
            if "vllm" in " ".join(child.cmdline()).lower() or child.name().startswith("VLLM"):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found

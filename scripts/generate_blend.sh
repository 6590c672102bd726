#!/usr/bin/env bash
# One command: set up what is needed, then generate a textured object into a .blend (and .glb), headless.
#
#   scripts/generate_blend.sh ["a red cube"] [OUT_DIR]
#
# Environment (all optional):
#   PYTHON   Python 3.11 with bpy + the engine's requirements (default: .venv/bin/python, set up by scripts/setup_env.sh)
#   MODEL    hub id, local diffusers folder or builtin:shapes. Default: builtin:shapes (offline, small)
#            unless the Hugging Face hub is reachable AND a CUDA GPU is present, then the engine's default
#            (Stable Diffusion 2.1 base; on CPU it would take hours).
#   PRESET   draft | standard | high (default: draft)
#   STEPS, SEED, DEVICE   passed to the engine when set
#   EXTRA_ARGS            further batch/engine options, word-split (e.g. "--set iso=5 --mesh-resolution 128")
#
# Runs `python -m dreamfusion_blender.batch generate` (the same code as `blender -c dreamfusion generate`),
# prints one line per run and exits non-zero if the generation failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROMPT="${1:-a red cube}"
OUT="${2:-$ROOT/out}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

if [ "$PYTHON" = "$ROOT/.venv/bin/python" ]; then
  # The project's environment: created and filled on first use (torch, diffusers, bpy, ...).
  bash "$ROOT/scripts/setup_env.sh" >&2
fi
"$PYTHON" -c "import bpy, torch" 2>/dev/null || {
  echo "error: $PYTHON cannot import bpy and torch; install them: $PYTHON -m pip install -r engine/requirements.txt bpy==5.0.1" >&2
  exit 2
}

if [ -z "${MODEL:-}" ]; then
  if "$PYTHON" - <<'PY' 2>/dev/null
import sys, urllib.request
import torch
if not torch.cuda.is_available():
    sys.exit(1)
urllib.request.urlopen("https://huggingface.co/api/models?limit=1", timeout=5)
PY
  then MODEL="$("$PYTHON" -m engine models --default)"  # the known-model table's default (engine/known_models.json)
  else MODEL="builtin:shapes"
  fi
fi
echo "model: $MODEL" >&2

ARGS=(generate --prompt "$PROMPT" --out "$OUT" --model "$MODEL" --preset "${PRESET:-draft}" --python "$PYTHON" --verbose)
[ -n "${STEPS:-}" ] && ARGS+=(--steps "$STEPS")
[ -n "${SEED:-}" ] && ARGS+=(--seed "$SEED")
[ -n "${DEVICE:-}" ] && ARGS+=(--device "$DEVICE")
# shellcheck disable=SC2206
[ -n "${EXTRA_ARGS:-}" ] && ARGS+=(${EXTRA_ARGS})
exec "$PYTHON" -m dreamfusion_blender.batch "${ARGS[@]}"

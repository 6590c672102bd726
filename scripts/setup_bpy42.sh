#!/usr/bin/env bash
# The add-on's minimum Blender (addon_manifest.toml: 4.2) for the tests only: bpy 4.2 LTS (PyPI, Python 3.11
# only) in its own venv, .venv-bpy42, because .venv holds the current bpy. Only scripts/test.sh calls this, so
# the README's main command does not pay for it. It runs the add-on tests (scripts/test.sh); the engine they
# start runs in .venv. Pinned: the version the tests ran on. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
BPY42_SPEC=${BPY42_SPEC:-bpy==4.2.23}
if [ ! -x .venv-bpy42/bin/python ] || ! .venv-bpy42/bin/python -c "import bpy, pytest" >/dev/null 2>&1; then
  PY311=${PYTHON311:-python3.11}
  if command -v "$PY311" >/dev/null 2>&1 && "$PY311" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "[setup] creating .venv-bpy42 ($BPY42_SPEC, about 1 GB) for the add-on tests on Blender 4.2 LTS"
    "$PY311" -m venv .venv-bpy42
    .venv-bpy42/bin/python -m pip install -q "$BPY42_SPEC" pytest
  else
    echo "[setup] no Python 3.11 found: the add-on tests will not run on bpy 4.2 (set PYTHON311=...)"
  fi
fi

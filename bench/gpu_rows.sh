#!/bin/sh
# The GPU rows of docs/BENCHMARKS.md in one command, for a session with a CUDA GPU (issue 14):
#   sh bench/gpu_rows.sh
# 1. the CUDA half of the no-sync test (expected today: xfail, 2 nonzero() syncs per step from packing);
# 2. a trained field: 200 steps of the builtin prior (as the CPU rows used), so the render comparison
#    does not run on the start blob, which flatters empty-space skipping;
# 3. SD-1.5-size draft: fast vs reference render path and VAE vs tiny encoder, side by side (fp16);
# 4. SD-2.1-size standard preset with the default path (whole-run extrapolation: s/step x steps).
# Each bench run writes bench/results/<name>.json and regenerates docs/BENCHMARKS.md.
set -e
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
$PY -m pytest -q -rxX tests/test_train_step.py -k cuda || true
FIELD_OUT=$(mktemp -d)
$PY -m engine generate "a red cube" --model builtin:shapes --device cuda --steps 200 --seed 0 --no-export --no-progress \
    --out "$FIELD_OUT" > /dev/null
FIELD=$(ls -d "$FIELD_OUT"/*/ | head -n 1)
$PY bench/bench_sds.py --device cuda --dtype fp16 --model-size sd15 --preset draft --steps 20 --warmup 3 \
    --variants fast-vae,reference-vae,fast-tiny --field-checkpoint "$FIELD" --no-export --no-compare-encodings
$PY bench/bench_sds.py --device cuda --dtype fp16 --model-size sd21 --preset standard --steps 20 --warmup 3 \
    --field-checkpoint "$FIELD" --no-export --no-compare-encodings

#!/usr/bin/env bash
# DreamFusion's Table 1 in one command: generate every caption of the set (the batch command, local or
# Ray), judge the runs with CLIP B/32, B/16 and L/14, and print our R-Precision beside the paper's.
#
#   bench/reproduce_table1.sh MODEL PRESET
#
# Environment (all optional):
#   PROMPTS     caption file (default: engine/captions/coco_object_centric_153.txt, the paper's 153)
#   OUT         batch folder (default: bench/results/table1-<model>-<preset>-<UTC time>); a re-run with
#               the same OUT resumes the batch and skips finished captions
#   CLIPS       three CLIP judges in the order B/32 B/16 L/14 (default: "B/32 B/16 L/14",
#               engine/known_models.json, its "judges"); folders or hub ids work too
#   BATCH_ARGS  extra batch options, e.g. "--ray auto --keep-checkpoints" or "--steps 2000 --seed 1"
#   EVAL_ARGS   extra evaluate options, e.g. "--device cuda --offline"
#   PYTHON      the engine's Python (default: python)
# Protocol and choices: docs/EVALUATION.md.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 MODEL PRESET   (e.g. $0 \"$(python -m engine models --default 2>/dev/null || echo MODEL_ID)\" standard; \`python -m engine models\` lists the known models)" >&2
  exit 2
fi
MODEL=$1
PRESET=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
PROMPTS=${PROMPTS:-$ROOT/engine/captions/coco_object_centric_153.txt}
SLUG=$(printf '%s-%s' "$MODEL" "$PRESET" | tr -c 'A-Za-z0-9.-' '-')
OUT=${OUT:-$ROOT/bench/results/table1-$SLUG-$(date -u +%Y%m%d-%H%M%S)}
read -r -a CLIP_LIST <<< "${CLIPS:-B/32 B/16 L/14}"
read -r -a BATCH_EXTRA <<< "${BATCH_ARGS:-}"
read -r -a EVAL_EXTRA <<< "${EVAL_ARGS:-}"
if [ ${#CLIP_LIST[@]} -ne 3 ]; then
  echo "CLIPS must name three judges, in the order B/32 B/16 L/14; got: ${CLIPS}" >&2
  exit 2
fi
cd "$ROOT"

echo "== generate: $(grep -cv '^#' "$PROMPTS") captions from $PROMPTS, model $MODEL, preset $PRESET -> $OUT" >&2
"$PYTHON" -m engine batch "$PROMPTS" --out "$OUT" --model "$MODEL" --preset "$PRESET" --no-progress ${BATCH_EXTRA[@]+"${BATCH_EXTRA[@]}"}

RUNS=()
for d in "$OUT"/runs/*/*/; do  # the batch's layout: OUT/runs/<job>/<run folder>/
  if [ -f "$d/config.json" ]; then RUNS+=("${d%/}"); fi
done
if [ ${#RUNS[@]} -eq 0 ]; then
  echo "no run folders under $OUT/runs" >&2
  exit 1
fi
CLIP_ARGS=()
for c in "${CLIP_LIST[@]}"; do CLIP_ARGS+=(--clip "$c"); done

echo "== evaluate: ${#RUNS[@]} runs, judges ${CLIP_LIST[*]}" >&2
"$PYTHON" -m engine evaluate "${RUNS[@]}" "${CLIP_ARGS[@]}" --prompts "$PROMPTS" --json "$OUT/rprecision.json" \
  ${EVAL_EXTRA[@]+"${EVAL_EXTRA[@]}"} > "$OUT/rprecision.md"

"$PYTHON" - "$OUT/rprecision.json" "$MODEL" "$PRESET" <<'PY'
import json, sys
from engine.evaluate_cli import PAPER
report, model, preset = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
sizes = ["B/32", "B/16", "L/14"]
judges = list(dict.fromkeys(r["clip"] for r in report["results"]))
print(f"CLIP R-Precision % ({report['runs']} runs, {report['captions']} captions; 95 % Wilson interval)")
print("| mode | row | " + " | ".join(sizes) + " |")
print("|---|---|" + "---|" * len(sizes))
for mode in ("textured", "textureless"):
    ours = {sizes[judges.index(r["clip"])]: r for r in report["results"] if r["mode"] == mode}
    cells = [f"{100 * ours[s]['value']:.1f} ({100 * ours[s]['ci_low']:.0f}-{100 * ours[s]['ci_high']:.0f})" for s in sizes]
    print(f"| {mode} | ours: {model}, {preset} | " + " | ".join(cells) + " |")
    print(f"| {mode} | paper (DreamFusion, Imagen) | " + " | ".join(f"{PAPER[mode][s]:.1f}" for s in sizes) + " |")
PY
echo "(details: $OUT/rprecision.md, $OUT/rprecision.json)" >&2

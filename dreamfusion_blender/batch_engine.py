"""Headless batch with --workers or --ray: the engine's own ``batch`` command runs the prompts (in
parallel on this machine's GPUs, or as Ray tasks on a cluster; docs/CLUSTER.md), and every asset it
finishes goes into its own .blend (and .glb) here, as in the one-prompt-at-a-time path.

The engine batch keeps its manifest in the runs folder, so a re-run skips prompts made before (and
makes no second .blend for them). Exit codes as batch.main: 0 all made, 1 some failed, 2 bad input.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def run(prompts: list[str], args, out: Path, python: str, req) -> int:
    import bpy

    from . import engine_cli, events, importer, provenance
    from .batch_names import free_stem, short

    runs = Path(req.out)
    runs.mkdir(parents=True, exist_ok=True)
    own_file = args.prompts is None  # one --prompt: give the engine a file of one line
    if own_file:
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=runs, prefix=".prompt-", suffix=".txt", delete=False) as f:
            f.write(prompts[0] + "\n")
        prompts_file = f.name
    else:
        prompts_file = args.prompts
    argv = engine_cli.batch_argv(python, prompts_file, req, workers=args.workers, ray=args.ray)
    made = failed = 0
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=engine_cli.worker_env(), text=True, encoding="utf-8")
        for line in proc.stdout:
            ev = events.parse_line(line)  # anything that is not an event comes back as "_stray" and is skipped
            kind = ev["event"]
            if kind == "batch_start" and ev.get("skipped"):
                print(f"dreamfusion: {ev['skipped']}/{ev['total']} prompts were made before (see {ev['manifest']})", flush=True)
            elif kind == "task_done":
                ok, msg = _save(ev, runs, out, bpy, importer, provenance, free_stem)
                made, failed = made + ok, failed + (not ok)
                print(f"[{made + failed}] {'ok' if ok else 'FAILED'} \"{short(ev['prompt'])}\" ({ev.get('seconds', 0):.0f}s): {msg}",
                      flush=True)
            elif kind == "task_failed":
                failed += 1
                print(f"[{made + failed}] FAILED \"{short(ev['prompt'])}\": {ev.get('message')}", flush=True)
            elif kind == "error":  # the engine refused the batch before running anything
                print(f"dreamfusion: {ev.get('message')}", file=sys.stderr, flush=True)
        rc = proc.wait()
    finally:
        if own_file:
            os.unlink(prompts_file)
    print(f"dreamfusion: {made} made, {failed} failed (engine batch exit {rc})", flush=True)
    return 0 if rc == 0 else 2 if rc == 2 else 1


def _save(ev: dict, runs: Path, out: Path, bpy, importer, provenance, free_stem) -> tuple[bool, str]:
    """A clean file with the imported object, saved as .blend, with the .glb next to it."""
    glb_src = runs / ev["glb"]
    bpy.ops.wm.read_homefile(use_empty=True)
    try:
        importer.import_glb(bpy.context, str(glb_src), ev["prompt"], provenance.collect(str(runs / ev["run_dir"])))
    except importer.ImportFailed as exc:
        return False, str(exc)
    stem = free_stem(out, ev["prompt"])
    blend, glb = stem.with_suffix(".blend"), stem.with_suffix(".glb")
    shutil.copy2(glb_src, glb)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    return True, f"{blend}, {glb}"

"""Benchmark (not a test): how long the engine takes to stop after SIGINT, per stage, at the builtin
prior's scale (builtin:shapes with its own defaults: 32-px renders, 4-view previews, 128^3 export).

For each stage (train, preview, export) it starts ``python -m engine generate`` as a worker would,
sends SIGINT when the event stream shows the stage has begun, and prints the seconds from the signal
to the process's exit, the exit code and the last event. ``--engine-root`` runs another checkout's
engine (e.g. the old code) for a side-by-side figure; the load average is printed with each row.

    .venv/bin/python bench/bench_cancel.py [--engine-root /path/to/checkout] [--repeat 1]
    .venv/bin/python bench/bench_cancel.py --spawn-cost RUN_DIR   # export: child process vs in-process
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def trigger(stage: str, event: dict, preview_every: int) -> bool:
    if event.get("event") != "progress":
        return False
    if stage == "train":
        return event["stage"] == "train" and event["step"] >= 3 and event["step"] % preview_every not in (0, 1)
    if stage == "preview":  # the progress event of a preview step: the preview renders come next
        return event["stage"] == "train" and event["step"] % preview_every == 0
    return event["stage"] == "export" and event.get("substage") == "uv"  # inside xatlas


def one(stage: str, engine_root: Path, out: Path, preview_every: int, export_res: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(engine_root), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    argv = [sys.executable, "-m", "engine", "generate", "a red cube", "--model", "builtin:shapes", "--out", str(out),
            "--device", "cpu", "--set", f"preview_every={preview_every}", "--mesh-resolution", str(export_res),
            "--json-events", "--no-progress"]
    if stage == "export":
        argv += ["--steps", "2"]
    proc = subprocess.Popen(argv, cwd=engine_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    sent, last, answered = None, None, None
    for line in proc.stdout:
        try:
            last = json.loads(line)
        except json.JSONDecodeError:
            last = {"event": "NOT-JSON", "text": line[:80]}
            continue
        if sent is not None and answered is None and last.get("event") in ("cancelled", "error"):
            answered = time.monotonic() - sent
        if sent is None and trigger(stage, last, preview_every):
            proc.send_signal(signal.SIGINT)
            sent = time.monotonic()
    rc = proc.wait()
    took = None if sent is None else time.monotonic() - sent
    return {"stage": stage, "seconds": took, "answered": answered, "rc": rc, "last": (last or {}).get("event"),
            "run_dir": (last or {}).get("run_dir"), "load": os.getloadavg()[0]}


def spawn_cost(run_dir: Path, repeat: int) -> None:
    """What running the export in a stoppable child process costs: export_run (spawn) against the same
    export in this process, interleaved, on one run folder."""
    import torch

    sys.path.insert(0, str(ROOT))
    from engine import runfolder
    from engine.export_run import _settings, export_run, load_field
    from engine.mesh import export_field
    from engine.protocol import EventStream

    cfg = runfolder.load_run_config(run_dir)
    print(f"| export of {run_dir.name} at {cfg.mesh_resolution}^3 | in-process s | child process s | load avg |")
    print("| --- | --- | --- | --- |")
    for i in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            field = load_field(run_dir, cfg, torch.device("cpu"))
            with torch.no_grad():
                export_field(field.density, field.albedo, Path(tmp) / "a", _settings(cfg, "cpu", False))
            inproc = time.monotonic() - t0
            t0 = time.monotonic()
            export_run(run_dir, cfg, EventStream(), torch.device("cpu"), out_dir=Path(tmp) / "b", progress=False)
            child = time.monotonic() - t0
        print(f"| run {i + 1} | {inproc:.2f} | {child:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spawn-cost", type=Path, metavar="RUN_DIR")
    ap.add_argument("--engine-root", type=Path, default=ROOT)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--preview-every", type=int, default=5)
    ap.add_argument("--export-resolution", type=int, default=128)
    ap.add_argument("--stages", default="train,preview,export")
    args = ap.parse_args()
    if args.spawn_cost:
        return spawn_cost(args.spawn_cost, args.repeat)
    print(f"engine: {args.engine_root}")
    print("| stage | s from SIGINT to the cancelled/error event | s to process exit | exit code | last event | run_dir given | load avg (1 min) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for _ in range(args.repeat):
        for stage in args.stages.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                r = one(stage, args.engine_root, Path(tmp), args.preview_every, args.export_resolution)
            secs = "never sent" if r["seconds"] is None else f"{r['seconds']:.2f}"
            ans = "-" if r["answered"] is None else f"{r['answered']:.2f}"
            print(f"| {stage} | {ans} | {secs} | {r['rc']} | {r['last']} | {bool(r['run_dir'])} | {r['load']:.1f} |", flush=True)


if __name__ == "__main__":
    main()

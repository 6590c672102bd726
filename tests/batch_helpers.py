"""Shared by the batch tests: tiny engine settings, and the batch driver as a subprocess whose JSON
events the test reads as they come (to kill a worker at the right moment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# builtin:shapes at the smallest settings that still train, checkpoint and export (~10 s a prompt,
# most of it the engine's start-up).
TINY = [
    "--model", "builtin:shapes", "--steps", "2", "--render-resolution", "16", "--samples-per-ray", "8",
    "--mesh-resolution", "32", "--texture-size", "64", "--set", "preview_every=1", "--set", "checkpoint_every=1",
    "--set", "preview_views=1", "--set", "albedo_warmup=1",
]
GOOD = ["a red cube", "a blue sphere", "a green cylinder", "a yellow cone"]
# over the engine's 300 characters: exit 2 (bad input); starting with "-" it must still reach the engine as a prompt
BAD = "-a " + "very " * 80 + "long prompt"


def write_prompts(path: Path, prompts: list[str]) -> Path:
    path.write_text("# a batch for the tests\n" + "\n".join(prompts) + "\n", encoding="utf-8")
    return path


def run_batch_live(args: list[str], on_event=lambda ev, proc: None, timeout: float = 600) -> tuple[int, list[dict], str]:
    """``python -m engine batch ARGS --json-events --no-progress``; on_event(ev, proc) sees each event as it arrives."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "engine", "batch", *args, "--json-events", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = []
    try:
        for line in proc.stdout:
            if line.startswith("{"):
                ev = json.loads(line)
                events.append(ev)
                on_event(ev, proc)
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return rc, events, proc.stderr.read()


def of(events: list[dict], kind: str, **match) -> list[dict]:
    return [e for e in events if e["event"] == kind and all(e.get(k) == v for k, v in match.items())]


def is_glb(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:4] == b"glTF" and path.stat().st_size > 1000


def leave_checkpointed_run(out: Path, prompt: str) -> Path:
    """What a worker killed after its last checkpoint leaves in a shared run folder: a trained
    checkpoint and no asset (the engine in-process with --no-export)."""
    from engine import cli
    from engine.batch.prompts import job_id

    job_root = out / "runs" / job_id(prompt)
    code = cli.main(["generate", prompt, "--out", str(job_root), "--no-export", "--device", "cpu", "--no-progress", *TINY])
    assert code == 0
    (left,) = [p for p in job_root.iterdir() if p.is_dir()]
    return left


def assert_resumed(events: list[dict], left: Path, out: Path, prompt: str) -> None:
    from engine.batch.prompts import job_id

    (run,) = of(events, "task_run")
    assert run["run_dir"] == str(left) and run["resumed_from"] == 2  # the same folder, from its last step
    assert [p for p in left.parent.iterdir() if p.is_dir()] == [left]  # no fresh run beside it
    assert (left / "checkpoints" / "last.pt").is_file() and is_glb(out / f"{job_id(prompt)}.glb")

"""Shared set-up for the add-on tests (no tests here).

bpy (Blender as a Python module) can be imported once per process and keeps its state, so this
module isolates Blender's user folder (BLENDER_USER_RESOURCES) before bpy is first imported, builds
the tiny random-weight model once, and enables the add-on the way Blender would (addon_utils).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

_USER = tempfile.mkdtemp(prefix="dreamfusion-blender-user-")
os.environ.setdefault("BLENDER_USER_RESOURCES", _USER)

# Keeps a CPU run of the tiny model to seconds: fewer preview views and samples, a small hash grid,
# and a starting blob dense enough to cross the exporter's iso level after a few random steps.
FAST_SETTINGS = "preview_views=1 render_resolution=32 samples_per_ray=16 hash_log2_table=12 blob_density=20"
FAST_ARGS = ["--steps", "4", "--mesh-resolution", "64", "--texture-size", "128", "--preset", "draft"]
FAST_SET = [x for item in FAST_SETTINGS.split() for x in ("--set", item)]

_TINY: Path | None = None


def engine_python() -> str:
    """The interpreter with torch: this one, or (bpy 4.2 run, a venv with only bpy) $DREAMFUSION_PYTHON."""
    return os.environ.get("DREAMFUSION_PYTHON") or sys.executable


def tiny_model() -> Path:
    """The tiny pixel-space diffusers model (tests/tiny_models.py), built once per test session."""
    global _TINY
    if _TINY is None:
        # In a subprocess: the test process holds bpy and stays free of torch, like Blender would.
        folder = Path(tempfile.mkdtemp(prefix="dreamfusion-tiny-")) / "tiny"
        code = f"from tiny_models import make_tiny_pixel_model; make_tiny_pixel_model({str(folder)!r})"
        subprocess.run([engine_python(), "-c", code], cwd=ROOT / "tests", check=True, capture_output=True, timeout=300)
        _TINY = folder
    return _TINY


def enable_addon():
    import addon_utils
    import bpy

    if "dreamfusion_blender" not in bpy.context.preferences.addons:
        addon_utils.enable("dreamfusion_blender", default_set=True, handle_error=None)
    return bpy.context.preferences.addons["dreamfusion_blender"].preferences


def drive_queue(timeout: float = 400.0, on_tick=None) -> list:
    """Tick until the running job and every queued one are handled; returns the jobs in start order."""
    from dreamfusion_blender import runner
    from dreamfusion_blender.jobs import MANAGER

    jobs, deadline = [], time.monotonic() + timeout
    while True:
        job = MANAGER.current
        if job is not None and (not jobs or jobs[-1] is not job):
            jobs.append(job)
        if job is not None and job.handled and not MANAGER.queue:
            return jobs
        if time.monotonic() > deadline:
            MANAGER.cancel_all()
            raise AssertionError(f"the queue did not finish in {timeout}s: {[j.label for j in jobs]}")
        runner.tick()
        if on_tick is not None:
            on_tick(MANAGER.current)
        time.sleep(0.05)


def drive(job, timeout: float = 240.0, on_tick=None):
    """Call the timer callback by hand (timers never fire in bpy-as-a-module) until the job is handled."""
    from dreamfusion_blender import runner

    deadline = time.monotonic() + timeout
    while not job.handled:
        if time.monotonic() > deadline:
            job.worker.kill()
            raise AssertionError(f"job did not finish in {timeout}s: {job.state}")
        runner.tick()
        if on_tick is not None:
            on_tick(job)
        time.sleep(0.05)
    return job.state

"""The Blender headless batch with --workers: the engine's own batch runs the prompts side by side
(docs/CLUSTER.md; --ray goes the same way), and each asset still gets its own .blend and .glb; a
re-run makes nothing twice; a bad --workers is the engine's clear error, before anything runs."""

import os
import subprocess
import sys

import test_addon_helpers as H

import bpy  # noqa: E402

from batch_helpers import TINY

# builtin:shapes at the batch tests' tiny settings, spelled as the add-on's batch takes them
TINY_ADDON = ["--model", "builtin:shapes", "--steps", "2", "--mesh-resolution", "32", "--texture-size", "64",
              *[x for i, a in enumerate(TINY) if a == "--set" for x in ("--set", TINY[i + 1])],
              "--set", "render_resolution=16", "--set", "samples_per_ray=8"]


def run_batch(tmp_path, *extra: str):
    pfile = tmp_path / "prompts.txt"
    pfile.write_text("a red cube\na blue sphere\n", encoding="utf-8")
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "dreamfusion_blender.batch", "generate", "--prompts", str(pfile), "--out", str(tmp_path / "out"),
           "--device", "cpu", "--python", H.engine_python(), *TINY_ADDON, *extra]
    return subprocess.run(cmd, cwd=H.ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_workers_run_through_the_engine_batch_and_each_asset_gets_a_blend(tmp_path):
    proc = run_batch(tmp_path, "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.blend")) == ["a-blue-sphere.blend", "a-red-cube.blend"]
    assert sorted(p.name for p in out.glob("*.glb")) == ["a-blue-sphere.glb", "a-red-cube.glb"]
    with bpy.data.libraries.load(str(out / "a-red-cube.blend")) as (data_from, _):
        assert list(data_from.objects) == ["a red cube"]
    assert (out / "runs" / "batch.json").is_file()  # the engine batch's manifest
    again = run_batch(tmp_path, "--workers", "2")
    assert again.returncode == 0 and "2/2 prompts were made before" in again.stdout, again.stdout + again.stderr
    assert len(list(out.glob("*.blend"))) == 2


def test_bad_workers_is_refused_by_the_engine(tmp_path):
    proc = run_batch(tmp_path, "--workers", "0")
    assert proc.returncode == 2 and "--workers must be at least 1" in proc.stderr, proc.stdout + proc.stderr
    assert not list((tmp_path / "out").glob("*.blend"))

"""Headless batch: `python -m dreamfusion_blender.batch generate --prompts FILE --out DIR` (the same entry
point as `blender -c dreamfusion generate ...`) writes one .blend and one .glb per prompt."""

import os
import subprocess
import sys
from pathlib import Path

import test_addon_helpers as H

import bpy  # noqa: E402


def run_batch(tmp_path, prompts: list[str]):
    pfile = tmp_path / "prompts.txt"
    pfile.write_text("# objects to make\n" + "\n".join(prompts) + "\n\n", encoding="utf-8")
    out = tmp_path / "out"
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"))
    cmd = [sys.executable, "-m", "dreamfusion_blender.batch", "generate", "--prompts", str(pfile), "--out", str(out),
           "--model", str(H.tiny_model()), "--device", "cpu", "--python", H.engine_python(), *H.FAST_ARGS, *H.FAST_SET]
    proc = subprocess.run(cmd, cwd=H.ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc, out


def _objects_in(blend: Path) -> list[str]:
    with bpy.data.libraries.load(str(blend)) as (data_from, _):
        return list(data_from.objects)


def test_batch_of_two_prompts(tmp_path):
    proc, out = run_batch(tmp_path, ["a red cube", "a blue sphere"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == 2 and all(" ok " in ln for ln in lines), proc.stdout
    assert sorted(p.name for p in out.glob("*.blend")) == ["a-blue-sphere.blend", "a-red-cube.blend"]
    assert sorted(p.name for p in out.glob("*.glb")) == ["a-blue-sphere.glb", "a-red-cube.glb"]
    assert _objects_in(out / "a-red-cube.blend") == ["a red cube"]
    assert _objects_in(out / "a-blue-sphere.blend") == ["a blue sphere"]


def test_batch_with_a_bad_entry_writes_the_good_one_and_fails(tmp_path):
    proc, out = run_batch(tmp_path, ["x" * 2000, "a green cone"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    assert lines[0].startswith("[1/2] FAILED") and "characters" in lines[0]  # the engine's message
    assert lines[1].startswith("[2/2] ok")
    assert [p.name for p in out.glob("*.blend")] == ["a-green-cone.blend"]
    assert [p.name for p in out.glob("*.glb")] == ["a-green-cone.glb"]

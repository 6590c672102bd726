"""The mesh refinement stage (engine/refine.py): regularisers and the triangle guard on small meshes,
the welded start mesh, one tiny `generate --refine-steps` end to end with its resume, and the bad
inputs of docs/BAD_INPUTS.md ("refine")."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from engine import refine
from engine.errors import ConfigError, ExportError
from test_bad_inputs import run_cli, tree_hash

TINY = ["--model", "builtin:shapes", "--device", "cpu", "--no-progress", "--texture-size", "64", "--mesh-resolution", "32",
        "--set", "render_resolution=16", "--set", "preview_views=1", "--set", "preview_every=50",
        "--set", "checkpoint_every=50", "--set", "start_shape=ball", "--set", "refine_smooth_iterations=2"]


def _ico(subdivisions=2):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.5)
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)


def test_regularisers_grow_with_lumps_and_pull_them_back():
    v, f = _ico()
    faces = torch.as_tensor(f)
    topo = refine.MeshTopology(faces, len(v))
    assert len(topo.face_pairs) == len(f) * 3 // 2  # closed mesh: every edge between two faces
    smooth = torch.as_tensor(v, dtype=torch.float32)
    lumpy = smooth * (1 + 0.1 * torch.as_tensor(np.random.default_rng(0).standard_normal((len(v), 1)), dtype=torch.float32))
    assert topo.laplacian(lumpy) > 2 * topo.laplacian(smooth)  # the smooth one: its curvature only
    assert topo.normal_consistency(lumpy, faces) > 3 * topo.normal_consistency(smooth, faces)
    # A few gradient steps on the two terms alone flatten the lumps.
    x = lumpy.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=2e-3)
    start = float(topo.normal_consistency(lumpy, faces))
    for _ in range(30):
        opt.zero_grad()
        (topo.laplacian(x) * 100 + topo.normal_consistency(x, faces)).backward()
        opt.step()
    assert float(topo.normal_consistency(x.detach(), faces)) < 0.5 * start


def test_triangle_report_flags_flipped_and_sliver_triangles():
    v, f = _ico(1)
    ok = refine.triangle_report(v, v * 1.1, f)
    assert not ok["degraded"] and ok["flipped_share"] == 0 and ok["sliver_share_after"] == 0
    bad = v.copy()
    bad[0] = -0.5 * v[0]  # pull one vertex through the centre: its five faces turn inside out
    rep = refine.triangle_report(v, bad, f)
    assert rep["degraded"] and rep["flipped_share"] == 5 / len(f)
    tri = np.array([[0.0, 0, 0], [1, 0, 0], [0.5, np.sqrt(3) / 2, 0], [0.5, 0.01, 0]])
    q = refine.triangle_quality(tri, np.array([[0, 1, 2], [0, 1, 3]]))
    assert abs(q[0] - 1) < 1e-9 and q[1] < refine.SLIVER_QUALITY  # equilateral, sliver
    assert refine.triangle_quality(np.zeros((3, 3)), np.array([[0, 1, 2]]))[0] == 0.0


def test_the_start_mesh_is_welded_and_an_empty_export_is_refused(tmp_path):
    v, f = _ico(1)
    # An exported asset splits vertices along UV seams: unindexed copies of every corner.
    split = trimesh.Trimesh(vertices=v[f].reshape(-1, 3), faces=np.arange(len(f) * 3).reshape(-1, 3), process=False)
    split.export(tmp_path / "asset.glb")
    wv, wf = refine.load_export_mesh(tmp_path / "asset.glb")
    assert len(wv) == len(v) and len(wf) == len(f)
    trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), int)).export(tmp_path / "empty.ply")
    with pytest.raises(ExportError, match="no surface to refine.*--refine-steps 0"):
        refine.load_export_mesh(tmp_path / "empty.ply")


def test_generate_refines_resumes_and_refuses_changed_settings(tmp_path, capsys):
    out = tmp_path / "runs"
    code, events, err = run_cli(capsys, ["generate", "a red cube", "--out", str(out), "--steps", "6",
                                         "--refine-steps", "3", *TINY])
    assert code == 0, err
    (run,) = out.iterdir()
    assert json.loads((run / "config.json").read_text())["refine_steps"] == 3
    stages = [e.get("stage") for e in events if e["event"] == "progress"]
    assert stages.index("refine") > stages.index("train") and stages.count("refine") >= 1
    refine_progress = [e for e in events if e["event"] == "progress" and e.get("stage") == "refine"]
    assert refine_progress[-1]["step"] == 3 and refine_progress[-1]["eta_s"] is not None
    done = events[-1]
    assert done["event"] == "done" and Path(done["asset"]["glb"]).parent == run / "refined"
    meta = json.loads((run / "refined" / "asset.json").read_text())
    assert meta["kind"] == "refined" and meta["refine_steps"] == 3 and meta["offset_max"] > 0
    assert (run / "asset" / "asset.glb").is_file()  # the NeRF-only export is kept beside it
    assert torch.load(run / refine.REFINE_CHECKPOINT, weights_only=True)["step"] == 3

    # Resume with other refinement settings: refused before any work, nothing changed.
    before = {k: v for k, v in tree_hash(run).items() if k != "log.txt"}  # the log records the refusal
    code, events, err = run_cli(capsys, ["generate", "--resume", str(run), "--refine-steps", "5", "--no-progress"])
    assert code == 2 and "refine_steps" in err
    assert {k: v for k, v in tree_hash(run).items() if k != "log.txt"} == before
    cfg = json.loads((run / "config.json").read_text())
    cfg["refine_lr"] = 0.01
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="refine_lr"):
        refine.check_resume(run, refine_cfg(run))
    cfg["refine_lr"] = 0.0005
    (run / "config.json").write_text(json.dumps(cfg))
    # A plain resume of the finished refinement bakes again into a new folder, the first untouched.
    first = tree_hash(run / "refined")
    code, events, err = run_cli(capsys, ["generate", "--resume", str(run), "--no-progress"])
    assert code == 0, err
    assert tree_hash(run / "refined") == first and Path(events[-1]["asset"]["glb"]).parent.name.startswith("refined-")


def refine_cfg(run: Path):
    from engine import runfolder

    return runfolder.load_run_config(run)


@pytest.mark.parametrize("argv, message", [
    (["--refine-steps", "-1"], "refine steps must be a whole number >= 0"),
    (["--set", "refine_steps=1.5"], "cannot read '1.5'"),
    (["--set", "refine_lr=0"], "refine_lr must be in"),
])
def test_bad_refine_settings_are_refused_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "runs"
    code, events, err = run_cli(capsys, ["generate", "a red cube", "--out", str(out), *argv, *TINY])
    assert code == 2 and message in err and not out.exists()
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "input"


def test_non_integer_refine_steps_flag_is_refused(capsys):
    from engine import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["generate", "a red cube", "--refine-steps", "2.5"])
    assert exc.value.code == 2 and "invalid int value: '2.5'" in capsys.readouterr().err


def test_the_panel_setting_reaches_the_engine_flag():
    from dreamfusion_blender import engine_cli

    assert "--refine-steps=50" in engine_cli.asset_options(engine_cli.GenerateRequest(prompt="x", out="o", refine_steps=50))
    assert not any("refine" in a for a in engine_cli.asset_options(engine_cli.GenerateRequest(prompt="x", out="o")))

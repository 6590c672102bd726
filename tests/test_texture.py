"""`python -m engine texture` (engine/texture_run.py, engine/texture_mesh.py): one short end-to-end run
with builtin:shapes whose output keeps the input's geometry bit for bit, per-corner UVs of an OBJ with
seams, the generated-UV path, resume, and the bad inputs of docs/BAD_INPUTS.md ("texture")."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from engine import cli, texture_mesh
from engine.protocol import read_events
from test_bad_inputs import run_cli, tree_hash

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "builtin:shapes", "--device", "cpu", "--no-progress", "--texture-size", "64",
        "--set", "render_resolution=16", "--set", "preview_views=1", "--set", "preview_every=3", "--set", "checkpoint_every=3"]


def write_obj_with_seams(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An icosphere as an OBJ whose UVs (an xatlas atlas) give most vertices several UVs (seams);
    returns (vertices, faces, corner uvs) as written."""
    m = trimesh.creation.icosphere(subdivisions=2, radius=1.3)
    verts = m.vertices + np.array([0.4, -0.2, 0.1])  # off-centre and too large: the fit must undo both
    corner_uvs = texture_mesh.generated_uvs(verts, m.faces, 256)
    uv_list, uv_index = np.unique(corner_uvs.reshape(-1, 2), axis=0, return_inverse=True)
    lines = [f"v {x!r} {y!r} {z!r}" for x, y, z in verts] + [f"vt {u!r} {v!r}" for u, v in uv_list]
    uv_index = uv_index.reshape(-1, 3)
    lines += [f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}" for (a, b, c), (ta, tb, tc) in zip(m.faces, uv_index)]
    path.write_text("\n".join(lines) + "\n")
    return verts, m.faces, uv_list[uv_index]


def test_obj_corner_uvs_survive_the_seams(tmp_path):
    verts, faces, uvs = write_obj_with_seams(tmp_path / "ball.obj")
    mesh = texture_mesh.load_input_mesh(tmp_path / "ball.obj")
    assert np.array_equal(mesh.faces, faces) and np.array_equal(mesh.vertices, verts)
    assert np.array_equal(mesh.corner_uvs, uvs)
    per_vertex = {}
    for f, c in zip(faces.reshape(-1), uvs.reshape(-1, 2)):
        per_vertex.setdefault(int(f), set()).add(tuple(c))
    assert sum(len(s) > 1 for s in per_vertex.values()) > 10  # trimesh alone keeps one UV per vertex
    assert texture_mesh.uv_problem(mesh.corner_uvs, mesh.faces) is None
    stacked = np.broadcast_to(uvs[:1], uvs.shape).copy()  # every triangle on the same UVs
    assert "overlap" in texture_mesh.uv_problem(stacked, faces)
    assert "leave" in texture_mesh.uv_problem(uvs * 2.0, faces)


def _corners(path: Path) -> np.ndarray:
    m = trimesh.load(str(path), process=False, maintain_order=True, force="mesh")
    return np.asarray(m.vertices, dtype=np.float32)[m.faces]


def test_texture_run_keeps_the_geometry_and_resumes(tmp_path, capsys):
    src = tmp_path / "ball.obj"
    verts, faces, uvs = write_obj_with_seams(src)
    out = tmp_path / "runs"
    code, events, err = run_cli(capsys, ["texture", str(src), "a red sphere", "--out", str(out), "--steps", "4", *TINY])
    assert code == 0, err
    (run,) = out.iterdir()
    names = [e["event"] for e in events]
    assert names[0] == "progress" and "start" in names and "preview" in names and names[-1] == "done"
    asset = Path(events[-1]["asset"]["glb"]).parent
    meta = json.loads((asset / "asset.json").read_text())
    assert meta["kind"] == "texture" and meta["uv"] == "input" and meta["faces"] == len(faces)
    assert meta["vertices"] == len(verts) and meta["texture"] == "albedo.png"
    # The geometry, per corner and in the input's triangle order, bit for bit (glTF stores float32).
    assert np.array_equal(_corners(asset / "asset.glb"), verts.astype(np.float32)[faces])
    cu = np.load(asset / "corner_uvs.npy")
    assert cu.dtype == np.float32 and cu.shape == (len(faces), 3, 2)
    assert np.array_equal(cu, uvs.astype(np.float32))  # the input's own UVs
    glb = trimesh.load(str(asset / "asset.glb"), process=False, maintain_order=True, force="mesh")
    assert np.allclose(np.asarray(glb.visual.uv)[glb.faces], uvs, atol=1e-6)
    assert (run / "texture.json").is_file() and (run / "checkpoints" / "last.pt").is_file()
    # Resume to 6 steps: continues from the checkpoint and bakes again without touching the first asset.
    before = tree_hash(asset)
    code, events, err = run_cli(capsys, ["texture", "--resume", str(run), "--steps", "6", "--no-progress"])
    assert code == 0, err
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed_from"] == 4 and start["kind"] == "texture"
    assert [e["step"] for e in events if e["event"] == "progress" and e.get("stage") == "train"][-1] == 6
    assert tree_hash(asset) == before
    second = Path(events[-1]["asset"]["glb"])
    assert second.parent != asset and np.array_equal(_corners(second), verts.astype(np.float32)[faces])
    assert [e["event"] for e in read_events(run / "events.jsonl")].count("done") == 2


def test_generated_uvs_cover_a_mesh_without_them(tmp_path):
    m = trimesh.creation.torus(0.4, 0.15)
    mesh = texture_mesh.InputMesh(np.asarray(m.vertices), np.asarray(m.faces), None, "torus")
    corner_uvs = texture_mesh.generated_uvs(mesh.vertices, mesh.faces, 128)
    assert corner_uvs.shape == (len(m.faces), 3, 2) and texture_mesh.uv_problem(corner_uvs, mesh.faces) is None
    image = np.full((128, 128, 3), 200, np.uint8)
    texture_mesh.write_asset(tmp_path, mesh, corner_uvs, image, {"uv": "generated"})
    assert np.array_equal(_corners(tmp_path / "asset.glb"), mesh.vertices.astype(np.float32)[mesh.faces])
    assert json.loads((tmp_path / "asset.json").read_text())["uv"] == "generated"


# --- bad inputs (docs/BAD_INPUTS.md, "Engine CLI: texture") -----------------------------------------------
def _bad_files(tmp: Path) -> dict:
    files = {"missing": tmp / "nope.glb", "dir": tmp / "folder.obj", "stl": tmp / "part.stl", "garbage": tmp / "broken.glb",
             "points": tmp / "points.ply", "nan": tmp / "nan.obj", "flat": tmp / "flat.obj", "big": tmp / "big.obj",
             "text": tmp / "notes.obj"}
    files["dir"].mkdir()
    trimesh.creation.box().export(files["stl"])
    files["garbage"].write_bytes(b"glTF\x02\x00\x00\x00garbage" * 10)
    trimesh.PointCloud(np.random.default_rng(0).random((50, 3))).export(files["points"])
    files["nan"].write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n")
    files["flat"].write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    trimesh.creation.icosphere(subdivisions=2).export(files["big"])  # 320 faces; the limit is patched to 100
    files["text"].write_text("shopping list: eggs, milk\n")
    return files


TEXTURE_CASES = [
    ("texture-mesh-missing", "missing", 2, "does not exist"),
    ("texture-mesh-is-folder", "dir", 2, "is a folder"),
    ("texture-mesh-format", "stl", 2, "unsupported mesh format '.stl'"),
    ("texture-mesh-unreadable", "garbage", 2, "could not be read"),
    ("texture-mesh-no-faces", "points", 2, "has no faces"),
    ("texture-mesh-not-a-mesh", "text", 2, "has no faces"),
    ("texture-mesh-nan", "nan", 2, "NaN or infinite"),
    ("texture-mesh-zero-area", "flat", 2, "zero area"),
    ("texture-mesh-too-many-faces", "big", 2, "texture runs take at most 100. Decimate"),
    ("texture-no-prompt", "stl", 2, "give a mesh and a prompt"),
    ("texture-resume-not-texture", None, 2, "not a texture run folder"),
    ("texture-resume-with-mesh", "stl", 2, "drop the MESH argument"),
]


@pytest.mark.parametrize("case", TEXTURE_CASES, ids=[c[0] for c in TEXTURE_CASES])
def test_texture_bad_inputs(case, tmp_path, capsys, monkeypatch):
    name, key, code, fragment = case
    files = _bad_files(tmp_path)
    monkeypatch.setattr(texture_mesh, "MAX_FACES", 100)
    out = tmp_path / "runs"
    if name == "texture-no-prompt":
        argv = ["texture", str(files["big"]), "--out", str(out)]
    elif name == "texture-resume-not-texture":
        run = tmp_path / "gen-run"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"prompt": "a red cube", "model": "builtin:shapes"}))
        argv = ["texture", "--resume", str(run)]
    elif name == "texture-resume-with-mesh":
        argv = ["texture", str(files["big"]), "--resume", str(tmp_path / "gen-run")]
    else:
        argv = ["texture", str(files[key]), "a red cube", "--out", str(out)]
    before = tree_hash(tmp_path)
    got, events, err = run_cli(capsys, argv + ["--model", "builtin:shapes", "--device", "cpu", "--no-progress"])
    assert got == code, (got, events, err)
    last = events[-1]
    assert last["event"] == "error" and last["kind"] == "input" and fragment in last["message"], last
    assert err.count(last["message"]) == 1 and "Traceback" not in err
    assert tree_hash(tmp_path) == before and not out.exists()


def test_texture_bad_inputs_are_documented():
    doc = (ROOT / "docs" / "BAD_INPUTS.md").read_text(encoding="utf-8")
    missing = [c[0] for c in TEXTURE_CASES if f"`{c[0]}`" not in doc]
    assert not missing, missing

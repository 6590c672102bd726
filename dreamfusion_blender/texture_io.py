"""Texture selected, the files and command lines (no bpy here): the engine's ``texture`` command, the OBJ
the add-on sends it, and the run folder's result read back (docs/BLENDER.md; the contract with the engine
is fixed: OBJ faces in Blender's loop-triangle order, ``asset/asset.json`` + ``albedo.png`` +
``corner_uvs.npy`` (F, 3, 2) per input triangle corner, UV origin bottom-left).

numpy is Blender's own (bundled with every Blender); torch is never imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UV_MAP = "DreamFusion"  # the new UV map when the engine made the UVs ("uv": "generated")


class ResultError(RuntimeError):
    """The run folder's texture cannot be applied; the message says why and where the files are."""


@dataclass
class TextureRequest:
    """A "Texture selected" run, fixed when it is asked for (queued runs keep it while the panel changes)."""

    prompt: str
    out: str  # the runs folder (the engine makes RUN under it)
    mesh: str  # the OBJ the add-on wrote
    object_name: str
    session_uid: int = 0  # finds the object again even if it is renamed while the engine runs
    signature: str = ""  # the evaluated mesh's topology when it was sent (checked before applying)
    faces: int = 0
    uv_map: str | None = None  # the evaluated mesh's active UV map sent as vt, or None
    model: str | None = None
    negative_prompt: str = ""
    preset: str = "draft"
    seed: int | None = None
    steps: int | None = None
    texture_size: int | None = None
    device: str | None = None
    kind: str = "texture"  # runner.start_next tells queued textures from generations by this


def _opt(argv: list, flag: str, value) -> None:
    if value not in (None, "", 0):
        argv.append(f"{flag}={value}")  # one argv item: a value starting with "-" stays a value


def texture_argv(python: str, req: TextureRequest) -> list[str]:
    """``python -m engine texture MESH PROMPT --out RUNS ...``: the mesh and the prompt after ``--``, so a prompt
    such as "-x" or "--help" is text, never an option."""
    argv = [str(python), "-m", "engine", "texture", f"--out={req.out}", f"--preset={req.preset}"]
    _opt(argv, "--model", req.model)
    _opt(argv, "--negative-prompt", req.negative_prompt)
    if req.seed is not None:  # 0 is a real seed
        argv.append(f"--seed={req.seed}")
    _opt(argv, "--steps", req.steps)
    _opt(argv, "--texture-size", req.texture_size)
    _opt(argv, "--device", req.device if req.device != "auto" else None)
    return argv + ["--json-events", "--no-progress", "--", str(req.mesh), req.prompt]


def texture_resume_argv(python: str, run_dir: str, device: str | None = None) -> list[str]:
    argv = [str(python), "-m", "engine", "texture", f"--resume={run_dir}"]
    _opt(argv, "--device", device if device != "auto" else None)
    return argv + ["--json-events", "--no-progress"]


def signature(n_verts: int, n_loops: int, tri_loops: np.ndarray, tri_verts: np.ndarray) -> str:
    """What must not change between sending the mesh and applying its texture: the triangle corners' loops
    and vertices (a CRC, not the positions: moving vertices keeps the UVs valid)."""
    import zlib

    crc = zlib.crc32(np.ascontiguousarray(tri_loops, dtype=np.int32).tobytes())
    crc = zlib.crc32(np.ascontiguousarray(tri_verts, dtype=np.int32).tobytes(), crc)
    return f"v{n_verts} l{n_loops} t{len(tri_loops)} {crc:08x}"


def y_up(verts: np.ndarray) -> np.ndarray:
    """Blender's world (+Z up, front -Y) -> the engine's mesh convention (+Y up, front +Z: glTF's), as
    Blender's own glTF/OBJ exporters turn it: (x, y, z) -> (x, z, -y). The engine's cameras and view
    prompts ("top view", "front view") then see the object the right way up; the UVs do not depend on it."""
    v = np.asarray(verts)
    return np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1)


def write_obj(path: Path, verts: np.ndarray, tri_verts: np.ndarray, tri_loops: np.ndarray,
              loop_uvs: np.ndarray | None) -> None:
    """v (world space, already y_up), vt (one per loop, when a UV map is given) and f in loop-triangle order. 9 significant
    digits: float32 positions survive the text round trip bit for bit."""
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(tri_verts, dtype=np.int64).reshape(-1, 3) + 1
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="ascii", newline="\n") as f:
        f.write("# DreamFusion for Blender: the evaluated mesh, world space, faces in loop-triangle order\n")
        np.savetxt(f, verts, fmt="v %.9g %.9g %.9g")
        if loop_uvs is not None:
            np.savetxt(f, np.asarray(loop_uvs, dtype=np.float64).reshape(-1, 2), fmt="vt %.9g %.9g")
            corners = np.asarray(tri_loops, dtype=np.int64).reshape(-1, 3) + 1
            both = np.stack([faces, corners], axis=2).reshape(-1, 6)
            np.savetxt(f, both, fmt="f %d/%d %d/%d %d/%d")
        else:
            np.savetxt(f, faces, fmt="f %d %d %d")
    tmp.replace(path)


@dataclass
class TextureResult:
    uv: str  # input | generated
    image: Path
    corner_uvs: np.ndarray  # (F, 3, 2) float32
    glb: Path | None
    info: dict


def asset_folder(run_dir: str, asset: dict | None) -> Path:
    """Where the finished run's files are: the ``done`` event names them (a second bake in one run folder
    goes to asset-<time>/ rather than overwrite asset/), else RUN/asset."""
    for key in ("json", "corner_uvs", "texture"):
        if asset and asset.get(key):
            return Path(asset[key]).parent
    return Path(run_dir) / "asset"


def read_result(run_dir: str, faces: int | None, asset: Path | None = None) -> TextureResult:
    """asset.json, the texture it names and corner_uvs.npy (in RUN/asset unless given), checked against the
    mesh that was sent."""
    asset = Path(asset) if asset is not None else Path(run_dir) / "asset"
    where = f"(the run folder is kept: {run_dir})"
    try:
        info = json.loads((asset / "asset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultError(f"the engine's {asset / 'asset.json'} is missing or unreadable ({exc}) {where}") from None
    if not isinstance(info, dict) or info.get("kind") != "texture":
        raise ResultError(f"{asset / 'asset.json'} is not a texture result (kind: {info.get('kind') if isinstance(info, dict) else info!r}) {where}")
    uv = info.get("uv")
    if uv not in ("input", "generated"):
        raise ResultError(f"{asset / 'asset.json'}: uv must be 'input' or 'generated', got {uv!r} {where}")
    image = asset / str(info.get("texture") or "albedo.png")
    if not image.is_file():
        raise ResultError(f"the texture {image} is missing {where}")
    try:
        corner = np.load(asset / "corner_uvs.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ResultError(f"{asset / 'corner_uvs.npy'} is missing or unreadable ({exc}) {where}") from None
    want = faces if faces else info.get("faces")
    if corner.ndim != 3 or corner.shape[1:] != (3, 2) or (want is not None and corner.shape[0] != want):
        raise ResultError(f"{asset / 'corner_uvs.npy'} has shape {corner.shape}, expected ({want}, 3, 2): "
                          f"one UV per corner of each triangle sent {where}")
    if not np.isfinite(corner).all():
        raise ResultError(f"{asset / 'corner_uvs.npy'} contains NaN or infinite UVs {where}")
    glb = asset / "asset.glb"
    return TextureResult(uv=uv, image=image, corner_uvs=corner.astype(np.float32), glb=glb if glb.is_file() else None,
                         info=info)


def loop_uvs(corner_uvs: np.ndarray, tri_loops: np.ndarray, n_loops: int, tol: float = 1e-5) -> tuple[np.ndarray, int]:
    """Per-triangle-corner UVs -> one UV per loop (Blender stores UVs per face corner = loop). A quad's or an
    n-gon's corner belongs to several triangles; where the engine gave those different UVs (a seam cut
    inside the polygon), the first triangle's wins and the loop is counted as a conflict."""
    loops = np.asarray(tri_loops, dtype=np.int64).reshape(-1)
    corner = np.asarray(corner_uvs, dtype=np.float32).reshape(-1, 2)
    out = np.zeros((n_loops, 2), dtype=np.float32)
    first = np.full(n_loops, -1, dtype=np.int64)
    order = np.arange(len(loops))[::-1]  # written last-to-first, so the first triangle's value stays
    first[loops[order]] = order
    covered = first >= 0
    out[covered] = corner[first[covered]]
    conflicts = np.abs(corner - out[loops]).max(axis=1) > tol
    return out, int(np.unique(loops[conflicts]).size)

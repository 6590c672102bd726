"""The user's mesh for `python -m engine texture`: load and check it, fit it into the bounding sphere,
choose its UVs (its own, or an xatlas atlas), and write the textured result with the geometry untouched.

Loading follows docs/TEXTURE.md's contract: trimesh with ``process=False, maintain_order=True`` (no
merging, no reordering: triangle f of the file is triangle f here). trimesh keeps one UV per vertex,
so an OBJ whose corners give one vertex several UVs (every UV seam) would lose them; for OBJ the
per-corner UVs are therefore read from the ``f v/vt`` records themselves, and used only when their
vertex indices agree with trimesh's triangles.

The training sees the mesh scaled into the bounding sphere; the output is written from the loaded
arrays themselves, so the output's positions and triangles equal the input's bit for bit (as float32,
glTF's type) whatever the transform was.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError

SUPPORTED = (".glb", ".gltf", ".obj", ".ply")
#: Most triangles a texture run takes. The renderer's memory is bounded by chunking whatever the count;
#: the limit is the time (xatlas's atlas and the rasteriser's per-face work grow with it; 500k faces at
#: 64 px renders is several times a generate step on a CPU) and meshes beyond it hold more detail than
#: any texture can show. Decimating to it keeps the look.
MAX_FACES = 500_000
#: The mesh is scaled so its farthest vertex from its bounding-box centre lies this far from the origin
#: (in units of the bound): the builtin prior's shapes all fit inside 0.6, and at the recipes' nearest
#: camera (distance 1.5, focal 1.35) an object of radius 0.6 just fills the frame.
FIT_RADIUS = 0.6
#: Input UVs are kept only if they lie in [0, 1] (a single texture: no tiles or UDIMs) and do not
#: overlap: the UV triangles' summed area may exceed the texels they cover by at most this share.
UV_OVERLAP_TOLERANCE = 0.05


@dataclass
class InputMesh:
    vertices: np.ndarray  # (V,3) float64 as loaded
    faces: np.ndarray  # (F,3) int64
    corner_uvs: np.ndarray | None  # (F,3,2) float64, OBJ/Blender convention (v up), or None
    path: str


def _obj_corner_uvs(path: Path, faces: np.ndarray) -> np.ndarray | None:
    """Per-corner UVs from an OBJ's ``f v/vt`` records (fan-triangulated as trimesh does), or None if
    the file has none or its corners do not match trimesh's triangles."""
    vts, corner_v, corner_t, nv = [], [], [], 0
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("vt "):
                    parts = line.split()
                    vts.append((float(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0))
                elif line.startswith("v "):
                    nv += 1
                elif line.startswith("f "):
                    refs = [r.split("/") for r in line.split()[1:]]
                    if len(refs) < 3 or any(len(r) < 2 or not r[1] for r in refs):
                        return None
                    vi = [int(r[0]) for r in refs]
                    ti = [int(r[1]) for r in refs]
                    vi = [i - 1 if i > 0 else nv + i for i in vi]
                    ti = [i - 1 if i > 0 else len(vts) + i for i in ti]
                    for k in range(1, len(refs) - 1):
                        corner_v.append((vi[0], vi[k], vi[k + 1]))
                        corner_t.append((ti[0], ti[k], ti[k + 1]))
    except (ValueError, IndexError, OSError):
        return None
    if not vts or len(corner_v) != len(faces) or not np.array_equal(np.asarray(corner_v), faces):
        return None
    t = np.asarray(corner_t)
    if t.min() < 0 or t.max() >= len(vts):
        return None
    return np.asarray(vts, dtype=np.float64)[t]


def load_input_mesh(path) -> InputMesh:
    """Load and check the mesh; every problem is a ConfigError that says what to do (before any work)."""
    import trimesh

    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"the mesh file {path} does not exist; give the path of a .glb, .gltf, .obj or .ply file")
    if not path.is_file():
        raise ConfigError(f"{path} is a folder, not a mesh file; give a .glb, .gltf, .obj or .ply file")
    ext = path.suffix.lower()
    if ext not in SUPPORTED:
        raise ConfigError(f"{path.name}: unsupported mesh format {ext or '(no extension)'!r}; give a "
                          ".glb, .gltf, .obj or .ply file (in Blender: File > Export)")
    try:
        loaded = trimesh.load(str(path), process=False, maintain_order=True, force="mesh")
    except Exception as exc:  # noqa: BLE001 - any parser failure means "not a readable mesh"
        raise ConfigError(f"{path} could not be read as a {ext[1:].upper()} mesh ({type(exc).__name__}: {exc}); "
                          "check that it is a valid mesh file, e.g. re-export it from Blender") from None
    faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    verts = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    if len(faces) == 0:
        raise ConfigError(f"{path} has no faces ({len(verts)} vertices, 0 triangles): a texture needs a surface; "
                          "give a mesh with faces, not a point cloud or an empty scene")
    if faces.min() < 0 or faces.max() >= len(verts):
        raise ConfigError(f"{path}: faces refer to vertices that do not exist (indices up to {faces.max()}, "
                          f"{len(verts)} vertices); re-export the mesh")
    bad = ~np.isfinite(verts).all(1)
    if bad.any():
        raise ConfigError(f"{path}: {int(bad.sum())} of {len(verts)} vertices have NaN or infinite coordinates; "
                          "fix or delete them (in Blender: Mesh > Clean Up) and export again")
    if len(faces) > MAX_FACES:
        ratio = MAX_FACES / len(faces)
        raise ConfigError(f"{path} has {len(faces):,} triangles; texture runs take at most {MAX_FACES:,}. Decimate "
                          f"it first (Blender: a Decimate modifier with ratio {ratio:.2f} or lower; or trimesh's "
                          "simplify_quadric_decimation): the texture looks the same on the lighter mesh")
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if not (area > 0).any():
        raise ConfigError(f"{path}: all {len(faces)} triangles have zero area (the mesh is flat to a line or a point); "
                          "give a mesh with a surface")
    corner_uvs = None
    if ext == ".obj":
        corner_uvs = _obj_corner_uvs(path, faces)
    else:
        uv = getattr(getattr(loaded, "visual", None), "uv", None)
        if uv is not None and len(uv) == len(verts):
            corner_uvs = np.asarray(uv, dtype=np.float64)[faces]
    return InputMesh(vertices=verts, faces=faces, corner_uvs=corner_uvs, path=str(path.absolute()))


def fit_transform(vertices: np.ndarray, bound: float = 1.0, radius: float = FIT_RADIUS) -> tuple[np.ndarray, float]:
    """(centre (3,), scale): ``(v - centre) * scale`` puts the bounding-box centre at the origin and the
    farthest vertex at ``radius * bound``."""
    centre = 0.5 * (vertices.min(0) + vertices.max(0))
    extent = float(np.linalg.norm(vertices - centre, axis=1).max())
    return centre, (radius * bound / extent) if extent > 0 else 1.0


def uv_problem(corner_uvs: np.ndarray | None, faces: np.ndarray) -> str | None:
    """Why the input's UVs cannot take a single baked texture (None: they can)."""
    if corner_uvs is None:
        return "the mesh has no UVs"
    if not np.isfinite(corner_uvs).all():
        return "its UVs are not finite"
    if corner_uvs.min() < -1e-6 or corner_uvs.max() > 1 + 1e-6:
        return "its UVs leave the [0, 1] square (tiles or UDIMs)"
    d1, d2 = corner_uvs[:, 1] - corner_uvs[:, 0], corner_uvs[:, 2] - corner_uvs[:, 0]
    area = 0.5 * np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]).sum()
    if area < 1e-6:
        return "its UVs have no area"
    from .mesh.bake import rasterize
    from .mesh.progress import Reporter

    size = 256
    flat = corner_uvs.reshape(-1, 2)
    texels = rasterize(flat, np.arange(len(flat)).reshape(-1, 3), size, Reporter(False, None), margin=0.0)[0]
    # Texel centres sample the triangles without bias: without overlap the count matches the area.
    if area * size * size > (1 + UV_OVERLAP_TOLERANCE) * len(texels) + 50:
        return f"its UV islands overlap ({area:.2f} of the square in triangles, {len(texels) / size**2:.2f} covered)"
    return None


def split_corners(corner_uvs: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One output vertex per distinct (input vertex, UV) pair: (vmap (V',) into the input vertices,
    faces (F,3) into the output vertices, uvs (V',2)), triangles and corners in the input's order."""
    key = np.concatenate([faces.reshape(-1, 1).astype(np.float64), corner_uvs.reshape(-1, 2)], 1)
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    return uniq[:, 0].astype(np.int64), inverse.reshape(-1, 3).astype(np.int64), uniq[:, 1:]


def generated_uvs(verts_fit: np.ndarray, faces: np.ndarray, texture_size: int) -> np.ndarray:
    """Corner UVs (F,3,2) of an xatlas atlas (engine/mesh/uv.py), in the input's triangle order."""
    from .mesh.uv import unwrap

    vmap, new_faces, uvs = unwrap(verts_fit, faces, texture_size, padding=2)
    if new_faces.shape != faces.shape or not np.array_equal(vmap[new_faces], faces):
        raise RuntimeError("xatlas changed the triangles' order; cannot map its UVs onto the input")
    return uvs[new_faces]


def write_asset(out_dir: Path, mesh: InputMesh, corner_uvs: np.ndarray, image: np.ndarray, meta: dict) -> dict:
    """asset.glb (the input's positions and triangles with the texture), albedo.png, corner_uvs.npy and
    asset.json into ``out_dir``; returns their paths."""
    import trimesh
    from PIL import Image

    from .mesh.write import write_glb, write_png

    out_dir = Path(out_dir)
    vmap, faces, uvs = split_corners(corner_uvs, mesh.faces)
    material = trimesh.visual.material.PBRMaterial(
        name="texture_material", baseColorTexture=Image.fromarray(image, mode="RGB"),
        baseColorFactor=[255, 255, 255, 255], roughnessFactor=0.9, metallicFactor=0.0, doubleSided=True)
    out = trimesh.Trimesh(vertices=mesh.vertices[vmap], faces=faces, process=False,
                          visual=trimesh.visual.TextureVisuals(uv=uvs, material=material))
    paths = {"glb": write_glb(out, out_dir / "asset.glb"), "texture": write_png(image, out_dir / "albedo.png")}
    tmp = out_dir / "corner_uvs.tmp.npy"
    np.save(tmp, corner_uvs.astype(np.float32))
    os.replace(tmp, out_dir / "corner_uvs.npy")
    paths["corner_uvs"] = out_dir / "corner_uvs.npy"
    meta = {"kind": "texture", "texture": "albedo.png", "faces": int(len(mesh.faces)), "vertices": int(len(mesh.vertices)),
            "glb_vertices": int(len(vmap)), **meta}
    (out_dir / "asset.json").write_text(json.dumps(meta, indent=2))
    paths["json"] = out_dir / "asset.json"
    return {k: str(v) for k, v in paths.items()}

"""Mesh export on analytic fields with known answers (engine.mesh).

Shapes (tests/analytic_fields.py) have density 20*sigmoid(-sdf/0.01), i.e. density 10 = the
default iso exactly on the true surface, and an octant colour pattern. Every test reloads the
written .glb with trimesh, so the whole chain (grid, marching cubes, cleaning, UVs, baking,
glTF writing incl. the v flip) is measured, not just intermediate arrays.

Tolerances are set from the grid spacing h = 2/(res-1) (0.021 at res 96) with a margin, and far
below what a broken stage produces: e.g. a half-voxel offset or a wrong grid-to-world mapping moves
Chamfer by >= h/2, flipped faces make normal consistency negative, a flipped/mis-scaled UV or texture
gives colour errors ~0.3 (octant colours differ by 0.7)."""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

# No conftest/pyproject is assumed: make the repo root (engine) and tests/ (analytic_fields) importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import analytic_fields as af  # noqa: E402

from engine.errors import ConfigError, ExportError  # noqa: E402
from engine.mesh import STAGE_COST, STAGES, ExportResult, ExportSettings, export_field, metrics  # noqa: E402
from engine.mesh.settings import DEFAULT_TARGET_FACES  # noqa: E402

RES = 96
H = 2.0 / (RES - 1)
TEX = 512
N_SAMPLES = 20000


# ---- helpers ------------------------------------------------------------------------------------
def load_glb(path: Path) -> trimesh.Trimesh:
    scene = trimesh.load(path, force="scene")
    geoms = list(scene.geometry.values())
    assert len(geoms) == 1, "one mesh per asset"
    return geoms[0]


def glb_json(path: Path) -> dict:
    """The glTF JSON chunk of a .glb (header: magic, version, length; then chunk length + type)."""
    data = Path(path).read_bytes()
    magic, version, _ = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2
    length, ctype = struct.unpack_from("<I4s", data, 12)
    assert ctype == b"JSON"
    return json.loads(data[20:20 + length])


def lookup_texture(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup, trimesh/OpenGL UV convention (v up: row 0 of the image is v = 1)."""
    hgt, wid = image.shape[:2]
    x = np.clip(uv[:, 0] * wid - 0.5, 0, wid - 1)
    y = np.clip((1.0 - uv[:, 1]) * hgt - 0.5, 0, hgt - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, wid - 1), np.minimum(y0 + 1, hgt - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image.astype(np.float64) / 255.0
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def measure(shape: af.Shape, mesh: trimesh.Trimesh, albedo_np=af.octant_albedo_np) -> dict:
    """Geometry by engine.mesh.metrics (the one implementation the benchmark and shape scores use),
    colour by looking the written texture up at area-uniform samples of the written mesh."""
    ref = metrics.reference_from_samples(shape.sdf, *shape.sample_surface(N_SAMPLES, 2))
    v, f = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
    pts, nrm, fid, bary = metrics.sample_surface(v, f, N_SAMPLES, seed=1)
    cd, cd99 = metrics.chamfer(v, f, ref, pts)
    nc = metrics.normal_consistency(pts, nrm, ref)
    uv = np.einsum("nk,nkd->nd", bary, mesh.visual.uv[f[fid]])
    image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    err = np.abs(lookup_texture(image, uv) - albedo_np(pts))
    welded = mesh.copy()
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    return dict(chamfer=cd, chamfer99=cd99, normal_consistency=nc, color_mae=float(err.mean()),
                color_bad=float(np.mean(err.max(1) > 0.2)), volume=float(mesh.volume),
                near_fraction=metrics.near_fraction(ref, pts, H),
                watertight=bool(welded.is_watertight), image=image, uv=mesh.visual.uv)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Export each analytic shape once (the expensive part), shared by the tests below."""
    out = {}
    for name, make in af.SHAPES.items():
        shape = make()
        d = tmp_path_factory.mktemp(name)
        # The grille is the reference for the fast path: exported the way it was before (dense grid,
        # no smoothing, xatlas's own charts); the others with today's defaults but every triangle.
        old = dict(sampling="dense", smooth_iterations=0, atlas="xatlas-default") if name == "grille" else {}
        res = export_field(shape.density, af.octant_albedo, d,
                           ExportSettings(resolution=RES, texture_size=TEX, target_faces=None, progress=False,
                                          name=name, iso=af.ISO, **old))
        out[name] = (shape, res, load_glb(res.paths["glb"]))
    return out


# ---- geometry and texture accuracy ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["sphere", "box", "torus"])
def test_surface_matches_analytic_shape(exports, name):
    shape, res, mesh = exports[name]
    m = measure(shape, mesh)
    print(f"{name}: faces={res.n_faces} chamfer={m['chamfer']:.5f} (h={H:.4f}) p99={m['chamfer99']:.4f} "
          f"NC={m['normal_consistency']:.4f} colour MAE={m['color_mae']:.4f} bad={m['color_bad']:.4f} "
          f"vol={m['volume']:.4f}/{shape.volume:.4f}")
    # Chamfer (exact distances): measured ~0.01-0.03 h (sphere 0.0002, box 0.0005, torus 0.0003 at
    # res 96). 0.1 h is well above that and well below a half-voxel shift or a wrong grid-to-world
    # scale (>= 0.5 h). The 99th percentile (box edges are rounded over ~h) is measured <= 0.2 h.
    assert m["chamfer"] < 0.1 * H
    assert m["chamfer99"] < 0.5 * H
    # Normal consistency (mean dot of mesh and analytic normals): measured > 0.998 for sphere and
    # torus, 0.985 for the box (its rounded edges). Inward normals give about -1, noise about 0.
    assert m["normal_consistency"] > (0.97 if name == "box" else 0.99)
    assert m["near_fraction"] > 0.99  # all of the surface within a voxel of the truth
    # Volume within 1% of analytic (measured <= 0.3%); a half-voxel offset of the surface is ~5%.
    # Positive volume also means outward orientation.
    assert abs(m["volume"] - shape.volume) / shape.volume < 0.01
    assert res.watertight and m["watertight"]
    # Colour: exact up to 8-bit quantisation away from octant borders; bilinear taps straddling a
    # border blur over ~1 texel. Measured MAE ~0.002 and ~1% of points off by > 0.2 (the border
    # band). A v flip, misplaced charts or a wrong texel convention make most points wrong (MAE ~0.3).
    assert m["color_mae"] < 0.01
    assert m["color_bad"] < 0.03


def test_normals_point_away_from_centre(exports):
    shape, res, mesh = exports["sphere"]
    centres = mesh.triangles_center
    assert np.all(np.sum(mesh.face_normals * centres, axis=1) > 0)
    # Stored (smooth) vertex normals agree with the radial direction too.
    vn = mesh.vertex_normals
    radial = mesh.vertices / np.linalg.norm(mesh.vertices, axis=1, keepdims=True)
    assert np.min(np.sum(vn * radial, axis=1)) > 0.98


def test_torus_hole_and_orientation(exports):
    """The torus's hole must stay open (genus 1: Euler characteristic 0) and its normals point away
    from the tube's core circle, i.e. inward-facing on the inner side of the ring."""
    shape, res, mesh = exports["torus"]
    welded = mesh.copy()
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    assert welded.euler_number == 0
    c = welded.triangles_center
    ring = np.stack([c[:, 0], np.zeros(len(c)), c[:, 2]], 1)
    ring *= 0.55 / np.linalg.norm(ring, axis=1, keepdims=True)
    assert np.mean(np.sum(welded.face_normals * (c - ring), axis=1) > 0) > 0.999


def test_glb_structure(exports):
    shape, res, mesh = exports["sphere"]
    g = glb_json(res.paths["glb"])
    assert len(g["meshes"]) == 1 and len(g["meshes"][0]["primitives"]) == 1
    prim = g["meshes"][0]["primitives"][0]
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= set(prim["attributes"])
    assert len(g["materials"]) == 1
    pbr = g["materials"][0]["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr
    assert pbr.get("metallicFactor", 1.0) == 0.0
    assert 0.8 <= pbr.get("roughnessFactor", 1.0) <= 0.9
    assert len(g["textures"]) == 1 and len(g["images"]) == 1
    assert g["images"][0]["mimeType"] == "image/png"
    # trimesh view of the same file
    assert isinstance(mesh.visual, trimesh.visual.TextureVisuals)
    uv = mesh.visual.uv
    assert uv.shape == (len(mesh.vertices), 2)
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    assert mesh.visual.material.baseColorTexture.size == (TEX, TEX)
    assert len(mesh.faces) == res.n_faces and len(mesh.vertices) == res.n_vertices


def test_result_and_texture_file(exports):
    shape, res, mesh = exports["box"]
    assert isinstance(res, ExportResult)
    assert set(res.paths) == {"glb", "texture"}
    assert res.paths["glb"].name == "box.glb" and res.paths["texture"].name == "box.png"
    png = np.asarray(Image.open(res.paths["texture"]).convert("RGB"))
    assert png.shape == (TEX, TEX, 3)
    # No black anywhere: seams/padding are filled (the darkest true colour is 0.15 = 38/255).
    assert png.min() >= 30
    assert res.iso == 10.0
    assert 0.3 < res.texture_coverage < 1.0
    for stage in ("density", "surface", "clean", "uv", "rasterize", "albedo", "dilate", "write", "total"):
        assert res.timings[stage] >= 0


def test_grid_albedo_bake_matches_the_per_texel_bake(exports):
    """The default "grid" bake (albedo on the grid cells' corners, trilinear, exact queries only where a
    cell's corners differ) gives the per-texel bake's texture: exactly on the octant colours (their edges
    are queried per texel), within the tolerance on a smooth colour field, with several times fewer
    albedo queries."""
    from engine.mesh import bake
    from engine.mesh.progress import Reporter

    _, _, mesh = exports["torus"]
    v, f, uv = np.asarray(mesh.vertices), np.asarray(mesh.faces), np.asarray(mesh.visual.uv)

    def smooth(x):
        return 0.5 + 0.3 * torch.sin(3.0 * x)

    for colour, max_levels in ((af.octant_albedo, 0), (smooth, 255 * bake.GRID_TOLERANCE)):
        img_t, cov_t, n_t = bake.bake_albedo(colour, v, f, uv, TEX, "cpu", 1 << 16, Reporter(False, None), "texel")
        img_g, cov_g, n_g = bake.bake_albedo(colour, v, f, uv, TEX, "cpu", 1 << 16, Reporter(False, None), "grid", RES)
        d = np.abs(img_g.astype(int) - img_t.astype(int))
        print(f"{colour.__name__}: queries grid {n_g} / texel {n_t}; |diff| mean {d.mean():.3f} max {d.max()}")
        assert cov_g == cov_t and n_g < n_t / 3
        assert d.max() <= max_levels and d.mean() < 0.5


def test_hash_grid_query_without_autograd_matches_the_training_path():
    """Export, evaluation and previews query the hash grid without autograd through a faster path
    (engine/field.py, _forward_no_grad): the same encoding as the training path, to float rounding, with
    int32 index arithmetic where it fits and int64 where a level's products would not."""
    from engine.field import HashGridEncoding

    torch.manual_seed(0)
    for log2, levels, index_dtype in ((12, 6, torch.int32), (21, 2, torch.int64)):
        enc = HashGridEncoding(levels=levels, log2_table=log2, max_resolution=1024)
        enc.table.data.normal_()
        enc.set_active_levels(levels - 1)  # the progressive mask applies on both paths
        x = torch.rand(3000, 3) * 2.2 - 1.1
        x[:8] = torch.tensor([[s0, s1, s2] for s0 in (-1, 1) for s1 in (-1, 1) for s2 in (-1, 1)], dtype=torch.float32)
        ref = enc(x)
        assert ref.requires_grad
        with torch.no_grad():
            fast = enc(x)
        assert enc.mult.dtype == index_dtype
        torch.testing.assert_close(fast, ref.detach(), rtol=1e-5, atol=1e-5)


# ---- the metrics themselves (engine.mesh.metrics) -------------------------------------------------
def test_metrics_on_known_offsets():
    """A sphere mesh of radius r+d scored against radius r: Chamfer = d, normals agree, the near
    fraction drops to 0 once d exceeds the voxel; flipped faces give normal consistency -1; the
    SDF-only reference (marching cubes + projection) agrees with the analytic sampler."""
    from skimage.measure import marching_cubes
    true = af.sphere(radius=0.5)
    ref = metrics.reference_from_samples(true.sdf, *true.sample_surface(4000, 0))
    ax = np.linspace(-1, 1, 64)
    g = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1)
    for d in (0.0, 0.05):
        v, f, _, _ = marching_cubes(np.linalg.norm(g, axis=-1) - 0.5 - d, 0.0, spacing=(ax[1] - ax[0],) * 3)
        v = v - 1.0  # scikit-image winds an SDF's (negative inside) level set outward
        s = metrics.surface_scores(v, f, ref, voxel=0.02, n=4000)
        assert abs(s.chamfer - d) < 0.004 and s.normal_consistency > 0.99
        assert s.near_fraction == (1.0 if d == 0 else 0.0)
        assert metrics.surface_scores(v, f[:, [0, 2, 1]], ref, n=4000).normal_consistency < -0.99
    ref2 = metrics.reference_from_sdf(true.sdf, n=4000, resolution=48, exact_sdf=False)
    assert np.abs(np.linalg.norm(ref2.points, axis=1) - 0.5).max() < 1e-4
    assert np.mean(np.sum(ref2.normals * ref2.points / 0.5, axis=1)) > 0.9999
    s2 = metrics.surface_scores(v, f, ref2, voxel=0.02, n=4000)
    assert abs(s2.chamfer - 0.05) < 0.004


def test_fine_detail_survives_the_fast_path(exports, tmp_path):
    """The grille (rods 3.3 voxels thick at this resolution, tests/analytic_fields.py) through the default
    fast path (coarse-to-fine sampling, smoothing, decimation, capped atlas charts) is as accurate as
    today's path (every grid point, no smoothing, no decimation, xatlas's own charts: the module
    fixture) within the thresholds of test_surface_matches_analytic_shape, and over-decimation is
    caught by the same measures."""
    shape, base_res, base_mesh = exports["grille"]
    base = measure(shape, base_mesh)
    s = dict(resolution=RES, texture_size=TEX, progress=False, iso=af.ISO)
    fast = export_field(shape.density, af.octant_albedo, tmp_path / "fast", ExportSettings(target_faces=4000, **s))
    new = measure(shape, load_glb(fast.paths["glb"]))
    over = export_field(shape.density, af.octant_albedo, tmp_path / "over", ExportSettings(target_faces=300, **s))
    bad = measure(shape, load_glb(over.paths["glb"]))
    print(f"grille: base {base_res.n_faces} faces chamfer={base['chamfer']:.5f} NC={base['normal_consistency']:.4f}; "
          f"fast {fast.n_faces} faces (queried {fast.points_queried} points) chamfer={new['chamfer']:.5f} "
          f"NC={new['normal_consistency']:.4f} colour MAE={new['color_mae']:.4f}; 300 faces chamfer={bad['chamfer']:.5f} "
          f"NC={bad['normal_consistency']:.4f}")
    assert fast.n_faces <= 4000 * 1.05 < base_res.n_faces
    for m in (base, new):
        # Rods 1.7 voxels in radius: marching cubes' chords cut the curve, so normals are a little
        # rougher than the sphere's (measured 0.98 on both paths); the rest as the other shapes.
        assert m["chamfer"] < 0.1 * H and m["chamfer99"] < 0.5 * H and m["normal_consistency"] > 0.97
        assert m["color_mae"] < 0.01 and m["color_bad"] < 0.03 and m["near_fraction"] > 0.99
    assert new["normal_consistency"] >= base["normal_consistency"] - 0.005
    assert abs(new["volume"] - base["volume"]) / base["volume"] < 0.02
    assert bad["chamfer"] > 0.1 * H or bad["normal_consistency"] < 0.97


# ---- robustness -----------------------------------------------------------------------------------
def test_empty_field_raises_with_advice(tmp_path):
    def density(x):
        return torch.full((len(x),), 3.0)  # everywhere below the given iso of 10

    with pytest.raises(ExportError) as e:
        export_field(density, af.octant_albedo, tmp_path,
                     ExportSettings(resolution=32, texture_size=64, progress=False, iso=10.0))
    msg = str(e.value)
    assert "empty" in msg and "lower iso" in msg and "train longer" in msg and "3" in msg
    assert not list(tmp_path.iterdir()), "no file written on failure"
    # The automatic level cannot invent a surface in a field with no density at all.
    with pytest.raises(ExportError, match="empty"):
        export_field(lambda x: torch.zeros(len(x)), af.octant_albedo, tmp_path,
                     ExportSettings(resolution=32, texture_size=64, progress=False))
    assert not list(tmp_path.iterdir())


def test_full_field_raises_with_advice(tmp_path):
    def density(x):
        return torch.full((len(x),), 100.0)

    with pytest.raises(ExportError) as e:
        export_field(density, af.octant_albedo, tmp_path, ExportSettings(resolution=32, texture_size=64, progress=False))
    assert "fills the whole bounding sphere" in str(e.value) and "higher iso" in str(e.value)
    assert not list(tmp_path.iterdir())


def test_object_touching_the_sphere_is_not_full(tmp_path):
    """A big sphere (r 0.93, 80% of the bounding volume) is an object, not a fog-filled sphere."""
    shape = af.sphere(radius=0.93)
    res = export_field(shape.density, af.octant_albedo, tmp_path,
                       ExportSettings(resolution=48, texture_size=64, progress=False))
    assert res.watertight and res.n_faces > 0


def test_floater_removed(tmp_path):
    body = af.sphere(radius=0.5)
    blob = af.sphere(radius=0.08, center=(0.75, 0.0, 0.0))
    density = af.union_density(body.density, blob.density)
    s = dict(resolution=64, texture_size=128, progress=False)
    res = export_field(density, af.octant_albedo, tmp_path / "a", ExportSettings(**s))
    assert (res.n_components, res.n_components_kept) == (2, 1)
    assert load_glb(res.paths["glb"]).vertices[:, 0].max() < 0.55
    # keep_fraction=0 keeps the blob: the filter, not the extraction, removed it.
    res0 = export_field(density, af.octant_albedo, tmp_path / "b", ExportSettings(keep_fraction=0.0, **s))
    assert res0.n_components_kept == 2
    assert load_glb(res0.paths["glb"]).vertices[:, 0].max() > 0.8


def test_decimation_and_obj(tmp_path):
    shape = af.torus()
    res = export_field(shape.density, af.octant_albedo, tmp_path,
                       ExportSettings(resolution=96, texture_size=256, target_faces=3000, progress=False,
                                      formats=("glb", "obj"), iso=af.ISO))
    assert res.n_faces <= 3000 * 1.05 and res.watertight
    mesh = load_glb(res.paths["glb"])
    m = measure(shape, mesh)
    print(f"torus decimated to {res.n_faces} faces: chamfer={m['chamfer']:.5f} NC={m['normal_consistency']:.4f} "
          f"colour MAE={m['color_mae']:.4f}")
    # 3000 faces on this torus: edge ~0.04, sagitta error ~ 0.04^2 / (8 * 0.2) = 0.001; allow 0.01.
    assert m["chamfer"] < 0.01 and m["normal_consistency"] > 0.98 and m["color_mae"] < 0.05
    obj = res.paths["obj"]
    mtl = obj.with_suffix(".mtl")
    assert obj.exists() and mtl.exists()
    assert "map_Kd asset.png" in mtl.read_text()
    assert f"mtllib {mtl.name}" in obj.read_text()[:2000]
    loaded = trimesh.load(obj, force="mesh")
    assert abs(loaded.area - mesh.area) / mesh.area < 1e-3


def test_step_field(tmp_path):
    """A hard-edged (binary) density still gives a closed, outward, roughly right surface."""
    shape = af.sphere(radius=0.6)
    res = export_field(shape.step_density, af.octant_albedo, tmp_path,
                       ExportSettings(resolution=64, texture_size=128, iso=25.0, progress=False))
    mesh = load_glb(res.paths["glb"])
    m = measure(shape, mesh)
    h = 2 / 63
    # Marching cubes on binary data can only put vertices at edge midpoints: a terraced surface.
    # Measured Chamfer 0.14 h and normal consistency 0.92 (vs 0.9995 for the smooth field).
    assert res.watertight and m["chamfer"] < 0.25 * h and m["normal_consistency"] > 0.9
    assert abs(m["volume"] - shape.volume) / shape.volume < 0.05


def test_progress_callback(tmp_path):
    events = []
    shape = af.sphere()
    export_field(shape.density, af.octant_albedo, tmp_path,
                 ExportSettings(resolution=32, texture_size=64, progress=False),
                 progress_callback=lambda stage, frac: events.append((stage, frac)))
    stages = list(dict.fromkeys(s for s, _ in events))
    assert stages[0] == "density" and stages[-1] == "write"
    assert {"surface", "uv", "albedo"} <= set(stages)
    assert stages == [st for st in STAGES if st in stages], "reported in the documented order"
    assert set(STAGE_COST) == set(STAGES) and abs(sum(STAGE_COST.values()) - 1) < 1e-9
    for st in stages:
        fr = [f for s, f in events if s == st]
        assert fr[0] == 0.0 and fr[-1] == 1.0 and all(0 <= f <= 1 for f in fr) and fr == sorted(fr)


def test_module_field_and_device_argument(tmp_path):
    """Bound methods of an nn.Module work (as field.density / field.albedo will be passed), inputs
    arrive as float32 tensors on settings.device, and the module's train/eval mode is restored."""
    seen = []

    class Field(torch.nn.Module):
        def density(self, x):
            seen.append((x.dtype, x.device.type, x.requires_grad, self.training))
            return af.sphere().density(x)

        def albedo(self, x):
            return af.octant_albedo(x)

    f = Field().train()
    export_field(f.density, f.albedo, tmp_path, ExportSettings(resolution=32, texture_size=64, progress=False,
                                                               device="cpu"))
    assert f.training
    assert set(seen) == {(torch.float32, "cpu", False, False)}


@pytest.mark.parametrize("kwargs", [dict(resolution=16), dict(resolution=2000), dict(resolution=128.0),
                                    dict(texture_size=32), dict(iso=-1.0), dict(iso=float("nan")),
                                    dict(keep_fraction=1.5), dict(formats=("fbx",)), dict(formats=()),
                                    dict(target_faces=10), dict(bound=0), dict(name="../x"),
                                    dict(device="gpu0"), dict(sampling="sparse"), dict(atlas="none"), dict(albedo_sampling="exact"),
                                    dict(smooth_iterations=-1), dict(smooth_iterations=2.5),
                                    dict(target_faces=50_000.0), dict(silhouette_carve="yes"), dict(silhouette_carve=True)])
def test_settings_validation(kwargs):
    with pytest.raises(ConfigError):
        ExportSettings(**kwargs)


def test_settings_defaults():
    s = ExportSettings()
    assert s.resolution == 256 and s.iso is None and s.formats == ("glb",)
    assert s.target_faces == DEFAULT_TARGET_FACES and ExportSettings(target_faces=None).target_faces is None
    assert (s.sampling, s.atlas) == ("adaptive", "fast") and s.smooth_iterations > 0
    assert ExportSettings(formats="obj").formats == ("obj",)


# ---- automatic surface level (engine/mesh/iso.py) -------------------------------------------------
class _AnalyticNeRF(torch.nn.Module):
    """An analytic shape as the renderer sees a field: field(x) -> (density, albedo), .bound."""

    def __init__(self, density):
        super().__init__()
        self.density_fn, self.bound = density, 1.0

    def forward(self, x):
        return self.density_fn(x), af.octant_albedo(x)


@pytest.mark.parametrize("name,scale", [("sphere", 1.0), ("torus", 0.1), ("torus", 10.0), ("box", 0.1)])
def test_auto_iso_matches_rendered_opacity(tmp_path, name, scale):
    """With no iso given, the mesh's silhouette matches the NeRF's rendered opacity (> 0.5) from the
    preview orbit (IoU >= 0.9), whatever the field's density scale (0.1x and 10x: a fixed iso of 10
    is empty at 0.1x, where the peak is 2), and the level is recorded."""
    from engine.cameras import orbit_cameras
    from engine.render import render

    shape = af.SHAPES[name]()

    def density(x):
        return scale * shape.density(x)

    res = export_field(density, af.octant_albedo, tmp_path,
                       ExportSettings(resolution=64, texture_size=64, progress=False))
    assert res.iso_method == "auto" and 0 < res.iso < scale * af.PEAK and res.n_faces > 0
    assert res.metadata()["iso"] == pytest.approx(res.iso, rel=1e-4)
    mesh = load_glb(res.paths["glb"])
    cams = orbit_cameras(4, 15.0)
    with torch.no_grad():
        out = render(_AnalyticNeRF(density), lambda d: torch.ones_like(d), cams, 64, 192, perturb=False)
    nerf = (out.opacity[:, 0] > 0.5).numpy()
    sil = metrics.mesh_silhouettes(np.asarray(mesh.vertices), np.asarray(mesh.faces), cams, 64)
    iou = metrics.mask_iou(sil, nerf)
    print(f"{name} x{scale}: iso={res.iso:.3g} silhouette IoU={iou:.3f} (grid estimate {res.iso_silhouette_iou:.3f})")
    # At 0.1x (peak density 2) the NeRF is 50 % opaque only where a ray's chord through the object is
    # long (the torus's tube is at most 0.55 opaque), a silhouette no level set has: the best level
    # reaches IoU 0.86-0.88 there (measured), hence the lower bar; full-strength fields reach 0.99.
    assert iou >= (0.8 if scale < 1 else 0.95)
    assert scale < 1 or not res.carved  # a crisp field's level set already matches: nothing carved
    if scale == 0.1:  # the old fixed level finds nothing here
        with pytest.raises(ExportError, match="empty"):
            export_field(density, af.octant_albedo, tmp_path / "fixed",
                         ExportSettings(resolution=64, texture_size=64, progress=False, iso=10.0))


def test_auto_iso_reports_the_best_any_level_reaches():
    """choose_iso also reports the best silhouette IoU any level reaches (its ceiling): its choice is
    within 1e-3 of it; a full-strength field reaches ~1, a faint soft one (0.1x) stays below (no level
    set has a silhouette that long chords alone make 50 % opaque)."""
    from engine.mesh import grid, iso
    from engine.mesh.progress import Reporter

    for scale, lo, hi in ((1.0, 0.97, 1.0), (0.1, 0.5, 0.95)):
        g = grid.sample_density(lambda x: scale * af.torus().density(x), 48, 1.0, "cpu", 1 << 16, Reporter(False, None))
        c = iso.choose_iso(g, 1.0, carve="off")  # a single level's ceiling (carving is tested below)
        assert c.silhouette_iou >= c.best_iou - 2e-3 and lo <= c.best_iou <= hi, (scale, c)


def _held_out_silhouette_iou(density, glb) -> float:
    """Mesh vs NeRF silhouette ({opacity > 0.5}) from 8 views at elevations 30 / 60, which the
    exporter's level and hull views (15 / 50 / -40 / 85) do not include."""
    from engine.cameras import make_cameras
    from engine.render import render

    cams = make_cameras([0, 90, 180, 270] * 2, [30] * 4 + [60] * 4, 2.5, 1.0)
    with torch.no_grad():
        out = render(_AnalyticNeRF(density), lambda d: torch.ones_like(d), cams, 64, 192, perturb=False)
    mesh = load_glb(glb)
    sil = metrics.mesh_silhouettes(np.asarray(mesh.vertices), np.asarray(mesh.faces), cams, 64)
    return metrics.mask_iou(sil, (out.opacity[:, 0] > 0.5).numpy())


def test_silhouette_carve_on_a_soft_field(tmp_path):
    """A faint box (0.1x density: 50 % opaque only along long chords) has no level set whose
    silhouette matches every view; carving to the rendered silhouettes (hull.py) matches the NeRF
    better from views the hull was not built from (measured: 0.837 -> 0.890), at a level no lower
    than half the uncarved one, and the asset records it. ``silhouette_carve="off"`` is the old surface."""
    from engine.mesh import iso as iso_mod

    box = af.box()

    def density(x):
        return 0.1 * box.density(x)

    settings = dict(resolution=64, texture_size=64, progress=False)
    off = export_field(density, af.octant_albedo, tmp_path / "off", ExportSettings(silhouette_carve="off", **settings))
    auto = export_field(density, af.octant_albedo, tmp_path / "auto", ExportSettings(**settings))
    assert not off.carved and auto.carved and auto.n_faces > 0
    meta = auto.metadata()
    assert meta["silhouette_carved"] and meta["iso_uncarved_iou"] == pytest.approx(off.iso_silhouette_iou, abs=1e-4)
    assert auto.iso_silhouette_iou >= off.iso_silhouette_iou + iso_mod.CARVE_GAIN
    assert iso_mod.CARVE_LEVEL_FLOOR * off.iso - 1e-6 <= auto.iso < off.iso
    before, after = (_held_out_silhouette_iou(density, r.paths["glb"]) for r in (off, auto))
    print(f"faint box, held-out views: silhouette IoU {before:.3f} uncarved -> {after:.3f} carved")
    assert after >= before + 0.02


def test_silhouette_carve_never_empties_the_mesh(tmp_path):
    """A faint pancake is 50 % opaque edge-on but not from above, so the silhouettes' hull is empty;
    even when carving is forced on, the exporter keeps the uncarved surface instead of an empty one."""
    pancake = af.box(half=(0.7, 0.05, 0.7))

    def density(x):
        return 0.15 * pancake.density(x)

    res = export_field(density, af.octant_albedo, tmp_path,
                       ExportSettings(resolution=48, texture_size=64, progress=False, silhouette_carve="on"))
    assert not res.carved and res.n_faces > 0


def test_hull_projects_points_onto_their_pixels():
    """SilhouetteHull.opacity_at: a point on a pixel's ray reads that pixel (bilinear at the pixel
    centre), with the renderer's camera conventions, per view (own focal length) and the smallest
    over the views; a view that does not see a point (off its frame) does not constrain it."""
    from engine.cameras import make_cameras
    from engine.mesh.hull import SilhouetteHull
    from engine.render import camera_rays

    res = 16
    cams = make_cameras([30.0, 120.0], [20.0, -10.0], [2.5, 2.0], [1.0, 1.4])
    images = torch.rand(2, res, res, generator=torch.Generator().manual_seed(0))
    origins, dirs = camera_rays(cams, res, res)
    pix = torch.tensor([0, 17, 100, 255])
    one_view = SilhouetteHull(cams[0:1], images[0:1])
    pts = origins[0, pix] + 2.0 * dirs[0, pix]
    torch.testing.assert_close(one_view.opacity_at(pts), images[0].reshape(-1)[pix])
    both = SilhouetteHull(cams, images)
    pts1 = origins[1, pix] + 1.5 * dirs[1, pix]  # on view 1's pixels: the result is at most that pixel
    assert (both.opacity_at(pts1) <= images[1].reshape(-1)[pix] + 1e-6).all()
    origin = torch.zeros(1, 3)  # seen by both views: the smaller of the two readings
    readings = [SilhouetteHull(cams[k:k + 1], images[k:k + 1]).opacity_at(origin) for k in (0, 1)]
    torch.testing.assert_close(both.opacity_at(origin), torch.minimum(*readings))
    far_aside = origins[0, :1] + 2.0 * dirs[0, :1] + torch.tensor([[0.0, 10.0, 0.0]])
    assert one_view.opacity_at(far_aside).item() == 1.0


def test_carve_accepts_column_densities_and_the_scores_reproduce_it(tmp_path):
    """The carved density function takes what the exporter accepts ((N, 1) densities too), and the
    shape scores re-make the exporter's carved surface from asset.json (engine/priors/eval_sds.py):
    same level, carved, and a different occupancy from the uncarved level set."""
    from types import SimpleNamespace

    from engine.evaluate import grid_points
    from engine.priors.eval_sds import exported_surface

    box = af.box()

    def column(x):
        return 0.1 * box.density(x)[:, None]

    res = export_field(column, af.octant_albedo, tmp_path, ExportSettings(resolution=64, texture_size=64, progress=False))
    assert res.carved and res.n_faces > 0
    meta = json.loads(json.dumps(res.metadata()))
    assert meta["iso_grid_resolution"] == 48  # the coarse grid of a 64^3 export

    def flat(x):
        return 0.1 * box.density(x)

    iso, surface = exported_surface(SimpleNamespace(density=flat), SimpleNamespace(bound=1.0, mesh_resolution=64), meta)
    assert iso == pytest.approx(res.iso, rel=1e-6) and surface is not flat
    pts = grid_points(64, 1.0)
    carved, uncarved = int((surface(pts) > iso).sum()), int((flat(pts) > iso).sum())
    assert 0 < carved < 0.97 * uncarved  # the carve removes volume the bare level set has at that level


def test_smoothing_keeps_volume_and_normals(tmp_path):
    """Default Taubin smoothing on a marching-cubes mesh: volume within 1 %, normal consistency no
    lower than without (torus; box, whose edges are where rounding would show; the thin grille's rods,
    where inflation would), Chamfer no worse than 5 % + 0.01 voxel."""
    default = ExportSettings().smooth_iterations
    for name in ("torus", "box", "grille"):
        shape = af.SHAPES[name]()
        scores = {}
        for it in (0, default):
            # The grille at RES: rods 3.3 voxels thick as designed (at 64 they are 2: below any detail claim).
            res = export_field(shape.density, af.octant_albedo, tmp_path / f"{name}{it}",
                               ExportSettings(resolution=RES if name == "grille" else 64, texture_size=64,
                                              progress=False, iso=af.ISO,
                                              smooth_iterations=it, target_faces=None))
            scores[it] = measure(shape, load_glb(res.paths["glb"]))
            if it:
                assert abs(res.volume_change) < 0.01
        print(name, {k: (round(v["normal_consistency"], 5), round(v["chamfer"], 6)) for k, v in scores.items()})
        assert scores[default]["normal_consistency"] >= scores[0]["normal_consistency"]
        assert scores[default]["chamfer"] <= scores[0]["chamfer"] * 1.05 + 0.01 * H


# ---- the polygon budget in the config and CLI ----------------------------------------------------
def test_target_faces_presets_and_cli(tmp_path):
    from engine import runfolder
    from engine.cli import build_parser
    from engine.config import build_config

    base = dict(prompt="a cube", model="builtin:shapes")
    assert [build_config(p, **base).target_faces for p in ("draft", "standard", "high")] == [20_000, 40_000, 100_000]
    assert build_config("draft", target_faces=5000, **base).target_faces == 5000
    assert build_parser().parse_args(["generate", "a cube", "--target-faces", "8000"]).target_faces == 8000
    assert build_parser().parse_args(["export", "RUN", "--target-faces", "8000"]).target_faces == 8000
    cfg = build_config("draft", **base)
    cfg.save(tmp_path / runfolder.CONFIG)
    assert runfolder.load_run_config(tmp_path).target_faces == 20_000


@pytest.mark.parametrize("argv,fragment", [
    (["generate", "a cube", "--target-faces", "10"], "target_faces"),
    (["generate", "a cube", "--target-faces", "0"], "target_faces"),
    (["generate", "a cube", "--set", "target_faces=2.5"], "target_faces"),
    (["generate", "a cube", "--target-faces", "lots"], "invalid int"),
    (["export", "{run}", "--target-faces", "-3"], "target_faces"),
    (["export", "{run}", "--silhouette-carve", "maybe"], "invalid choice"),
    (["generate", "a cube", "--set", "silhouette_carve=yes"], "silhouette_carve"),
])
def test_target_faces_bad_input(argv, fragment, tmp_path, capsys):
    """A bad polygon budget is refused before any work (exit 2, the reason named), nothing written."""
    from engine import cli
    from engine.config import JobConfig

    run = tmp_path / "run"
    run.mkdir()
    JobConfig(prompt="a cube", model="builtin:shapes").save(run / "config.json")
    before = sorted(p.name for p in run.iterdir())
    out = tmp_path / "out"
    argv = [a.replace("{run}", str(run)) for a in argv] + ["--no-progress"]
    if argv[0] == "generate":
        argv += ["--out", str(out), "--model", "builtin:shapes", "--device", "cpu"]
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own type errors
        code = exc.code
    assert code == 2
    captured = capsys.readouterr()
    assert fragment in captured.err + captured.out
    assert not out.exists() and sorted(p.name for p in run.iterdir()) == before


def test_auto_iso_on_a_hash_grid_run(tmp_path):
    """A real run's field (builtin:shapes, hash grid, a few steps: the start blob plus the hash grid's
    noise), exported with the automatic level: its silhouette matches the NeRF's rendered opacity
    (IoU >= 0.9, the issue's bar) from 8 views the level was not chosen on (elevations 30 / 60)."""
    from engine import cli, runfolder
    from engine.cameras import make_cameras
    from engine.export_run import load_field
    from engine.render import render

    code = cli.main(["generate", "a red cube", "--model", "builtin:shapes", "--steps", "3", "--render-resolution", "16",
                     "--samples-per-ray", "8", "--device", "cpu", "--no-progress", "--no-export", "--out", str(tmp_path),
                     "--set", "preview_views=1", "--set", "hash_log2_table=12"])
    assert code == 0
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    cfg = runfolder.load_run_config(run)
    assert cfg.iso is None  # the prior no longer sets a level
    field = load_field(run, cfg, torch.device("cpu"))
    res = export_field(field.density, field.albedo, tmp_path / "asset",
                       ExportSettings(resolution=64, texture_size=64, progress=False))
    cams = make_cameras([0, 90, 180, 270] * 2, [30] * 4 + [60] * 4, 2.5, 1.0)
    with torch.no_grad():
        out = render(field, lambda d: torch.ones_like(d), cams, 48, 128, perturb=False)
    mesh = load_glb(res.paths["glb"])
    nerf = (out.opacity[:, 0] > 0.5).numpy()
    sil = metrics.mesh_silhouettes(np.asarray(mesh.vertices), np.asarray(mesh.faces), cams, 48)
    iou = metrics.mask_iou(sil, nerf)
    print(f"hash-grid run: iso={res.iso:.3g} silhouette IoU={iou:.3f}, NeRF mask {nerf.mean():.3f} of the pixels")
    assert 0.05 < nerf.mean() < 0.8  # a real object in view, not two empty (or full) masks
    assert res.iso_method == "auto" and iou >= 0.9


def test_features_thinner_than_the_coarse_grid(tmp_path):
    """Rods 0.024 thick between coarse grid points 0.043 apart (128^3: coarse 48^3) never reach the
    level on the coarse grid; their tails do, so coarse-to-fine still finds all 12 (as dense
    sampling does) instead of calling the field empty."""
    shape = af.grille(radius=0.012, count=12)
    s = dict(resolution=128, texture_size=64, progress=False, iso=af.ISO, target_faces=None, keep_fraction=0.0)
    fast = export_field(shape.density, af.octant_albedo, tmp_path / "fast", ExportSettings(**s))
    dense = export_field(shape.density, af.octant_albedo, tmp_path / "dense", ExportSettings(sampling="dense", **s))
    assert fast.n_components == dense.n_components == 12
    assert abs(fast.n_faces_extracted - dense.n_faces_extracted) <= 0.01 * dense.n_faces_extracted
    assert fast.points_queried < dense.points_queried / 3

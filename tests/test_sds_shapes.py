"""SDS end to end with the shipped builtin:shapes prior, on CPU: the text decides the colour and the
shape ("a red cube" gives a red cube, "a blue sphere" a blue sphere).

Each case is `python -m engine.priors.eval_sds` (the real CLI: config, model loader with the prior's
dreamfusion.json recommendations, SDS loop, checkpoint, export; then engine.evaluate against the
analytic shape, the exported .glb included), one process per case with one torch thread each, run side by side on CI's two cores, exactly
as the measurements in docs/SDS_SHAPES.md were taken. Thresholds are those measurements with margin;
a broken pipeline fails them:
- no SDS gradient: the albedo stays grey (nearest colour wrong), and both prompts leave the same
  start blob (no shape-word contrast);
- swapped or ignored colour words: the nearest colour is wrong;
- ignored shape words: both runs make the same object (no contrast), so one of them is not its shape;
- renderer or guidance noise instead of signal: neither the sphere nor the cube is recovered (IoU,
  silhouette);
- a terracing or lumpy field or exporter: normal consistency of the exported mesh drops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

# The prior's recommended settings (field, run length, render size: its dreamfusion.json) are
# what a user gets and what the measurements below used, so the test runs exactly those.
PRIOR_DEFAULTS = json.loads((ROOT / "engine/priors/shapes/dreamfusion.json").read_text())["defaults"]
STEPS = PRIOR_DEFAULTS["steps"]
CASES = {"cube": "a red cube", "sphere": "a blue sphere"}

# Measured 2026-11-30 with the prior's settings (4-band frequency field, t 0.02-0.98, 300 steps, guidance
# 20 below t = 0.5 and 13 -> 10 above it, 3D normal smoothness 0 -> 1000 over the last 30 % (the finish),
# the exporter's automatic surface level), seed 0, on the lead's f2f027c (docs/SDS_SHAPES.md, "Results"):
# value -> threshold. Seeds 1-3 of the same settings give cube 0.79 / 0.76 / 0.77 and sphere
# 0.80 / 0.83 / 0.93 in place: one seed's realisation moves these by ~0.1, hence the margins.
COLOUR_ERROR_MAX = 0.25  # red cube 0.117, blue sphere 0.114
SPHERE_IOU_MIN = 0.85  # blue sphere, normalised volumetric IoU 0.978
# blue sphere in place 0.965; 0.896 without the finish (guidance 13 above t = 0.5 to the end, smoothness
# 0 -> 300 over the second half: the fifth round's settings) and 0.885 without the smoothness term, so
# this fails if either stops acting (docs/SDS_SHAPES.md, sixth round)
SPHERE_IN_PLACE_MIN = 0.93
SPHERE_SILHOUETTE_MIN = 0.80  # blue sphere 0.987 (0.933 without the finish)
CUBE_IOU_MIN = 0.72  # red cube, volumetric IoU vs the cube in place 0.754 (a blob-sized sphere: ~0.55)
CUBE_SILHOUETTE_MIN = 0.70  # red cube 0.756
# Normal consistency of the exported mesh with the true surface: red cube 0.834, blue sphere 0.998;
# the terraced 8-band field's cube scored 0.44 (docs/SDS_SHAPES.md, "Choosing the field").
NORMAL_CONSISTENCY_MIN = 0.78
# The sphere shows the 4-band field's ripples most plainly in this score: 0.998 with the smoothness
# term, 0.990 without it (`--set normal_smooth_weight=0`, the same run otherwise), so this fails if the
# term stops acting. A narrow margin, but the run is deterministic on a CPU.
SPHERE_SMOOTH_MIN = 0.992
# Bumpiness (degrees, engine.mesh.metrics): red cube 2.12, blue sphere 1.97 on seed 0 (seeds 0-3: at
# most 2.32 / 2.44); without the finish 3.6 / 3.0-3.7, without the smoothness term 5-13. The exporter's
# marching cubes of the true sphere score 0.88 (docs/SDS_SHAPES.md, "The seventh round").
BUMPINESS_MAX = 2.8
# In-place IoU vs cube minus vs sphere: red cube run 0.754 - 0.513 = +0.241, blue sphere run
# 0.585 - 0.965 = -0.380; the runs differ by 0.621. Ignored shape words or no gradient give ~0 (same
# object for both prompts). Not a single-run margin: the untouched start blob would itself overlap
# the cube more than the r = 0.5 sphere.
SHAPE_WORD_CONTRAST_MIN = 0.35


@pytest.fixture(scope="module")
def scores(tmp_path_factory) -> dict:
    runs = tmp_path_factory.mktemp("sds_shapes")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    procs = {}
    for shape, prompt in CASES.items():
        cmd = [sys.executable, "-m", "engine.priors.eval_sds", "--threads", "1", "--prompts", prompt, "--seeds", "0", "--runs-dir", str(runs / shape), "--json", str(runs / f"{shape}.json")]
        procs[shape] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = {}
    for shape, proc in procs.items():
        log, _ = proc.communicate(timeout=3600)
        assert proc.returncode == 0, log[-3000:]
        out[shape] = json.loads((runs / f"{shape}.json").read_text())[0]
    return out


def test_the_prior_keeps_the_ball_start_for_solids(scores):
    """start_shape auto (dreamfusion.json): the probe keeps the ball for the cube and the sphere (margins
    measured at seed 0: 1.2e-3 and 5.5e-3; tests/test_start_shape.py has the torus's ring), so
    their runs are step for step those of start_shape ball, which the thresholds below were measured on."""
    assert scores["cube"]["start_shape"] == "ball" and scores["sphere"]["start_shape"] == "ball"


@pytest.mark.parametrize("shape", list(CASES))
def test_sds_recovers_the_prompted_colour(scores, shape):
    s = scores[shape]
    assert s["predicted_colour"] == s["colour"], s
    assert s["colour_error"] <= COLOUR_ERROR_MAX, s


def test_sds_recovers_the_sphere(scores):
    s = scores["sphere"]
    assert s["predicted_shape"] == "sphere" and s["predicted_shape_in_place"] == "sphere", s
    assert s["volume_iou_normalised"] >= SPHERE_IOU_MIN, s
    assert s["volume_iou"] >= SPHERE_IN_PLACE_MIN, s  # in place: about the right size, not only the right shape
    assert s["silhouette_iou"] >= SPHERE_SILHOUETTE_MIN, s


def test_sds_makes_a_cube(scores):
    """In place (the prior drew every shape at one position and size), the red cube run's object
    overlaps the true cube more than any other shape."""
    s = scores["cube"]
    raw = s["raw_iou_by_shape"]
    assert s["predicted_shape_in_place"] == "cube", raw
    assert raw["cube"] >= CUBE_IOU_MIN, raw
    assert s["silhouette_iou"] >= CUBE_SILHOUETTE_MIN, s


@pytest.mark.parametrize("shape", list(CASES))
def test_the_exported_surface_is_smooth(scores, shape):
    """The .glb a user gets (automatic level, smoothing) follows the true surface's normals: no
    terraces (the 8-band field's failure) and no large lumps."""
    s = scores[shape]
    assert s["steps"] == STEPS, s  # the prior's recommended run length was used
    assert s["normal_consistency"] >= NORMAL_CONSISTENCY_MIN, s
    assert s["bumpiness"] <= BUMPINESS_MAX, s  # the dents normal consistency barely sees
    if shape == "sphere":  # no ripples: the prior's normal-smoothness term (docs/SDS_SHAPES.md, third round)
        assert s["normal_consistency"] >= SPHERE_SMOOTH_MIN, s


def test_the_shape_word_decides_the_shape(scores):
    def cube_minus_sphere(run):
        raw = scores[run]["raw_iou_by_shape"]
        return raw["cube"] - raw["sphere"]

    contrast = cube_minus_sphere("cube") - cube_minus_sphere("sphere")
    assert contrast >= SHAPE_WORD_CONTRAST_MIN, (scores["cube"]["raw_iou_by_shape"], scores["sphere"]["raw_iou_by_shape"])


def _exporter_surface(fn, iso: float, taubin_passes: int = 0):
    """The exporter's marching cubes of a density function at 128³ (optionally its Taubin passes),
    outward winding: the surface the shape scores read."""
    from engine.mesh import grid, smooth, surface
    from engine.mesh.progress import Reporter

    g = grid.sample_density(fn, 128, 1.0, "cpu", 1 << 18, Reporter(False, None))
    verts, faces = surface.extract_surface(g, iso, 1.0)
    verts = smooth.taubin(verts, faces, taubin_passes)
    return verts, surface.orient_outward(verts, faces)


@pytest.mark.parametrize("shape", ["sphere"])
def test_surface_scores_see_terraces(shape):
    """Normal consistency is what sees terraces (stacked layers a few voxels thick, as the 8-band
    frequency field made): the terraced surface keeps its volume but loses normal consistency."""
    import torch

    from engine.evaluate import mesh_scores, volume_scores
    from engine.priors import shapes_data

    def density(step):
        def fn(x):
            if step:
                x = torch.cat([x[:, :1], torch.round(x[:, 1:2] / step) * step, x[:, 2:]], dim=1)
            return 20 * torch.sigmoid(-60 * shapes_data.sdf(shape, x))
        return fn

    smooth = mesh_scores(*_exporter_surface(density(0), iso=10.0), shape)
    terraced = mesh_scores(*_exporter_surface(density(0.06), iso=10.0), shape)
    assert smooth["normal_consistency"] > 0.99 and smooth["surface_within_voxel"] > 0.99, smooth
    assert terraced["normal_consistency"] < 0.92, terraced
    raw, _ = volume_scores(density(0.06), iso=10.0)
    assert raw[shape] > 0.8  # the volume barely notices


def test_bumpiness_sees_dents_that_normal_consistency_misses():
    """The 4-band field's dents (ripples with the top band's period, 0.25 of the bound, a few degrees of
    tilt) barely move normal consistency but show in pictures; bumpiness (engine.mesh.metrics) sees
    them, and it does not count the edges of a true cube as bumps."""
    import math

    import torch

    from engine.evaluate import mesh_scores
    from engine.priors import shapes_data

    def exporter_surface(fn):  # with the exporter's 3 Taubin passes
        return _exporter_surface(fn, iso=10.0, taubin_passes=3)

    def density(shape, amplitude):
        def fn(x):
            ripple = amplitude * torch.sin(8 * math.pi * x).prod(dim=1)  # the top band, sin(2^3 pi x) per axis
            return 20 * torch.sigmoid(-60 * (shapes_data.sdf(shape, x) + ripple))
        return fn

    smooth_sphere = mesh_scores(*exporter_surface(density("sphere", 0.0)), "sphere")
    dented_sphere = mesh_scores(*exporter_surface(density("sphere", 0.01)), "sphere")
    true_cube = mesh_scores(*exporter_surface(density("cube", 0.0)), "cube")
    # measured: normal consistency 1.000 vs 0.993, bumpiness 0.88° vs 6.2°; the true cube 0.10°
    assert dented_sphere["normal_consistency"] > 0.99, dented_sphere  # normal consistency barely notices
    assert smooth_sphere["bumpiness"] < 1.5 and true_cube["bumpiness"] < 1.5, (smooth_sphere, true_cube)
    assert dented_sphere["bumpiness"] > 3 * smooth_sphere["bumpiness"], (smooth_sphere, dented_sphere)


def test_sds_force_restores_the_torus_tube():
    """engine.priors.sds_probe: the SDS update direction on a one-parameter family of analytic shapes.
    The prior knows the torus's tube radius (0.15): SDS at the prior's guidance thickens a thinner
    tube and thins a thicker one (measured with 256 samples: +935 at 0.10, -1206 at 0.25, fixed point
    0.153; docs/SDS_SHAPES.md). A prior that ignores the shape word, or a sign error in the probe's
    force, fails this. 16 views, one noise draw each: ~6 s of CPU."""
    from engine.priors import resolve_builtin
    from engine.priors.check_shapes import load
    from engine.priors.sds_probe import probe

    guidance = json.loads((ROOT / "engine/priors/shapes/dreamfusion.json").read_text())["guidance_scale"]
    rows, _ = probe(load(resolve_builtin("builtin:shapes")), "a red torus", "minor", [0.10, 0.25], delta=0.02,
                    views=16, noises=1, seed=0)
    force = [-(r["A"] + guidance * r["B"]) for r in rows]  # per sample
    thinner, thicker = (f.mean().item() for f in force)
    err = max(f.std().item() / len(f.flatten()) ** 0.5 for f in force)
    assert thinner > 2 * err and thicker < -2 * err, (thinner, thicker, err)

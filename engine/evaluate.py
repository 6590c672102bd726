"""Shape-recovery metrics for runs made with the project's ``builtin:shapes`` prior.

For a prompt like "a red cube" the true answer is known exactly (engine/priors/shapes_data.py), so a
trained field can be scored without any learned judge:

* volumetric IoU of the field's occupancy (density > iso, the exporter's surface; carved to the
  rendered silhouettes where the exporter carved it, engine/mesh/hull.py) against the true
  shape, raw and after centring / scale normalisation (matching centroid and RMS radius), and the IoU
  against every other shape, so "did it make a cube rather than a sphere" is a yes/no answer;
* silhouette IoU from a fixed ring of views (the field's opacity > 0.5 against the analytic mask);
* albedo colour error: mean |albedo − true colour| over the object's pixels in albedo renders;
* surface quality of the exported mesh: normal consistency with the analytic shape and the share of
  its area within one voxel of the true surface. Volumetric IoU at 64³ does not see terraces or
  lumps a few voxels high; these do.

The paper's own measure, CLIP R-Precision, is ``python -m engine evaluate`` (engine/evaluate_cli.py,
docs/EVALUATION.md); it needs CLIP weights, which this machine cannot download.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .cameras import make_cameras
from .priors import shapes_data
from .render import render


@dataclass
class ShapeScores:
    shape: str
    colour: str
    volume_iou: float  # raw, in world coordinates
    volume_iou_normalised: float  # after centring and scale matching
    iou_by_shape: dict  # normalised IoU against each candidate shape
    predicted_shape: str  # the candidate with the highest normalised IoU
    # Raw IoU against each candidate in place. The prior was trained on every shape at one position and
    # size, so SDS that follows it should recover them in place; after normalisation a rounded cube and
    # a sphere score alike, so the raw ranking is the sharper cube-vs-sphere test.
    raw_iou_by_shape: dict
    predicted_shape_in_place: str  # the candidate with the highest raw IoU
    silhouette_iou: float  # mean over views
    colour_error: float  # mean absolute RGB error of the albedo, in [0, 1]
    predicted_colour: str  # nearest named colour to the mean albedo
    # Surface quality (None when no mesh was scored): see mesh_scores.
    normal_consistency: float | None = None
    surface_within_voxel: float | None = None
    chamfer: float | None = None
    bumpiness: float | None = None  # degrees

    def to_json(self) -> dict:
        return asdict(self)


def grid_points(resolution: int, bound: float, device=None) -> torch.Tensor:
    axis = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution * 2 * bound - bound
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 0.0


def _normalise(points: torch.Tensor, occ: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Centroid and RMS radius of the occupied points (used to align a prediction to the truth)."""
    p = points[occ]
    if len(p) == 0:
        return torch.zeros(3), 1.0
    c = p.mean(0)
    return c, float(((p - c) ** 2).sum(-1).mean().sqrt())


@torch.no_grad()
def volume_scores(density_fn, iso: float, bound: float = 1.0, resolution: int = 64, chunk: int = 65536, device=None):
    pts = grid_points(resolution, bound, device)
    dens = torch.cat([density_fn(pts[i:i + chunk]) for i in range(0, len(pts), chunk)])
    pred = (dens > iso).cpu()
    pts = pts.cpu()
    pc, pr = _normalise(pts, pred)
    scores_raw, scores_norm = {}, {}
    for name in shapes_data.SHAPES:
        truth = shapes_data.occupancy(name, pts)
        scores_raw[name] = _iou(pred, truth)
        tc, tr = _normalise(pts, truth)
        # Compare in the prediction's frame: grid point p corresponds to tc + (p - pc) * tr / pr in the truth's.
        truth_in_pred = shapes_data.occupancy(name, tc + (pts - pc) * (tr / pr))
        scores_norm[name] = _iou(pred, truth_in_pred)
    return scores_raw, scores_norm


@torch.no_grad()
def view_scores(field, background, shape: str, colour: str, views: int = 4, resolution: int = 64, samples: int = 96,
                elevations=(15.0, 45.0)):
    """Silhouette IoU and albedo colour error over a fixed ring of views."""
    target = shapes_data.colour_rgb(colour)
    ious, errors, colours = [], [], []
    for elev in elevations:
        az = torch.arange(views, dtype=torch.float32) * (360.0 / views)
        cams = make_cameras(az, elev, 2.5, 1.0)
        out = render(field, background, cams, resolution, samples, shading="albedo", perturb=False)
        origins, dirs = shapes_data.camera_rays(cams, resolution)
        hit = shapes_data.sphere_trace(shape, origins.reshape(-1, 3), dirs.reshape(-1, 3))[0]
        hit = hit.reshape(len(cams), resolution, resolution)
        pred = out.opacity[:, 0] > 0.5
        for i in range(len(cams)):
            ious.append(_iou(pred[i], hit[i].bool()))
        # The albedo itself (not the composite with the background): re-render with a black background.
        black = render(field, lambda d: torch.zeros_like(d), cams, resolution, samples, shading="albedo", perturb=False)
        alpha = black.opacity.clamp_min(1e-6)
        albedo = (black.image / alpha).permute(0, 2, 3, 1)[pred]
        if len(albedo):
            colours.append(albedo.mean(0))
            errors.append((albedo - target).abs().mean().item())
    mean_colour = torch.stack(colours).mean(0) if colours else torch.zeros(3)
    nearest = min(shapes_data.COLOURS, key=lambda n: float((shapes_data.colour_rgb(n) - mean_colour).abs().sum()))
    return sum(ious) / len(ious), (sum(errors) / len(errors) if errors else 1.0), nearest


# One voxel of the 64³ scoring grid over [-1, 1]³ (the volumetric IoU's resolution).
SURFACE_TOLERANCE = 2.0 / 64
# Bumpiness's scale: a tenth of the bound, under half the period of the 4-band field's ripples (0.25).
BUMP_RADIUS = 0.1


def mesh_scores(verts, faces, shape: str, tolerance: float = SURFACE_TOLERANCE) -> dict:
    """Surface quality of a triangle mesh (outward winding) against the analytic ``shape``, in place,
    with the exporter's own measures (engine/mesh/metrics.py): normal consistency (1 = every true
    normal matched; terraces and lumps pull it down although the volume barely changes), the share of
    the mesh's area within ``tolerance`` (one scoring voxel) of the true surface, Chamfer-L1, and
    bumpiness (degrees; dents and lumps that normal consistency barely sees, metrics.bumpiness)."""
    from functools import partial

    from .mesh.metrics import reference_from_sdf, surface_scores

    s = surface_scores(verts, faces, reference_from_sdf(partial(shapes_data.sdf, shape)), voxel=tolerance,
                       bump_radius=BUMP_RADIUS)
    return {"normal_consistency": s.normal_consistency, "surface_within_voxel": s.near_fraction, "chamfer": s.chamfer,
            "bumpiness": s.bumpiness}


def score_field(field, background, prompt: str, iso: float, bound: float = 1.0, mesh=None,
                surface_density=None) -> ShapeScores:
    """All scores of a trained field; ``mesh`` = (verts, faces) adds the surface scores of that mesh.
    The occupancy is {surface_density > iso}: the field's density unless the exporter's surface is
    another function of it (engine.mesh.iso.surface_density: carved to the silhouettes)."""
    parsed = shapes_data.parse_prompt(prompt)
    if parsed is None:
        raise ValueError(f"{prompt!r} does not name one of the builtin shapes and colours")
    colour, shape = parsed
    raw, norm = volume_scores(field.density if surface_density is None else surface_density, iso, bound)
    sil, err, nearest = view_scores(field, background, shape, colour)
    surf = mesh_scores(*mesh, shape) if mesh is not None else {}
    return ShapeScores(
        shape=shape, colour=colour, volume_iou=raw[shape], volume_iou_normalised=norm[shape],
        iou_by_shape={k: round(v, 4) for k, v in norm.items()}, predicted_shape=max(norm, key=norm.get),
        raw_iou_by_shape={k: round(v, 4) for k, v in raw.items()}, predicted_shape_in_place=max(raw, key=raw.get),
        silhouette_iou=sil, colour_error=err, predicted_colour=nearest, **surf,
    )

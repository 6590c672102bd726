"""The mesh rasteriser (engine/raster) against closed forms: an icosphere and a cube seen by the
engine's cameras, gradients against finite differences, edges between faces, a ~100k-face mesh."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from engine.cameras import make_cameras
from engine.raster import antialias_alpha, face_normals, interpolate, project, rasterize, render_mesh, vertex_normals
from engine.render.rays import camera_rays


def _mesh(m, dtype=torch.float32):
    return torch.tensor(m.vertices, dtype=dtype), torch.tensor(m.faces, dtype=torch.long)


def test_sphere_silhouette_depth_and_normals_match_the_closed_form():
    r, d, size = 0.8, 2.5, 96
    v, f = _mesh(trimesh.creation.icosphere(subdivisions=4, radius=r))
    cams = make_cameras([0.0, 130.0], [20.0, -40.0], d, [1.0, 1.3])
    frags = rasterize(v, f, cams, size, size)
    o, dirs = camera_rays(cams, size, size)
    b = (o * dirs).sum(-1)
    disc = b * b - ((o * o).sum(-1) - r * r)
    hit = (disc > 0).reshape(frags.mask.shape)
    t = (-b - disc.clamp_min(0).sqrt()).reshape(hit.shape)
    # The icosphere is inscribed in the sphere: only pixels within about a pixel of the rim may differ.
    assert (frags.mask != hit).float().mean() < 0.01
    assert (frags.mask & ~hit).sum() == 0  # nothing drawn outside the true sphere
    forward = -cams.c2w[:, :3, 2]
    cos = (dirs.reshape(*hit.shape, 3) * forward[:, None, None]).sum(-1)
    core = frags.mask & hit & (disc.reshape(hit.shape) > 0.1)
    depth_true = t * cos
    assert (frags.depth[core] - depth_true[core]).abs().max() < 0.01 * r  # facet sag of subdivision 4
    assert (frags.depth[core] >= depth_true[core] - 1e-4).all()  # facets lie inside the sphere
    pts = interpolate(v, frags, f)
    n_true = torch.nn.functional.normalize(pts, dim=-1)
    n_vert = torch.nn.functional.normalize(interpolate(vertex_normals(v, f), frags, f), dim=-1)
    ang = torch.rad2deg(torch.acos((n_vert * n_true).sum(-1)[core].clamp(-1, 1)))
    assert ang.max() < 1.5
    assert (frags.bary[frags.mask].sum(-1) - 1).abs().max() < 1e-5
    assert (frags.bary[frags.mask] >= -1e-5).all()
    assert (frags.face_id[~frags.mask] == -1).all() and (frags.depth[~frags.mask] == 0).all()


def _ray_box(o, dirs, half):
    """Slab-method hits of rays with the box [-half, half]^3: (hit, t, outward normal)."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0, t1 = (-half - o) * inv, (half - o) * inv
    tmin, tmax = torch.minimum(t0, t1), torch.maximum(t0, t1)
    t_near, axis = tmin.max(-1)
    hit = t_near < tmax.min(-1).values
    normal = torch.zeros_like(dirs).scatter_(-1, axis[..., None], 1.0) * -torch.sign(dirs)
    return hit, t_near, normal, (tmin.sort(-1).values[..., 2] - tmin.sort(-1).values[..., 1])


def test_cube_silhouette_depth_and_face_normals_match_the_closed_form():
    size, half = 80, 0.5
    v, f = _mesh(trimesh.creation.box(extents=(1.0, 1.0, 1.0)))
    cams = make_cameras([30.0, -120.0], [25.0, 50.0], 2.2, 1.1)
    frags = rasterize(v, f, cams, size, size)
    o, dirs = camera_rays(cams, size, size)
    hit, t, normal, gap = _ray_box(o, dirs, half)
    hit, t, normal, gap = (x.reshape(*frags.mask.shape, *x.shape[2:]) for x in (hit, t, normal, gap))
    assert (frags.mask != hit).float().mean() < 0.005  # only pixels whose centre is on an edge
    forward = -cams.c2w[:, :3, 2]
    cos = (dirs.reshape(*hit.shape, 3) * forward[:, None, None]).sum(-1)
    both = frags.mask & hit
    assert (frags.depth[both] - (t * cos)[both]).abs().max() < 1e-4
    fn = face_normals(v, f)[frags.face_id.clamp_min(0)]
    away = both & (gap > 1e-2)  # not on a cube edge, where the winning side is a matter of rounding
    assert (fn[away] - normal[away]).abs().max() < 1e-5
    out = render_mesh(v, f, cams, size, size)
    assert torch.allclose(out.normals.permute(0, 2, 3, 1)[away], normal[away], atol=1e-5)


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    m = trimesh.creation.icosphere(subdivisions=1, radius=0.7)
    v, f = _mesh(m, torch.float64)
    v = v + 0.02 * torch.randn_like(v)
    cams = make_cameras([10.0], [15.0], 2.5, 1.0)
    cams.c2w, cams.focal = cams.c2w.double(), cams.focal.double()
    attr = torch.rand(len(v), 3, dtype=torch.float64, requires_grad=True)
    verts = v.clone().requires_grad_(True)
    w = torch.rand(1, 24, 24, 3, dtype=torch.float64)

    def shade(a, x):
        return (interpolate(a, rasterize(x, f, cams, 24, 24), f) * w).sum() + (rasterize(x, f, cams, 24, 24).depth * w[..., 0]).sum()

    assert torch.autograd.gradcheck(shade, (attr, verts), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_soft_coverage_follows_the_silhouette_area_and_its_derivative():
    size, d = 64, 2.0
    cams = make_cameras([0.0], [0.0], d, 1.0)
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    quad = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    rot = torch.tensor([[math.cos(0.5), -math.sin(0.5), 0.0], [math.sin(0.5), math.cos(0.5), 0.0], [0.0, 0.0, 1.0]])
    for s in (0.3, 0.317, 0.341):
        scale = torch.tensor(s, requires_grad=True)
        alpha = antialias_alpha(rasterize(scale * quad @ rot.T, f, cams, size, size), f)
        area = (2 * s * size / d) ** 2  # projected square, pixels
        assert abs(alpha.sum().item() - area) < 0.01 * area
        alpha.sum().backward()
        d_area = 8 * s * (size / d) ** 2
        assert abs(scale.grad.item() - d_area) < 0.05 * d_area  # a hard mask's derivative is 0
    assert (alpha >= 0).all() and (alpha <= 1).all()


def test_no_leakage_between_adjacent_faces():
    size = 48
    cams = make_cameras([0.0], [0.0], 2.0, 1.0)
    # Two triangles sharing the diagonal with their own corners (face-varying colours), at an angle.
    p = torch.tensor([[-0.6, -0.5, 0.0], [0.55, -0.6, 0.1], [0.6, 0.5, 0.0], [-0.5, 0.6, -0.1]])
    v = torch.cat([p[[0, 1, 2]], p[[0, 2, 3]]])
    f = torch.tensor([[0, 1, 2], [3, 4, 5]])
    red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    cols = torch.stack([red] * 3 + [blue] * 3)
    out = render_mesh(v, f, cams, size, size, vertex_colors=cols, background=torch.tensor([0.0, 1.0, 0.0]))
    img = out.images[0].permute(1, 2, 0)
    frags = out.fragments
    # Which triangle contains each pixel centre, from the projected corners (independent of the rasteriser).
    scr = project(v, cams, size, size)[0][0]
    jj, ii = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    pts = torch.stack([ii, jj], -1)

    def inside(t):
        a, b, c = scr[t * 3], scr[t * 3 + 1], scr[t * 3 + 2]
        cr = lambda p0, p1: (p1[0] - p0[0]) * (pts[..., 1] - p0[1]) - (p1[1] - p0[1]) * (pts[..., 0] - p0[0])  # noqa: E731
        e = torch.stack([cr(a, b), cr(b, c), cr(c, a)])
        return (e >= 0).all(0) | (e <= 0).all(0)

    in0, in1 = inside(0), inside(1)
    assert ((frags.face_id[0] == 0) == (in0 & ~in1) | ((frags.face_id[0] == 0) & in0 & in1)).all()
    assert (frags.mask[0] == (in0 | in1)).all()  # no holes along the shared edge, nothing outside
    inner = frags.mask[0] & (out.opacity[0, 0] == 1)
    only0, only1 = inner & (frags.face_id[0] == 0), inner & (frags.face_id[0] == 1)
    # Exactly one face's colour (up to float rounding of barycentrics that sum to 1), none of the other's.
    assert torch.allclose(img[only0], red.expand(int(only0.sum()), 3), atol=1e-5, rtol=0)
    assert torch.allclose(img[only1], blue.expand(int(only1.sum()), 3), atol=1e-5, rtol=0)
    assert only0.sum() > 200 and only1.sum() > 200


def test_render_mesh_shading_matches_the_nerf_conventions():
    v, f = _mesh(trimesh.creation.icosphere(subdivisions=3, radius=0.8))
    cams = make_cameras([0.0], [0.0], 2.5, 1.0)
    lights = cams.origins * 1.2
    albedo = lambda x: torch.tensor([0.8, 0.4, 0.2]).expand(len(x), 3)  # noqa: E731
    out_a = render_mesh(v, f, cams, 32, 32, albedo_fn=albedo, shading="albedo", antialias=False)
    out_s = render_mesh(v, f, cams, 32, 32, albedo_fn=albedo, shading="shaded", light_positions=lights, ambient=0.1, antialias=False)
    out_t = render_mesh(v, f, cams, 32, 32, albedo_fn=albedo, shading="textureless", light_positions=lights, antialias=False)
    m = out_a.fragments.mask[0]
    assert torch.allclose(out_a.images[0, :, m].T, torch.tensor([0.8, 0.4, 0.2]).expand(int(m.sum()), 3))
    pts = out_s.points[0][m]
    ldir = torch.nn.functional.normalize(lights[0] - pts, dim=-1)
    factor = 0.1 + 0.9 * (out_s.normals[0].permute(1, 2, 0)[m] * ldir).sum(-1).clamp_min(0)
    assert torch.allclose(out_s.images[0, :, m].T, torch.tensor([0.8, 0.4, 0.2]) * factor[:, None], atol=1e-6)
    assert torch.allclose(out_t.images[0, :, m].T, factor[:, None].expand(-1, 3), atol=1e-6)
    assert (out_a.images[0, :, ~m] == 0).all()  # black background by default


def test_a_100k_face_mesh_renders_at_512_with_bounded_chunks():
    m = trimesh.creation.uv_sphere(radius=0.8, count=[160, 160])
    assert 95_000 < len(m.faces) < 105_000
    v, f = _mesh(m)
    cams = make_cameras([0.0], [20.0], 2.5, 1.0)
    v.requires_grad_(True)
    out = render_mesh(v, f, cams, 512, 512, shading="shaded", light_positions=cams.origins, max_pairs=1 << 18)
    out.images.mean().backward()
    rad = math.tan(math.asin(0.8 / 2.5)) * 512
    assert abs(out.opacity.sum().item() / (math.pi * rad * rad) - 1) < 0.01
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0

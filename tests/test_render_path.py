"""The fast render path: empty-space skipping with the occupancy grid, normals only where they
show, forward-difference normals. Checked against the reference path and analytic fields."""

import pytest
import torch
from torch import nn

from analytic_fields import box, density_from_sdf, sphere
from engine.cameras import make_cameras
from engine.field import NeRFField
from engine.occupancy import OccupancyGrid
from engine.render import render
from engine.render.query import central_difference_normals, density_normals, forward_difference_normals


class AnalyticField(nn.Module):
    """A smooth analytic shape with the NeRFField interface (density, forward -> (sigma, albedo))."""

    bound = 1.0

    def __init__(self, shape, peak=60.0, width=0.03):
        super().__init__()
        self.shape, self.peak, self.width = shape, peak, width
        self.calls = 0  # points evaluated, to see what the renderer skipped

    def density(self, x):
        self.calls += x.shape[0]
        return density_from_sdf(self.shape.sdf(x), self.peak, self.width)

    def forward(self, x):
        return self.density(x), (0.5 + 0.4 * torch.tanh(3 * x)).clamp(0, 1)


def white(d):
    return torch.ones_like(d)


def _cams():
    return make_cameras([20.0, 140.0], [15.0, 50.0], [2.5, 2.8], [1.0, 1.2])


@pytest.mark.parametrize("shading", ["albedo", "shaded", "textureless"])
def test_all_occupied_grid_gives_the_exact_same_image_and_gradients(shading):
    torch.manual_seed(0)
    field = NeRFField(hash_levels=4, hash_log2_table=12, hidden_dim=16)
    cams = _cams()
    lights = cams.origins * 1.3
    grid = OccupancyGrid(1.0, 16)
    assert bool(grid.mask.all())  # a fresh grid: every cell occupied
    outs, grads = [], []
    for occupancy in (None, grid):
        field.zero_grad()
        gen = torch.Generator().manual_seed(3)
        out = render(field, white, cams, 12, 10, shading=shading, light_positions=lights, generator=gen, occupancy=occupancy)
        (out.image.sum() + out.depth.sum()).backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in field.parameters() if p.grad is not None])
    a, b = outs
    assert torch.equal(a.image, b.image) and torch.equal(a.opacity, b.opacity) and torch.equal(a.depth, b.depth)
    assert len(grads[0]) == len(grads[1]) > 0
    assert all(torch.equal(x, y) for x, y in zip(*grads))


def test_updated_grid_skips_empty_space_and_keeps_the_image():
    field = AnalyticField(box())
    cams = _cams()
    lights = cams.origins * 1.3
    ref = render(field, white, cams, 24, 32, shading="albedo", perturb=False)
    ref_calls = field.calls
    grid = OccupancyGrid(1.0, 32)
    grid.update(field.density, step_size=2.0 / 32, generator=torch.Generator().manual_seed(0))
    # The box's cells (and their neighbours) are occupied; far corners of the cube are not.
    inside = torch.tensor([[0.45, 0.3, 0.35], [-0.45, -0.3, -0.35], [0.0, 0.0, 0.0]])
    assert bool(grid.occupied(inside).all())
    assert not bool(grid.occupied(torch.tensor([[0.9, 0.9, 0.9], [-0.9, 0.0, 0.0]])).any())
    assert 0.05 < float(grid.occupied_fraction()) < 0.5
    field.calls = 0
    fast = render(field, white, cams, 24, 32, shading="albedo", perturb=False, occupancy=grid)
    assert field.calls < 0.6 * ref_calls, (field.calls, ref_calls)
    # What is lost is the box's soft tail in skipped cells (alpha < 0.01 per sample there): ~1% at most.
    assert (fast.opacity - ref.opacity).abs().max() < 1.5e-2
    assert (fast.image - ref.image).abs().max() < 1.5e-2 and (fast.image - ref.image).abs().mean() < 1e-3
    shaded = [render(field, white, cams, 24, 32, shading="shaded", light_positions=lights, perturb=False, occupancy=g)
              for g in (None, grid)]
    assert (shaded[0].image - shaded[1].image).abs().max() < 1.5e-2


def test_grid_update_follows_a_moving_field_and_decays():
    grid = OccupancyGrid(1.0, 16)
    gen = torch.Generator().manual_seed(0)
    left = AnalyticField(sphere(0.3, (-0.5, 0.0, 0.0)))
    right = AnalyticField(sphere(0.3, (0.5, 0.0, 0.0)))
    grid.update(left.density, 2.0 / 16, generator=gen)
    pl, pr = torch.tensor([[-0.5, 0.0, 0.0]]), torch.tensor([[0.5, 0.0, 0.0]])
    assert bool(grid.occupied(pl)) and not bool(grid.occupied(pr))
    for _ in range(150):  # partial updates: occupied cells every time, a random quarter of the rest
        grid.update(right.density, 2.0 / 16, generator=gen)
    assert bool(grid.occupied(pr))
    assert not bool(grid.occupied(pl)), "the left sphere's density must decay out of the grid"


def test_forward_and_central_difference_normals_match_the_analytic_gradient():
    shape = sphere(0.5)
    field = AnalyticField(shape, peak=40.0, width=0.05)
    gen = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(500, 3, generator=gen), dim=-1)
    # Points in the surface's transition band, where rendering weights live.
    radius = 0.5 + 0.06 * (torch.rand(500, 1, generator=gen) - 0.5)
    points = dirs * radius
    _, _, exact = density_normals(field, points, create_graph=False, method="analytic")
    assert (exact * dirs).sum(-1).min() > 0.999  # the analytic normal of a sphere is radial
    sigma = field.density(points)
    for normals in (forward_difference_normals(field, points, sigma), central_difference_normals(field, points)):
        cos = (normals * exact).sum(-1)
        assert cos.min() > 0.995 and cos.mean() > 0.999, (cos.min(), cos.mean())
    # Forward differences are differentiable w.r.t. the density (shading gradients reach geometry).
    pts = points[:10].clone().requires_grad_(True)
    forward_difference_normals(field, pts, field.density(pts)).sum().backward()
    assert pts.grad is not None and pts.grad.abs().sum() > 0


def test_weighted_normals_match_all_sample_normals_with_fewer_evaluations():
    field = AnalyticField(box())
    cams = _cams()
    lights = cams.origins * 1.3
    kw = dict(shading="textureless", light_positions=lights, perturb=False, ambient=0.1)
    field.calls = 0
    every = render(field, white, cams, 24, 48, normal_samples="all", **kw)
    calls_all = field.calls
    field.calls = 0
    weighted = render(field, white, cams, 24, 48, normal_samples="weighted", **kw)
    assert field.calls < 0.5 * calls_all, (field.calls, calls_all)
    assert (weighted.image - every.image).abs().max() < 5e-3
    taken = weighted.normals.abs().sum(-1) > 0
    assert 0 < int(taken.sum()) < 0.5 * taken.numel()
    assert weighted.weights[~taken].max() <= 1e-3


def test_reference_path_is_still_selectable():
    field = AnalyticField(sphere(0.5))
    cams = _cams()
    out = render(field, white, cams, 16, 24, shading="shaded", light_positions=cams.origins * 1.3, perturb=False,
                 normals="finite_difference", normal_samples="all", want_normal_image=True)
    assert out.normal_image is not None and out.normal_image.shape == (2, 3, 16, 16)
    assert bool((out.normals.abs().sum(-1) > 0).all())  # every evaluated sample got a normal
    with pytest.raises(ValueError, match="normal_samples"):
        render(field, white, cams, 16, 24, shading="shaded", light_positions=cams.origins, normal_samples="some")
    with pytest.raises(ValueError, match="normals method"):
        render(field, white, cams, 16, 24, shading="shaded", light_positions=cams.origins, normals="sobel")


@pytest.mark.parametrize("setting, value, match", [
    ("normals", "sobel", "normals must be"),
    ("normal_samples", "some", "normal_samples"),
    ("occupancy_resolution", 4, "occupancy_resolution"),
    ("occupancy_resolution", 4096, "occupancy_resolution"),
    ("occupancy_update_every", 0, "occupancy_update_every"),
])
def test_render_settings_reject_bad_values(setting, value, match):
    from engine.config import build_config, parse_set_option
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        build_config("draft", prompt="x", **{setting: value})
    assert parse_set_option("occupancy_grid=false") == ("occupancy_grid", False)
    assert parse_set_option("compile_field=true") == ("compile_field", True)
    with pytest.raises(ConfigError, match="occupancy_grid"):
        parse_set_option("occupancy_grid=maybe")

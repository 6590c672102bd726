"""Rendering checked against an analytic sphere with known silhouette, opacity and normals."""

import math

import pytest
import torch
from torch import nn

from engine.cameras import make_cameras
from engine.render import render

RADIUS = 0.5


class AnalyticSphere(nn.Module):
    """Smooth density sphere (radius 0.5) with a red albedo; same interface as NeRFField."""

    bound = 1.0

    def __init__(self, softness=0.01):
        super().__init__()
        self.softness = softness  # 0: a hard step (exact silhouette); > 0: smooth, for gradient normals

    def forward(self, x):
        r = x.norm(dim=-1)
        if self.softness == 0:
            sigma = torch.where(r < RADIUS, 200.0, 0.0)
        else:
            sigma = 200.0 * torch.sigmoid((RADIUS - r) / self.softness)
        albedo = torch.tensor([0.9, 0.1, 0.1]).expand(x.shape[0], 3)
        return sigma, albedo

    def density(self, x):
        return self.forward(x)[0]


class ConstantBackground(nn.Module):
    def forward(self, d):
        return torch.zeros_like(d)


def _render(shading, res=48, distance=2.5, focal=1.0, softness=0.01):
    cams = make_cameras(30.0, 20.0, distance, focal)
    light = cams.origins.clone()  # light at the camera: lambert = n·v
    return cams, render(AnalyticSphere(softness), ConstantBackground(), cams, res, 256, shading=shading,
                        light_positions=light, ambient=0.0, perturb=False)


def test_silhouette_and_opacity_match_the_analytic_sphere():
    res, d, f = 48, 2.5, 1.0
    _, out = _render("albedo", res, d, f, softness=0)
    # Projected radius of a sphere seen from distance d: f*W*tan(asin(r/d)).
    r_px = f * res * math.tan(math.asin(RADIUS / d))
    yy, xx = torch.meshgrid(torch.arange(res) + 0.5, torch.arange(res) + 0.5, indexing="ij")
    truth = ((xx - res / 2) ** 2 + (yy - res / 2) ** 2) <= r_px**2
    pred = out.opacity[0, 0] > 0.5
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou > 0.93, f"silhouette IoU {iou:.3f}"
    centre = out.opacity[0, 0, res // 2 - 2:res // 2 + 2, res // 2 - 2:res // 2 + 2]
    assert centre.min() > 0.99
    assert out.opacity[0, 0, :3, :3].max() < 1e-3  # corners see empty space
    # Depth at the centre pixel ~ d - r.
    assert abs(out.depth[0, 0, res // 2, res // 2].item() - (d - RADIUS)) < 0.05
    # Albedo mode shows the albedo itself.
    assert torch.allclose(out.image[0, :, res // 2, res // 2], torch.tensor([0.9, 0.1, 0.1]), atol=0.02)


def test_textureless_render_is_albedo_free():
    _, shaded = _render("shaded")
    _, plain = _render("textureless")
    mask = plain.opacity[0, 0] > 0.9
    rgb = plain.image[0][:, mask]
    assert (rgb.max(0).values - rgb.min(0).values).max() < 1e-4, "textureless pixels must be grey"
    assert rgb.mean() > 0.3
    srgb = shaded.image[0][:, mask]
    assert (srgb[0] > srgb[1] + 0.2).float().mean() > 0.9, "shaded render keeps the red albedo"


@pytest.mark.parametrize("method", ["forward_difference", "finite_difference", "analytic"])
def test_normals_of_a_sphere_point_outward(method):
    res = 32
    cams = make_cameras(30.0, 20.0, 2.5, 1.0)
    out = render(AnalyticSphere(), ConstantBackground(), cams, res, 128, shading="textureless",
                 light_positions=cams.origins.clone(), ambient=0.0, perturb=False, normals=method, want_normal_image=True)
    mask = out.opacity[0, 0] > 0.99
    normals = torch.nn.functional.normalize(out.normal_image[0].permute(1, 2, 0)[mask], dim=-1)
    # The expected normal at each pixel is the unit vector to the surface point hit by its ray.
    from engine.render import camera_rays

    o, dirs = camera_rays(cams, res, res)
    o, dirs = o[0].reshape(res, res, 3)[mask], dirs[0].reshape(res, res, 3)[mask]
    b = (o * dirs).sum(-1)
    disc = b * b - ((o * o).sum(-1) - RADIUS**2)
    hit = disc > 0.01  # rays that clearly hit the sphere (the soft edge is a pixel wide)
    t = -b - torch.sqrt(disc.clamp_min(0))
    expected = torch.nn.functional.normalize(o + t[:, None] * dirs, dim=-1)
    cos = (normals * expected).sum(-1)[hit]
    assert hit.sum() > 100
    assert cos.mean() > 0.98 and cos.min() > 0.8, (cos.mean(), cos.min())
    # Facing the camera: the orientation penalty is ~0 for a correct sphere.
    from engine.losses import orientation_loss

    assert orientation_loss(out).item() < 1e-3


def test_white_background_option_is_constant_white_and_validated():
    from engine.config import build_config
    from engine.errors import ConfigError
    from engine.field import BackgroundField

    dirs = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    assert torch.equal(BackgroundField(fixed="white")(dirs), torch.ones(50, 3))
    learned = BackgroundField()(dirs)
    assert learned.shape == (50, 3) and not torch.allclose(learned, torch.ones(50, 3))
    assert build_config("draft", prompt="x", background="white").background == "white"
    with pytest.raises(ConfigError, match="background"):
        build_config("draft", prompt="x", background="black")

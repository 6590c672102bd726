"""The regularisers in engine/losses.py: same numbers as the dense formulas they replaced (which
lived inside the renderer), on a fog whose normals face away from the cameras so the orientation term is large."""

import torch

from engine import losses
from engine.cameras import make_cameras
from engine.render import render

from test_render import AnalyticSphere, ConstantBackground


class Ramp(AnalyticSphere):
    """A fog whose density grows along +z: normals are -z, facing away from cameras in front (+z)."""

    def forward(self, x):
        albedo = super().forward(x)[1]
        return 3.0 + 2.0 * x[:, 2], albedo


def _dense_orientation(out, bsz, rays, n):
    """The renderer's old dense formula: per-ray sum of w * max(0, n·d)^2, mean over all rays."""
    weights = torch.zeros(bsz * rays * n)
    normals = torch.zeros(bsz * rays * n, 3)
    # Packed samples are the hit rays' samples in row-major order (as a boolean mask selects them).
    hit_rays = torch.unique(out.ray_index)
    mask = torch.zeros(bsz * rays, dtype=torch.bool)
    mask[hit_rays] = True
    mask = mask[:, None].expand(-1, n).reshape(-1)
    weights[mask] = out.weights
    normals[mask] = out.normals
    weights, normals = weights.reshape(bsz, rays, n), normals.reshape(bsz, rays, n, 3)
    dirs = out.dirs.reshape(bsz, rays, 3)
    facing = (normals * dirs[..., None, :]).sum(-1).clamp_min(0.0)
    return (weights * facing**2).sum(-1).mean()


def test_orientation_and_opacity_match_the_dense_formulas():
    res, n = 20, 32
    cams = make_cameras([30.0, -10.0], [20.0, 5.0], [2.5, 2.2], [1.0, 0.8])
    # focal 0.8 at distance 2.2: corner rays miss the bounding sphere, so packing really drops rays.
    out = render(Ramp(), ConstantBackground(), cams, res, n, shading="textureless",
                 light_positions=cams.origins.clone(), ambient=0.0, perturb=False)
    assert out.weights.shape[0] < 2 * res * res * n
    dense = _dense_orientation(out, 2, res * res, n)
    packed = losses.orientation_loss(out)
    assert dense.item() > 1e-2  # the ramp's normals face away from the camera: the term is not ~0
    torch.testing.assert_close(packed, dense, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(losses.opacity_loss(out), torch.sqrt(out.opacity**2 + 0.01).mean())


def test_orientation_is_zero_without_normals_and_moves_normals_not_weights():
    cams = make_cameras(30.0, 20.0, 2.5, 1.0)
    albedo = render(Ramp(), ConstantBackground(), cams, 16, 16, shading="albedo",
                    light_positions=cams.origins.clone(), perturb=False)
    assert albedo.normals is None and losses.orientation_loss(albedo).item() == 0.0
    shaded = render(Ramp(), ConstantBackground(), cams, 16, 16, shading="shaded",
                    light_positions=cams.origins.clone(), perturb=False)
    normals = shaded.normals.detach().requires_grad_(True)
    weights = shaded.weights.detach().requires_grad_(True)
    shaded.normals, shaded.weights = normals, weights
    losses.orientation_loss(shaded).backward()
    assert normals.grad.abs().sum() > 0 and weights.grad is None


def test_opacity_entropy_is_zero_at_empty_and_opaque_and_one_bit_at_half():
    from types import SimpleNamespace

    out = SimpleNamespace(opacity=torch.tensor([0.0, 1.0, 0.5, 0.5], requires_grad=True))
    loss = losses.opacity_entropy_loss(out)
    torch.testing.assert_close(loss, torch.tensor(0.5), atol=1e-3, rtol=0)
    loss.backward()
    assert out.opacity.grad[2] == 0.0  # the maximum: no push at exactly half
    near = SimpleNamespace(opacity=torch.tensor([0.3, 0.7], requires_grad=True))
    losses.opacity_entropy_loss(near).backward()
    assert near.opacity.grad[0] > 0 > near.opacity.grad[1]  # descent empties the faint ray and fills the dense one


def test_the_trainer_adds_the_entropy_term_only_when_weighted():
    """Trainer.regularisers: orientation and opacity always; the entropy term only with a weight
    above 0 (so runs without it do the same arithmetic as before), scaled by that weight."""
    from types import SimpleNamespace

    from engine.train import Trainer

    out = SimpleNamespace(opacity=torch.tensor([0.2, 0.5, 0.9]), normals=None, weights=torch.ones(3))
    for weight, n_terms in ((0.0, 2), (30.0, 3)):
        weights = dict(orientation_weight=1.0, opacity_weight=1.0, entropy_weight=weight)
        fake = SimpleNamespace(cfg=SimpleNamespace(orientation_average="all_rays"), scheduled=weights.get)
        terms = Trainer.regularisers(fake, out)
        assert len(terms) == n_terms
        if weight:
            torch.testing.assert_close(terms[-1], weight * losses.opacity_entropy_loss(out))


class _Ball(torch.nn.Module):
    """A ball of radius 0.5 whose surface can carry ripples along y (amplitude ``ripple``, period 0.25:
    the 4-band field's top octave), with one learnable offset so the loss's gradient can be checked."""

    def __init__(self, ripple: float):
        super().__init__()
        self.ripple = ripple
        self.offset = torch.nn.Parameter(torch.zeros(()))

    def density(self, x):
        radius = 0.5 + self.ripple * torch.sin(8 * torch.pi * x[:, 1]) + self.offset
        return torch.nn.functional.softplus(40.0 * (radius - x.norm(dim=-1)))


def test_normal_smoothness_sees_ripples_a_smooth_ball_does_not_have():
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)
    out = SimpleNamespace(points=0.5 * d, weights=torch.rand(500, generator=g))  # samples on the surface
    smooth, rippled = _Ball(0.0), _Ball(0.03)
    a = losses.normal_smoothness_loss(smooth, out, 0.03, torch.Generator().manual_seed(1))
    b = losses.normal_smoothness_loss(rippled, out, 0.03, torch.Generator().manual_seed(1))
    assert a < 0.02 and b > 5 * a  # measured: 0.008 and 0.11
    b.backward()
    assert rippled.offset.grad is not None and torch.isfinite(rippled.offset.grad)
    # Only samples that show are drawn: weight-0 samples (here: far off the surface) are never used.
    far = SimpleNamespace(points=torch.cat([0.5 * d, 0.1 * d]), weights=torch.cat([torch.ones(500), torch.zeros(500)]))
    torch.testing.assert_close(losses.normal_smoothness_loss(smooth, far, 0.03, torch.Generator().manual_seed(1)), a,
                               atol=0.01, rtol=0)


class _Box(torch.nn.Module):
    """A cube of half-size 0.4 (sharp edges) as a soft density."""

    def density(self, x):
        return torch.nn.functional.softplus(40.0 * (0.4 - x.abs().max(dim=-1).values))


def test_capped_normal_smoothness_keeps_gentle_bumps_and_spares_edges():
    """normal_smooth_cap: about the plain term on gentle ripples, at most the cap per pair, so a
    cube's edges cost far less than with the plain squared difference."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)
    on_ball = SimpleNamespace(points=0.5 * d, weights=torch.rand(500, generator=g))
    gentle = _Ball(0.005)
    plain = losses.normal_smoothness_loss(gentle, on_ball, 0.03, torch.Generator().manual_seed(1))
    capped = losses.normal_smoothness_loss(gentle, on_ball, 0.03, torch.Generator().manual_seed(1), cap=0.1)
    assert 0.7 * plain < capped <= plain, (plain, capped)  # measured: 0.0103 and 0.0080
    # Points on the cube's surface, many within a jitter of an edge.
    p = torch.rand(2000, 3, generator=g) * 0.8 - 0.4
    axis = torch.randint(0, 3, (2000,), generator=g)
    p[torch.arange(2000), axis] = 0.4 * torch.sign(torch.randn(2000, generator=g))
    on_box = SimpleNamespace(points=p, weights=torch.ones(2000))
    plain = losses.normal_smoothness_loss(_Box(), on_box, 0.03, torch.Generator().manual_seed(1))
    capped = losses.normal_smoothness_loss(_Box(), on_box, 0.03, torch.Generator().manual_seed(1), cap=0.1)
    assert capped <= 0.1 and capped < 0.5 * plain, (plain, capped)  # measured: 0.197 and 0.0103

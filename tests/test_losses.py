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

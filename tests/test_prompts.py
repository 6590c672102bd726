"""View prompts: interpolated view embeddings, Perp-Neg's negatives and their combination in SDS, and
the text encoder's output (the token sequence for every encoder class), on tiny models."""

import pytest
import torch

import math

from engine.cameras import make_cameras
from engine.guidance import Guidance, perpendicular_component
from engine.prompts import PERP_NEG_F_FS, PERP_NEG_F_FSB, PERP_NEG_F_SB, PERP_NEG_F_SF, ViewPrompts

CPU = torch.device("cpu")


def cams(az, el):
    return make_cameras(torch.tensor(az), torch.tensor(el), 2.0, 1.0)


# The references' rules for one camera, written out independently of the engine's batched code.
def interpolation(azimuth):
    a = abs((azimuth + 180.0) % 360.0 - 180.0)
    return ("front", "side", 1.0 - a / 90.0) if a < 90.0 else ("side", "back", 2.0 - a / 90.0)


def perp_neg_terms(azimuth, elevation, overhead=60.0):
    f = lambda abc, r: abc[0] * math.exp(-abc[1] * r) + abc[2]  # noqa: E731
    if elevation > overhead:
        return [(None, 0.0), (None, 0.0)]
    near, _, r = interpolation(azimuth)
    if near == "front":
        return [("front", -f(PERP_NEG_F_FS, r)), ("side", -f(PERP_NEG_F_SF, 1.0 - r))]
    return [("side", -f(PERP_NEG_F_SB, r)), ("front", -f(PERP_NEG_F_FSB, r))]


def fake_encode(texts):
    """A distinct constant (1, 2, 3) embedding per view word, so blends are easy to read."""
    code = {"front": 1.0, "side": 2.0, "back": 3.0, "overhead": 4.0}
    return torch.stack([torch.full((3, 2), next((v for k, v in code.items() if f"{k} view" in t), 0.0)) for t in texts])


def test_labels_mode_picks_one_embedding_per_view():
    vp = ViewPrompts(fake_encode, "a mug", mode="labels")
    view = vp.for_cameras(cams([0.0, 60.0, 170.0, 10.0], [0.0, 0.0, 0.0, 80.0]))
    assert view.cond[:, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert view.negatives is None and torch.equal(view.uncond, torch.zeros(4, 3, 2))


def test_interpolated_embeddings_blend_by_azimuth():
    vp = ViewPrompts(fake_encode, "a mug", mode="interpolate")
    got = vp.for_cameras(cams([0.0, 45.0, -45.0, 90.0, 135.0, 180.0, -180.0, 30.0], [0.0] * 7 + [75.0])).cond[:, 0, 0]
    # front=1, side=2, back=3: 45° is halfway front->side, 135° halfway side->back; overhead stays a label.
    assert got.tolist() == pytest.approx([1.0, 1.5, 1.5, 2.0, 2.5, 3.0, 3.0, 4.0])
    # Any azimuth: the blend of the two nearest views, as the references' rule for one camera.
    az = torch.linspace(-180.0, 180.0, 37).tolist()
    code = {"front": 1.0, "side": 2.0, "back": 3.0}
    want = [r * code[n] + (1 - r) * code[f] for n, f, r in map(interpolation, az)]
    assert vp.for_cameras(cams(az, [0.0] * 37)).cond[:, 0, 0].tolist() == pytest.approx(want, abs=1e-5)


def test_perp_neg_weights_follow_threestudio():
    # Pure front: no "front" negative, a "side" negative of -(4 e^-0 - 2.426) = -1.574; pure back:
    # side -(1 - 0.606) and front -(1 + 0.967); overhead: none.
    vp = ViewPrompts(fake_encode, "a mug", mode="interpolate", perp_neg=True)
    view = vp.for_cameras(cams([0.0, 180.0, 0.0], [0.0, 0.0, 70.0]))
    assert view.negatives.shape == (3, 2, 3, 2) and view.negative_weights.shape == (3, 2)
    assert view.negative_weights.flatten().tolist() == pytest.approx([0.0, -1.574, -0.394, -1.967, 0.0, 0.0], abs=1e-3)
    assert view.negatives[:, :, 0, 0].tolist() == [[1.0, 2.0], [2.0, 1.0], [0.0, 0.0]]  # overhead: the uncond rows
    # Every azimuth and elevation: the references' rule for one camera.
    az, el = torch.linspace(-180.0, 180.0, 25).tolist(), [0.0, 30.0, 65.0] * 8 + [0.0]
    view = vp.for_cameras(cams(az, el))
    code = {None: 0.0, "front": 1.0, "side": 2.0, "back": 3.0}
    for i, (a, e) in enumerate(zip(az, el)):
        terms = perp_neg_terms(a, e)
        assert view.negatives[i, :, 0, 0].tolist() == [code[lab] for lab, _ in terms]
        assert view.negative_weights[i].tolist() == pytest.approx([w for _, w in terms], abs=1e-5)


def test_perpendicular_component_is_orthogonal_per_sample():
    x, y = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    p = perpendicular_component(x, y)
    assert torch.allclose((p * y).sum((1, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(perpendicular_component(2 * y, y), torch.zeros_like(y), atol=1e-5)


@pytest.fixture(scope="module")
def pixel(tiny_pixel_model):
    return Guidance(str(tiny_pixel_model), CPU, torch.float32)


def test_perp_neg_combination_matches_the_formula(pixel):
    """ε̂ = ε_u + s (e + Σ w_k ⊥_e e_k), with every ε from the U-Net directly; zero weights give plain CFG."""
    torch.manual_seed(0)
    z = torch.randn(2, 3, 32, 32)
    t = torch.tensor([300, 700])
    uncond = pixel.encode_text(["", ""])
    cond = pixel.encode_text(["a red cube, front view", "a red cube, back view"])
    negs = torch.stack([pixel.encode_text(["a red cube, side view", "a red cube, back view"]),
                        pixel.encode_text(["a red cube, side view", "a red cube, front view"])], dim=1)  # (B, K, L, D)
    weights = torch.tensor([[-1.5, 0.0], [-0.4, -2.0]])
    got = pixel.predict_noise(z, t, cond, uncond, 7.5, negs, weights)
    with torch.no_grad():
        e = lambda emb: pixel.unet(z, t, encoder_hidden_states=emb).sample  # noqa: E731
        e_u, e_c = e(uncond), e(cond)
        delta = e_c - e_u
        for k in range(2):
            delta = delta + weights[:, k].view(-1, 1, 1, 1) * perpendicular_component(e(negs[:, k]) - e_u, e_c - e_u)
    assert torch.allclose(got, e_u + 7.5 * delta, atol=1e-4)
    plain = pixel.predict_noise(z, t, cond, uncond, 7.5)
    assert torch.allclose(pixel.predict_noise(z, t, cond, uncond, 7.5, negs, torch.zeros(2, 2)), plain, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_sds_runs_with_perp_neg(pixel):
    images = torch.rand(1, 3, 32, 32, requires_grad=True)
    vp = ViewPrompts(pixel.encode_text, "a red cube", mode="interpolate", perp_neg=True)
    view = vp.for_cameras(cams([150.0], [10.0]))
    loss, _ = pixel.sds_loss(images, view.cond, view.uncond, 20.0, (0.02, 0.98), generator=torch.Generator().manual_seed(0),
                             negatives=view.negatives, negative_weights=view.negative_weights)
    loss.backward()
    assert images.grad.abs().sum() > 0


def test_text_encoder_with_projection_gives_the_token_sequence(tmp_path):
    """CLIPTextModelWithProjection's output[0] is the pooled (B, D) embedding; the U-Net needs the
    (B, L, D) sequence, which is what a CLIPTextModel with the same weights gives."""
    from tiny_models import make_tiny_pixel_model

    plain = Guidance(str(make_tiny_pixel_model(tmp_path / "plain")), CPU, torch.float32)
    proj = Guidance(str(make_tiny_pixel_model(tmp_path / "proj", with_projection=True)), CPU, torch.float32)
    assert type(proj.text_encoder).__name__ == "CLIPTextModelWithProjection"
    emb = proj.encode_text(["a red cube, front view"])
    assert emb.shape == plain.encode_text(["a red cube, front view"]).shape == (1, 32, 32)
    # Same seed, same transformer weights: the sequences agree (the projection head is extra).
    assert torch.allclose(emb, plain.encode_text(["a red cube, front view"]), atol=1e-5)
    loss, _ = proj.sds_loss(torch.rand(1, 3, 32, 32), emb, proj.encode_text([""]), 20.0, (0.02, 0.98),
                            generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)

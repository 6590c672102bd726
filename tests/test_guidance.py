"""The diffusers loader on tiny saved models, and the SDS gradient itself."""

import shutil

import pytest
import torch

from engine.cameras import make_cameras
from engine.errors import ModelError
from engine.field import BackgroundField, NeRFField
from engine.guidance import Guidance, pick_device, resolve_model
from engine.render import render

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pixel(tiny_pixel_model):
    return Guidance(str(tiny_pixel_model), CPU, torch.float32)


def test_pixel_and_latent_models_load_through_the_real_loader(pixel, tiny_latent_model):
    assert pixel.family == "pixel" and pixel.vae is None and pixel.image_size == 32
    latent = Guidance(str(tiny_latent_model), CPU, torch.float32)
    assert latent.family == "latent" and latent.vae.decoder is None
    assert latent.image_size == 32  # U-Net sample 16 x VAE downsampling 2
    assert latent.default_guidance_scale() == 100.0 and pixel.default_guidance_scale() == 20.0
    for g in (pixel, latent):
        assert not any(p.requires_grad for p in g.unet.parameters())


def test_text_embeddings_are_cached_per_string(pixel):
    a = pixel.encode_text(["a red cube, front view"])
    n = len(pixel._embedding_cache)
    b = pixel.encode_text(["a red cube, front view"])
    assert torch.equal(a, b) and len(pixel._embedding_cache) == n


def _sds_setup(model, scale=100.0, seed=0):
    torch.manual_seed(seed)
    field, bg = NeRFField(hash_log2_table=12, hash_levels=4), BackgroundField()
    cams = make_cameras(20.0, 10.0, 2.5, 1.0)
    out = render(field, bg, cams, 32, 16, shading="albedo", perturb=False)
    cond = model.encode_text(["a red cube, front view"])
    uncond = model.encode_text([""])
    loss, info = model.sds_loss(out.image, cond, uncond, scale, (0.02, 0.98), generator=torch.Generator().manual_seed(1))
    return field, loss


def test_sds_gradient_reaches_the_nerf_and_not_the_unet(pixel, tiny_latent_model):
    for model in (pixel, Guidance(str(tiny_latent_model), CPU, torch.float32)):
        field, loss = _sds_setup(model)
        loss.backward()
        assert field.encoding.table.grad is not None and field.encoding.table.grad.abs().sum() > 0
        assert field.density_head.weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in model.unet.parameters())
        assert all(p.grad is None for p in model.text_encoder.parameters())


def test_sds_gradient_equals_weighted_noise_residual(pixel):
    """Hand-checked: d(loss)/d(image) = 2 * w(t) * (eps_hat - eps) for a pixel model at native size
    (x in [-1, 1] is 2*image - 1), with eps_hat computed here directly from the U-Net."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    cond = pixel.encode_text(["a red cube, front view", "a red cube, side view"])
    uncond = pixel.encode_text(["", ""])
    scale = 7.5
    loss, _ = pixel.sds_loss(images, cond, uncond, scale, (0.02, 0.98), generator=torch.Generator().manual_seed(5))
    loss.backward()
    # Replay the same random draws.
    g = torch.Generator().manual_seed(5)
    t = torch.randint(20, 980 + 1, (2,), generator=g)
    noise = torch.randn(2, 3, 32, 32, generator=g)
    x = images.detach() * 2 - 1
    a = pixel.alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = a.sqrt() * x + (1 - a).sqrt() * noise
    with torch.no_grad():
        e_u = pixel.unet(z_t, t, encoder_hidden_states=uncond).sample
        e_c = pixel.unet(z_t, t, encoder_hidden_states=cond).sample
    expected = (1 - a) * (e_u + scale * (e_c - e_u) - noise)
    # 2 from x = 2*image - 1; 1/B because the loss averages over the batch.
    assert torch.allclose(images.grad, 2 * expected / images.shape[0], atol=1e-5)
    cos = torch.nn.functional.cosine_similarity(images.grad.flatten(), expected.flatten(), dim=0)
    assert cos > 0.9999


def test_high_noise_guidance_applies_to_the_high_noise_samples_only(pixel):
    # A batch of two: t = 300 (below high_noise_t = 0.5) keeps guidance 20, t = 800 gets 5.
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    t = torch.tensor([300, 800])
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    cond, uncond = pixel.encode_text(["a red cube, front view"] * 2), pixel.encode_text([""] * 2)
    scales = pixel.scale_per_sample(t, 20.0, 0.5, 5.0)
    assert scales.tolist() == [20.0, 5.0]
    mixed = pixel.sds_gradient(x, t, noise, cond, uncond, scales)[0]
    for i, s in enumerate((20.0, 5.0)):
        alone = pixel.sds_gradient(x[i:i + 1], t[i:i + 1], noise[i:i + 1], cond[i:i + 1], uncond[i:i + 1], s)[0]
        assert torch.allclose(mixed[i:i + 1], alone, atol=1e-5)
    assert not torch.allclose(mixed[1:], pixel.sds_gradient(x[1:], t[1:], noise[1:], cond[1:], uncond[1:], 20.0)[0])


def test_sds_loss_with_high_noise_guidance_draws_the_same_t_and_noise(pixel):
    # The option changes the guidance only: the same generator gives the same t, and a high-noise
    # scale equal to the base scale gives the same loss as no option at all.
    images = torch.rand(2, 3, 32, 32)
    cond, uncond = pixel.encode_text(["a red cube, front view"] * 2), pixel.encode_text([""] * 2)
    runs = {}
    for key, option in (("off", None), ("same", (0.5, 20.0)), ("low", (0.0001, 0.0))):
        loss, info = pixel.sds_loss(images, cond, uncond, 20.0, (0.02, 0.98), generator=torch.Generator().manual_seed(7),
                                    high_noise_guidance=option)
        runs[key] = (loss, info["t"])
    assert torch.equal(runs["off"][1], runs["same"][1]) and torch.equal(runs["off"][1], runs["low"][1])
    assert torch.allclose(runs["off"][0], runs["same"][0])
    assert not torch.allclose(runs["off"][0], runs["low"][0])


def test_guidance_weight_scales_the_conditional_term_linearly(pixel):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    t = torch.tensor([500])
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    cond, uncond = pixel.encode_text(["a blue torus, back view"]), pixel.encode_text([""])
    other = pixel.encode_text(["a green cone, side view"])
    g = {s: pixel.sds_gradient(x, t, noise, cond, uncond, s)[0] for s in (0.0, 1.0, 100.0)}
    # Weight 0: the prompt has no effect at all.
    assert torch.allclose(g[0.0], pixel.sds_gradient(x, t, noise, other, uncond, 0.0)[0])
    # Weight 100: the prompt term is 100x the weight-1 difference, and dominates the gradient.
    assert torch.allclose(g[100.0] - g[0.0], 100 * (g[1.0] - g[0.0]), rtol=1e-3, atol=1e-5)
    assert not torch.allclose(g[100.0], g[0.0])


def test_missing_folder_and_non_model_folder(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("hi")
    with pytest.raises(ModelError, match="not a diffusers text-to-image model folder"):
        resolve_model(str(tmp_path / "random"))


def test_corrupt_weights_give_a_clear_error(tiny_pixel_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pixel_model, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="unet"):
        Guidance(str(broken), CPU, torch.float32)


def test_pickle_only_weights_are_refused(tiny_pixel_model, tmp_path):
    from diffusers import UNet2DConditionModel

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_pixel_model, folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet", safe_serialization=False)
    with pytest.raises(ModelError, match="safetensors"):
        Guidance(str(folder), CPU, torch.float32)


def test_hub_id_offline_gives_actionable_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match="offline"):
        Guidance("someone/not-a-cached-model", CPU, torch.float32, offline=True)


def test_cuda_requested_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from engine.errors import DeviceError

    with pytest.raises(DeviceError, match="--device cpu"):
        pick_device("cuda")

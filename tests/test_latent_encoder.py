"""The tiny latent encoder option (diffusers AutoencoderTiny, TAESD family) and weights loaded in the
run's dtype: SDS goes back through the tiny encoder, the run records which encoder it used."""

import json

import pytest
import torch

from engine import cli
from engine.config import build_config
from engine.errors import ConfigError, ModelError
from engine.guidance import Guidance
from tiny_models import make_tiny_taesd

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def taesd(tmp_path_factory):
    return make_tiny_taesd(tmp_path_factory.mktemp("taesd") / "taesd")


def test_tiny_encoder_replaces_the_vae_and_carries_the_sds_gradient(tiny_latent_model, taesd):
    full = Guidance(str(tiny_latent_model), CPU, torch.float32)
    tiny = Guidance(str(tiny_latent_model), CPU, torch.float32, latent_encoder=str(taesd))
    assert full.latent_encoder == "vae" and tiny.latent_encoder == str(taesd)
    assert type(tiny.vae).__name__ == "AutoencoderTiny" and tiny.vae.decoder is None
    assert tiny.image_size == full.image_size == 32
    n_tiny = sum(p.numel() for p in tiny.vae.parameters())
    n_full = sum(p.numel() for p in full.vae.parameters())
    assert n_tiny < n_full
    images = torch.rand(2, 3, 24, 24, requires_grad=True)
    latents = tiny.encode_images(images)
    assert latents.shape == (2, 4, 16, 16)
    cond = tiny.encode_text(["a red cube, front view"] * 2)
    uncond = tiny.encode_text([""] * 2)
    loss, info = tiny.sds_loss(images, cond, uncond, 7.5, (0.02, 0.98), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0 and torch.isfinite(info["grad_norm"])


def test_weights_load_in_the_run_dtype(tiny_latent_model):
    g = Guidance(str(tiny_latent_model), CPU, torch.bfloat16)
    for module in (g.unet, g.vae, g.text_encoder):
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}


def test_bad_latent_encoder_is_refused_before_any_work(tiny_latent_model, tiny_pixel_model, taesd, tmp_path):
    with pytest.raises(ConfigError, match="latent_encoder"):
        build_config("draft", prompt="x", latent_encoder=" ")
    with pytest.raises(ModelError, match="AutoencoderTiny folder"):
        Guidance(str(tiny_latent_model), CPU, torch.float32, latent_encoder=str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="pixel-space"):
        Guidance(str(tiny_pixel_model), CPU, torch.float32, latent_encoder=str(taesd))
    # A diffusers folder of another class (here the full VAE) is named as such.
    with pytest.raises(ModelError, match="not an AutoencoderTiny"):
        Guidance(str(tiny_latent_model), CPU, torch.float32, latent_encoder=str(tiny_latent_model / "vae"))


def test_a_run_records_its_latent_encoder(tiny_latent_model, taesd, tmp_path, fast_args):
    args = [a for a in fast_args]
    code = cli.main(["generate", "a mug", "--out", str(tmp_path), "--model", str(tiny_latent_model), *args, "--steps", "2",
                     "--no-export", "--set", f"latent_encoder={taesd}"])
    assert code == 0
    run = next(tmp_path.iterdir())
    assert json.loads((run / "config.json").read_text())["latent_encoder"] == str(taesd)
    start = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if '"start"' in line][0]
    assert start["latent_encoder"] == str(taesd)

"""The models bench_sds.py times: SD 1.5 / 2.1-base sized U-Net and VAE with random weights, or the tests' tiny one.

The U-Nets and the SD VAE are built from their published configs and saved (fp16 safetensors, to halve
disk and write time; the engine casts to the requested dtype on load) into a diffusers folder that
engine.guidance.Guidance loads, so the measured path is the engine's own. The text encoder is a 1-layer
CLIP with the real hidden size and 77 tokens: it runs once per view label per run, never per step.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

_SD_UNET_COMMON = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    act_fn="silu", center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32,
)
SD_UNET = {
    # Stable Diffusion 1.5 unet/config.json (engine/known_models.json: the default)
    "sd15": dict(_SD_UNET_COMMON, cross_attention_dim=768, attention_head_dim=8),
    # Stable Diffusion 2.1 base unet/config.json (epsilon prediction, 512 px; the community mirror in engine/known_models.json)
    "sd21": dict(_SD_UNET_COMMON, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True),
}
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu",
              norm_num_groups=32, sample_size=512, scaling_factor=0.18215)
# Published parameter counts of the real text encoders (not built here; used for the memory estimate).
REAL_TEXT_ENCODER_PARAMS = {"sd15": 123_060_480, "sd21": 340_387_840}  # CLIP ViT-L/14 text; OpenCLIP ViT-H/14 text
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789,.-'!?"

def build_model(folder: Path, size: str, seed: int = 0) -> Path:
    """Write a diffusers folder with SD-sized random weights (size sd15|sd21) or the tests' tiny model."""
    folder = Path(folder)
    if size == "tiny":
        from tiny_models import make_tiny_latent_model

        return make_tiny_latent_model(folder, seed=seed)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    hidden = SD_UNET[size]["cross_attention_dim"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in CHARS + " ":
        for tok in (ch, ch + "</w>"):
            vocab.setdefault(tok, len(vocab))
    tok_dir = folder / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77,
                  pad_token="<|endoftext|>").save_pretrained(tok_dir)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=hidden, num_hidden_layers=1,
                                      num_attention_heads=hidden // 64, max_position_embeddings=77, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1))
    te.save_pretrained(folder / "text_encoder", safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  prediction_type="epsilon").save_pretrained(folder / "scheduler")
    vae = AutoencoderKL(**SD_VAE).to(torch.float16)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    del vae
    unet = UNet2DConditionModel(**SD_UNET[size])
    unet.to(torch.float16).save_pretrained(folder / "unet", safe_serialization=True)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDPMScheduler"]}, indent=2))
    return folder

def tiny_encoder(model_dir: Path, guidance):
    """A TAESD-size AutoencoderTiny (diffusers' defaults are TAESD's published config; random weights)
    saved next to the model and loaded through the engine's loader, as the tiny latent encoder."""
    from diffusers import AutoencoderTiny
    from engine.guidance import load_tiny_encoder

    folder = Path(model_dir) / "taesd"
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        AutoencoderTiny().to(torch.float16).save_pretrained(folder, safe_serialization=True)
    vae = load_tiny_encoder(str(folder), guidance.dtype, True).requires_grad_(False).eval().to(guidance.device)
    vae.decoder = None
    return vae

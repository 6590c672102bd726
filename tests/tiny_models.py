"""Tiny random-weight diffusers models, saved with save_pretrained so the engine loads them through
its real loader. Random weights are enough to test plumbing (loading, SDS gradients, the CLI, the
add-on); the project's trained prior (builtin:shapes) tests that SDS recovers real shapes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

PROMPT_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789,.-' "


def _clip_text_parts(hidden: int = 32, with_projection: bool = False):
    """A CLIPTokenizer with a character-level vocabulary (no merges) and a tiny CLIPTextModel (or
    CLIPTextModelWithProjection, SDXL's second encoder class, whose output[0] is the pooled embedding)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in PROMPT_CHARS.strip() + "!?":
        for tok in (ch, ch + "</w>"):
            vocab.setdefault(tok, len(vocab))
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
                            projection_dim=hidden)
    return vocab, (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _save_clip_tokenizer(folder: Path, vocab: dict) -> None:
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=32, pad_token="<|endoftext|>")
    tok.save_pretrained(folder)


def make_tiny_pixel_model(folder, sample_size: int = 32, seed: int = 0, with_projection: bool = False) -> Path:
    """A DeepFloyd-IF-like pixel-space model: 3-channel U-Net, CLIP text encoder, no VAE."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    folder = Path(folder)
    vocab, text_encoder = _clip_text_parts(with_projection=with_projection)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    _save_clip_tokenizer(folder / "tokenizer", vocab)
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "TinyPixelTestModel", "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", type(text_encoder).__name__], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"]}, indent=2))
    return folder


def make_tiny_latent_model(folder, seed: int = 0) -> Path:
    """A Stable-Diffusion-like latent model (VAE with 4 latent channels, x2 downsampling)."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    folder = Path(folder)
    vocab, text_encoder = _clip_text_parts()
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=32)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    _save_clip_tokenizer(folder / "tokenizer", vocab)
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def make_tiny_taesd(folder, downsamplings: int = 1, seed: int = 0) -> Path:
    """A tiny random diffusers AutoencoderTiny (TAESD family) with 4 latent channels and
    2**downsamplings downsampling (1 matches make_tiny_latent_model's VAE)."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    n = downsamplings + 1
    AutoencoderTiny(encoder_block_out_channels=(8,) * n, decoder_block_out_channels=(8,) * n, num_encoder_blocks=(1,) * n,
                    num_decoder_blocks=(1,) * n, latent_channels=4).save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def make_tiny_clip(folder, seed: int = 0, image_size: int = 32) -> Path:
    """A tiny random transformers CLIPModel (text + vision towers) with the character-level tokenizer,
    saved as safetensors: what ``python -m engine evaluate --clip FOLDER`` loads."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    folder = Path(folder)
    vocab, _ = _clip_text_parts()
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=image_size,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder, safe_serialization=True)
    _save_clip_tokenizer(folder, vocab)
    return folder

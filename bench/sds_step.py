"""The step bench_sds.py times: ``timed_train_step`` is Trainer.train_step with Guidance.sds_loss inlined
and a clock lap after each part (SECTIONS); tests/test_bench_smoke.py checks it computes the same loss
and gradients as the engine. ``make_trainer`` builds the engine's own Trainer for it; ``apply_speed_options``
the --attention / --channels-last / --compile switches."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.nn import functional as F

from sds_timing import Clock, count_saved

SECTIONS = ["render", "vae_encode", "unet_cfg", "loss", "backward_guidance", "backward_render", "optimizer"]


def timed_train_step(trainer, shading: str | None = None, clock=None, saved: dict | None = None) -> tuple[dict, Clock]:
    """Trainer.train_step with Guidance.sds_loss inlined and a clock lap after each part.

    Same random draws in the same order, so with ``shading=None`` it computes what train_step does;
    the backward is split in two (image gradient through the guidance side, then the render graph
    together with the regularisers), which sums to the same parameter gradients as loss.backward()."""
    from engine.render import render

    cfg, g, dev = trainer.cfg, trainer.guidance, trainer.device
    clock = clock or Clock(dev)
    saved = saved if saved is not None else {}
    exclude = saved.setdefault("_params", set())
    if not exclude:
        for mod in (trainer.field, trainer.background, g.unet, g.vae, g.text_encoder):
            if mod is not None:
                exclude.update(p.untyped_storage().data_ptr() for p in mod.parameters())
    clock.start()
    trainer.update_occupancy()
    cams, lights, mode, background = trainer.sample_view(shading)
    with count_saved(saved, "render", exclude):
        out = render(trainer.field, background, cams, cfg.render_resolution, cfg.samples_per_ray, shading=mode,
                     light_positions=lights, ambient=cfg.ambient, generator=trainer.rng, normals=cfg.normals,
                     normal_samples=cfg.normal_samples, occupancy=trainer.occupancy, packer=trainer.packer)
    clock.lap("render")
    view = trainer.prompts.for_cameras(cams)
    # --- Guidance.sds_loss, in parts
    with count_saved(saved, "vae_encode", exclude):
        x = g.encode_images(out.image)
    clock.lap("vae_encode")
    b = x.shape[0]
    t_lo, t_hi = trainer.t_range()
    lo = max(1, int(t_lo * g.num_train_timesteps))
    hi = min(g.num_train_timesteps - 1, int(t_hi * g.num_train_timesteps))
    t = torch.randint(lo, hi + 1, (b,), generator=trainer.rng, device=trainer.rng.device).to(dev)
    noise = torch.randn(x.shape, generator=trainer.rng, device=trainer.rng.device).to(dev)
    scale = trainer.guidance_scale
    high_noise = trainer.high_noise_guidance()
    if high_noise is not None:
        scale = g.scale_per_sample(t, scale, *high_noise)
    grad, _ = g.sds_gradient(x.detach(), t, noise, view.cond, view.uncond, scale, view.negatives,
                             view.negative_weights)
    grad = torch.nan_to_num(grad)
    clock.lap("unet_cfg")
    target = (x - grad).detach()
    sds = 0.5 * F.mse_loss(x, target, reduction="sum") / b
    grad_norm = grad.detach().norm() / b
    # --- rest of train_step
    reg = sum(trainer.regularisers(out))  # 2-4 terms: the entropy and smoothness terms only when weighted
    loss = sds + reg
    trainer.optimizer.zero_grad(set_to_none=True)
    clock.lap("loss")
    (g_img,) = torch.autograd.grad(sds, out.image)
    clock.lap("backward_guidance")
    torch.autograd.backward([out.image, reg], [g_img, torch.ones_like(reg)])
    clock.lap("backward_render")
    trainer.guard.step(loss, reject=out.overflow)
    clock.lap("optimizer")
    trainer.step += 1
    trainer.poll_packing()  # after the last lap: the capacity re-sizing is not part of the timed step
    stats = {"loss": loss.detach(), "sds": sds.detach(), "mode": mode, "grad_norm": grad_norm}
    return stats, clock

def make_trainer(model_folder: Path, preset: str, device: torch.device, dtype_name: str, encoding: str, run_dir: Path,
                 guidance=None, **overrides):
    from engine.config import build_config
    from engine.guidance import Guidance, pick_dtype
    from engine.protocol import EventStream
    from engine.train import Trainer

    overrides = {"encoding": encoding, **overrides}
    cfg = build_config(preset, prompt="a ceramic mug", model=str(model_folder), device=device.type, dtype=dtype_name, **overrides)
    t0 = time.perf_counter()
    if guidance is None:
        guidance = Guidance(str(model_folder), device, pick_dtype(dtype_name, device), offline=True)
    load_s = time.perf_counter() - t0
    (run_dir / "previews").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, run_dir, EventStream(), guidance, device, progress_bar=False)
    return trainer, load_s, time.perf_counter() - t0


def apply_speed_options(guidance, args, device: torch.device) -> list[str]:
    """--attention / --channels-last / --compile. Returns notes on what was applied or skipped."""
    notes = []
    if args.attention == "sliced":
        guidance.unet.set_attention_slice("auto")
        notes.append("U-Net attention slicing (set_attention_slice('auto'))")
    elif args.attention == "classic":
        from diffusers.models.attention_processor import AttnProcessor

        guidance.unet.set_attn_processor(AttnProcessor())
        if guidance.vae is not None:
            guidance.vae.set_attn_processor(AttnProcessor())
        notes.append("classic (non-SDPA) attention")
    else:
        notes.append("SDPA attention (diffusers default)")
    if args.channels_last:
        if device.type == "cuda":
            guidance.unet.to(memory_format=torch.channels_last)
            if guidance.vae is not None:
                guidance.vae.to(memory_format=torch.channels_last)
            notes.append("channels_last")
        else:
            notes.append("--channels-last skipped (CUDA only)")
    if args.compile:
        if device.type == "cuda":
            guidance.unet = torch.compile(guidance.unet, mode=args.compile_mode, fullgraph=False)
            notes.append(f"torch.compile(unet, mode={args.compile_mode})")
        else:
            notes.append("--compile skipped (CUDA only: CPU inductor compile takes minutes and needs a C++ toolchain)")
    return notes

"""``start_shape auto``: try each start shape for a few steps and keep the one the prior prefers.

A few hundred SDS steps do not change the topology the field starts with (docs/SDS_SHAPES.md): from
the centre ball "a red torus" ends as a closed lens, and from a ring "a red cube" collapses to
nothing. So the choice of start is made early, by the diffusion model itself, without reading the
prompt's words: each candidate trains ``start_probe_steps`` steps from the same seed, then renders a
fixed orbit, and the one whose renders the prompt helps the model denoise most is kept
(the "diffusion classifier" of Li et al. 2023, "Your Diffusion Model is Secretly a Zero-Shot
Classifier": log p(prompt | image) grows with ‖ε_uncond − ε‖² − ‖ε_prompt − ε‖²). The winner goes on
from where its probe stopped; the others are dropped. With the ball first and the same seed, a run
that keeps the ball is step for step the run ``start_shape ball`` would have made.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from .cameras import make_cameras, sample_light_positions
from .errors import Cancelled
from .field import START_SHAPES
from .render import render

log = logging.getLogger("engine")

# The probe's fixed orbit and noise levels: 8 views (elevation 15° and 45° in turn), noise levels
# t = 0.4-0.8 of the schedule, 2 draws each (10 U-Net calls on 16 images; 4 draws chose the same).
# Mid-to-high noise is where the model's prediction depends on the object's overall shape; at
# t <= 0.3 it depends on fine detail a 50-step field does not have yet, and there the gain picked the
# wrong start for 4-6 of 20 builtin-prior fields, at t = 0.9 for 4 (docs/SDS_SHAPES.md, the fifth round).
PROBE_VIEWS = 8
PROBE_ELEVATIONS = (15.0, 45.0)
PROBE_T = (0.4, 0.5, 0.6, 0.7, 0.8)
PROBE_DRAWS = 2
PROBE_CHUNK = 2  # views rendered, encoded and denoised at a time: the probe's memory stays near a training step's


@torch.no_grad()
def prompt_gain(trainer, seed: int) -> float:
    """How much the run's prompt helps the model denoise renders of the trainer's field: the mean of
    ‖ε_u − ε‖² − ‖ε_c − ε‖² over a fixed orbit, noise levels and draws (higher: the renders look
    more like the prompt to the model). Same ``seed``, same cameras, lights and noise for every field.
    torch's global generators are left as they were (a VAE encoder samples from them)."""
    with torch.random.fork_rng(devices=_cuda_devices(trainer.device)):
        torch.manual_seed(seed)  # a VAE's posterior sample: the same for every field
        return _prompt_gain(trainer, seed)


def _prompt_gain(trainer, seed: int) -> float:
    cfg, guidance, device = trainer.cfg, trainer.guidance, trainer.device
    gen = torch.Generator(device=device).manual_seed(seed)
    n = PROBE_VIEWS
    azimuth = torch.arange(n, dtype=torch.float32) * (360.0 / n)
    elevation = torch.tensor([PROBE_ELEVATIONS[i % len(PROBE_ELEVATIONS)] for i in range(n)])
    cams = make_cameras(azimuth, elevation, torch.full((n,), 0.5 * (cfg.distance_min + cfg.distance_max)),
                        torch.full((n,), 0.5 * (cfg.focal_min + cfg.focal_max)), device=device)
    lights = sample_light_positions(cams, gen)
    # The shading the run trains with at this step: albedo during the warm-up, shaded after it.
    shading = "albedo" if trainer.step < cfg.albedo_warmup else "shaded"
    chunks = [slice(i, min(i + PROBE_CHUNK, n)) for i in range(0, n, PROBE_CHUNK)]
    x = torch.cat([
        guidance.encode_images(render(trainer.field, trainer.background, cams[c], cfg.render_resolution, cfg.samples_per_ray,
                                      shading=shading, light_positions=lights[c], ambient=cfg.ambient, generator=gen,
                                      perturb=False, normals=cfg.normals).image)
        for c in chunks])
    view = trainer.prompts.for_cameras(cams)
    total = torch.zeros((), device=device)
    for frac in PROBE_T:
        t = torch.full((n,), int(frac * guidance.num_train_timesteps), dtype=torch.long, device=device)
        a = guidance.alphas_cumprod[t].view(-1, 1, 1, 1)
        for _ in range(PROBE_DRAWS):
            noise = torch.randn(x.shape, generator=gen, device=device)
            z_t = a.sqrt() * x + (1 - a).sqrt() * noise
            for c in chunks:
                eps_u, eps_c = guidance.noise_predictions(z_t[c], t[c], [view.uncond[c], view.cond[c]])
                total += (((eps_u - noise[c]) ** 2).sum() - ((eps_c - noise[c]) ** 2).sum()) / noise[0].numel()
    return float(total) / (n * len(PROBE_T) * PROBE_DRAWS)


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _global_rng_state(device: torch.device):
    return torch.get_rng_state(), [torch.cuda.get_rng_state(i) for i in _cuda_devices(device)]


def _set_global_rng_state(device: torch.device, state) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    for i, s in zip(_cuda_devices(device), cuda):
        torch.cuda.set_rng_state(s, i)


def choose_start_shape(cfg, make_trainer, events, cancel, run_dir):
    """Train each of ``START_SHAPES`` for ``cfg.start_probe_steps`` steps (``make_trainer(cfg)`` builds a
    Trainer for a config), score each with :func:`prompt_gain`, and return ``(trainer, cfg)`` of the
    winner: its config has the chosen ``start_shape`` (what the run folder must record) and its trainer
    stands at step ``start_probe_steps``. Nothing is written to the run folder here: a cancel during
    the probe stops with no checkpoint, and ``--resume`` starts the probe again (engine/cli.py)."""
    k = cfg.start_probe_steps
    total = k * len(START_SHAPES)
    best = None
    gains = {}
    for i, shape in enumerate(START_SHAPES):
        shape_cfg = dataclasses.replace(cfg, start_shape=shape)
        trainer = make_trainer(shape_cfg)  # seeds torch's global generator with cfg.seed: same start per shape
        trainer.cancel = cancel
        for j in range(k):
            if cancel.requested(run_dir):
                events.emit("cancelled", run_dir=run_dir, step=0, checkpoint=None)
                raise Cancelled(f"cancelled while choosing the start shape, before any checkpoint; "
                                f"--resume {run_dir} starts the run again")
            trainer.train_step()
            trainer.poll_after_step(force=j == k - 1)  # non-finite steps, packing capacities: as Trainer.run
            done = i * k + j + 1
            if done == total or done % 10 == 0:
                events.emit("progress", stage="start shape", step=done, total=total, loss=None, elapsed_s=None, eta_s=None)
        # torch's global generators as this start's steps left them (a VAE encoder samples from them; the
        # next Trainer reseeds them): the winner goes on with its own, so a kept ball is the plain ball run.
        rng_state = _global_rng_state(trainer.device)
        gains[shape] = prompt_gain(trainer, cfg.seed)
        log.info("start shape %s: prompt gain %.4g after %d steps", shape, gains[shape], k)
        if best is None or gains[shape] > gains[best[0]]:  # a tie keeps the earlier (the ball)
            best = (shape, trainer, shape_cfg, rng_state)
        else:
            del trainer
    shape, trainer, shape_cfg, rng_state = best
    _set_global_rng_state(trainer.device, rng_state)
    events.emit("start_shape", chosen=shape, gains={s: round(g, 7) for s, g in gains.items()}, probe_steps=k)
    return trainer, shape_cfg

"""The optimisation loop: SDS on random views, regularisers, previews, checkpoints, cancel, resume.

One ``Trainer`` owns one run folder. ``run()`` either finishes (export included) or raises an
EngineError after leaving the last checkpoint on disk; the CLI turns that into events and exit codes.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import __version__, losses, runfolder, schedule, step_guard
from .cancel import CancelFlag
from .cameras import orbit_cameras, sample_cameras, sample_light_positions
from .config import JobConfig
from .errors import Cancelled, OutOfMemory
from .eta import ModeCostETA, StepTimer, probe_render_costs
from .field import BackgroundField, NeRFField, SolidBackground
from .occupancy import OccupancyGrid
from .prompts import ViewPrompts
from .protocol import EventStream
from .render import SHADING_MODES, render
from .render.packing import FixedCapacityPacker, resolve_packing

log = logging.getLogger("engine")


def build_field(cfg: JobConfig) -> tuple[NeRFField, BackgroundField]:
    field = NeRFField(
        bound=cfg.bound, encoding=cfg.encoding, hidden_dim=cfg.hidden_dim, hash_levels=cfg.hash_levels,
        hash_log2_table=cfg.hash_log2_table, blob_density=cfg.blob_density, blob_radius=cfg.blob_radius,
        frequency_bands=cfg.frequency_bands, hash_max_resolution=cfg.hash_max_resolution,
        start_shape=cfg.start_shape,
    )
    return field, BackgroundField(fixed=cfg.background)


def set_coarse_to_fine(field: NeRFField, cfg: JobConfig, step: int) -> None:
    """The field's scheduled settings at ``step``: the live hash levels (progressive grid) and
    sinusoidal bands (Nerfies' window), and how much of the start blob's core is left (a fading blob)."""
    field.set_level_fraction(schedule.value_at(cfg.hash_level_fraction, step, cfg.steps))
    field.set_band_fraction(schedule.value_at(cfg.frequency_band_fraction, step, cfg.steps))
    field.blob_core = schedule.value_at(cfg.blob_core, step, cfg.steps)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


OOM_ADVICE = (
    "the GPU ran out of memory. Try --preset draft, a lower --render-resolution or --samples-per-ray, "
    "--dtype fp16, or close other programs using the GPU. The last checkpoint is kept; resume with --resume"
)


@contextlib.contextmanager
def out_of_memory_as_engine_error():
    """Inside: a device out-of-memory error becomes OutOfMemory with OOM_ADVICE (exit 4, advice for
    the user); any other error passes unchanged."""
    try:
        yield
    except RuntimeError as exc:
        if is_oom(exc):
            raise OutOfMemory(OOM_ADVICE) from exc
        raise


def _as_tuple(value):
    """random.Random's state back from a checkpoint (lists after a round trip)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class Trainer:
    #: The stage name in progress events and the progress bar (the mesh refinement's subclass: "refine").
    stage = "train"

    def __init__(self, cfg: JobConfig, run_dir: Path, events: EventStream, guidance, device: torch.device,
                 progress_bar: bool = True, prompts: ViewPrompts | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.events = events
        self.guidance = guidance
        self.device = device
        self.progress_bar = progress_bar
        torch.manual_seed(cfg.seed)
        self.field, self.background = build_field(cfg)
        self.field.to(device)
        self.background.to(device)
        groups = self.field.param_groups(cfg.lr, cfg.mlp_lr_scale)
        groups.append({"params": list(self.background.parameters()), "lr": cfg.lr * cfg.background_lr_scale, "name": "background"})
        self.optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, fused=step_guard.fused_supported(device))
        self.guard = step_guard.StepGuard(self.optimizer)  # skips non-finite updates on the device
        if cfg.compile_field:
            self.field.compile_query()
        # Cameras, lights, ray jitter, SDS t and noise: drawn on the device, so a step needs no host copy.
        self.rng = torch.Generator(device=device).manual_seed(cfg.seed)
        # The occupancy grid's random cells draw from their own stream: with the grid on or off a run sees
        # the same cameras, noise and t (a shared stream made grid on/off compare like two different seeds).
        self.grid_rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        # The normal-smoothness term's draws too: with it on, cameras, t and noise stay those of the run without.
        self.smooth_rng = torch.Generator(device=device).manual_seed(cfg.seed + 2)
        self.host_rng = random.Random(cfg.seed)  # host-side choices only (the shading mode of a step)
        self.step = 0
        self.guidance_scale = cfg.guidance_scale if cfg.guidance_scale is not None else guidance.default_guidance_scale()
        # Text embeddings once per view label (not per step), plus the unconditional/negative one; a
        # step picks (or blends) its views' rows of ``prompts.table`` on the device.
        # A later stage (engine/refine.py) passes the first stage's prompts: the text encoder is released by then.
        self.prompts = prompts or ViewPrompts(guidance.encode_text, cfg.prompt, cfg.negative_prompt, mode=cfg.view_embedding,
                                              perp_neg=cfg.perp_neg, overhead_elevation=cfg.overhead_elevation)
        self.uncond, self.cond = self.prompts.uncond, self.prompts.views
        guidance.release_text_encoder()
        self.occupancy = None
        if cfg.occupancy_grid:
            self.occupancy = OccupancyGrid(cfg.bound, cfg.occupancy_resolution or max(16, cfg.samples_per_ray), device=device)
        # Training renders pack into fixed capacities on accelerators (no host sync per step);
        # previews and probes, outside the steps, pack exactly.
        self.packer = FixedCapacityPacker() if resolve_packing(cfg.packing, device) == "fixed" else None
        self.cancel = CancelFlag()

    # --- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "field": self.field.state_dict(),
            "background": self.background.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.get_state(),
            "rng_device": self.device.type,
            "host_rng": self.host_rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "engine_version": __version__,
        }

    def load_state_dict(self, state: dict) -> None:
        self.field.load_state_dict(state["field"])
        self.background.load_state_dict(state["background"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        if state.get("rng_device", "cpu") == self.device.type:
            self.rng.set_state(state["rng"])
        else:  # a generator's state only fits its own device type: reseed, deterministically per step
            log.warning("resuming on %s a run saved on %s: camera/noise draws are reseeded", self.device.type, state.get("rng_device"))
            self.rng.manual_seed(self.cfg.seed + self.step)
        self.grid_rng.manual_seed(self.cfg.seed + 1 + self.step)  # the grid itself restarts on resume
        self.smooth_rng.manual_seed(self.cfg.seed + 2 + self.step)
        if "host_rng" in state:
            self.host_rng.setstate(_as_tuple(state["host_rng"]))
        torch.set_rng_state(state["torch_rng"])

    def save_checkpoint(self) -> Path:
        path = runfolder.save_checkpoint(self.run_dir, self.state_dict())
        self.events.emit("checkpoint", step=self.step, path=path)
        return path

    # --- one step ---------------------------------------------------------------------------------
    def scheduled(self, key: str) -> float:
        """A schedulable setting's value at the current step (engine/schedule.py)."""
        return schedule.value_at(getattr(self.cfg, key), self.step, self.cfg.steps)

    def high_noise_guidance(self) -> tuple[float, float] | None:
        """(high_noise_t, the high-noise guidance at this step) for Guidance.sds_loss; None: one guidance for every t."""
        if self.cfg.high_noise_guidance_scale is None:
            return None
        return self.cfg.high_noise_t, self.scheduled("high_noise_guidance_scale")

    def shading_mode(self) -> str:
        """A host-side choice (it decides what the render computes), from the host generator."""
        if self.step < self.cfg.albedo_warmup:
            return "albedo"
        ratios = [self.scheduled(k) for k in ("albedo_ratio", "shaded_ratio", "textureless_ratio")]
        return self.host_rng.choices(SHADING_MODES, weights=ratios)[0]

    def shading_phases(self) -> tuple[int, dict[str, float]]:
        """(albedo-only steps at the start, the mix after them) as the ETA costs the run: the warm-up
        lasts until a non-albedo share first exceeds 0; after it, the mix at the end of the run
        (exact for the recipe's jump at 20 %, an approximation for a ramped mix)."""
        cfg = self.cfg
        keys = ("albedo_ratio", "shaded_ratio", "textureless_ratio")
        firsts = [schedule.first_step_above(getattr(cfg, k), cfg.steps) for k in keys[1:]]
        warmup = min((f for f in firsts if f is not None), default=cfg.steps)
        mix = {mode: schedule.value_at(getattr(cfg, k), cfg.steps - 1, cfg.steps) for mode, k in zip(SHADING_MODES, keys)}
        return max(cfg.albedo_warmup, warmup), mix

    def update_occupancy(self) -> None:
        """Refresh the occupancy grid every ``occupancy_update_every`` steps (and before the first)."""
        grid = self.occupancy
        if grid is None or (grid.updates > 0 and self.step % self.cfg.occupancy_update_every != 0):
            return
        # The renderer's widest sample spacing: the sphere's diameter over the samples per ray.
        grid.update(self.field.density, 2.0 * self.cfg.bound / self.cfg.samples_per_ray, generator=self.grid_rng)

    def t_range(self) -> tuple[float, float]:
        t_min, t_max = self.scheduled("t_min"), self.scheduled("t_max")
        if not self.cfg.t_anneal:
            return t_min, t_max
        frac = self.step / max(self.cfg.steps - 1, 1)
        return t_min, t_max + (self.cfg.t_anneal_to - t_max) * frac

    def training_background(self):
        """The learned background, or on a ``random_background`` share of steps one random colour
        (the choice on the host, the colour on the device: no synchronisation)."""
        if self.cfg.random_background > 0 and self.host_rng.random() < self.cfg.random_background:
            return SolidBackground(torch.rand(3, generator=self.rng, device=self.rng.device).to(self.device))
        return self.background

    def sample_view(self, mode: str | None = None):
        """This step's cameras, lights, shading mode (drawn unless given) and background; applies the
        step's live hash levels and bands. Shared with the benchmark's timed copy of the step (bench/sds_step.py)."""
        cfg = self.cfg
        cams = sample_cameras(
            cfg.batch_size, self.rng, (cfg.elevation_min, cfg.elevation_max), (cfg.distance_min, cfg.distance_max),
            (cfg.focal_min, cfg.focal_max), device=self.device, uniform_sphere_rate=cfg.uniform_sphere_rate,
        )
        lights = sample_light_positions(cams, self.rng)
        mode = self.shading_mode() if mode is None else mode
        set_coarse_to_fine(self.field, cfg, self.step)
        return cams, lights, mode, self.training_background()

    def regularisers(self, out) -> list[torch.Tensor]:
        """The weighted orientation, opacity, opacity-entropy and normal-smoothness terms at this step
        (added to the SDS loss one by one; the last two only where their weight is not zero, so runs
        without them do the same arithmetic as before)."""
        orientation = losses.orientation_loss(out, average=self.cfg.orientation_average)
        terms = [self.scheduled("orientation_weight") * orientation, self.scheduled("opacity_weight") * losses.opacity_loss(out)]
        entropy_weight = self.scheduled("entropy_weight")
        if entropy_weight:
            terms.append(entropy_weight * losses.opacity_entropy_loss(out))
        smooth_weight = self.scheduled("normal_smooth_weight")
        if smooth_weight:
            terms.append(smooth_weight * losses.normal_smoothness_loss(self.field, out, self.cfg.normal_smooth_jitter,
                                                                       self.smooth_rng, cap=self.cfg.normal_smooth_cap))
        return terms

    def train_step(self) -> dict:
        """One SDS step. Nothing is read back to the host: the returned loss and diagnostics are
        device tensors (read them when reporting)."""
        cfg = self.cfg
        self.update_occupancy()
        cams, lights, mode, background = self.sample_view()
        out = render(self.field, background, cams, cfg.render_resolution, cfg.samples_per_ray, shading=mode,
                     light_positions=lights, ambient=cfg.ambient, generator=self.rng, normals=cfg.normals,
                     normal_samples=cfg.normal_samples, occupancy=self.occupancy, packer=self.packer)
        view = self.prompts.for_cameras(cams)
        sds, info = self.guidance.sds_loss(out.image, view.cond, view.uncond, self.guidance_scale, self.t_range(),
                                           generator=self.rng, negatives=view.negatives, negative_weights=view.negative_weights,
                                           high_noise_guidance=self.high_noise_guidance())
        loss = sds
        for term in self.regularisers(out):
            loss = loss + term
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.guard.step(loss, reject=out.overflow)  # an incomplete (overflowed) render changes nothing
        self.step += 1
        return {"loss": loss.detach(), "sds": sds.detach(), "mode": mode, "grad_norm": info["grad_norm"]}

    def poll_after_step(self, force: bool = False) -> None:
        """The step guard's and the packer's reads, on their own schedule (``force``: now, e.g. at a
        run's or a probe's last step). After every train_step, wherever steps are run."""
        self.guard.poll(self.step, force=force)
        self.poll_packing(force=force)

    def poll_packing(self, force: bool = False) -> None:
        """With fixed-capacity packing, on the step guard's schedule (one small read every few steps):
        re-size the capacities from the counts seen, and say when a step overflowed (its update was skipped)."""
        if self.packer is None or not (force or self.step % self.guard.check_every == 0):
            return
        stats = self.packer.poll()
        if stats["overflows"]:
            msg = (f"{stats['overflows']} step(s) before step {self.step} selected more samples than the packing capacity "
                   f"(largest counts {stats['peak']}, capacity {stats['before']}); their updates were skipped and the "
                   f"capacity is now {stats['capacity']}")
            log.warning(msg)
            self.events.emit("warning", message=msg)

    # --- previews ---------------------------------------------------------------------------------
    @torch.no_grad()
    def preview_grid(self, modes, render_view) -> np.ndarray:
        """A fixed orbit, one row per mode, as an (H, W, 3) uint8 image; ``render_view(camera, mode, light)``
        gives one (3, h, w) view (the NeRF here, the mesh stages' rasteriser in texture_run.py and refine.py)."""
        cfg = self.cfg
        cams = orbit_cameras(cfg.preview_views, elevation=15.0, distance=0.5 * (cfg.distance_min + cfg.distance_max),
                             focal=0.5 * (cfg.focal_min + cfg.focal_max), device=self.device)
        # Light from the camera, raised a little: a fixed, readable lighting for every preview.
        lights = cams.origins * 1.2 + torch.tensor([0.0, 1.0, 0.0], device=self.device)
        rows = []
        for mode in modes:
            imgs = []
            for i in range(len(cams)):  # one view at a time keeps preview memory at one training render
                self.stop_if_cancelled()  # a preview is many renders: cancel within one of them
                imgs.append(render_view(cams[i], mode, lights[i:i + 1]))
            rows.append(torch.cat(imgs, dim=2))
        grid = torch.cat(rows, dim=1).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        return (grid * 255 + 0.5).astype(np.uint8)

    def render_preview(self) -> np.ndarray:
        """Textured row over textureless row."""
        cfg = self.cfg

        def view(cam, mode, light):
            return render(self.field, self.background, cam, cfg.render_resolution, cfg.samples_per_ray,
                          shading="shaded" if mode == "albedo" else "textureless", light_positions=light,
                          ambient=0.3, perturb=False, normals=cfg.normals, normal_samples=cfg.normal_samples,
                          occupancy=self.occupancy).image.detach()[0]

        return self.preview_grid(("albedo", "textureless"), view)

    def write_preview(self) -> Path:
        path = self.run_dir / "previews" / f"step_{self.step:06d}.png"
        img = Image.fromarray(self.render_preview())
        if img.width < 512:  # upscale tiny renders so they are visible in a UI panel
            factor = max(1, 512 // img.width)
            img = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
        tmp = path.with_suffix(".tmp.png")
        img.save(tmp)
        tmp.replace(path)
        self.events.emit("preview", step=self.step, path=path)
        return path

    # --- the loop ---------------------------------------------------------------------------------
    def probe_render_costs(self, modes) -> dict[str, float]:
        """Seconds of one training render per shading mode, for the ETA of modes the warm-up will not see
        (a subclass that renders something else probes that instead)."""
        return probe_render_costs(self.field, self.background, self.cfg, self.device, modes, occupancy=self.occupancy)

    def stop_if_cancelled(self) -> None:
        """Between steps: on a signal or a CANCEL file, save a checkpoint, say so, and stop."""
        if self.cancel.requested(self.run_dir):
            path = self.save_checkpoint()
            self.events.emit("cancelled", run_dir=self.run_dir, step=self.step, checkpoint=path)
            raise Cancelled(f"cancelled at step {self.step}/{self.cfg.steps}; resume with --resume {self.run_dir}")

    def run(self) -> None:
        cfg = self.cfg
        self.cancel.install()
        warmup, mix = self.shading_phases()
        timer = ModeCostETA(cfg.steps, warmup, mix, periodic={"preview": cfg.preview_every, "checkpoint": cfg.checkpoint_every})
        if self.step < min(warmup, cfg.steps) < cfg.steps:  # modes the warm-up will not measure
            timer.probe = self.probe_render_costs(timer.modes_after_warmup())
        start_step, t0 = self.step, time.monotonic()
        step_timer = StepTimer(self.device)  # device time per step, without a sync per step
        bar = None
        if self.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="SDS" if self.stage == "train" else self.stage, unit="step", dynamic_ncols=True)
        last_emit = 0.0
        try:
            while self.step < cfg.steps:
                self.stop_if_cancelled()
                with out_of_memory_as_engine_error():
                    step_timer.start()
                    stats = self.train_step()
                    # The first step carries one-off costs (first calls, occupancy grid, packing sizes).
                    step_timer.stop(stats["mode"], keep=self.step > start_step + 1)
                    for mode, seconds in step_timer.done():
                        timer.record(mode, seconds)
                self.poll_after_step(force=self.step == cfg.steps)
                now = time.monotonic()
                elapsed = now - t0
                eta = timer.eta(self.step)
                if bar is not None:
                    bar.update(1)
                # The loss is read back to the host only when reported (at most ~4 times a second):
                # on a GPU each read waits for the step to finish.
                if now - last_emit > 0.25 or self.step == cfg.steps or self.step == start_step + 1:
                    last_emit = now
                    loss = float(stats["loss"])
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss:.3g}", mode=stats["mode"][:4])
                    self.events.emit("progress", stage=self.stage, step=self.step, total=cfg.steps, loss=round(loss, 6),
                                     elapsed_s=round(elapsed, 2), eta_s=None if eta is None else round(eta, 1),
                                     skipped=self.guard.skipped)
                if self.step % cfg.preview_every == 0 or self.step == cfg.steps or self.step == start_step + 1:
                    step_timer.drain()  # the preview reads back anyway: do not charge it the queued steps
                    t_job = time.monotonic()
                    self.write_preview()
                    timer.record_periodic("preview", time.monotonic() - t_job)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    step_timer.drain()
                    t_job = time.monotonic()
                    self.save_checkpoint()
                    timer.record_periodic("checkpoint", time.monotonic() - t_job)
                    log.info("step %d/%d loss %.4g", self.step, cfg.steps, float(stats["loss"]))
        finally:
            if bar is not None:
                bar.close()
            self.cancel.restore()

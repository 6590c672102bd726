"""Benchmark (not a test): where the time and memory of one SDS step go, at real Stable Diffusion sizes.

What it measures, for one preset / device / dtype / model size / NeRF encoding:
- seconds per SDS step, split into render (NeRF forward), VAE encode (latent models), U-Net forward
  with classifier-free guidance (one batch-2 call, under no_grad), loss assembly, backward through
  the guidance side (VAE encoder, or the resize for pixel models), backward through the render, and
  the optimiser step; steps per second;
- the bare U-Net forward alone (batch 2 for CFG, the model's latent size) as the floor an SDS step
  is compared against, and the ratio SDS-step / U-Net-floor;
- memory: CPU RSS per phase (VmHWM reset through /proc/self/clear_refs; glibc's mmap threshold
  pinned so freed tensors leave RSS at once) or CUDA max_memory_allocated per phase, bytes saved
  for backward per component (saved_tensors_hooks), and on CPU an estimate of fp16 GPU memory;
- time to first preview: model load + Trainer init (text embeddings) + first step + write_preview;
- hash grid against the frequency (plain NeRF) encoding: render forward+backward at the preset's
  resolution, and a tiny-model SDS step;
- mesh export at 128^3 and 256^3, by running bench/bench_export.py's own per-case mode.

Model weights are random: a forward's cost does not depend on their values. The SD 1.5 / 2.1-base
U-Nets and the SD VAE are built from their published configs and saved (fp16 safetensors, to halve
disk and write time; the engine casts to the requested dtype on load) into a temporary diffusers
folder that engine.guidance.Guidance loads, so the measured path is the engine's own. The text
encoder is a 1-layer CLIP with the real hidden size and 77 tokens: it runs once per view label per
run (embeddings are cached by the Trainer), never per step, so its depth does not matter here.

The timed step is ``timed_train_step`` below: Trainer.train_step and Guidance.sds_loss inlined with
clocks between the parts (tests/test_bench_smoke.py checks it computes the same loss and gradients).

    .venv/bin/python bench/bench_sds.py --model-size sd15 --preset draft --steps 2 --warmup 1
    .venv/bin/python bench/bench_sds.py --model-size tiny --steps 10 --no-export
    .venv/bin/python bench/bench_sds.py --device cuda --dtype fp16 --model-size sd15 --channels-last --compile

Each run writes bench/results/<name>.json and regenerates --out (docs/BENCHMARKS.md) from all of
bench/results/*.json, so CPU and GPU rows from different machines end up in one table.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NOTES = ROOT / "bench" / "BENCHMARKS-notes.md"  # hand-written findings, copied into --out on every regeneration
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

# --- model configs (published values; weights random) ---------------------------------------------
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
SECTIONS = ["render", "vae_encode", "unet_cfg", "loss", "backward_guidance", "backward_render", "optimizer"]


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


# --- clocks and memory ----------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Mem:
    """Peak memory per phase: CUDA max_memory_allocated, or CPU RSS high-water mark (VmHWM)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self._clear_ok = True
        self.trim = None  # set by tight_malloc(): glibc's malloc_trim, called before each measured phase

    @staticmethod
    def _status(key: str) -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024.0  # kB -> MiB
        return float("nan")

    def current(self) -> float:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device) / 2**20
        try:
            return self._status("VmRSS")
        except OSError:
            return float("nan")

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        if self.trim is not None:
            self.trim(0)  # free heap chunks would be reused without raising RSS: release them first
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            self._clear_ok = False

    def peak(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            if self._clear_ok:
                return self._status("VmHWM")
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def tight_malloc(mem: Mem | None = None) -> bool:
    """Make freed CPU tensors leave RSS at once (glibc): fixed 64 KiB mmap threshold, trim the heap,
    and have ``mem`` trim again before each measured phase. Without it glibc keeps freed memory
    resident and reuses it, so RSS deltas undercount what a phase allocates."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
        libc.malloc_trim(0)
        if mem is not None:
            mem.trim = libc.malloc_trim
        return True
    except (OSError, AttributeError):
        return False


class Clock:
    """Laps between parts of a step; synchronises CUDA before reading the time. Optionally records
    the memory peak of each lap (``mem``), relative to the memory at the start of the step."""

    def __init__(self, device: torch.device, mem: Mem | None = None):
        self.device, self.mem = device, mem
        self.times: dict[str, float] = {}
        self.peaks: dict[str, float] = {}

    def start(self) -> None:
        _sync(self.device)
        if self.mem is not None:
            self.base = self.mem.current()
            self.mem.reset_peak()
        self.t0 = self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        _sync(self.device)
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - self.t
        if self.mem is not None:
            self.peaks[name] = self.mem.peak() - self.base
            self.peaks[name + "_end"] = self.mem.current() - self.base
            self.mem.reset_peak()
        self.t = time.perf_counter()

    def total(self) -> float:
        return self.t - self.t0


@contextlib.contextmanager
def count_saved(store: dict, key: str, exclude_ptrs: set[int]):
    """Bytes autograd saves for backward inside the block (storages counted once, parameters excluded)."""
    seen = store.setdefault("_seen", set())

    def pack(t):
        try:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in seen and ptr not in exclude_ptrs:
                seen.add(ptr)
                store[key] = store.get(key, 0) + st.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


# --- the timed step -------------------------------------------------------------------------------
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


# Render paths: "fast" is the engine's default; "reference" is the first engine's (no occupancy grid,
# central-difference normals of every sample), kept selectable through these settings.
RENDER_PATHS = {
    "fast": dict(occupancy_grid=True, normals="forward_difference", normal_samples="weighted"),
    "reference": dict(occupancy_grid=False, normals="finite_difference", normal_samples="all"),
}
# Settings a trained checkpoint fixes (its field's layout); the bench's preset sets the rest.
FIELD_LAYOUT = ("encoding", "hash_levels", "hash_log2_table", "hidden_dim", "bound", "blob_density", "blob_radius", "background")


def checkpoint_layout(run_dir: Path | None) -> tuple[dict, dict | None]:
    """(config overrides, state) of a trained run folder, or ({}, None)."""
    if not run_dir:
        return {}, None
    from engine import runfolder

    cfg = runfolder.load_run_config(Path(run_dir))
    return {k: getattr(cfg, k) for k in FIELD_LAYOUT}, runfolder.load_checkpoint(Path(run_dir))


def load_trained_field(trainer, state: dict | None) -> None:
    if state is not None:
        trainer.field.load_state_dict(state["field"])
        trainer.background.load_state_dict(state["background"])


def parse_variants(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        path, _, enc = item.strip().partition("-")
        if path not in RENDER_PATHS or enc not in ("vae", "tiny"):
            raise SystemExit(f"--variants: {item!r} is not PATH-ENCODER with PATH in {sorted(RENDER_PATHS)} and ENCODER vae|tiny")
        out.append((path, enc))
    return out


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


def unet_floor(guidance, device: torch.device, n: int, warmup: int, mem: Mem, emb_len: int = 77) -> dict:
    """The bare U-Net forward the SDS step cannot beat: batch 2 (CFG), the model's latent size, 77 tokens."""
    cfg = guidance.unet.config
    s = int(cfg.sample_size)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, cfg.in_channels, s, s, generator=gen).to(device=device, dtype=guidance.dtype)
    emb = torch.randn(2, emb_len, cfg.cross_attention_dim, generator=gen).to(device=device, dtype=guidance.dtype)
    t = torch.tensor([500, 500], device=device)
    times, peak = [], 0.0
    with torch.no_grad():
        for i in range(warmup + n):
            _sync(device)
            base = mem.current()
            mem.reset_peak()
            t0 = time.perf_counter()
            guidance.unet(z, t, encoder_hidden_states=emb).sample
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                peak = max(peak, mem.peak() - base)
    return {"mean_s": sum(times) / len(times), "all_s": times, "transient_peak_mib": peak, "shape": [2, cfg.in_channels, s, s],
            "tokens": int(emb_len)}


def time_renders(field, bg, rng: torch.Generator, device: torch.device, reps: int, warmup: int, mem: Mem, render_one,
                 on_measured=None) -> tuple[list[float], list[float], float, dict]:
    """Forward and backward seconds, peak memory (MiB) and saved-for-backward bytes of ``render_one(cams, lights)``
    on random single-camera views: one loop for every render comparison in this bench. ``on_measured(out)`` sees
    each timed render's output before it is freed."""
    from engine import losses
    from engine.cameras import sample_cameras, sample_light_positions

    fwd, bwd, peak, saved = [], [], 0.0, {}
    exclude = {p.untyped_storage().data_ptr() for p in list(field.parameters()) + list(bg.parameters())}
    for i in range(warmup + reps):
        cams = sample_cameras(1, rng, device=device)
        lights = sample_light_positions(cams, rng)
        _sync(device)
        base = mem.current()
        mem.reset_peak()
        t0 = time.perf_counter()
        store = {} if i == 0 else saved
        with count_saved(store, "render", exclude):
            out = render_one(cams, lights)
        _sync(device)
        t1 = time.perf_counter()
        (out.image.mean() + out.opacity.mean() + losses.orientation_loss(out)).backward()
        _sync(device)
        t2 = time.perf_counter()
        if i == 0:
            saved = store
        field.zero_grad(set_to_none=True)
        bg.zero_grad(set_to_none=True)
        if i >= warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            peak = max(peak, mem.peak() - base)
            if on_measured is not None:
                on_measured(out)
        del out
    return fwd, bwd, peak, saved


def render_compare(preset: str, device: torch.device, reps: int, warmup: int, mem: Mem) -> list[dict]:
    """Hash grid vs frequency encoding: render forward + backward at the preset's resolution."""
    from engine.config import build_config
    from engine.render import render
    from engine.train import build_field

    rows = []
    for encoding in ("hashgrid", "frequency"):
        cfg = build_config(preset, prompt="x", encoding=encoding)
        torch.manual_seed(0)
        field, bg = build_field(cfg)
        field.to(device)
        bg.to(device)
        params = sum(p.numel() for p in field.parameters())
        for mode in ("albedo", "shaded"):
            rng = torch.Generator().manual_seed(0)

            def render_one(cams, lights, mode=mode, rng=rng):
                return render(field, bg, cams, cfg.render_resolution, cfg.samples_per_ray, shading=mode,
                              light_positions=lights, ambient=cfg.ambient, generator=rng, normals=cfg.normals)

            fwd, bwd, peak, saved = time_renders(field, bg, rng, device, reps, warmup, mem, render_one)
            rows.append({"encoding": encoding, "mode": mode, "resolution": cfg.render_resolution, "samples_per_ray": cfg.samples_per_ray,
                         "field_params": params, "fwd_s": sum(fwd) / len(fwd), "bwd_s": sum(bwd) / len(bwd),
                         "saved_mib": saved.get("render", 0) / 2**20, "peak_mib": peak, "reps": reps})
            print(f"  render {encoding:9s} {mode:7s}: fwd {rows[-1]['fwd_s']:.3f}s bwd {rows[-1]['bwd_s']:.3f}s", file=sys.stderr)
    return rows


def render_path_compare(preset: str, device: torch.device, reps: int, warmup: int, mem: Mem, field_run: str | None) -> dict:
    """Reference vs fast render path on one field (a trained checkpoint's with ``field_run``): render
    forward + backward of one view at the preset's resolution and samples, per shading mode; the
    occupancy grid's update cost; and what autograd keeps for backward at the high preset's pixels and
    samples (one shaded render), for the memory estimate."""
    from engine.cameras import sample_cameras, sample_light_positions
    from engine.config import PRESETS, build_config
    from engine.occupancy import OccupancyGrid
    from engine.render import render
    from engine.train import build_field

    layout, state = checkpoint_layout(field_run)
    rows, grid_rows, high_rows = [], [], []
    for path, settings in RENDER_PATHS.items():
        cfg = build_config(preset, prompt="x", **{**layout, **settings})
        torch.manual_seed(0)
        field, bg = build_field(cfg)
        if state is not None:
            field.load_state_dict(state["field"])
            bg.load_state_dict(state["background"])
        field.to(device)
        bg.to(device)
        grid = None
        if cfg.occupancy_grid:
            grid = OccupancyGrid(cfg.bound, cfg.occupancy_resolution or max(16, cfg.samples_per_ray), device=device)
            gen = torch.Generator(device=device).manual_seed(0)
            times = []
            for _ in range(3):  # the first update covers every cell, later ones a quarter + the occupied
                t0 = time.perf_counter()
                grid.update(field.density, 2.0 * cfg.bound / cfg.samples_per_ray, generator=gen)
                _sync(device)
                times.append(time.perf_counter() - t0)
            grid_rows.append({"path": path, "resolution": grid.resolution, "first_update_s": times[0],
                              "update_s": sum(times[1:]) / 2, "every": cfg.occupancy_update_every,
                              "occupied_fraction": float(grid.occupied_fraction())})
        for mode in ("albedo", "shaded"):
            rng = torch.Generator(device=device).manual_seed(0)
            counts = []

            def render_one(cams, lights, mode=mode, rng=rng):
                return render(field, bg, cams, cfg.render_resolution, cfg.samples_per_ray, shading=mode, light_positions=lights,
                              ambient=cfg.ambient, generator=rng, normals=cfg.normals, normal_samples=cfg.normal_samples,
                              occupancy=grid)

            def count(out, counts=counts):
                normals = 0 if out.normals is None else int((out.normals.abs().sum(-1) > 0).sum())
                counts.append((out.weights.shape[0], normals, float(out.opacity.mean())))

            fwd, bwd, peak, saved = time_renders(field, bg, rng, device, reps, warmup, mem, render_one, on_measured=count)
            n = cfg.render_resolution**2 * cfg.samples_per_ray
            rows.append({"path": path, "mode": mode, "resolution": cfg.render_resolution, "samples_per_ray": cfg.samples_per_ray,
                         "fwd_s": sum(fwd) / len(fwd), "bwd_s": sum(bwd) / len(bwd), "saved_mib": saved.get("render", 0) / 2**20,
                         "peak_mib": peak, "reps": reps, "samples": n,
                         "evaluated": sum(c[0] for c in counts) / len(counts), "with_normals": sum(c[1] for c in counts) / len(counts),
                         "mean_opacity": sum(c[2] for c in counts) / len(counts)})
            r = rows[-1]
            print(f"  render {path:9s} {mode:7s}: fwd {r['fwd_s']:.3f}s bwd {r['bwd_s']:.3f}s evaluated {r['evaluated']:.0f}/{n}",
                  file=sys.stderr)
        # Saved-for-backward bytes of one shaded render at the high preset's pixels and samples. The
        # reference path's would be ~20 GiB: scaled from its draft figure (pixels x samples) instead of run.
        hi = PRESETS["high"]
        scale = (hi["render_resolution"] / cfg.render_resolution) ** 2 * hi["samples_per_ray"] / cfg.samples_per_ray
        measured = path != "reference"
        if measured:
            store: dict = {}
            exclude = {p.untyped_storage().data_ptr() for p in list(field.parameters()) + list(bg.parameters())}
            rng = torch.Generator(device=device).manual_seed(1)
            cams = sample_cameras(1, rng, device=device)
            with count_saved(store, "render", exclude):
                out = render(field, bg, cams, hi["render_resolution"], hi["samples_per_ray"], shading="shaded",
                             light_positions=sample_light_positions(cams, rng), ambient=cfg.ambient, generator=rng,
                             normals=cfg.normals, normal_samples=cfg.normal_samples, occupancy=grid)
            del out
            saved_high = store.get("render", 0) / 2**20
        else:
            saved_high = next(r["saved_mib"] for r in rows if r["path"] == path and r["mode"] == "shaded") * scale
        high_rows.append({"path": path, "resolution": hi["render_resolution"], "samples_per_ray": hi["samples_per_ray"],
                          "levels": cfg.hash_levels, "high_levels": hi["hash_levels"], "saved_mib": saved_high,
                          "measured": measured})
        print(f"  render {path:9s} saved at high px/spp: {high_rows[-1]['saved_mib']:.0f} MiB", file=sys.stderr)
    return {"rows": rows, "grid": grid_rows, "high": high_rows, "field": str(field_run) if field_run else "fresh (start blob)",
            "field_step": None if state is None else int(state["step"])}


def tiny_step_compare(preset: str, device: torch.device, steps: int, warmup: int, workdir: Path) -> list[dict]:
    """A whole SDS step with the tests' tiny latent model, per encoding (the NeRF is then most of the cost)."""
    folder = build_model(workdir / "tiny", "tiny")
    rows = []
    for encoding in ("hashgrid", "frequency"):
        trainer, _, _ = make_trainer(folder, preset, device, "fp32", encoding, workdir / f"run-tiny-{encoding}")
        trainer.step = trainer.cfg.albedo_warmup
        totals = []
        for i in range(warmup + steps):
            _, clock = timed_train_step(trainer, shading="shaded")
            if i >= warmup:
                totals.append(clock.total())
        rows.append({"encoding": encoding, "step_s": sum(totals) / len(totals), "steps": steps})
        print(f"  tiny step {encoding}: {rows[-1]['step_s']:.3f}s", file=sys.stderr)
        del trainer
    return rows


def compare_subprocess(args, workdir: Path) -> dict:
    """render_compare + tiny_step_compare in a fresh process: clean heap for the memory figures."""
    extra = ["--field-checkpoint", str(args.field_checkpoint)] if args.field_checkpoint else []
    extra += ["--compare-encodings" if args.compare_encodings else "--no-compare-encodings"]
    out = subprocess.run([sys.executable, __file__, "--compare-only", str(workdir), "--preset", args.preset, "--device", args.device,
                          "--compare-reps", str(args.compare_reps), *extra], check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def export_bench(resolutions: list[int]) -> list[dict]:
    """bench/bench_export.py's own per-case mode (one subprocess per case, its own peak RSS)."""
    rows = []
    for res in resolutions:
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_export.py"), "--case", "sphere", str(res)],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  export sphere {res}^3: {rows[-1]['timings']['total']:.1f}s", file=sys.stderr)
    return rows


def machine_info(device: torch.device) -> dict:
    import diffusers

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem_gib = round(kb / 2**20)
    except (OSError, StopIteration, ValueError):
        pass
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "ram_gib": mem_gib, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()], "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def gpu_estimate(res: dict) -> dict:
    """fp16 CUDA memory for this preset, estimated from CPU fp32 measurements (see docs/BENCHMARKS.md)."""
    size = res["model_size"]
    p = res["params"]
    gib = 2**30
    # The text encoder is freed once the embeddings are cached (Guidance.release_text_encoder): not counted.
    weights = (p["unet"] + p["vae_encoder"]) * 2
    field_state = p["field"] * 4 * 4  # fp32 params + grads + Adam's two moments
    mib = 2**20
    saved_render = res["saved_mib"].get("render", 0) * mib  # fp32 on the GPU too
    saved_vae = res["saved_mib"].get("vae_encode", 0) * mib / 2  # fp16
    unet_transient = res["unet_floor"]["transient_peak_mib"] * mib / 2  # fp16
    # Peak of the backward through the VAE encoder, measured above the step's start; the render's
    # saved tensors are live through it (fp32), the rest is VAE (-> fp16).
    bwd_vae_peak = res["memory"]["phase_peak_mib"].get("backward_guidance", 0) * mib
    render_live = res["memory"]["phase_peak_mib"].get("render_end", 0) * mib
    bwd_vae = max(bwd_vae_peak - render_live, 0) / 2 + render_live
    during_unet = saved_render + saved_vae + unet_transient
    activations = max(during_unet, bwd_vae, res["memory"]["phase_peak_mib"].get("render", 0) * mib)
    context = 0.75 * gib  # CUDA context + cuBLAS/cuDNN workspaces, typical; not measured here
    total = weights + field_state + activations + context
    return {"weights_gib": weights / gib, "field_state_gib": field_state / gib, "saved_render_gib": saved_render / gib,
            "saved_vae_fp16_gib": saved_vae / gib, "unet_transient_fp16_gib": unet_transient / gib,
            "backward_vae_peak_gib": bwd_vae / gib, "activations_gib": activations / gib, "context_gib": context / gib,
            "total_gib": total / gib, "total_plus_20pct_gib": total * 1.2 / gib}


def high_estimate(res: dict) -> list[dict]:
    """Peak GPU memory (fp16 guidance) of a high-preset step per render path, estimated from CPU figures:
    weights (U-Net + the VAE encoder, fp16) + the high preset's NeRF with Adam (fp32) + the larger of
    (render saved at the high preset's px/spp, scaled by its hash levels, + the VAE's saved tensors at
    512² + the U-Net forward's transient) and (render saved + the backward-through-VAE peak), + context."""
    rp = res.get("render_paths")
    if not rp or not rp.get("high"):
        return []
    from engine.config import PRESETS

    hi = PRESETS["high"]
    gib, mib = 2**30, 2**20
    p = res["params"]
    weights = (p["unet"] + p["vae_encoder"]) * 2
    field_params = hi["hash_levels"] * 2**hi["hash_log2_table"] * 2 + 10_000  # tables x 2 features + MLPs
    field_state = field_params * 16
    vae_saved = res["saved_mib"].get("vae_encode", 0) * mib / 2
    unet = res["unet_floor"]["transient_peak_mib"] * mib / 2
    pk = res["memory"]["phase_peak_mib"]
    bwd_vae = max(pk.get("backward_guidance", 0) - pk.get("render_end", 0), 0) * mib / 2
    rows = []
    for h in rp["high"]:
        render = h["saved_mib"] * mib * h["high_levels"] / h["levels"]  # encoding tensors scale with levels (upper bound)
        act = max(render + vae_saved + unet, render + bwd_vae)
        total = weights + field_state + act + 0.75 * gib
        rows.append({"path": h["path"], "render_saved_gib": render / gib, "measured": h.get("measured", True), "weights_gib": weights / gib,
                     "field_state_gib": field_state / gib, "activations_gib": act / gib, "total_gib": total / gib,
                     "total_plus_20pct_gib": 1.2 * total / gib})
    return rows


# --- the run --------------------------------------------------------------------------------------
def run(args) -> dict:
    from engine.guidance import pick_device

    device = pick_device(args.device)
    info = machine_info(device)
    torch.manual_seed(0)
    workdir = Path(tempfile.mkdtemp(prefix="bench_sds_"))
    model_dir = Path(args.model_dir) if args.model_dir else workdir / f"model-{args.model_size}"
    try:
        if not (model_dir / "unet").is_dir():
            t0 = time.perf_counter()
            # A subprocess, so the ~3.4 GB fp32 build does not inflate this process's memory figures.
            subprocess.run([sys.executable, __file__, "--build-only", str(model_dir), "--model-size", args.model_size], check=True)
            print(f"built {args.model_size} model in {time.perf_counter() - t0:.0f}s -> {model_dir}", file=sys.stderr)
        disk = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())
        mem = Mem(device)
        rss_before_load = mem.current()
        variants = parse_variants(args.variants)
        layout, field_state = checkpoint_layout(args.field_checkpoint)
        overrides = dict(layout)
        if args.render_resolution:
            overrides["render_resolution"] = args.render_resolution
        main_path, main_encoder = variants[0]
        args.encoding = overrides.pop("encoding", args.encoding)  # a checkpoint's field fixes its encoding
        trainer, load_s, init_s = make_trainer(model_dir, args.preset, device, args.dtype, args.encoding, workdir / "run",
                                               **overrides, **RENDER_PATHS[main_path])
        load_trained_field(trainer, field_state)
        g = trainer.guidance
        encoders = {"vae": g.vae}
        if any(enc == "tiny" for _, enc in variants):
            encoders["tiny"] = tiny_encoder(model_dir, g)
        g.vae = encoders[main_encoder]
        notes = apply_speed_options(g, args, device)
        after_load = mem.current()
        load_peak = mem.peak()  # before any reset: the high-water mark of loading (VmHWM / CUDA max)
        print(f"loaded in {load_s:.1f}s, trainer init (text embeddings) {init_s:.1f}s; RSS/alloc {after_load:.0f} MiB", file=sys.stderr)
        # First step = the real Trainer.train_step, then the preview, as `python -m engine generate` does.
        t0 = time.perf_counter()
        trainer.train_step()
        _sync(device)
        first_step_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        trainer.write_preview()
        preview_s = time.perf_counter() - t0
        print(f"first step {first_step_s:.1f}s, preview {preview_s:.1f}s", file=sys.stderr)
        # Past the albedo warm-up: time the shading mode 80% of a run's steps use (normals needed).
        trainer.step = max(trainer.step, trainer.cfg.albedo_warmup)
        runners = [(variants[0], trainer)]
        for k, (path, enc) in enumerate(variants[1:], 1):
            other, _, _ = make_trainer(model_dir, args.preset, device, args.dtype, args.encoding, workdir / f"run{k}", guidance=g,
                                       **overrides, **RENDER_PATHS[path])
            load_trained_field(other, field_state)
            other.step = trainer.step
            other.update_occupancy()  # its first (full) grid update, as the main trainer's untimed first step did
            runners.append(((path, enc), other))
        per_variant = {v: [] for v, _ in runners}
        round_floors: list[float] = []
        emb_len = int(trainer.uncond.shape[0])
        # Side by side: one step of each variant in turn, then one bare U-Net call (the floor), so load changes on
        # this shared machine hit steps and floor alike; a floor timed once at the end, minutes later and after
        # tight_malloc (which slows allocation), gave ratios that moved by 2x between runs.
        for i in range(max(args.warmup - 1, 0) + args.steps):
            timed = i >= max(args.warmup - 1, 0)
            for (path, enc), tr in runners:
                g.vae = encoders[enc]
                _, clock = timed_train_step(tr, shading=args.shading)
                if timed:
                    per_variant[(path, enc)].append({**clock.times, "total": clock.total()})
                print(f"{path}-{enc} step {i + 1}: {clock.total():.2f}s " + " ".join(f"{k}={v:.2f}" for k, v in clock.times.items()),
                      file=sys.stderr)
            if timed:
                round_floors.append(unet_floor(g, device, 1, 0, mem, emb_len=emb_len)["mean_s"])
                print(f"U-Net floor (round {i + 1}): {round_floors[-1]:.2f}s; load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        g.vae = encoders[main_encoder]
        steps = per_variant[variants[0]]
        mean = {k: sum(s[k] for s in steps) / len(steps) for k in steps[0]}
        variant_means = {v: {k: sum(s[k] for s in st) / len(st) for k in st[0]} for v, st in per_variant.items()}
        encoder_params = {name: sum(p.numel() for p in mod.parameters()) for name, mod in encoders.items()}
        del runners
        # One more step for memory: per-phase peaks, saved-for-backward bytes. Not timed (tight malloc is slower).
        gc.collect()
        tight = device.type == "cpu" and tight_malloc(mem)
        saved: dict = {}
        _, mclock = timed_train_step(trainer, shading=args.shading, clock=Clock(device, mem), saved=saved)
        step_base = mclock.base
        # Memory of the bare call (after tight_malloc, so its time is not used); the floor's time is the rounds' mean.
        floor = unet_floor(g, device, args.floor_reps, 0, mem, emb_len=emb_len)
        floor.update({"mean_s": sum(round_floors) / len(round_floors), "all_s": round_floors, "interleaved": True})
        print(f"U-Net floor {floor['mean_s']:.2f}s (mean of {len(round_floors)} interleaved calls)", file=sys.stderr)
        field_params = sum(p.numel() for p in trainer.field.parameters()) + sum(p.numel() for p in trainer.background.parameters())
        res = {
            "name": "-".join([args.model_size, args.preset, device.type, args.dtype, args.encoding]
                             + ([f"{main_path}-{main_encoder}"] if args.variants != "fast-vae" else [])
                             + (["cl"] if args.channels_last and device.type == "cuda" else [])
                             + (["compile"] if args.compile and device.type == "cuda" else [])
                             + ([f"attn-{args.attention}"] if args.attention != "sdpa" else [])
                             + ([f"r{args.render_resolution}"] if args.render_resolution else [])),
            "machine": info, "device": str(device), "dtype": args.dtype, "preset": args.preset, "encoding": args.encoding,
            "model_size": args.model_size, "notes": notes, "shading": args.shading or "mixed",
            "render_resolution": trainer.cfg.render_resolution, "samples_per_ray": trainer.cfg.samples_per_ray,
            "vae_input": g.image_size, "model_disk_mib": disk / 2**20,
            "steps_timed": args.steps, "warmup": args.warmup, "steps": steps, "mean": mean, "steps_per_s": 1.0 / mean["total"],
            "guidance_s": mean["vae_encode"] + mean["unet_cfg"], "backward_s": mean["backward_guidance"] + mean["backward_render"],
            "unet_floor": floor, "ratio": mean["total"] / floor["mean_s"],
            "variants": [{"name": f"{p}-{e}", "path": p, "encoder": e, "mean": m, "ratio": m["total"] / floor["mean_s"],
                          "round_ratios": [st["total"] / f for st, f in zip(per_variant[(p, e)], round_floors)],
                          "steps": len(per_variant[(p, e)])} for (p, e), m in variant_means.items()],
            "encoder_params": encoder_params,
            "field": {"checkpoint": args.field_checkpoint, "step": None if field_state is None else int(field_state["step"])},
            "load_s": load_s, "trainer_init_s": init_s, "first_step_s": first_step_s, "preview_s": preview_s,
            "time_to_first_preview_s": load_s + init_s + first_step_s + preview_s,
            "params": {"unet": sum(p.numel() for p in g.unet.parameters()),
                       "vae_encoder": sum(p.numel() for p in g.vae.parameters()) if g.vae is not None else 0,
                       "text_encoder": REAL_TEXT_ENCODER_PARAMS.get(args.model_size, 0), "field": field_params},
            "saved_mib": {k: v / 2**20 for k, v in saved.items() if not k.startswith("_")},
            "memory": {"kind": "cuda_max_allocated" if device.type == "cuda" else "cpu_rss", "tight_malloc": tight,
                       "before_load_mib": rss_before_load, "after_load_mib": after_load, "step_base_mib": step_base,
                       "phase_peak_mib": mclock.peaks, "load_peak_mib": load_peak},
        }
        res["memory"]["step_peak_mib"] = step_base + max(v for k, v in mclock.peaks.items() if not k.endswith("_end"))
        # (VmHWM resets also reset ru_maxrss, so the process peak is the max of what was observed.)
        res["memory"]["process_peak_mib"] = max(load_peak, res["memory"]["step_peak_mib"])
        if device.type == "cpu" and args.model_size != "tiny":
            res["gpu_estimate"] = gpu_estimate(res)
        del trainer, g
        gc.collect()
        if args.compare_encodings or args.compare_paths:
            print("render paths / hash grid vs frequency ...", file=sys.stderr)
            res.update(compare_subprocess(args, workdir))
        if args.export:
            print("mesh export (bench/bench_export.py --case) ...", file=sys.stderr)
            res["export"] = export_bench(args.export_resolutions)
        if device.type == "cpu" and args.model_size != "tiny":
            res["high_estimate"] = high_estimate(res)
        res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        return res
    finally:
        if not args.keep_model:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)


# --- Markdown -------------------------------------------------------------------------------------
def _f(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def markdown(results: list[dict]) -> str:
    results = sorted(results, key=lambda r: (r["device"] != "cpu", r["model_size"], r["name"]))
    L = ["# Benchmarks: one generation's time and memory", "",
         "Generated by `bench/bench_sds.py` (SDS step, U-Net floor, memory, first preview, encodings) which also runs",
         "`bench/bench_export.py --case` for mesh export; per-run raw numbers are in `bench/results/*.json`.",
         "Regenerate: `.venv/bin/python bench/bench_sds.py --model-size sd15 --preset draft --steps 2 --warmup 1`.", "",
         "**Read with care.** The CPU figures come from a 2-core machine shared with other engineers' jobs (load",
         "average recorded per run below): they are noisy, easily ±30%, and timed over few steps (SD-size steps take",
         "tens of seconds here). Weights are random: cost does not depend on their values. The U-Net and VAE have the",
         "published Stable Diffusion 1.5 / 2.1-base architectures and are loaded through `engine.guidance.Guidance`",
         "from a temporary diffusers folder (fp16 safetensors, cast to the run's dtype on load). Text embeddings are",
         "cached: the text encoder runs once per view label (4 labels + the negative prompt) per run, never per step, so",
         "the benchmark uses a 1-layer CLIP with the real hidden size and 77 tokens; its time is in 'load + init' only.",
         "Steps are timed past the albedo warm-up in `shaded` mode (normals needed), the cost of 80% of a run's",
         "steps. Rows named without a render path were measured with the first engine's render (central-difference",
         "normals of every sample, no empty-space skipping: 7 field evaluations per sample); rows named `...-fast-vae`",
         "etc. come from the side-by-side runs described below.", ""]
    if NOTES.exists():
        L += [NOTES.read_text().strip(), ""]
    L += ["## Seconds per SDS step", "",
          "render = NeRF forward; VAE enc = render resized to 512² and encoded (latent models); U-Net CFG = one",
          "batch-2 U-Net forward (uncond + cond) under no_grad plus the guidance arithmetic; bwd guid. = backward",
          "through the VAE encoder to the image; bwd render = backward through the render to the NeRF; optim = Adam.",
          "U-Net floor = the bare U-Net forward, batch 2, 64×64 latents, 77 tokens, timed once per round between the "
          "steps (rows from 2026-11-30 06:00 on; older rows timed it once after the steps); ratio = step / floor.", "",
          "| run | device | dtype | render px, spp | steps | render | VAE enc | U-Net CFG | loss | bwd guid. | bwd render | optim | **s/step** | steps/s | U-Net floor | ratio |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["mean"]
        L.append(f"| {r['name']} | {r['device']} | {r['dtype']} | {r['render_resolution']}, {r['samples_per_ray']} | {r['steps_timed']} | "
                 + " | ".join(_f(m[k]) for k in SECTIONS) + f" | **{_f(m['total'])}** | {_f(r['steps_per_s'], 3)} | "
                 f"{_f(r['unet_floor']['mean_s'])} | {_f(r['ratio'])} |")
    if not any(r["device"].startswith("cuda") for r in results):
        L.append("| GPU | cuda | fp16 / bf16 | 64, 48 | - | pending: no GPU lent to this task | | | | | | | | | | |")
    side = [r for r in results if len(r.get("variants", [])) > 1]
    if side:
        L += ["", "### Render paths and latent encoders side by side", "",
              "One run, one loaded U-Net, the variants' steps interleaved (one step of each in turn) so load changes on",
              "the shared machine hit all alike. reference = the first engine's render (no occupancy grid, central-",
              "difference normals of every sample); fast = occupancy grid + forward-difference normals of samples",
              "with weight > 1e-3 (the default); vae = the model's VAE encoder; tiny = an AutoencoderTiny (TAESD",
              "config, random weights). Fields: the trained checkpoint named under 'Machines and settings'.", "",
              "| run | variant | render | VAE enc | U-Net CFG | bwd guid. | bwd render | **s/step** | U-Net floor | **ratio** |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in side:
            for v in r["variants"]:
                m = v["mean"]
                L.append(f"| {r['name']} | {v['name']} | {_f(m['render'])} | {_f(m['vae_encode'])} | {_f(m['unet_cfg'])} | "
                         f"{_f(m['backward_guidance'])} | {_f(m['backward_render'])} | **{_f(m['total'])}** | "
                         f"{_f(r['unet_floor']['mean_s'])} | **{_f(v['ratio'])}** |")
    rp = [r for r in results if r.get("render_paths")]
    if rp:
        L += ["", "## Render paths on a trained field", "",
              "Forward + backward of one view (shaded: normals needed) at the preset's pixels and samples per ray, on the",
              "field named below; 'evaluated' = samples the field was queried at (of all px² × spp), 'normals' = samples",
              "that got a normal. Speed-up = reference fwd+bwd / fast fwd+bwd in the same mode.", ""]
        for r in rp:
            q = r["render_paths"]
            L += [f"{r['name']} (field: {q['field']}, step {q.get('field_step')}):", "",
                  "| path | mode | px, spp | fwd s | bwd s | fwd+bwd s | speed-up | evaluated | normals | saved MiB | peak MiB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
            ref = {row["mode"]: row["fwd_s"] + row["bwd_s"] for row in q["rows"] if row["path"] == "reference"}
            for row in q["rows"]:
                tot = row["fwd_s"] + row["bwd_s"]
                L.append(f"| {row['path']} | {row['mode']} | {row['resolution']}, {row['samples_per_ray']} | {_f(row['fwd_s'], 3)} | "
                         f"{_f(row['bwd_s'], 3)} | {_f(tot, 3)} | {_f(ref.get(row['mode'], tot) / tot, 1)}x | "
                         f"{row['evaluated']:.0f} / {row['samples']} | {row['with_normals']:.0f} | {row['saved_mib']:.0f} | {row['peak_mib']:.0f} |")
            for gr in q["grid"]:
                L.append(f"\nOccupancy grid {gr['resolution']}³: first update {_f(gr['first_update_s'], 2)} s, later updates "
                         f"{_f(gr['update_s'], 2)} s every {gr['every']} steps ({_f(gr['update_s'] / gr['every'], 3)} s/step), "
                         f"occupied {100 * gr['occupied_fraction']:.0f}% of cells.")
            L.append("")
    he = [r for r in results if r.get("high_estimate")]
    if he:
        L += ["", "### Estimate: peak GPU memory of a high-preset step (fp16) — an estimate, not a measurement", "",
              "From the CPU figures: U-Net + latent encoder weights (fp16; the text encoder is freed after caching), the high",
              "preset's NeRF (16 levels × 2^19 × 2 features) with grads and Adam moments (fp32), activations = the larger of",
              "(render saved at 128 px × 96 spp, measured on the trained field and scaled by 16/12 hash levels, + the VAE's",
              "saved tensors at 512² ÷ 2 + the U-Net transient ÷ 2) and (render saved + backward-through-VAE peak ÷ 2), plus",
              "0.75 GiB context; +20% for fragmentation.", "",
              "| run | render path | render saved | weights | NeRF + Adam | activations | **total** | +20% |", "|---|---|---|---|---|---|---|---|"]
        for r in he:
            for e in r["high_estimate"]:
                how = "" if e.get("measured", True) else " (scaled from draft)"
                L.append(f"| {r['name']} | {e['path']} | {e['render_saved_gib']:.2f}{how} | {e['weights_gib']:.2f} | {e['field_state_gib']:.2f} | "
                         f"{e['activations_gib']:.2f} | **{e['total_gib']:.2f}** | {e['total_plus_20pct_gib']:.2f} |")
        L.append("\n(GiB.)")
    L += ["", "Where the time goes (share of s/step):", ""]
    for r in results:
        m = r["mean"]
        parts = ", ".join(f"{k} {100 * m[k] / m['total']:.0f}%" for k in SECTIONS)
        L.append(f"- {r['name']}: {parts}; guidance (VAE enc + U-Net) {_f(r['guidance_s'])} s, backward {_f(r['backward_s'])} s.")
    L += ["", "## Time to first preview", "",
          "What a user waits for before the first image: model load (from a warm page cache) + Trainer init (text",
          "embeddings for the 5 prompts) + the first step (albedo mode, first-call overheads) + `Trainer.write_preview`",
          "(4 views × textured/textureless renders at the training resolution).", "",
          "| run | model on disk MiB | load s | init s | first step s | preview s | **first preview s** |", "|---|---|---|---|---|---|---|"]
    for r in results:
        L.append(f"| {r['name']} | {r['model_disk_mib']:.0f} | {_f(r['load_s'], 1)} | {_f(r['trainer_init_s'], 1)} | {_f(r['first_step_s'], 1)} | "
                 f"{_f(r['preview_s'], 1)} | **{_f(r['time_to_first_preview_s'], 1)}** |")
    L += ["", "## Memory", "",
          "CPU: RSS in MiB. 'phase peak' = highest RSS above the step's starting RSS during that phase, measured on one",
          "extra step with glibc's mmap threshold pinned to 64 KiB (freed tensors leave RSS at once) and VmHWM reset",
          "before each phase. 'saved' = bytes autograd keeps for backward (storages once, parameters excluded).", "",
          "Phase peaks are above the step's starting RSS, so each includes what earlier phases left live.", "",
          "| run | params U-Net / VAE / NeRF | RSS after load (load peak) | step start | render peak | VAE enc peak | U-Net peak | bwd guid. peak | bwd render peak | saved: render / VAE | U-Net floor transient | step peak (absolute) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        mm, pk, p = r["memory"], r["memory"]["phase_peak_mib"], r["params"]
        L.append(f"| {r['name']} | {p['unet'] / 1e6:.0f}M / {p['vae_encoder'] / 1e6:.1f}M / {p['field'] / 1e6:.2f}M | "
                 f"{mm['after_load_mib']:.0f} ({mm.get('load_peak_mib', float('nan')):.0f}) | "
                 f"{mm['step_base_mib']:.0f} | " + " | ".join(f"{pk.get(k, 0):.0f}" for k in
                                                              ("render", "vae_encode", "unet_cfg", "backward_guidance", "backward_render"))
                 + f" | {r['saved_mib'].get('render', 0):.0f} / {r['saved_mib'].get('vae_encode', 0):.0f} | "
                 f"{r['unet_floor']['transient_peak_mib']:.0f} | {mm['step_peak_mib']:.0f} |")
    est = [r for r in results if "gpu_estimate" in r]
    if est:
        L += ["", "### Estimate: does the draft preset fit an 8 GB GPU (fp16)? — an estimate, not a measurement", "",
              "No GPU was available, so this is computed from the CPU fp32 measurements above, not measured on CUDA:",
              "- weights: U-Net + VAE (parameter count × 2 bytes) + the *real* text encoder's published size × 2 bytes",
              "  (CLIP ViT-L 123M for 1.5, OpenCLIP ViT-H 340M for 2.1; the engine keeps it on the device after caching);",
              "- NeRF: parameters × 16 bytes (fp32 weights, grads, Adam moments; it trains in fp32 on every device);",
              "- activations: the largest of (a) render saved tensors (fp32) + VAE saved tensors (÷2 for fp16) + the U-Net",
              "  forward's transient peak (÷2), and (b) the backward-through-VAE peak (VAE part ÷2, render part as is);",
              "- plus 0.75 GiB for the CUDA context and cuBLAS/cuDNN workspaces (typical, not measured), and +20% for",
              "  allocator fragmentation as the upper figure. Halving assumes every VAE/U-Net activation is fp16; with",
              "  SDPA (flash / memory-efficient) attention the 64×64 U-Net never materialises 4096² attention maps.", "",
              "| run | weights | NeRF + Adam | render saved (fp32) | VAE saved (fp16) | U-Net transient (fp16) | bwd VAE peak | activations | context | **total** | +20% |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in est:
            e = r["gpu_estimate"]
            L.append(f"| {r['name']} | {e['weights_gib']:.2f} | {e['field_state_gib']:.3f} | {e['saved_render_gib']:.2f} | "
                     f"{e['saved_vae_fp16_gib']:.2f} | {e['unet_transient_fp16_gib']:.2f} | {e['backward_vae_peak_gib']:.2f} | "
                     f"{e['activations_gib']:.2f} | {e['context_gib']:.2f} | **{e['total_gib']:.2f}** | {e['total_plus_20pct_gib']:.2f} |")
        L += ["", "(GiB.) If a GPU run shows more than this, the levers, largest first: `--dtype fp16` (the default on CUDA)",
              "for the VAE encoder too — it is the biggest activation consumer because the 64 px render is upsampled to",
              "512² before encoding; a lower `--render-resolution` does not shrink the VAE's input (always 512²) but does",
              "shrink the render's saved tensors; `--samples-per-ray` likewise; attention slicing",
              "(`unet.set_attention_slice('auto')`, `bench_sds.py --attention sliced`) only matters without SDPA; moving",
              "the text encoder off the GPU after the embeddings are cached frees its weights (0.25 / 0.68 GB).",
              "Measure on a GPU with the commands below (`memory` then reports `torch.cuda.max_memory_allocated`)."]
    rc = [r for r in results if r.get("render_compare")]
    if rc:
        L += ["", "## Hash grid vs frequency encoding (plain NeRF MLP)", "",
              "Render forward + backward of one view at the preset's resolution (pure-PyTorch hash grid: 12 levels × 2",
              "features, table 2^15 for draft; frequency: 8 octaves + input, same 64-wide MLP), and a whole SDS step with",
              "the tests' tiny latent model, where the NeRF dominates.", ""]
        for r in rc:
            L += [f"{r['name']}:", "", "| encoding | mode | px, spp | NeRF params | fwd s | bwd s | saved MiB | peak MiB |", "|---|---|---|---|---|---|---|---|"]
            for row in r["render_compare"]:
                L.append(f"| {row['encoding']} | {row['mode']} | {row['resolution']}, {row['samples_per_ray']} | {row['field_params']:,} | "
                         f"{_f(row['fwd_s'], 3)} | {_f(row['bwd_s'], 3)} | {row['saved_mib']:.0f} | {row['peak_mib']:.0f} |")
            L += ["", "| encoding | tiny-model SDS step s (shaded) |", "|---|---|"]
            for row in r.get("tiny_step_compare", []):
                L.append(f"| {row['encoding']} | {_f(row['step_s'], 3)} |")
            L.append("")
        L.append("Per step the hash grid is not cheaper than the frequency MLP in pure PyTorch (gathers of 8 corners × levels);"
                 " its advantage in the paper-style setups is convergence in far fewer steps, which this table does not measure.")
    ex = [r for r in results if r.get("export")]
    if ex:
        L += ["", "## Mesh export (from bench/bench_export.py)", "",
              "Analytic sphere, default export settings; the full per-stage table for sphere and torus is in",
              "`docs/BENCHMARKS-export.md`.", "", "| run | grid | faces | total s | of which uv (xatlas) s | peak RSS MiB |", "|---|---|---|---|---|---|"]
        for r in ex:
            for e in r["export"]:
                L.append(f"| {r['name']} | {e['resolution']}^3 | {e['faces']} | {_f(e['timings']['total'], 1)} | "
                         f"{_f(e['timings'].get('uv'), 1)} | {e['rss_peak_mib']:.0f} |")
    L += ["", "## Machines and settings", ""]
    for r in results:
        mi = r["machine"]
        L.append(f"- {r['name']}: {mi['date']}; {mi.get('gpu') or mi['cpu']}, {mi['logical_cpus']} logical CPUs, {mi['ram_gib']} GiB RAM, "
                 f"torch threads {mi['torch_threads']}; load average (1/5/15 min) at start {mi['loadavg_start']}, at end "
                 f"{mi.get('loadavg_end')}; python {mi['python']}, torch {mi['torch']}, diffusers {mi['diffusers']}; dtype {r['dtype']}; "
                 f"preset {r['preset']}, encoding {r['encoding']}, {r['steps_timed']} steps timed after {r['warmup']} warm-up; "
                 f"{'; '.join(r['notes'])}.")
    L += ["", "## GPU: pending (no GPU lent to this task)", "",
          "Run on a CUDA machine (each writes `bench/results/<name>.json` and regenerates this file):", "", "```",
          ".venv/bin/python bench/bench_sds.py --device cuda --dtype fp16 --model-size sd15 --preset draft --steps 20 --warmup 3",
          ".venv/bin/python bench/bench_sds.py --device cuda --dtype fp16 --model-size sd15 --preset draft --steps 20 --warmup 3 --channels-last --compile",
          ".venv/bin/python bench/bench_sds.py --device cuda --dtype bf16 --model-size sd21 --preset draft --steps 20 --warmup 3 --channels-last",
          ".venv/bin/python bench/bench_sds.py --device cuda --dtype fp16 --model-size sd21 --preset standard --steps 20 --warmup 3 --no-export",
          "```", "",
          "`--compile` wraps the U-Net in `torch.compile` (mode `--compile-mode`, default `max-autotune-no-cudagraphs`;",
          "the warm-up steps absorb compile time); `--channels-last` converts U-Net and VAE to channels_last; both are",
          "skipped with a note on CPU. Attention is SDPA (diffusers' default) unless `--attention classic|sliced`.", ""]
    return "\n".join(L)


def load_results() -> list[dict]:
    """This benchmark's results in bench/results (other benchmarks keep their JSON there too)."""
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    return [r for r in results if "device" in r and "mean" in r and "unet_floor" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="draft", choices=["draft", "standard", "high"])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="guidance model dtype (the NeRF is fp32)")
    ap.add_argument("--steps", type=int, default=None, help="steps timed (default 2 at SD size, 10 tiny)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (the first is Trainer.train_step + preview)")
    ap.add_argument("--model-size", default="sd15", choices=["sd15", "sd21", "tiny"])
    ap.add_argument("--encoding", default="hashgrid", choices=["hashgrid", "frequency"])
    ap.add_argument("--shading", default="shaded", choices=["albedo", "shaded", "textureless", "mixed"],
                    help="shading mode of timed steps; 'mixed' = the trainer's random choice")
    ap.add_argument("--render-resolution", type=int, default=None, help="override the preset's render resolution")
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "classic", "sliced"])
    ap.add_argument("--channels-last", action="store_true", help="CUDA only; skipped on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the U-Net; CUDA only, skipped on CPU")
    ap.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    ap.add_argument("--floor-reps", type=int, default=None, help="bare U-Net forwards for the floor's memory figure (default 1 at SD size, 10 tiny); its time is one call per "
                         "timed round, interleaved with the steps")
    ap.add_argument("--compare-encodings", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--compare-paths", action=argparse.BooleanOptionalAction, default=True,
                    help="reference vs fast render path, forward + backward (in a subprocess, with the encodings comparison)")
    ap.add_argument("--field-checkpoint", metavar="RUN_DIR", default=None,
                    help="a trained run folder whose field the render comparisons and timed steps use (not the start blob)")
    ap.add_argument("--variants", default="fast-vae",
                    help="comma list of PATH-ENCODER (PATH: fast|reference, ENCODER: vae|tiny), timed side by side, steps "
                         "interleaved; the first is the main row. e.g. reference-vae,fast-vae,fast-tiny")
    ap.add_argument("--compare-reps", type=int, default=2, help="timed reps per encoding (after 1 warm-up)")
    ap.add_argument("--export", action=argparse.BooleanOptionalAction, default=True, help="run bench_export.py cases")
    ap.add_argument("--export-resolutions", type=lambda s: [int(x) for x in s.split(",")], default=[128, 256])
    ap.add_argument("--model-dir", default=None, help="reuse (or create) the generated model folder here")
    ap.add_argument("--keep-model", action="store_true", help="keep the temporary folder (model weights) at the end")
    ap.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true", help="print only; write neither bench/results nor --out")
    ap.add_argument("--build-only", metavar="FOLDER", help=argparse.SUPPRESS)
    ap.add_argument("--markdown-only", action="store_true", help="only regenerate --out from bench/results/*.json")
    ap.add_argument("--compare-only", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        build_model(Path(args.build_only), args.model_size)
        return
    if args.markdown_only:
        md = markdown(load_results())
        Path(args.out).write_text(md)
        print(md)
        return
    if args.compare_only:
        from engine.guidance import pick_device

        device = pick_device(args.device)
        mem = Mem(device)
        if device.type == "cpu":
            tight_malloc(mem)
        paths = render_path_compare(args.preset, device, args.compare_reps, 1, mem, args.field_checkpoint)
        rows = render_compare(args.preset, device, args.compare_reps, 1, mem) if args.compare_encodings else []
        tiny = tiny_step_compare(args.preset, device, args.compare_reps, 1, Path(args.compare_only)) if args.compare_encodings else []
        print(json.dumps({"render_paths": paths, "render_compare": rows, "tiny_step_compare": tiny}))
        return
    sd = args.model_size != "tiny"
    args.steps = args.steps or (2 if sd else 10)
    args.floor_reps = args.floor_reps or (1 if sd else 10)
    args.shading = None if args.shading == "mixed" else args.shading
    res = run(args)
    text = json.dumps(res, indent=1)
    if args.no_write:
        print(text)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{res['name']}.json").write_text(text)
    md = markdown(load_results())
    Path(args.out).write_text(md)
    print(md)


if __name__ == "__main__":
    main()

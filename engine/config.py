"""One dataclass describes a job; presets fill it; validation turns bad input into clear errors.

Every field can be overridden from the CLI (explicit flags for the common ones, ``--set KEY=VALUE``
for the rest), and the resolved config is written to the run folder so a run can be inspected,
resumed and re-exported exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import schedule
from .errors import ConfigError
from .models import default_model, latent_encoders

MAX_SEED = 2**63 - 1  # torch and numpy seed with 64-bit integers
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,2})?)$")
MAX_PROMPT_CHARS = 300  # CLIP sees 77 tokens; far longer text is a mistake (a pasted file), not a prompt.
DEFAULT_MODEL = default_model()  # engine/known_models.json "default"


@dataclass
class JobConfig:
    """One job. The defaults are the recipe for latent models (Stable Diffusion, the default model);
    engine/recipe.py holds what pixel-space models change and resolves a config for a loaded model;
    docs/RECIPE.md is the same recipe as a table, with the references' values and a reason for each."""

    prompt: str = ""
    negative_prompt: str = ""
    model: str = DEFAULT_MODEL
    preset: str = "standard"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto | fp32 | fp16 | bf16 (guidance model only; the NeRF trains in fp32)
    offline: bool = False  # never touch the network (also honoured: HF_HUB_OFFLINE=1)

    # optimisation
    steps: int = 5000
    batch_size: int = 1
    lr: float = 1e-2  # hash-grid tables; the MLP heads use lr * mlp_lr_scale
    mlp_lr_scale: float = 1.0  # threestudio: one lr (0.01) for the grid and its MLP
    # SDS
    guidance_scale: float | None = None  # None: the model family's default (see guidance.default_guidance_scale)
    # A different guidance for the high-noise timesteps t > high_noise_t (a share of the model's T);
    # None: guidance_scale at every t. Strong guidance at high noise exaggerates what sets the prompt's
    # object apart: the builtin prior's sphere comes out 1.17x too large, its cylinder too tall
    # (docs/SDS_SHAPES.md, the SDS-force probe). It takes a schedule, as the settings below, to ease it over the run.
    high_noise_guidance_scale: float | str | None = None
    high_noise_t: float = 0.5
    # Settings typed ``float | str`` (or ``float | str | None``) take a schedule: a number, or START->END@FROM:TO (engine/schedule.py).
    # The recipe per model family (engine/recipe.py, docs/RECIPE.md) sets most of what follows.
    t_min: float | str = 0.02
    t_max: float | str = 0.98
    t_anneal: bool = False  # shorthand: t_max ramps linearly to t_anneal_to over the whole run
    t_anneal_to: float = 0.5
    # rendering
    render_resolution: int = 64
    samples_per_ray: int = 64
    bound: float = 1.0
    encoding: str = "hashgrid"  # hashgrid | frequency
    frequency_bands: int = 8  # sinusoidal encoding: octaves 2^0..2^(bands-1) (fewer: smoother, no terracing)
    # share of the sinusoidal bands that are live, coarse first, the next fading in (Nerfies' window);
    # a schedule such as 0->1@0:0.5 anneals the field from smooth to detailed (1: every band throughout)
    frequency_band_fraction: float | str = 1.0
    hash_levels: int = 12
    hash_log2_table: int = 16
    hash_max_resolution: int = 1024  # finest hash-grid level (grid cells across the bounding cube)
    # share of the hash grid's levels that are live, coarse first (threestudio's progressive grid)
    hash_level_fraction: float | str = "0.5->1@0.2:0.6"
    hidden_dim: int = 64
    blob_density: float = 10.0
    blob_radius: float = 0.5
    # share of the blob's positive core (inside blob_radius) that is kept; a schedule such as 1->0@0.2:0.6
    # fades the core out once the field has formed an object, so it stops pulling the shape round and
    # filling holes; the negative shell outside stays (without it the field would fill with fog)
    blob_core: float | str = 1.0
    # what the field starts from: ball (the blob above) | ring (a torus about +Y, for holed objects) |
    # auto (each for start_probe_steps steps; the prior keeps the one it finds the prompt explains
    # best, engine/start_shape.py). A few hundred SDS steps do not change the start's topology.
    start_shape: str = "ball"
    start_probe_steps: int = 50
    ambient: float = 0.1
    background: str = "learned"  # learned (paper: MLP on ray direction) | white (constant; for white-background priors)
    random_background: float = 0.5  # share of steps that composite over a random solid colour instead (stable-dreamfusion: 0.5)
    background_lr_scale: float = 0.1  # the background MLP's lr = lr * background_lr_scale
    # normals from the density (engine/render/query.py): forward_difference (3 density evaluations) |
    # finite_difference (central, 6; the first engine's) | analytic (autograd; double backward)
    normals: str = "forward_difference"
    normal_samples: str = "weighted"  # weighted: only samples whose weight can show | all (the first engine's)
    # empty-space skipping (engine/occupancy.py); off + normals=finite_difference + normal_samples=all is
    # the first engine's render path, kept for comparison (bench_sds.py --variants reference-vae,fast-vae)
    occupancy_grid: bool = True
    occupancy_resolution: int = 0  # cells per axis; 0: as many as samples_per_ray (cell ~ sample spacing)
    occupancy_update_every: int = 16  # steps between grid updates
    # packing the samples to evaluate (engine/render/packing.py): exact (nonzero(): a host sync per pack
    # on a GPU) | fixed (fixed capacity, sized every few steps: no sync) | auto (fixed except on the CPU)
    packing: str = "auto"
    compile_field: bool = False  # torch.compile the field's encoding + MLP (needs a working inductor backend)
    # latent models only: "vae" (the model's own VAE encoder) or a folder / hub id of a diffusers
    # AutoencoderTiny (TAESD family; engine/known_models.json lists one for SD 1.x/2.x) whose ~1M-parameter encoder
    # the SDS gradient then goes back through instead of the VAE's 34M
    latent_encoder: str = "vae"
    # share of renders per shading mode (normalised each step); these start albedo-only for the first
    # 20% of the run (threestudio's ambient-only steps; the paper: geometry needs a rough colour before
    # textureless renders carry signal). albedo_warmup forces that many albedo-only steps first.
    albedo_ratio: float | str = "1->0.25@0.2:0.2"
    shaded_ratio: float | str = "0->0.375@0.2:0.2"
    textureless_ratio: float | str = "0->0.375@0.2:0.2"
    albedo_warmup: int = 0
    # cameras (distance in units of the bounding radius; focal in units of image width)
    elevation_min: float = -10.0
    elevation_max: float = 45.0
    distance_min: float = 1.5
    distance_max: float = 2.0
    focal_min: float = 0.7
    focal_max: float = 1.35
    overhead_elevation: float = 60.0
    uniform_sphere_rate: float = 0.5  # share of cameras whose elevation is uniform on the sphere, not in angle
    # view-dependent prompting: "labels" (one embedding per front/side/back/overhead label) or
    # "interpolate" (stable-dreamfusion: blend front->side->back embeddings by azimuth)
    view_embedding: str = "interpolate"
    perp_neg: bool = False  # Perp-Neg: other views' prompts as perpendicular negative guidance (Janus)
    # regularisers
    orientation_weight: float | str = "10->1000@0:0.5"
    # orientation term averaged over the rays that hit something (threestudio) or over all rays
    orientation_average: str = "nonempty_rays"
    opacity_weight: float | str = 1.0  # sqrt(opacity² + 0.01), threestudio's "sparsity" term
    # binary entropy of each ray's opacity (stable-dreamfusion's lambda_entropy): pushes rays to fully
    # opaque or empty, so the object has a crisp edge that one surface level can follow
    entropy_weight: float | str = 0.0
    # 3D normal smoothness (threestudio's lambda_3d_normal_smooth): normals at visible samples vs. at a
    # point normal_smooth_jitter away; penalises bumps too small for the prior's renders to show
    normal_smooth_weight: float | str = 0.0
    normal_smooth_jitter: float = 0.03
    # None: the squared normal difference d² (threestudio). A number c: c·d²/(d² + c), the same for gentle
    # bumps (d² << c) but at most c per pair, so an edge the prompt wants (a cube's) is not rounded away
    normal_smooth_cap: float | None = None
    # output
    preview_every: int = 250
    preview_views: int = 4
    checkpoint_every: int = 250
    mesh_resolution: int = 256
    texture_size: int = 1024
    iso: float | None = None  # None: automatic, from the rendered opacity (engine/mesh/iso.py)
    # with the automatic level: carve the surface to the rendered silhouettes (engine/mesh/hull.py)
    # auto (where no single level matches them) | on | off
    silhouette_carve: str = "auto"
    target_faces: int | None = 40_000  # polygon budget of the exported mesh (None: no decimation)
    export_obj: bool = False
    export_at_end: bool = True
    # mesh refinement after the export (engine/refine.py, docs/RECIPE.md): SDS through rasterised renders
    # moves the exported mesh's vertices and trains the albedo on; 0 steps turns it off
    refine_steps: int = 0
    refine_lr: float = 0.0005  # Adam step of the vertex offsets, in units of the bound
    refine_laplacian_weight: float = 1000.0  # uniform Laplacian (mean squared), per unit of mean edge length squared
    refine_normal_weight: float = 10.0  # normal consistency: mean 1 - cos between neighbouring faces
    refine_smooth_iterations: int = 100  # low-pass passes over the mesh applied to the offsets (engine/refine.py)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "JobConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        # A run folder written before a setting existed ran without it: resume it that way.
        values = {k: v for k, v in ADDED_WITH_RECIPE.items() if k not in data}
        values.update({k: v for k, v in data.items() if k in known})
        return cls(**values)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2))


# Settings added with the SD recipe (docs/RECIPE.md) and the value that means "as before they existed".
ADDED_WITH_RECIPE = dict(
    hash_level_fraction=1.0, random_background=0.0, background_lr_scale=0.1, uniform_sphere_rate=0.0,
    view_embedding="labels", perp_neg=False, orientation_average="all_rays", refine_steps=0,
)


# Presets: what changes between a quick look and a final asset. "draft" is sized to fit an 8 GB GPU
# with Stable Diffusion in fp16; "high" follows the paper's 15k steps.
PRESETS: dict[str, dict] = {
    "draft": dict(steps=1500, render_resolution=64, samples_per_ray=48, hash_log2_table=15,
                  mesh_resolution=128, texture_size=512, target_faces=20_000, preview_every=100, checkpoint_every=250),
    "standard": dict(steps=5000, render_resolution=64, samples_per_ray=64, hash_log2_table=16,
                     mesh_resolution=256, texture_size=1024, target_faces=40_000, preview_every=250, checkpoint_every=500),
    "high": dict(steps=15000, render_resolution=128, samples_per_ray=96, hash_log2_table=19, hash_levels=16,
                 mesh_resolution=384, texture_size=2048, target_faces=100_000, preview_every=500, checkpoint_every=1000),
}


def build_config(preset: str = "standard", **overrides) -> JobConfig:
    """A preset, then the caller's overrides (None means "not given"), then validation."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(JobConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known settings: {', '.join(sorted(known))}")
    cfg = JobConfig(preset=preset, **values)
    validate(cfg)
    return cfg


def parse_set_option(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` from ``--set``, with VALUE converted to the field's type."""
    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    fields = {f.name: f for f in dataclasses.fields(JobConfig)}
    if key not in fields:
        raise ConfigError(f"--set: unknown setting {key!r}; known settings: {', '.join(sorted(fields))}")
    default = getattr(JobConfig(), key)
    if raw.lower() in ("none", "null") and fields[key].default is None:  # optional settings: iso, high_noise_guidance_scale, ...
        return key, None
    if key in SCHEDULE_FIELDS:  # a number, or a ramp kept as text (checked here for a clear message)
        try:
            return key, float(raw)
        except ValueError:
            schedule.parse(raw, f"--set {key}")
            return key, raw.strip()
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return key, raw.lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return key, int(raw)
        if isinstance(default, float) or default is None:
            return key, float(raw)
        return key, raw
    except ValueError:
        raise ConfigError(f"--set {key}: cannot read {raw!r} as {type(default).__name__}") from None


def check_device_name(device) -> None:
    if not isinstance(device, str) or not DEVICE_PATTERN.match(device):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")


def _check_types(cfg: JobConfig) -> None:
    """Each field has its default's type (a hand-edited config.json or a model's defaults can hold
    anything); numbers must be finite (NaN passes every `<` check, inf most of them)."""
    for f in dataclasses.fields(cfg):
        value, default = getattr(cfg, f.name), f.default
        if value is None and "None" in str(f.type):  # optional settings: guidance_scale, iso, ...
            continue
        if f.name in SCHEDULE_FIELDS:  # a number or a schedule's text (checked by validate_recipe_settings)
            ok = isinstance(value, (int, float, str)) and not isinstance(value, bool)
            want = "a number or a schedule START->END@FROM:TO"
        elif default is None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            want = "a number or none"
        elif isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
        elif isinstance(default, float):
            ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        else:
            ok, want = isinstance(value, str), "text"
        if not ok:
            raise ConfigError(f"setting {f.name} must be {want}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"setting {f.name} must be a finite number, got {value!r}")


def validate(cfg: JobConfig) -> None:
    """Raise ConfigError with a message naming the setting and what to do. Runs before the model
    loads and before any folder is made, so bad input never costs a run or leaves a folder behind."""
    _check_types(cfg)
    prompt = (cfg.prompt or "").strip()
    if not prompt:
        raise ConfigError("the prompt is empty: describe the object to make, e.g. \"a ceramic mug\"")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ConfigError(
            f"the prompt is {len(prompt)} characters long; keep it under {MAX_PROMPT_CHARS} "
            "(the text encoder only reads about 75 words)"
        )
    if len(cfg.negative_prompt) > MAX_PROMPT_CHARS:
        raise ConfigError(f"the negative prompt is longer than {MAX_PROMPT_CHARS} characters")
    for name, text in (("prompt", prompt), ("negative prompt", cfg.negative_prompt)):
        bad = sorted({repr(c) for c in text if not c.isprintable() and c not in " \t"})
        if bad:
            raise ConfigError(f"the {name} contains control characters ({', '.join(bad)}); type plain text")
    cfg.prompt = prompt

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    need(cfg.preset in PRESETS, f"unknown preset {cfg.preset!r}: choose one of {', '.join(PRESETS)}")
    need(0 <= cfg.seed <= MAX_SEED, f"seed must be a whole number from 0 to 2**63-1, got {cfg.seed}")

    need(cfg.steps > 0, f"steps must be a positive number of optimisation steps, got {cfg.steps}")
    need(cfg.steps <= 1_000_000, f"steps={cfg.steps} is far beyond any useful run (the paper used 15000)")
    need(0 <= cfg.refine_steps <= 1_000_000, f"refine steps must be a whole number >= 0 (0 turns the mesh refinement "
         f"off), got {cfg.refine_steps}")
    need(0 < cfg.refine_lr <= 1.0, f"refine_lr must be in (0, 1] (units of the bound), got {cfg.refine_lr}")
    need(cfg.refine_laplacian_weight >= 0 and cfg.refine_normal_weight >= 0,
         "refine_laplacian_weight and refine_normal_weight must be >= 0")
    need(0 <= cfg.refine_smooth_iterations <= 1000, f"refine_smooth_iterations must be 0-1000, got {cfg.refine_smooth_iterations}")
    need(cfg.batch_size >= 1, "batch_size must be at least 1")
    need(cfg.lr > 0 and cfg.mlp_lr_scale > 0, "lr and mlp_lr_scale must be positive")
    need(cfg.iso is None or cfg.iso > 0, f"iso (the surface's density level) must be positive, got {cfg.iso}")
    need(cfg.bound > 0 and cfg.blob_radius > 0, "bound and blob_radius must be positive")
    need(1 <= cfg.hidden_dim <= 1024, "hidden_dim must be between 1 and 1024")
    need(cfg.albedo_warmup >= 0, "albedo_warmup must be >= 0")
    need(-90 <= cfg.overhead_elevation <= 90, "overhead_elevation must lie in [-90, 90] degrees")
    need(cfg.guidance_scale is None or cfg.guidance_scale >= 0, "guidance scale must be >= 0 (the paper used 100)")
    need(0.0 < cfg.high_noise_t < 1.0,
         f"high_noise_t is the share of the noise schedule above which high_noise_guidance_scale applies, in (0, 1), got {cfg.high_noise_t}")
    need(16 <= cfg.render_resolution <= 1024, "render resolution must be between 16 and 1024 pixels")
    need(4 <= cfg.samples_per_ray <= 1024, "samples per ray must be between 4 and 1024")
    need(cfg.normals in ("forward_difference", "finite_difference", "analytic"),
         f"normals must be forward_difference, finite_difference or analytic, got {cfg.normals!r}")
    need(cfg.normal_samples in ("weighted", "all"), f"normal_samples must be weighted or all, got {cfg.normal_samples!r}")
    need(cfg.occupancy_resolution == 0 or 8 <= cfg.occupancy_resolution <= 512,
         f"occupancy_resolution must be 0 (auto) or 8-512 cells per axis, got {cfg.occupancy_resolution}")
    need(cfg.packing in ("auto", "exact", "fixed"), f"packing must be auto, exact or fixed, got {cfg.packing!r}")
    need(cfg.occupancy_update_every >= 1, f"occupancy_update_every must be >= 1 step, got {cfg.occupancy_update_every}")
    need(bool(str(cfg.latent_encoder).strip()),
         "latent_encoder is empty: use vae, or a folder / hub id of a diffusers AutoencoderTiny "
         f"(e.g. {', '.join(latent_encoders())})")
    need(cfg.background in ("learned", "white"), f"background must be learned or white, got {cfg.background!r}")
    need(cfg.encoding in ("hashgrid", "frequency"), f"encoding must be 'hashgrid' or 'frequency', got {cfg.encoding!r}")
    need(1 <= cfg.hash_levels <= 32 and 10 <= cfg.hash_log2_table <= 24, "hash grid: levels 1-32, log2 table size 10-24")
    need(16 <= cfg.hash_max_resolution <= 8192, f"hash_max_resolution must be between 16 (the coarsest level) and 8192, got {cfg.hash_max_resolution}")
    need(1 <= cfg.frequency_bands <= 16, f"frequency_bands must be between 1 and 16, got {cfg.frequency_bands}")
    validate_recipe_settings(cfg, need)
    need(0.0 <= cfg.ambient <= 1.0, "ambient must be in [0, 1]")
    need(cfg.elevation_min < cfg.elevation_max and -90 <= cfg.elevation_min and cfg.elevation_max <= 90,
         "elevation range must lie in [-90, 90] degrees with min < max")
    need(cfg.bound < cfg.distance_min <= cfg.distance_max, "cameras must stay outside the bounding sphere: bound < distance_min <= distance_max")
    need(0 < cfg.focal_min <= cfg.focal_max, "focal range must be positive with min <= max")
    need(cfg.preview_every >= 1 and cfg.checkpoint_every >= 1, "preview_every and checkpoint_every must be >= 1")
    need(1 <= cfg.preview_views <= 16, "preview_views must be between 1 and 16")
    need(32 <= cfg.mesh_resolution <= 1024, "mesh resolution must be between 32 and 1024 (128-512 is typical)")
    need(64 <= cfg.texture_size <= 8192, "texture size must be between 64 and 8192 pixels")
    need(cfg.silhouette_carve in SILHOUETTE_CARVES, f"silhouette_carve must be one of {', '.join(SILHOUETTE_CARVES)}, got {cfg.silhouette_carve!r}")
    need(cfg.target_faces is None or (type(cfg.target_faces) is int and 100 <= cfg.target_faces <= 10_000_000),
         f"target_faces must be a whole number of triangles between 100 and 10000000 (or none: no decimation), got {cfg.target_faces!r}")
    check_device_name(cfg.device)
    need(cfg.dtype in ("auto", "fp32", "fp16", "bf16"), f"dtype must be auto, fp32, fp16 or bf16, got {cfg.dtype!r}")
    need(bool(cfg.model.strip()), "no model given: pass --model with a hub id, a local folder or builtin:shapes")


# Settings that accept a schedule (a number or START->END@FROM:TO; see engine/schedule.py).
SCHEDULE_FIELDS = frozenset(f.name for f in dataclasses.fields(JobConfig) if f.type in ("float | str", "float | str | None"))
VIEW_EMBEDDINGS = ("labels", "interpolate")
SILHOUETTE_CARVES = ("auto", "on", "off")  # engine/mesh/hull.py
ORIENTATION_AVERAGES = ("nonempty_rays", "all_rays")
START_SHAPE_CHOICES = ("ball", "ring", "auto")  # engine/field.py START_SHAPES, plus auto (engine/start_shape.py)


def validate_recipe_settings(cfg: JobConfig, need) -> None:
    """The schedules and the recipe's settings (engine/recipe.py); ``need(cond, message)`` raises."""
    t_lo = schedule.check_range(cfg.t_min, "t_min", 0.0, 1.0, lo_open=True)
    t_hi = schedule.check_range(cfg.t_max, "t_max", 0.0, 1.0, lo_open=True)
    need(t_hi.extremes[1] < 1.0, f"t_max must stay below 1, got {cfg.t_max!r}")
    points = sorted(set(t_lo.breakpoints + t_hi.breakpoints))
    need(all(t_lo.at_fraction(f) < t_hi.at_fraction(f) for f in points),
         f"need t_min < t_max throughout the run, got t_min={cfg.t_min!r}, t_max={cfg.t_max!r}")
    need(not cfg.t_anneal or all(t_lo.at_fraction(f) < cfg.t_anneal_to <= t_hi.at_fraction(0.0) for f in points),
         "t_anneal_to must lie in (t_min, t_max]")
    ratios = [schedule.check_range(getattr(cfg, k), k, 0.0) for k in ("albedo_ratio", "shaded_ratio", "textureless_ratio")]
    points = sorted({f for r in ratios for f in r.breakpoints})
    need(all(sum(r.at_fraction(f) for r in ratios) > 0 for f in points),
         "shading ratios must be >= 0 and not all zero at any point of the run")
    schedule.check_range(cfg.hash_level_fraction, "hash_level_fraction", 0.0, 1.0, lo_open=True)
    schedule.check_range(cfg.frequency_band_fraction, "frequency_band_fraction", 0.0, 1.0)
    schedule.check_range(cfg.orientation_weight, "orientation_weight", 0.0)
    schedule.check_range(cfg.opacity_weight, "opacity_weight", 0.0)
    schedule.check_range(cfg.entropy_weight, "entropy_weight", 0.0)
    schedule.check_range(cfg.normal_smooth_weight, "normal_smooth_weight", 0.0)
    need(0 < cfg.normal_smooth_jitter <= 0.5,
         f"normal_smooth_jitter is a distance in (0, 0.5] of the bound, got {cfg.normal_smooth_jitter}")
    need(cfg.normal_smooth_cap is None or 0 < cfg.normal_smooth_cap <= 4,
         "normal_smooth_cap caps a squared difference of unit normals (0 to 4): give a number in (0, 4] "
         f"(0.1: pairs more than ~18 degrees apart cost about the same) or none, got {cfg.normal_smooth_cap}")
    schedule.check_range(cfg.blob_core, "blob_core", 0.0, 1.0)
    if cfg.high_noise_guidance_scale is not None:  # none: guidance_scale at every t
        schedule.check_range(cfg.high_noise_guidance_scale, "high_noise_guidance_scale", 0.0)
    need(cfg.start_shape in START_SHAPE_CHOICES,
         f"start_shape must be one of {', '.join(START_SHAPE_CHOICES)}, got {cfg.start_shape!r}")
    need(isinstance(cfg.start_probe_steps, int) and not isinstance(cfg.start_probe_steps, bool)
         and cfg.start_probe_steps >= 1, f"start_probe_steps must be a whole number >= 1, got {cfg.start_probe_steps!r}")
    need(cfg.start_shape != "auto" or cfg.start_probe_steps < cfg.steps,
         f"start_shape auto tries each start shape for start_probe_steps={cfg.start_probe_steps} steps, which must be "
         f"fewer than steps={cfg.steps}: give more steps or a smaller start_probe_steps (or, for a new run, "
         f"start_shape ball or ring)")
    need(cfg.orientation_average in ORIENTATION_AVERAGES,
         f"orientation_average must be one of {', '.join(ORIENTATION_AVERAGES)}, got {cfg.orientation_average!r}")
    need(0.0 <= cfg.random_background <= 1.0, f"random_background is a share of steps in [0, 1], got {cfg.random_background}")
    need(0.0 <= cfg.uniform_sphere_rate <= 1.0, f"uniform_sphere_rate is a share of cameras in [0, 1], got {cfg.uniform_sphere_rate}")
    need(cfg.background_lr_scale > 0, f"background_lr_scale must be positive, got {cfg.background_lr_scale}")
    need(cfg.view_embedding in VIEW_EMBEDDINGS,
         f"view_embedding must be one of {', '.join(VIEW_EMBEDDINGS)}, got {cfg.view_embedding!r}")
    need(isinstance(cfg.perp_neg, bool), f"perp_neg must be true or false, got {cfg.perp_neg!r}")

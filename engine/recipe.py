"""The optimisation recipe per model family, resolved into a job's config once the model is known.

JobConfig's defaults are the recipe for latent models (Stable Diffusion: threestudio's
``dreamfusion-sd`` where the references agree, see docs/RECIPE.md for every setting and why).
Pixel-space models (DeepFloyd IF stage I, the builtin prior) change only what threestudio's
``dreamfusion-if`` changes: the full elevation range up to overhead, and guidance 20.

Precedence, lowest first: JobConfig defaults, the preset, the model family's changes, the model
folder's own ``dreamfusion.json`` "defaults" (the builtin prior pins its measured settings there),
and what the user set explicitly.
"""

from __future__ import annotations

import dataclasses
import logging

from .config import JobConfig, validate
from .guidance import DEFAULT_GUIDANCE

log = logging.getLogger("engine")

FAMILY_CHANGES: dict[str, dict] = {
    "latent": {},
    # threestudio dreamfusion-if.yaml: elevation -10..90 (IF's images include top views without the
    # "overhead" drift SD shows); everything else as dreamfusion-sd.
    "pixel": {"elevation_max": 90.0},
}

# The settings docs/RECIPE.md's table covers with a config key (tests check the two agree).
RECIPE_KEYS = (
    "guidance_scale", "high_noise_guidance_scale", "high_noise_t", "t_min", "t_max", "lr", "mlp_lr_scale", "background_lr_scale", "batch_size",
    "albedo_ratio", "shaded_ratio", "textureless_ratio", "albedo_warmup", "ambient", "hash_level_fraction",
    "elevation_min", "elevation_max", "uniform_sphere_rate", "distance_min", "distance_max", "focal_min", "focal_max",
    "overhead_elevation", "background", "random_background", "view_embedding", "perp_neg",
    "orientation_weight", "orientation_average", "opacity_weight", "entropy_weight", "blob_density", "blob_radius",
    "blob_core", "start_shape", "start_probe_steps", "normal_smooth_weight", "normal_smooth_jitter", "normal_smooth_cap",
    "normals", "refine_steps", "refine_lr", "refine_laplacian_weight", "refine_normal_weight", "refine_smooth_iterations",
)


def family_recipe(family: str) -> dict:
    """Every recipe setting's value for a model family ("latent" or "pixel")."""
    if family not in FAMILY_CHANGES:
        raise ValueError(f"unknown model family {family!r}")
    base = JobConfig()
    values = {k: getattr(base, k) for k in RECIPE_KEYS}
    values["guidance_scale"] = DEFAULT_GUIDANCE[family]
    values.update(FAMILY_CHANGES[family])
    return values


def resolve(cfg: JobConfig, family: str, recommended: dict | None = None, explicit: set | frozenset = frozenset()) -> dict:
    """Apply the family's recipe, then the model folder's recommendations (its dreamfusion.json), to
    every setting the user did not set explicitly; validate; return what was applied."""
    recommended = recommended or {}
    known = {f.name for f in dataclasses.fields(cfg)}
    changes = dict(FAMILY_CHANGES[family])
    changes["guidance_scale"] = float(recommended.get("guidance_scale", DEFAULT_GUIDANCE[family]))
    changes.update({k: v for k, v in recommended.get("defaults", {}).items() if k in known})
    applied = {k: v for k, v in changes.items() if k not in explicit}
    for key, value in applied.items():
        setattr(cfg, key, value)
    if applied.get("start_shape") == "auto" and cfg.steps <= cfg.start_probe_steps:
        # The model's "auto" needs more steps than its probe; a shorter run (a quick try) starts from the ball.
        # Asked for explicitly, the same combination is refused by validate().
        cfg.start_shape = applied["start_shape"] = "ball"
    validate(cfg)
    log.info("recipe for a %s model applied: %s", family, applied)
    return applied

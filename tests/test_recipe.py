"""The recipe per model family: the resolved config for a Stable-Diffusion-like model and a pixel
model IS docs/RECIPE.md's table; the builtin prior's runs keep their measured settings; the
coarse-to-fine grid and the random background work as the recipe says."""

import json
import re
from pathlib import Path

import pytest
import torch

from engine import schedule
from engine.config import JobConfig, build_config, parse_set_option
from engine.errors import ConfigError
from engine.guidance import Guidance
from engine.recipe import FAMILY_CHANGES, RECIPE_KEYS, family_recipe, resolve

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def recipe_table() -> dict[str, dict[str, str]]:
    """docs/RECIPE.md's rows keyed by config key: {"latent": cell, "pixel": cell, ...}."""
    rows = {}
    for line in (ROOT / "docs" / "RECIPE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 7:
            continue
        keys = re.findall(r"`([a-z_]+)`", cells[0])
        for key in keys:
            if key in {f for f in JobConfig.__dataclass_fields__}:
                rows[key] = {"latent": cells[1], "pixel": cells[2]}
    return rows


def cell_value(key: str, cell: str):
    """A table cell's value in backticks, read as the config field's type (as --set reads it)."""
    m = re.search(r"`([^`]+)`", cell)
    assert m, f"RECIPE.md: no `value` in the {key} cell {cell!r}"
    return parse_set_option(f"{key}={m.group(1)}")[1]


def resolved(model_folder, preset="standard") -> JobConfig:
    g = Guidance(str(model_folder), CPU, torch.float32)
    cfg = build_config(preset, prompt="a ceramic mug", model=str(model_folder))
    resolve(cfg, g.family, g.recommended)
    return cfg


def test_the_table_covers_every_recipe_setting():
    assert set(recipe_table()) == set(RECIPE_KEYS)


@pytest.mark.parametrize("family", ["latent", "pixel"])
def test_resolved_config_is_the_table(family, tiny_latent_model, tiny_pixel_model):
    cfg = resolved(tiny_latent_model if family == "latent" else tiny_pixel_model)
    table = recipe_table()
    for key in RECIPE_KEYS:
        want = cell_value(key, table[key][family])
        assert getattr(cfg, key) == want, f"{family} {key}: config {getattr(cfg, key)!r}, docs/RECIPE.md {want!r}"
        assert family_recipe(family)[key] == want


def test_explicit_settings_win_over_the_recipe(tiny_pixel_model):
    g = Guidance(str(tiny_pixel_model), CPU, torch.float32)
    cfg = build_config("draft", prompt="x", elevation_max=30.0, guidance_scale=7.0)
    resolve(cfg, g.family, g.recommended, explicit={"elevation_max", "guidance_scale"})
    assert cfg.elevation_max == 30.0 and cfg.guidance_scale == 7.0


# What every setting whose default the recipe changed was before it (the builtin prior's measured
# runs, docs/SDS_SHAPES.md, used these): the prior's dreamfusion.json must keep them.
BEFORE_RECIPE = dict(
    mlp_lr_scale=0.1, background_lr_scale=0.1, hash_level_fraction=1.0, random_background=0.0, albedo_warmup=100,
    elevation_min=-10.0, elevation_max=90.0, distance_min=2.0, distance_max=3.0, uniform_sphere_rate=0.0,
    view_embedding="labels", perp_neg=False, orientation_weight=0.01, orientation_average="all_rays", opacity_weight=0.001,
    t_min=0.02, t_max=0.98, focal_min=0.7, focal_max=1.35, overhead_elevation=60.0, ambient=0.1, lr=1e-2,
    guidance_scale=20.0,
)


def test_builtin_prior_keeps_its_measured_settings():
    folder = ROOT / "engine" / "priors" / "shapes"
    assert not (folder / "vae").exists()  # a pixel model
    recommended = json.loads((folder / "dreamfusion.json").read_text())
    cfg = build_config("standard", prompt="a red cube", model="builtin:shapes")
    resolve(cfg, "pixel", recommended)
    assert cfg.steps == recommended["defaults"]["steps"]
    changed = {k: getattr(cfg, k) for k in BEFORE_RECIPE if getattr(cfg, k) != BEFORE_RECIPE[k]}
    assert not changed, f"the builtin prior's runs would change: {changed}"
    assert all(getattr(cfg, k) == v for k, v in recommended["defaults"].items())  # its own settings apply
    # Any other recipe setting is the engine's default (the recipe did not change it for pixel models).
    for key in RECIPE_KEYS:
        if key in BEFORE_RECIPE or key in recommended["defaults"] or key in FAMILY_CHANGES["pixel"]:
            continue
        assert getattr(cfg, key) == getattr(JobConfig(), key), key


def test_a_short_run_of_the_builtin_prior_starts_from_the_ball():
    """The prior recommends start_shape auto with a 50-step probe: a run of 50 steps or fewer (a quick
    try, the tests' tiny runs) starts from the ball instead; asked for explicitly, auto is refused."""
    recommended = json.loads((ROOT / "engine" / "priors" / "shapes" / "dreamfusion.json").read_text())
    assert recommended["defaults"]["start_shape"] == "auto"
    cfg = build_config("standard", prompt="a red cube", model="builtin:shapes", steps=51)
    resolve(cfg, "pixel", recommended, explicit={"steps"})
    assert cfg.start_shape == "auto"
    cfg = build_config("standard", prompt="a red cube", model="builtin:shapes", steps=50)
    applied = resolve(cfg, "pixel", recommended, explicit={"steps"})
    assert cfg.start_shape == "ball" and applied["start_shape"] == "ball"
    cfg = build_config("standard", prompt="a red cube", model="builtin:shapes", steps=50)
    cfg.start_shape = "auto"
    with pytest.raises(ConfigError, match="fewer than steps=50"):
        resolve(cfg, "pixel", recommended, explicit={"steps", "start_shape"})


@pytest.mark.parametrize("overrides, match", [
    (dict(random_background=1.5), "random_background"), (dict(random_background=-0.1), "random_background"),
    (dict(uniform_sphere_rate=2.0), "uniform_sphere_rate"), (dict(background_lr_scale=0.0), "background_lr_scale"),
    (dict(mlp_lr_scale=-1.0), "mlp_lr_scale"), (dict(view_embedding="blend"), "view_embedding"),
    (dict(perp_neg="yes"), "perp_neg"), (dict(orientation_average="pixels"), "orientation_average"),
])
def test_bad_recipe_settings(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_config("draft", prompt="a mug", **overrides)


def test_progressive_levels_mask_the_fine_levels():
    from engine.field import NeRFField

    torch.manual_seed(0)
    field = NeRFField(hash_levels=16, hash_log2_table=12)
    x = torch.rand(64, 3) * 2 - 1
    full = field.encoding(x)
    field.set_level_fraction(schedule.value_at(JobConfig().hash_level_fraction, 0, 10000))  # threestudio: 8 of 16 at first
    assert field.encoding.active_levels == 8
    part = field.encoding(x).reshape(64, 16, 2)
    assert torch.equal(part[:, :8], full.reshape(64, 16, 2)[:, :8]) and part[:, 8:].abs().sum() == 0
    # One more level every 5% of the run after 20% (threestudio: every 500 of 10000 steps after 2000).
    levels = []
    for step in (2000, 2499, 2501, 5999, 6000, 9999):
        field.set_level_fraction(schedule.value_at(JobConfig().hash_level_fraction, step, 10001))
        levels.append(field.encoding.active_levels)
    assert levels == [8, 8, 9, 15, 16, 16]
    # Masked levels get no gradient: their tables stay as initialised.
    field.set_level_fraction(0.5)
    field.encoding(x).sum().backward()
    grad = field.encoding.table.grad.reshape(16, -1)
    assert grad[:8].abs().sum() > 0 and grad[8:].abs().sum() == 0


def test_random_background_replaces_the_learned_one(tiny_pixel_model, tmp_path):
    from engine.cameras import make_cameras
    from engine.field import SolidBackground
    from engine.protocol import EventStream
    from engine.render import render
    from engine.train import Trainer

    g = Guidance(str(tiny_pixel_model), CPU, torch.float32)
    cfg = build_config("draft", prompt="a mug", random_background=1.0, hash_log2_table=12)
    trainer = Trainer(cfg, tmp_path, EventStream(None), g, CPU, progress_bar=False)
    bg = trainer.training_background()
    assert isinstance(bg, SolidBackground)
    cams = make_cameras(0.0, 0.0, 2.0, 0.2)  # wide view: the corners miss the bounding sphere
    img = render(trainer.field, bg, cams, 16, 8).image
    assert torch.allclose(img[0, :, 0, 0], bg.colour, atol=1e-5)
    colours = {tuple(trainer.training_background().colour.tolist()) for _ in range(5)}
    assert len(colours) == 5  # a new colour each step
    trainer.cfg.random_background = 0.0
    assert trainer.training_background() is trainer.background


def test_orientation_averaged_over_nonempty_rays():
    """threestudio's form: the same penalty divided by the rays that hit something (opacity > 0.01)
    rather than by every pixel, so it does not shrink when the object is small in frame."""
    from engine import losses
    from engine.cameras import make_cameras
    from engine.field import NeRFField, SolidBackground
    from engine.render import render

    torch.manual_seed(0)
    field = NeRFField(hash_levels=4, hash_log2_table=12)
    cams = make_cameras(30.0, 20.0, 2.0, 0.4)  # wide view: many rays see only empty space
    out = render(field, SolidBackground(torch.ones(3)), cams, 16, 16, shading="shaded",
                 light_positions=cams.origins.clone(), perturb=False)
    nonempty = int((out.opacity > losses.NONEMPTY_OPACITY).sum())
    assert 0 < nonempty < out.opacity.numel()
    per_pixel = losses.orientation_loss(out)
    torch.testing.assert_close(losses.orientation_loss(out, average="nonempty_rays"), per_pixel * out.opacity.numel() / nonempty)
    with pytest.raises(ValueError):
        losses.orientation_loss(out, average="pixels")


def test_run_folders_from_before_the_recipe_resume_as_they_ran():
    old = {k: v for k, v in JobConfig(prompt="a mug").to_json().items()
           if k not in ("hash_level_fraction", "random_background", "background_lr_scale", "uniform_sphere_rate",
                        "view_embedding", "perp_neg", "orientation_average")}
    cfg = JobConfig.from_json(old)
    assert (cfg.hash_level_fraction, cfg.random_background, cfg.uniform_sphere_rate, cfg.view_embedding, cfg.perp_neg,
            cfg.orientation_average) == (1.0, 0.0, 0.0, "labels", False, "all_rays")
    assert JobConfig.from_json(JobConfig(prompt="a mug").to_json()) == JobConfig(prompt="a mug")


def test_latent_recipe_steps_with_perp_neg(tiny_latent_model, tmp_path):
    """The SD recipe end to end on a tiny latent model, Perp-Neg on: steps run, the coarse-to-fine
    grid starts at half the levels, the orientation weight follows its ramp."""
    from engine.protocol import EventStream
    from engine.train import Trainer

    g = Guidance(str(tiny_latent_model), CPU, torch.float32)
    cfg = build_config("draft", prompt="a red cube", model=str(tiny_latent_model), steps=10, render_resolution=16,
                       samples_per_ray=8, hash_log2_table=12, perp_neg=True)
    resolve(cfg, g.family, g.recommended)
    trainer = Trainer(cfg, tmp_path, EventStream(None), g, CPU, progress_bar=False)
    weights = []
    for _ in range(3):
        weights.append(trainer.scheduled("orientation_weight"))
        stats = trainer.train_step()
        assert torch.isfinite(stats["loss"])
    assert trainer.field.encoding.active_levels == cfg.hash_levels // 2
    assert weights[0] == 10.0 and weights[0] < weights[1] < weights[2]

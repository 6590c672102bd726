import pytest

from engine.config import MAX_PROMPT_CHARS, PRESETS, build_config, parse_set_option
from engine.errors import ConfigError


def test_presets_differ_and_overrides_win():
    draft, high = build_config("draft", prompt="a mug"), build_config("high", prompt="a mug")
    assert draft.steps < high.steps and draft.mesh_resolution < high.mesh_resolution
    assert build_config("draft", prompt="a mug", steps=7, render_resolution=None).steps == 7
    assert set(PRESETS) == {"draft", "standard", "high"}


@pytest.mark.parametrize("prompt, match", [("", "empty"), ("   ", "empty"), ("x" * (MAX_PROMPT_CHARS + 1), "characters long")])
def test_bad_prompts(prompt, match):
    with pytest.raises(ConfigError, match=match):
        build_config("draft", prompt=prompt)


@pytest.mark.parametrize("overrides, match", [
    (dict(steps=0), "positive"), (dict(steps=-5), "positive"), (dict(guidance_scale=-1.0), "guidance"),
    (dict(t_min=0.5, t_max=0.4), "t_min"), (dict(texture_size=10), "texture size"), (dict(device="tpu"), "device"),
    (dict(distance_min=0.5), "outside the bounding sphere"), (dict(albedo_ratio=0, shaded_ratio=0, textureless_ratio=0), "ratios"),
    (dict(frequency_bands=0), "frequency_bands"), (dict(frequency_bands=40), "frequency_bands"),
    (dict(hash_max_resolution=8), "hash_max_resolution"),
    (dict(frequency_band_fraction=1.5), "frequency_band_fraction"), (dict(frequency_band_fraction=-0.1), "frequency_band_fraction"),
    (dict(frequency_band_fraction="0->2@0:0.5"), "frequency_band_fraction"), (dict(frequency_band_fraction="soon"), "frequency_band_fraction"),
    (dict(entropy_weight=-1.0), "entropy_weight"), (dict(entropy_weight="0->-5@0.5:1"), "entropy_weight"),
    (dict(entropy_weight="lots"), "entropy_weight"), (dict(blob_core=1.5), "blob_core"), (dict(blob_core=-0.1), "blob_core"),
    (dict(blob_core="1->2@0:0.5"), "blob_core"), (dict(silhouette_carve="always"), "silhouette_carve"), (dict(blob_core=float("nan")), "blob_core"),
    (dict(normal_smooth_weight=-1.0), "normal_smooth_weight"), (dict(normal_smooth_weight="0->-1@0:1"), "normal_smooth_weight"),
    (dict(normal_smooth_weight="smooth"), "normal_smooth_weight"), (dict(normal_smooth_jitter=0.0), "normal_smooth_jitter"),
    (dict(normal_smooth_jitter=-0.1), "normal_smooth_jitter"), (dict(normal_smooth_jitter=2.0), "normal_smooth_jitter"),
    (dict(normal_smooth_jitter=float("nan")), "normal_smooth_jitter"),
    (dict(normal_smooth_cap=0.0), "normal_smooth_cap"), (dict(normal_smooth_cap=-0.1), "normal_smooth_cap"),
    (dict(normal_smooth_cap=5.0), "normal_smooth_cap"), (dict(normal_smooth_cap=float("nan")), "normal_smooth_cap"),
    (dict(normal_smooth_cap="edges"), "normal_smooth_cap"),
    (dict(high_noise_guidance_scale=-1.0), "high_noise_guidance_scale"),
    (dict(high_noise_guidance_scale=float("nan")), "high_noise_guidance_scale"),
    (dict(high_noise_guidance_scale="weak"), "high_noise_guidance_scale"),
    (dict(high_noise_guidance_scale="13->-2@0.7:1"), "high_noise_guidance_scale"),
    (dict(high_noise_guidance_scale="13->10@0.9:0.7"), "high_noise_guidance_scale"),
    (dict(high_noise_t=0.0), "high_noise_t"), (dict(high_noise_t=1.0), "high_noise_t"),
    (dict(high_noise_t=-0.5), "high_noise_t"), (dict(high_noise_t=float("nan")), "high_noise_t"),
    (dict(high_noise_t="half"), "high_noise_t"),
    (dict(start_shape="cube"), "start_shape must be one of ball, ring, auto"), (dict(start_shape=""), "start_shape"),
    (dict(start_probe_steps=0), "start_probe_steps"),
    (dict(start_probe_steps=-5), "start_probe_steps"), (dict(start_probe_steps=2.5), "start_probe_steps"),
    (dict(start_probe_steps="ten"), "start_probe_steps"), (dict(start_probe_steps=True), "start_probe_steps"),
    (dict(start_shape="auto", steps=50, start_probe_steps=50), "fewer than steps=50"),
])
def test_bad_settings(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_config("draft", prompt="a mug", **overrides)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="draft, standard, high"):
        build_config("ultra", prompt="a mug")


def test_set_option_parsing():
    assert parse_set_option("lr=0.5") == ("lr", 0.5)
    assert parse_set_option("t_anneal=true") == ("t_anneal", True)
    assert parse_set_option("steps=12") == ("steps", 12)
    assert parse_set_option("iso=none") == ("iso", None)
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_set_option("nope=1")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_set_option("steps=many")
    assert parse_set_option("start_shape=ring") == ("start_shape", "ring")
    # an optional setting that takes a schedule: none, a number or a ramp
    assert parse_set_option("high_noise_guidance_scale=none") == ("high_noise_guidance_scale", None)
    assert parse_set_option("high_noise_guidance_scale=13") == ("high_noise_guidance_scale", 13.0)
    assert parse_set_option("high_noise_guidance_scale=13->10@0.7:1") == ("high_noise_guidance_scale", "13->10@0.7:1")
    with pytest.raises(ConfigError, match="--set high_noise_guidance_scale"):
        parse_set_option("high_noise_guidance_scale=13->10")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_set_option("start_probe_steps=some")
    assert parse_set_option("normal_smooth_cap=none") == ("normal_smooth_cap", None)
    assert parse_set_option("normal_smooth_cap=0.1") == ("normal_smooth_cap", 0.1)
    with pytest.raises(ConfigError, match="cannot read"):
        parse_set_option("normal_smooth_cap=edges")


def test_field_settings_reach_the_field():
    from engine.train import build_field

    field, _ = build_field(build_config("draft", prompt="a mug", encoding="frequency", frequency_bands=5))
    assert field.encoding.output_dim == 3 * (2 * 5 + 1)
    field, _ = build_field(build_config("draft", prompt="a mug", hash_levels=4, hash_max_resolution=128, hash_log2_table=12))
    assert field.encoding.resolutions.tolist() == [16, 32, 64, 128]
    field, _ = build_field(build_config("draft", prompt="a mug", start_shape="ring"))
    assert field.start_shape == "ring"
    with pytest.raises(ValueError, match="ball, ring"):  # "auto" is resolved before a field is built
        build_field(build_config("draft", prompt="a mug", start_shape="auto"))


def test_band_schedule_reaches_the_field():
    """frequency_band_fraction anneals the sinusoidal bands coarse to fine (Nerfies' window): at the
    start only the raw coordinates and the first bands pass, the top band fades in, then all pass."""
    import torch

    from engine.train import build_field, set_coarse_to_fine

    cfg = build_config("draft", prompt="a mug", steps=101, encoding="frequency", frequency_bands=4,
                       frequency_band_fraction="0.25->1@0:0.5")
    field, _ = build_field(cfg)
    x = torch.rand(64, 3) * 2 - 1
    weights = []
    for step in (0, 25, 50, 100):
        set_coarse_to_fine(field, cfg, step)
        weights.append(field.encoding.band_weights.tolist())
    assert weights[0] == [1.0, 0.0, 0.0, 0.0] and weights[-1] == [1.0, 1.0, 1.0, 1.0]
    assert 0.0 < weights[1][2] < 1.0 and weights[1][3] == 0.0  # alpha 2.5: the third band half on
    set_coarse_to_fine(field, cfg, 0)
    enc = field.encoding(x)
    fine = enc[:, 3:].reshape(64, 2, 3, 4)[..., 1:]  # sin/cos of bands 2-4 are masked out
    assert fine.abs().max() == 0.0


def test_blob_core_schedule_fades_the_core_and_keeps_the_shell():
    """blob_core scales only the blob's positive core (inside blob_radius); the negative shell that
    keeps empty space empty stays, whatever the schedule's value."""
    import torch

    from engine.train import build_field, set_coarse_to_fine

    cfg = build_config("draft", prompt="a mug", steps=101, blob_core="1->0@0.2:0.6")
    field, _ = build_field(cfg)
    x = torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.3, 0.0], [0.8, 0.0, 0.0]])
    set_coarse_to_fine(field, cfg, 0)
    full = field.blob(x)
    set_coarse_to_fine(field, cfg, 40)  # 40 % of the run: half way down the ramp
    torch.testing.assert_close(field.blob(x)[:2], 0.5 * full[:2])
    set_coarse_to_fine(field, cfg, 100)
    faded = field.blob(x)
    assert faded[:2].abs().max() == 0.0 and full[2] < 0 and faded[2] == full[2]

"""Schedules: constants and ramps over fractions of the run, and their use in the config."""

import pytest

from engine import schedule
from engine.config import SCHEDULE_FIELDS, build_config, parse_set_option
from engine.errors import ConfigError


def test_constant_and_ramp_values():
    assert schedule.value_at(0.5, 0, 100) == 0.5 and schedule.value_at("0.5", 99, 100) == 0.5
    ramp = schedule.parse("10->1000@0:0.5")
    assert ramp.at(0, 10001) == 10 and ramp.at(2500, 10001) == pytest.approx(505) and ramp.at(5000, 10001) == 1000
    assert ramp.at(10000, 10001) == 1000
    jump = schedule.parse("1->0.25@0.2:0.2")
    assert jump.at_fraction(0.19) == 1 and jump.at_fraction(0.2) == 1 and jump.at_fraction(0.21) == 0.25


def test_ramps_scale_with_the_run_length():
    """The same schedule covers the same share of a draft and a high-quality run."""
    ramp = "0.5->1@0.2:0.6"
    for steps in (1500, 5000, 15000):
        assert schedule.value_at(ramp, int(0.2 * (steps - 1)), steps) == 0.5
        assert schedule.value_at(ramp, int(0.4 * (steps - 1)), steps) == pytest.approx(0.75, abs=1e-3)
        assert schedule.value_at(ramp, int(0.6 * (steps - 1)) + 1, steps) == 1.0


@pytest.mark.parametrize("spec", ["", "fast", "1->", "1->2", "1->2@0.5", "1->2@0.6:0.5", "1->2@0:1.5", "1->2@-0.1:0.5",
                                  True, None, float("nan"), [1, 2]])
def test_bad_schedules_are_refused_with_the_syntax(spec):
    with pytest.raises(ConfigError, match="START->END@FROM:TO|finite|FROM:TO"):
        schedule.parse(spec, "orientation_weight")


def test_schedule_fields_parse_from_set_and_validate_their_range():
    assert {"t_min", "t_max", "orientation_weight", "opacity_weight", "hash_level_fraction", "albedo_ratio"} <= SCHEDULE_FIELDS
    assert parse_set_option("opacity_weight=2") == ("opacity_weight", 2.0)
    assert parse_set_option("opacity_weight=0->1@0.1:0.9") == ("opacity_weight", "0->1@0.1:0.9")
    with pytest.raises(ConfigError, match="--set opacity_weight"):
        parse_set_option("opacity_weight=lots")
    cfg = build_config("draft", prompt="x", t_max="0.98->0.5@0:1")
    assert cfg.t_max == "0.98->0.5@0:1"


@pytest.mark.parametrize("overrides, match", [
    (dict(orientation_weight="10->-1@0:0.5"), "orientation_weight"),
    (dict(opacity_weight=-1.0), "opacity_weight"),
    (dict(hash_level_fraction=0.0), "hash_level_fraction"),
    (dict(hash_level_fraction="0.5->1.5@0:1"), "hash_level_fraction"),
    (dict(t_min="0.02->0.6@0:1", t_max="0.98->0.5@0:1"), "t_min < t_max"),
    (dict(t_max=1.0), "t_max"),
    (dict(albedo_ratio="1->0@0:0.5", shaded_ratio=0.0, textureless_ratio=0.0), "not all zero"),
    (dict(shaded_ratio="-1->1@0:1"), "shaded_ratio"),
    (dict(albedo_warmup=-1), "albedo_warmup"),
])
def test_bad_scheduled_settings(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_config("draft", prompt="a mug", **overrides)


def test_first_step_above_finds_the_jump_and_the_ramp():
    assert schedule.first_step_above("0->0.375@0.2:0.2", 1001) == 201  # the step after 20 % of the run
    assert schedule.first_step_above(0.4, 100) == 0 and schedule.first_step_above(0.0, 100) is None
    ramp = schedule.parse("0->1@0.5:1")
    s = schedule.first_step_above("0->1@0.5:1", 101, 0.5)
    assert ramp.at(s, 101) > 0.5 >= ramp.at(s - 1, 101)

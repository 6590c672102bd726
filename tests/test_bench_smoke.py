"""Smoke test of bench/bench_sds.py's step splitting (no timing assertions: speed is never tested).

The benchmark times ``timed_train_step`` (bench/sds_step.py), an inlined copy of Trainer.train_step +
Guidance.sds_loss with clocks between the parts; this checks that copy still computes what the engine
does (same loss, same parameter gradients) and that the parts are positive and add up to the step.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


# The optional terms too: the entropy and normal-smoothness regularisers and the high-noise guidance.
OPTIONAL = dict(entropy_weight=1.0, normal_smooth_weight=100.0, high_noise_guidance_scale=5.0)


@pytest.mark.parametrize("extra", [{}, OPTIONAL], ids=["defaults", "optional_terms"])
def test_timed_step_matches_train_step_and_splits_add_up(tiny_latent_model, tmp_path, extra):
    import bench_sds  # noqa: F401  (the script's own imports of its parts still resolve)
    import sds_step

    overrides = dict(render_resolution=24, samples_per_ray=12, albedo_warmup=0, hash_log2_table=12, **extra)
    dev = torch.device("cpu")
    ref, _, _ = sds_step.make_trainer(tiny_latent_model, "draft", dev, "fp32", "hashgrid", tmp_path / "a", **overrides)
    ref_stats = ref.train_step()
    ref_grads = {n: p.grad.clone() for n, p in ref.field.named_parameters() if p.grad is not None}

    trainer, load_s, init_s = sds_step.make_trainer(tiny_latent_model, "draft", dev, "fp32", "hashgrid", tmp_path / "b", **overrides)
    assert load_s > 0 and init_s > 0
    saved: dict = {}
    stats, clock = sds_step.timed_train_step(trainer, saved=saved)

    assert stats["mode"] == ref_stats["mode"]
    assert abs(stats["loss"] - ref_stats["loss"]) <= 1e-4 * max(1.0, abs(ref_stats["loss"]))
    grads = {n: p.grad for n, p in trainer.field.named_parameters() if p.grad is not None}
    assert grads.keys() == ref_grads.keys()
    for n, g in grads.items():
        torch.testing.assert_close(g, ref_grads[n], rtol=1e-3, atol=1e-6, msg=f"gradient of {n} differs")

    assert set(clock.times) == set(sds_step.SECTIONS)
    assert all(t > 0 for t in clock.times.values()), clock.times
    total = clock.total()
    assert abs(sum(clock.times.values()) - total) <= 0.05 * total + 0.01
    assert saved.get("render", 0) > 0 and saved.get("vae_encode", 0) > 0

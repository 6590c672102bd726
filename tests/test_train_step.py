"""The training step's host traffic and its device-side pieces: no tensor is read back to the host
during a step (on CPU: counted through patched tensor methods; with CUDA: torch's sync debug mode),
view labels chosen on the device, the text encoder freed once the embeddings are cached."""

import contextlib
import os
import sys

import pytest
import torch

from engine.cameras import VIEW_LABELS, make_cameras
from engine.config import build_config
from engine.guidance import Guidance
from engine.protocol import EventStream
from engine.train import Trainer

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


@contextlib.contextmanager
def count_host_reads(calls: list):
    """Record every Tensor.item/tolist/float()/int()/bool()/index use (each is a device sync on a GPU).

    Reads made by torch.optim are left out: Adam reads its step counter, a tensor that stays on the
    host even when the parameters are on a GPU (``capturable=False``), so it never waits for the device."""
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, fn):
        def counted(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if f"torch{os.sep}optim{os.sep}" not in caller:
                calls.append(f"{name} from {caller}:{sys._getframe(1).f_lineno}")
            return fn(self, *args, **kwargs)
        return counted

    for name, fn in originals.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


@contextlib.contextmanager
def count_sized_by_data(calls: list):
    """Record the ops whose output size depends on tensor values (nonzero, masked_select, indexing by a
    boolean tensor): on a GPU each waits for the device to learn that size."""
    patched = [(torch, "nonzero"), (torch.Tensor, "nonzero"), (torch, "masked_select"), (torch.Tensor, "masked_select"),
               (torch.Tensor, "__getitem__")]
    originals = [(owner, name, getattr(owner, name)) for owner, name in patched]

    def wrap(name, fn):
        def counted(*args, **kwargs):
            index = args[1] if name == "__getitem__" and len(args) > 1 else None
            keys = index if isinstance(index, tuple) else (index,)
            if name != "__getitem__" or any(isinstance(k, torch.Tensor) and k.dtype == torch.bool for k in keys):
                calls.append(f"{name} from {sys._getframe(1).f_code.co_filename}:{sys._getframe(1).f_lineno}")
            return fn(*args, **kwargs)
        return counted

    for owner, name, fn in originals:
        setattr(owner, name, wrap(name, fn))
    try:
        yield
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)


def _trainer(model, tmp_path, device="cpu", **overrides):
    settings = dict(steps=40, render_resolution=16, samples_per_ray=12, hash_log2_table=12, albedo_warmup=1,
                    occupancy_update_every=2, shaded_ratio=1.0, albedo_ratio=0.0, textureless_ratio=0.0)
    settings.update(overrides)
    cfg = build_config("draft", prompt="a red cube", model=str(model), device=device, **settings)
    dev = torch.device(device)
    guidance = Guidance(str(model), dev, torch.float32)
    (tmp_path / "previews").mkdir(parents=True, exist_ok=True)
    return Trainer(cfg, tmp_path, EventStream(), guidance, dev, progress_bar=False)


def test_a_step_reads_nothing_back_to_the_host(tiny_latent_model, tmp_path):
    trainer = _trainer(tiny_latent_model, tmp_path)
    calls: list = []
    with count_host_reads(calls):
        for _ in range(4):  # albedo (warm-up), then shaded; grid updates at steps 0 and 2
            stats = trainer.train_step()
    assert calls == [], f"host reads in train_step: {calls}"
    assert trainer.occupancy is not None and trainer.occupancy.updates == 2
    assert isinstance(stats["loss"], torch.Tensor) and torch.isfinite(stats["loss"])
    # The counter does see reads: the old step's float(loss) would have been caught.
    with count_host_reads(calls):
        float(stats["loss"])
    assert len(calls) == 1 and calls[0].startswith("__float__")


def test_fixed_capacity_steps_size_nothing_by_data(tiny_latent_model, tmp_path):
    """The packing a GPU run uses (packing=auto is fixed there), run on the CPU: after the first step
    (one read, to size the samples' capacity), a step neither reads a tensor nor sizes a tensor by its values."""
    trainer = _trainer(tiny_latent_model, tmp_path, packing="fixed")
    trainer.train_step()  # albedo: sizes the "samples" site
    reads: list = []
    sized: list = []
    with count_host_reads(reads), count_sized_by_data(sized):
        for _ in range(4):  # shaded (the "normals" site's first use), grid updates at steps 2 and 4
            stats = trainer.train_step()
    assert reads == [] and sized == [], f"host reads {reads}, data-sized ops {sized}"
    assert torch.isfinite(stats["loss"]) and set(trainer.packer.capacity) == {"samples", "normals"}
    # The counter sees what exact packing does (nonzero), so the check above could fail.
    exact = _trainer(tiny_latent_model, tmp_path / "exact", packing="exact")
    with count_sized_by_data(sized):
        exact.train_step()
    assert sized and sized[0].startswith("nonzero")


def test_an_overflowing_step_changes_nothing_and_grows_the_capacity(tiny_latent_model, tmp_path):
    events = []
    trainer = _trainer(tiny_latent_model, tmp_path, packing="fixed")
    trainer.events.emit = lambda kind, **f: events.append((kind, f))
    for _ in range(3):
        trainer.train_step()
    trainer.poll_packing(force=True)
    first, events[:] = trainer.packer.overflows, []
    trainer.packer.capacity["samples"] = 8  # far fewer than a step selects
    before = [p.detach().clone() for p in trainer.field.parameters()]
    adam_steps = [s["step"].clone() for s in trainer.optimizer.state.values()]
    trainer.train_step()
    assert all(torch.equal(a, p) for a, p in zip(before, trainer.field.parameters())), "an incomplete render updated the field"
    assert [s["step"] for s in trainer.optimizer.state.values()] == adam_steps
    trainer.poll_packing(force=True)
    assert trainer.packer.overflows == first + 1 and trainer.packer.capacity["samples"] > 8
    assert [k for k, _ in events] == ["warning"] and "skipped" in events[0][1]["message"]
    trainer.guard.poll(trainer.step, force=True)
    assert trainer.guard.skipped == 0  # not counted as a non-finite step (the divergence check)
    trainer.train_step()
    assert not all(torch.equal(a, p) for a, p in zip(before, trainer.field.parameters()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_step_does_not_synchronise(tiny_latent_model, tmp_path):  # pragma: no cover - GPU only
    trainer = _trainer(tiny_latent_model, tmp_path, device="cuda")
    assert trainer.packer is not None  # packing=auto: fixed capacity on CUDA
    trainer.train_step()
    trainer.train_step()  # past the first grid update, the warm-up and each packing site's sizing
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_label_index_matches_the_view_labels():
    gen = torch.Generator().manual_seed(0)
    az = torch.rand(400, generator=gen) * 360.0
    el = torch.rand(400, generator=gen) * 100.0 - 10.0
    cams = make_cameras(az, el, 2.5, 1.0)
    labels = [VIEW_LABELS[i] for i in cams.label_index(60.0).tolist()]
    assert labels == cams.labels(60.0)
    assert set(labels) == set(VIEW_LABELS)


def test_text_encoder_is_released_after_caching(tiny_latent_model, tmp_path):
    trainer = _trainer(tiny_latent_model, tmp_path)
    assert trainer.guidance.text_encoder is None
    assert trainer.prompts.table.shape[0] == len(VIEW_LABELS) + 1  # the views, then the negative prompt
    # Cached prompts still resolve; a new one says why it cannot.
    assert torch.equal(trainer.guidance.encode_text(["a red cube, front view"])[0], trainer.cond["front"])
    with pytest.raises(RuntimeError, match="released"):
        trainer.guidance.encode_text(["a new prompt"])


def test_checkpoint_restores_both_generators(tiny_latent_model, tmp_path):
    a = _trainer(tiny_latent_model, tmp_path / "a")
    for _ in range(3):
        a.train_step()
    state = a.state_dict()
    b = _trainer(tiny_latent_model, tmp_path / "b")
    b.load_state_dict(state)
    b.occupancy.density, b.occupancy.mask, b.occupancy.updates = a.occupancy.density, a.occupancy.mask, a.occupancy.updates
    # The VAE's posterior sample uses torch's global generator, which both trainers share here.
    torch.set_rng_state(state["torch_rng"])
    sa = a.train_step()
    torch.set_rng_state(state["torch_rng"])
    sb = b.train_step()
    assert sa["mode"] == sb["mode"]
    torch.testing.assert_close(sa["loss"], sb["loss"])


def test_the_occupancy_grid_draws_from_its_own_stream(tiny_latent_model, tmp_path):
    """Grid on or off, a run draws the same cameras, jitter, t and noise (the grid's random cells come
    from ``grid_rng``), so the two render paths can be compared seed for seed."""
    on = _trainer(tiny_latent_model, tmp_path / "on")
    off = _trainer(tiny_latent_model, tmp_path / "off", occupancy_grid=False)
    for _ in range(3):  # grid updates at steps 0 and 2
        on.train_step()
        off.train_step()
    assert on.occupancy.updates == 2 and off.occupancy is None
    assert torch.equal(on.rng.get_state(), off.rng.get_state())


def test_a_scheduled_high_noise_guidance_reaches_each_step(tiny_latent_model, tmp_path, monkeypatch):
    """high_noise_guidance_scale as a ramp: each step hands Guidance.sds_loss the value of its own step."""
    trainer = _trainer(tiny_latent_model, tmp_path, steps=5, high_noise_guidance_scale="20->4@0:1", high_noise_t=0.6)
    seen = []
    real = trainer.guidance.sds_loss

    def spy(*args, **kwargs):
        seen.append(kwargs["high_noise_guidance"])
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer.guidance, "sds_loss", spy)
    for _ in range(5):
        trainer.train_step()
    assert seen == [(0.6, 20.0), (0.6, 16.0), (0.6, 12.0), (0.6, 8.0), (0.6, 4.0)]
    assert _trainer(tiny_latent_model, tmp_path / "off", steps=5).high_noise_guidance() is None

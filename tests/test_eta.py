"""The progress ETA comes from the measured cost of each shading mode, so it does not jump when the
albedo-only warm-up ends (issue 16: it went from 2 min to 9 min with the rate-so-far estimate)."""

from __future__ import annotations

import pytest
import torch

from engine.config import build_config
from engine.eta import ModeCostETA, probe_render_costs
from engine.field import BackgroundField, NeRFField

# A run like the builtin prior's: 400 steps, 100 albedo-only, then 30 % albedo / 70 % shaded; a shaded
# step costs 4x an albedo one (measured: 0.09 s vs 0.37 s with the frequency field).
STEPS, WARMUP, RATIOS = 400, 100, {"albedo": 0.3, "shaded": 0.7, "textureless": 0.0}
COST = {"albedo": 1.0, "shaded": 4.0, "textureless": 3.0}


def simulate(estimate, probe=None, preview_every=100, preview_cost=5.0):
    """Replay a run with deterministic step costs; returns [(elapsed + ETA) after each step]."""
    timer = ModeCostETA(STEPS, WARMUP, RATIOS, periodic={"preview": preview_every})
    timer.probe = probe or {}
    g = torch.Generator().manual_seed(0)
    elapsed, predicted_total = 0.0, []
    for step in range(1, STEPS + 1):
        mode = "albedo" if step <= WARMUP else ("albedo" if torch.rand(1, generator=g) < 0.3 else "shaded")
        elapsed += COST[mode]
        timer.record(mode, COST[mode])
        if step % preview_every == 0 or step == 1:
            elapsed += preview_cost
            timer.record_periodic("preview", preview_cost)
        eta = estimate(timer, step, elapsed)
        if eta is not None:
            predicted_total.append(elapsed + eta)
    return predicted_total, elapsed


def test_remaining_steps_by_mode():
    timer = ModeCostETA(STEPS, WARMUP, RATIOS)
    left = timer.remaining_by_mode(40)
    assert left["albedo"] == pytest.approx(60 + 300 * 0.3) and left["shaded"] == pytest.approx(300 * 0.7)
    assert left["textureless"] == 0
    assert timer.remaining_by_mode(STEPS) == {"albedo": 0, "shaded": 0, "textureless": 0}
    assert timer.modes_after_warmup() == ["albedo", "shaded"]
    every = ModeCostETA(10, 0, RATIOS, periodic={"preview": 4})
    assert [every.periodic_left("preview", s) for s in (0, 3, 4, 8, 9, 10)] == [3, 3, 2, 1, 1, 0]


def test_eta_does_not_jump_at_the_end_of_the_warm_up():
    # The probe saw a shaded render cost 3 units more than an albedo one (the U-Net part is shared).
    probed, actual = simulate(lambda t, step, _: t.eta(step), probe={"albedo": 0.5, "shaded": 3.5})
    assert max(probed) / min(probed) < 1.15, (min(probed), max(probed), actual)
    assert abs(probed[0] - actual) / actual < 0.1

    def rate_so_far(t, step, elapsed):  # the old estimate
        return (STEPS - step) * elapsed / step

    old, _ = simulate(rate_so_far)
    assert max(old) / min(old) > 2  # what the issue saw: the estimate roughly tripled after the warm-up


def test_no_eta_without_a_cost_for_every_mode_still_to_come():
    timer = ModeCostETA(STEPS, WARMUP, RATIOS)
    timer.record("albedo", 1.0)
    assert timer.eta(1) is None  # shaded steps are coming and nothing says what they cost
    timer.record("shaded", 4.0)
    assert timer.eta(1) == pytest.approx(99 * 1.0 + 300 * (0.3 * 1.0 + 0.7 * 4.0))


def test_probe_leaves_the_run_untouched():
    cfg = build_config("draft", prompt="a red cube", render_resolution=16, samples_per_ray=8)
    torch.manual_seed(0)
    field, background = NeRFField(hash_levels=4, hash_log2_table=12), BackgroundField()
    before = [p.detach().clone() for p in field.parameters()]
    rng = torch.get_rng_state()
    costs = probe_render_costs(field, background, cfg, torch.device("cpu"), ["shaded", "textureless"])
    assert set(costs) == {"albedo", "shaded", "textureless"} and all(c > 0 for c in costs.values())
    assert torch.equal(torch.get_rng_state(), rng)  # no random numbers drawn
    assert all(p.grad is None for p in field.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, field.parameters()))


class FakeDevice:
    """A device whose clock runs behind the host: timing events complete only when it gets there."""

    def __init__(self):
        self.clock_ms, self.queued_ms, self.syncs = 0.0, 0.0, 0

    def run(self, ms):  # the host queues ``ms`` of work
        self.queued_ms += ms

    def catch_up(self):
        self.clock_ms = self.queued_ms

    def sync(self):
        self.syncs += 1
        self.catch_up()

    def event(self):
        dev = self

        class Event:
            def record(self):
                self.at = dev.queued_ms

            def query(self):
                return dev.clock_ms >= self.at

            def elapsed_time(self, end):
                assert self.query() and end.query(), "elapsed_time on an event the device has not passed"
                return end.at - self.at

        return Event()


def test_step_timer_uses_device_events_and_never_waits():
    from engine.eta import StepTimer

    dev = FakeDevice()
    timer = StepTimer("cuda", event=dev.event, synchronize=dev.sync)
    for i, (mode, ms) in enumerate([("albedo", 900.0), ("albedo", 200.0), ("shaded", 500.0)]):
        timer.start()
        dev.run(ms)
        timer.stop(mode, keep=i > 0)  # the first step's one-off costs are dropped
        assert timer.done() == []  # the device has not got there yet: nothing read, nothing waited for
    assert dev.syncs == 0
    dev.catch_up()
    assert timer.done() == [("albedo", 0.2), ("shaded", 0.5)]  # the device's time, not the launch time
    timer.drain()
    assert dev.syncs == 1


def test_step_timer_samples_synchronised_steps_elsewhere():
    import time

    from engine.eta import StepTimer

    dev = FakeDevice()
    timer = StepTimer("mps", every=4, synchronize=dev.sync)
    got = []
    for _ in range(8):
        timer.start()
        timer.stop("shaded")
        got += timer.done()
    assert len(got) == 2 and dev.syncs == 4  # one step in four, each between two syncs
    cpu = StepTimer("cpu")
    for keep in (False, True, True):
        cpu.start()
        time.sleep(0.01)
        cpu.stop("albedo", keep=keep)
    times = cpu.done()
    assert [m for m, _ in times] == ["albedo", "albedo"] and all(s >= 0.01 for _, s in times)

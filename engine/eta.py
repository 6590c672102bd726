"""Time left in a run, from the measured cost of each shading mode.

A step's cost depends on its shading mode: albedo renders need no normals, shaded and textureless
ones evaluate the field several more times per sample (normals), so an albedo-only warm-up runs
several times faster than the rest. An ETA from the average rate so far is therefore far too short
during the warm-up and jumps when it ends (issue 16: 2 min -> 9 min). Here the remaining steps are
split by mode as the schedule will draw them (warm-up: albedo; after: the configured ratios) and
each mode is costed by its own measured mean. A mode not seen yet is costed from a one-off probe at
the start: the difference between its render's forward+backward time and the albedo render's,
added to the measured albedo step (the guidance model's share is the same in every mode).
Previews and checkpoints are costed the same way: their measured mean times the number still due.
Step times come from ``StepTimer``: a step does not synchronise with the device, so on a GPU they are
taken from timing events (or a sampled, synchronised step), not from the wall time around the call.
"""

from __future__ import annotations

import time
from collections import deque

from .render import SHADING_MODES


PRIOR_WEIGHT = 5  # pseudo-steps the probed estimate of a mode's cost counts for


class ModeCostETA:
    def __init__(self, total_steps: int, albedo_warmup: int, ratios: dict[str, float],
                 periodic: dict[str, int] | None = None):
        """``periodic``: jobs done every N steps and after the last one, e.g. {"preview": 100}."""
        self.total = total_steps
        self.periodic = dict(periodic or {})
        self.periodic_sum = {k: 0.0 for k in self.periodic}
        self.periodic_count = {k: 0 for k in self.periodic}
        self.warmup = albedo_warmup
        norm = sum(ratios.values())
        self.share = {m: ratios.get(m, 0.0) / norm for m in SHADING_MODES}
        self.sum = {m: 0.0 for m in SHADING_MODES}
        self.count = {m: 0 for m in SHADING_MODES}
        self.probe: dict[str, float] = {}  # mode -> seconds of one render forward+backward

    def modes_after_warmup(self) -> list[str]:
        return [m for m in SHADING_MODES if self.share[m] > 0]

    def record(self, mode: str, seconds: float) -> None:
        self.sum[mode] += seconds
        self.count[mode] += 1

    def record_periodic(self, kind: str, seconds: float) -> None:
        self.periodic_sum[kind] += seconds
        self.periodic_count[kind] += 1

    def periodic_left(self, kind: str, step: int) -> int:
        """How many more times ``kind`` runs after ``step``: at multiples of its period and at the end."""
        every = self.periodic[kind]
        return max(self.total // every - step // every + (1 if self.total % every else 0), 0) if step < self.total else 0

    def remaining_by_mode(self, step: int) -> dict[str, float]:
        """Expected number of remaining steps in each mode after ``step`` steps are done."""
        left = {m: 0.0 for m in SHADING_MODES}
        left["albedo"] += max(0, min(self.warmup, self.total) - step)
        after = self.total - max(step, self.warmup)
        for m in SHADING_MODES:
            left[m] += max(after, 0) * self.share[m]
        return left

    def _probed(self, mode: str) -> float | None:
        """A measured mode's mean plus the probed render-cost difference."""
        for known in SHADING_MODES:
            if known != mode and self.count[known] and mode in self.probe and known in self.probe:
                return max(self.sum[known] / self.count[known] + self.probe[mode] - self.probe[known], 0.0)
        return None

    def cost(self, mode: str) -> float | None:
        """Mean seconds per step of ``mode``; its first few measurements are pooled with the probed
        estimate (as PRIOR_WEIGHT pseudo-steps), so one slow or fast step cannot swing the ETA."""
        prior = self._probed(mode)
        if prior is None:
            return self.sum[mode] / self.count[mode] if self.count[mode] else None
        return (self.sum[mode] + PRIOR_WEIGHT * prior) / (self.count[mode] + PRIOR_WEIGHT)

    def eta(self, step: int) -> float | None:
        """Seconds left after ``step`` steps, or None before anything usable is measured."""
        total = 0.0
        for mode, n in self.remaining_by_mode(step).items():
            if n <= 0:
                continue
            c = self.cost(mode)
            if c is None:
                return None
            total += n * c
        for kind, count in self.periodic_count.items():
            if count:  # not yet measured: costed as nothing (previews run at step 1, so this is brief)
                total += self.periodic_left(kind, step) * self.periodic_sum[kind] / count
        return total


SAMPLE_EVERY = 8  # on accelerators without timing events: time one step in this many (two syncs each)


class StepTimer:
    """Seconds a training step costs on its device, without making every step wait for the device.

    A step queues its work and returns (it reads nothing back, engine/train.py), so on an accelerator the
    wall time around it is the time to *launch* the step. On CUDA the step is bracketed by timing events
    and read once the device has passed the end event (``Event.query``: never waits), so every step is
    timed as the device ran it. Elsewhere (MPS) one step in ``every`` is timed between two
    synchronisations, the others not at all. On the CPU the work is done when the call returns: wall time.
    ``done()`` returns the (label, seconds) timings finished since its last call.
    ``event``/``synchronize``: injectable for tests (default: torch's CUDA events / the device's sync)."""

    def __init__(self, device, every: int = SAMPLE_EVERY, event=None, synchronize=None):
        import torch

        self.kind = torch.device(device).type
        self.every = max(1, int(every))
        if self.kind == "cuda":
            self._event = event or (lambda: torch.cuda.Event(enable_timing=True))
        else:
            self._event = event
        self._sync = synchronize or self._device_sync(torch, self.kind)
        self._calls = 0
        self._pending: deque = deque()  # (label, start, end) events not yet passed by the device
        self._done: list = []
        self._open = None

    @staticmethod
    def _device_sync(torch, kind):
        if kind == "cuda":
            return torch.cuda.synchronize
        if kind == "mps":
            return torch.mps.synchronize
        return lambda: None

    def start(self) -> None:
        self._calls += 1
        if self._event is not None:
            ev = self._event()
            ev.record()
            self._open = ev
        elif self.kind == "cpu" or self._calls % self.every == 0:
            self._sync()
            self._open = time.perf_counter()
        else:
            self._open = None

    def stop(self, label: str, keep: bool = True) -> None:
        """End the step started last; ``keep=False`` drops its timing (e.g. a first step's one-off costs)."""
        begun, self._open = self._open, None
        if begun is None:
            return
        if self._event is not None:
            end = self._event()
            end.record()
            if keep:
                self._pending.append((label, begun, end))
            return
        self._sync()
        if keep:
            self._done.append((label, time.perf_counter() - begun))

    def done(self) -> list[tuple[str, float]]:
        while self._pending and self._pending[0][2].query():
            label, begun, end = self._pending.popleft()
            self._done.append((label, begun.elapsed_time(end) / 1000.0))  # events time in milliseconds
        out, self._done = self._done, []
        return out

    def drain(self) -> None:
        """Wait for the device (before timing a job that reads back to the host, such as a preview,
        so that it is not charged with the queued steps' work)."""
        self._sync()


def probe_render_costs(field, background, cfg, device, modes, occupancy=None) -> dict[str, float]:
    """Seconds of one training-size render forward+backward per mode (plus albedo, the reference).

    Deterministic and side-effect free for the run: a fixed camera, no jitter (no random numbers
    drawn), and the gradients it leaves are cleared, so a probed run trains exactly as an unprobed
    one."""
    import time

    import torch

    from .cameras import orbit_cameras
    from .render import render

    cams = orbit_cameras(cfg.batch_size, elevation=15.0, distance=0.5 * (cfg.distance_min + cfg.distance_max),
                         focal=0.5 * (cfg.focal_min + cfg.focal_max), device=device)
    lights = cams.origins * 1.2
    params = list(field.parameters()) + list(background.parameters())
    costs = {}
    # The first round only warms up (first calls allocate and pick kernels); the second is timed.
    sync = StepTimer._device_sync(torch, device.type)
    for mode in [*dict.fromkeys(["albedo", *modes])] * 2:
        sync()  # not charged with work queued before it
        t0 = time.perf_counter()
        out = render(field, background, cams, cfg.render_resolution, cfg.samples_per_ray, shading=mode,
                     light_positions=lights, ambient=cfg.ambient, perturb=False, normals=cfg.normals,
                     normal_samples=cfg.normal_samples, occupancy=occupancy)
        out.image.mean().backward()
        sync()
        costs[mode] = time.perf_counter() - t0
    for p in params:
        p.grad = None
    return costs

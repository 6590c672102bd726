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
"""

from __future__ import annotations

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
    for mode in [*dict.fromkeys(["albedo", *modes])] * 2:
        t0 = time.perf_counter()
        out = render(field, background, cams, cfg.render_resolution, cfg.samples_per_ray, shading=mode,
                     light_positions=lights, ambient=cfg.ambient, perturb=False, normals=cfg.normals,
                     normal_samples=cfg.normal_samples, occupancy=occupancy)
        out.image.mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        costs[mode] = time.perf_counter() - t0
    for p in params:
        p.grad = None
    return costs

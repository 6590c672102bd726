"""Skip optimiser updates whose loss or gradients are not finite, without a host sync per step.

One bad step (an fp16 overflow in the VAE backward, an absurd guidance weight) must not write NaN into
the field, Adam's moments and the checkpoint. The decision is made on the device: a 0-d ``found_inf``
tensor (1.0 = skip) is handed to a fused Adam, whose kernel then leaves parameters, moments and step
count untouched, exactly as ``torch.amp.GradScaler`` does for mixed precision. The consecutive-skip
counter also lives on the device and is read every ``CHECK_EVERY`` steps; after ``MAX_CONSECUTIVE``
skips in a row the run stops with ``TrainingDiverged`` and keeps its last checkpoint (which, the
updates having been skipped, is still good).
"""

from __future__ import annotations

import torch

from .errors import TrainingDiverged

CHECK_EVERY = 10  # steps between reads of the device-side counters (one small sync each)
MAX_CONSECUTIVE = 50  # skipped steps in a row before giving up


def fused_supported(device: torch.device) -> bool:
    """Whether torch has fused Adam kernels (which honour ``found_inf``) for this device type."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    return torch.device(device).type in _get_fused_kernels_supported_devices()


class StepGuard:
    def __init__(self, optimizer: torch.optim.Optimizer, check_every: int | None = None, max_consecutive: int | None = None):
        self.optimizer = optimizer
        self.fused = bool(optimizer.defaults.get("fused"))
        self.check_every = check_every or CHECK_EVERY
        self.max_consecutive = max_consecutive or MAX_CONSECUTIVE
        self._streak = None  # device tensors, created on the first step
        self._total = None
        self.skipped = 0  # host copies as of the last read
        self.consecutive = 0

    def step(self, loss: torch.Tensor, reject: torch.Tensor | None = None) -> None:
        """``optimizer.step()``, skipped for real when the loss or any gradient is NaN/inf, or when
        ``reject`` (a 0-d device bool, e.g. a render that overflowed its packing capacity) is True.
        Only non-finite skips count towards the divergence check; the caller counts its own rejects."""
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        total = loss.detach().float().sum()
        if grads:  # a non-finite entry makes its norm non-finite; one fused kernel for all tensors
            total = total + torch.stack(torch._foreach_norm(grads)).float().sum()
        found_inf = (~torch.isfinite(total)).float()
        skip = found_inf if reject is None else torch.maximum(found_inf, reject.to(found_inf.dtype))
        if self.fused:
            self.optimizer.found_inf = skip
            self.optimizer.step()
        elif not bool(skip):  # no fused kernel for this device: a host sync is the only way
            self.optimizer.step()
        if self._streak is None:
            self._streak = torch.zeros((), device=found_inf.device)
            self._total = torch.zeros((), device=found_inf.device)
        self._streak = (self._streak + 1.0) * found_inf
        self._total = self._total + found_inf

    def poll(self, step: int, force: bool = False) -> None:
        """Every ``check_every`` steps (or when forced): read the counters; stop after too many skips."""
        if self._streak is None or not (force or step % self.check_every == 0):
            return
        self.consecutive, self.skipped = (int(v) for v in torch.stack([self._streak, self._total]).tolist())
        if self.consecutive >= self.max_consecutive:
            raise TrainingDiverged(
                f"the last {self.consecutive} steps (up to step {step}) all had a non-finite loss or gradient and were "
                f"skipped ({self.skipped} skipped in all), so training stopped. The last checkpoint is kept and holds no "
                "NaN. Usual causes: an extreme --guidance-scale, or fp16 overflow on the GPU (resume with --dtype fp32)"
            )

"""engine/step_guard.py: a non-finite step leaves parameters and Adam's state untouched, is counted on
the device, and many in a row stop the run; with CUDA, no host synchronisation per step."""

from __future__ import annotations

import pytest
import torch

from engine import step_guard
from engine.errors import TrainingDiverged


def _setup(device="cpu", fused=True):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(8, device=device))
    opt = torch.optim.Adam([p], lr=0.1, fused=fused)
    return p, opt, step_guard.StepGuard(opt, check_every=1, max_consecutive=3)


def _step(p, opt, guard, bad: bool):
    opt.zero_grad(set_to_none=True)
    loss = (p**2).sum() * (float("nan") if bad else 1.0)
    loss.backward()
    guard.step(loss)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "fallback"])
def test_a_bad_step_changes_nothing_and_is_counted(fused):
    p, opt, guard = _setup(fused=fused)
    _step(p, opt, guard, bad=False)
    before = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
    _step(p, opt, guard, bad=True)
    assert torch.equal(p.detach(), before[0])
    assert all(torch.equal(v, opt.state[p][k]) for k, v in before[1].items())  # moments and step count too
    guard.poll(2)
    assert (guard.skipped, guard.consecutive) == (1, 1)
    _step(p, opt, guard, bad=False)
    guard.poll(3)
    assert (guard.skipped, guard.consecutive) == (1, 0) and not torch.equal(p.detach(), before[0])


def test_many_bad_steps_in_a_row_stop():
    p, opt, guard = _setup()
    _step(p, opt, guard, bad=False)
    for step in range(2, 5):
        _step(p, opt, guard, bad=True)
        if step < 4:
            guard.poll(step)
    with pytest.raises(TrainingDiverged, match="non-finite"):
        guard.poll(4)
    assert torch.isfinite(p).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host synchronisation is only observable on CUDA")
def test_no_host_sync_per_step_on_cuda():
    p, opt, guard = _setup(device="cuda")
    _step(p, opt, guard, bad=False)  # first step allocates the counters
    torch.cuda.set_sync_debug_mode("error")
    try:
        for bad in (False, True, False):
            opt.zero_grad(set_to_none=True)
            loss = (p**2).sum() * (float("nan") if bad else 1.0)
            loss.backward()
            guard.step(loss)  # raises if it synchronised
    finally:
        torch.cuda.set_sync_debug_mode("default")
    guard.poll(10, force=True)
    assert guard.skipped == 1

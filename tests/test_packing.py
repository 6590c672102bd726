"""Fixed-capacity packing (engine/render/packing.py): the same render and gradients as exact packing
without knowing the count on the host, and an overflow is detected, skipped and grown, never hidden."""

import pytest
import torch

from engine.cameras import make_cameras
from engine.field import NeRFField
from engine.occupancy import OccupancyGrid
from engine.render import render
from engine.render.packing import FixedCapacityPacker, pack_into, resolve_packing
from engine.render.rays import pack


def white(d):
    return torch.ones_like(d)


def test_pack_into_matches_nonzero_and_counts_past_the_capacity():
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(7, 13, generator=gen) < 0.3
    exact = pack(mask)
    n = len(exact)
    for cap in (n, n + 5, n - 4):
        idx, count = pack_into(mask, cap)
        assert idx.shape == (cap,) and int(count) == n
        kept = min(cap, n)
        assert torch.equal(idx[:kept], exact[:kept])
        assert bool((idx[kept:] == mask.numel()).all())  # padding: one past the end
    idx, count = pack_into(torch.zeros(5, dtype=torch.bool), 3)
    assert int(count) == 0 and idx.tolist() == [5, 5, 5]


def _scene():
    torch.manual_seed(0)
    field = NeRFField(hash_levels=4, hash_log2_table=12, hidden_dim=16, blob_radius=0.4)
    grid = OccupancyGrid(1.0, 16)
    grid.update(field.density, 2.0 / 16, generator=torch.Generator().manual_seed(0))
    grid.update(field.density, 2.0 / 16, generator=torch.Generator().manual_seed(1))
    assert 0.0 < float(grid.occupied_fraction()) < 0.9  # the grid really skips samples
    cams = make_cameras([20.0, 140.0], [15.0, 50.0], [2.5, 2.8], [1.0, 1.2])
    return field, grid, cams


def _render_and_grads(field, grid, cams, shading, packer):
    field.zero_grad()
    out = render(field, white, cams, 12, 16, shading=shading, light_positions=cams.origins * 1.3,
                 generator=torch.Generator().manual_seed(3), occupancy=grid, packer=packer)
    (out.image.sum() + out.depth.sum() + (out.weights[:, None] * out.normals).sum() if out.normals is not None
     else out.image.sum() + out.depth.sum()).backward()
    return out, [p.grad.clone() for p in field.parameters() if p.grad is not None]


@pytest.mark.parametrize("shading", ["albedo", "shaded"])
def test_fixed_capacity_render_equals_exact_packing(shading):
    field, grid, cams = _scene()
    packer = FixedCapacityPacker()
    ref, ref_grads = _render_and_grads(field, grid, cams, shading, None)
    for _ in range(2):  # first use sizes each site; the second render runs on those capacities
        out, grads = _render_and_grads(field, grid, cams, shading, packer)
    assert not bool(out.overflow)
    n = len(ref.weights)
    assert len(out.weights) >= n and packer.capacity["samples"] == len(out.weights)  # padded
    torch.testing.assert_close(out.image, ref.image, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.opacity, ref.opacity, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.depth, ref.depth, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.weights[:n], ref.weights, rtol=1e-5, atol=1e-7)
    assert bool((out.weights[n:] == 0).all())
    if shading == "shaded":
        torch.testing.assert_close(out.normals[:n], ref.normals, rtol=1e-4, atol=1e-6)
        assert "normals" in packer.capacity
    assert len(grads) == len(ref_grads) > 0
    for a, b in zip(grads, ref_grads):  # float sums over more rows (the padding adds exact zeros)
        assert float((a - b).norm()) <= 1e-4 * float(b.norm()), (a - b).abs().max()


def test_an_overflow_is_detected_and_the_capacity_grows():
    field, grid, cams = _scene()
    packer = FixedCapacityPacker()
    ref, _ = _render_and_grads(field, grid, cams, "shaded", None)
    _render_and_grads(field, grid, cams, "shaded", packer)
    packer.poll()
    packer.capacity["samples"] = len(ref.weights) // 2  # as if the field had grown since the last read
    out, _ = _render_and_grads(field, grid, cams, "shaded", packer)
    assert bool(out.overflow)
    assert not torch.allclose(out.image, ref.image)  # the incomplete render the flag reports
    stats = packer.poll()
    assert stats["overflows"] == 1 and packer.overflows == 1 and packer.grown == 1
    assert packer.capacity["samples"] >= len(ref.weights)
    again, _ = _render_and_grads(field, grid, cams, "shaded", packer)
    assert not bool(again.overflow)
    torch.testing.assert_close(again.image, ref.image, rtol=1e-5, atol=1e-6)
    assert packer.poll()["overflows"] == 0 and packer.overflows == 1


def test_packing_choice_and_bad_values():
    from engine.config import build_config
    from engine.errors import ConfigError

    assert resolve_packing("auto", "cpu") == "exact" and resolve_packing("auto", "cuda") == "fixed"
    assert resolve_packing("fixed", "cpu") == "fixed" and resolve_packing("exact", "cuda") == "exact"
    with pytest.raises(ValueError, match="packing"):
        resolve_packing("dense", "cpu")
    with pytest.raises(ConfigError, match="packing must be"):
        build_config("draft", prompt="x", packing="sometimes")
    with pytest.raises(ValueError, match="margin"):
        FixedCapacityPacker(margin=0.5)

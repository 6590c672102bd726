"""An occupancy grid for empty-space skipping, in plain PyTorch (CPU, CUDA, MPS).

As nerfacc's ``OccGridEstimator`` does: a cubic grid over [-bound, bound]^3 keeps a running
maximum of the density seen in each cell (decayed at each update, sampled at a random point of
the cell), and a cell counts as occupied when that value could make a visible sample: above
``min(threshold, mean)`` (the threshold: the density that gives a sample alpha 0.01). Occupied cells are dilated by one cell, so a surface can grow into its
neighbours between updates. The renderer drops samples in unoccupied cells.

Updates run under no_grad every few steps; the first covers every cell, later ones a random
quarter of them plus every occupied cell (the cells most likely to change). Nothing is read back to
the host: the threshold and the masks stay on the device.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


class OccupancyGrid:
    def __init__(self, bound: float, resolution: int, device: torch.device | str = "cpu", decay: float = 0.95,
                 chunk: int = 65536):
        if resolution < 2:
            raise ValueError(f"occupancy grid resolution must be >= 2, got {resolution}")
        self.bound = float(bound)
        self.resolution = int(resolution)
        self.decay = float(decay)
        self.chunk = chunk
        r = self.resolution
        self.density = torch.zeros(r, r, r, device=device)
        # Until the first update every cell is occupied: the render is then exactly the grid-less one.
        self.mask = torch.ones(r, r, r, dtype=torch.bool, device=device)
        self.updates = 0
        ii = torch.arange(r, device=device)
        self._cells = torch.stack(torch.meshgrid(ii, ii, ii, indexing="ij"), dim=-1).reshape(-1, 3)

    def cell_index(self, points: torch.Tensor) -> torch.Tensor:
        """Flat cell index of each point (..., 3); points outside the cube are clamped to its border cells."""
        r = self.resolution
        ijk = ((points / self.bound + 1.0) * 0.5 * r).floor().long().clamp(0, r - 1)
        return (ijk[..., 0] * r + ijk[..., 1]) * r + ijk[..., 2]

    def occupied(self, points: torch.Tensor) -> torch.Tensor:
        """Boolean (...,): is each point in an occupied cell."""
        return self.mask.reshape(-1)[self.cell_index(points)]

    @torch.no_grad()
    def update(self, density_fn, step_size: float, generator: torch.Generator | None = None,
               alpha_threshold: float = 0.01) -> None:
        """Refresh the grid from ``density_fn`` (N,3) -> (N,). ``step_size`` is the renderer's sample
        spacing: a cell is occupied when a sample there could have alpha >= ``alpha_threshold``
        (density >= -ln(1 - alpha_threshold) / step_size), or when it is above the grid's mean."""
        r = self.resolution
        device = self.density.device
        gen_device = generator.device if generator is not None else device
        if self.updates == 0:
            cells = self._cells
        else:
            # A random quarter of the cells plus every occupied one, as nerfacc does after warm-up.
            # torch.where on the mask would need the count on the host; a fixed-size draw does not.
            n = self._cells.shape[0]
            rand = torch.randint(0, n, (n // 4,), generator=generator, device=gen_device).to(device)
            occ = torch.argsort(self.mask.reshape(-1).to(torch.uint8), descending=True, stable=True)[: n // 4]
            cells = self._cells[torch.cat([rand, occ])]
        jitter = torch.rand(cells.shape, generator=generator, device=gen_device).to(device)
        points = ((cells + jitter) / r * 2.0 - 1.0) * self.bound
        sigma = torch.cat([density_fn(p) for p in points.split(self.chunk)]).float()
        flat = (cells[:, 0] * r + cells[:, 1]) * r + cells[:, 2]
        decayed = self.density.reshape(-1) * self.decay
        new = decayed.scatter_reduce(0, flat, sigma, reduce="amax", include_self=False)
        # Cells not sampled keep their decayed value; sampled ones take max(decayed, sampled).
        self.density = torch.maximum(decayed, new).reshape(r, r, r)
        thresh = self.density.mean().clamp(max=-math.log1p(-alpha_threshold) / step_size)
        occupied = (self.density >= thresh).float()[None, None]
        self.mask = F.max_pool3d(occupied, kernel_size=3, stride=1, padding=1)[0, 0] > 0
        self.updates += 1

    def occupied_fraction(self) -> torch.Tensor:
        """Share of occupied cells, as a 0-d device tensor (read it only when reporting)."""
        return self.mask.float().mean()

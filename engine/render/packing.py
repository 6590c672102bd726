"""Packing the samples worth evaluating into a buffer of fixed capacity, so a step has no
data-dependent tensor size and no host synchronisation.

``rays.pack`` (``nonzero()``) gives exactly the selected indices, but their number must reach the host
before the packed tensors can be allocated: on a GPU that waits for the device at each call (twice a
step: occupied samples, then samples that need normals). ``pack_into`` instead writes the selected
indices into ``capacity`` slots (``cumsum`` + ``scatter`` on the device), pads the rest with one
past the end (the renderer appends one dummy sample there, whose weight is 0), and returns the true
count as a device tensor.

``FixedCapacityPacker`` keeps one capacity per packing site. A site's first call sizes it from that
call's count x2 (one host read per site per run; the normals' site, a mask over the packed samples, starts
at their capacity instead, with no read: one view's count is a poor guide, measured); after that the capacities are re-sized only when the
trainer reads its statistics anyway (``poll``, every few steps): the largest count seen since the last
read, times ``margin``, rounded up (growing at once, shrinking only with ``margin``² to spare). When a step needs more than the capacity, the samples past it are
not evaluated, so the render is wrong: the step reports it (``overflow``, a device flag), the trainer
hands it to the step guard, which skips that update on the device (parameters and Adam's moments stay
untouched, as for a non-finite step), and the next ``poll`` grows the capacity and records the overflow.
No visible sample is ever dropped silently: a step either sees all of them or changes nothing.
"""

from __future__ import annotations

import math

import torch

PACKINGS = ("auto", "exact", "fixed")
# capacity = the largest count since the last read x MARGIN (counts vary with the camera's distance and
# focal length, and the grid changes every few updates); a site's first sizing, with no history, x FIRST_MARGIN.
# Padding costs field evaluations at one dummy point, small next to the guidance model's share of a GPU step.
MARGIN = 1.5
FIRST_MARGIN = 2.0
GRANULE = 256  # capacities are rounded up to a multiple of this (fewer distinct shapes for allocators/compilers)


def pack_into(mask: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (capacity,), count (0-d)): the flat indices of ``mask``'s True entries in row-major
    order (the first ``capacity`` of them), then ``mask.numel()`` in the unused slots; and how many
    True entries there are (may exceed ``capacity``: the caller must check). No host read."""
    flat = mask.reshape(-1)
    n = flat.numel()
    pos = torch.cumsum(flat, 0) - 1  # int64: slot of each True entry
    count = pos[-1] + 1 if n else torch.zeros((), dtype=torch.long, device=mask.device)
    # Entries not selected, or past the capacity, go to a discarded extra slot.
    dest = torch.where(flat & (pos < capacity), pos, torch.full_like(pos, capacity))
    out = torch.full((capacity + 1,), n, dtype=torch.long, device=mask.device)
    out.scatter_(0, dest, torch.arange(n, device=mask.device))
    return out[:capacity], count


def resolve_packing(packing: str, device: torch.device | str) -> str:
    """'auto': fixed capacity where ``nonzero()`` would synchronise (any accelerator), exact on the CPU
    (no synchronisation to save there, and the exact path evaluates no padding)."""
    if packing not in PACKINGS:
        raise ValueError(f"unknown packing {packing!r}: choose one of {', '.join(PACKINGS)}")
    if packing == "auto":
        return "exact" if torch.device(device).type == "cpu" else "fixed"
    return packing


class FixedCapacityPacker:
    def __init__(self, margin: float = MARGIN, granule: int = GRANULE):
        if not margin >= 1.0:
            raise ValueError(f"packing margin must be >= 1, got {margin}")
        self.margin, self.granule = float(margin), int(granule)
        self.capacity: dict[str, int] = {}
        self._peak: dict[str, torch.Tensor] = {}  # site -> largest count since the last poll (device)
        self._overflows = None  # device: steps (renders) that overflowed since the last poll
        self.overflows = 0  # host, as of the last poll: renders that overflowed in all
        self.grown = 0  # capacity increases made after an overflow

    def size_for(self, count: float, margin: float | None = None) -> int:
        """Capacity for ``count`` entries: count x margin, rounded up to a multiple of the granule."""
        want = max(1, math.ceil(count * (self.margin if margin is None else margin)))
        return -(-want // self.granule) * self.granule

    def pack(self, mask: torch.Tensor, site: str, first_read: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices (capacity,), overflow (0-d bool)) for ``mask`` at packing site ``site``. A site's first
        use sizes it from this mask's count (one host read, once per site), or with ``first_read=False``
        from ``mask.numel()`` (no read; for a mask over already-packed samples, whose size is a bound)."""
        limit = mask.numel()
        if site not in self.capacity:
            self.capacity[site] = self.size_for(int(mask.sum()), max(self.margin, FIRST_MARGIN)) if first_read else limit
        cap = min(self.capacity[site], limit)
        idx, count = pack_into(mask, cap)
        peak = self._peak.get(site)
        self._peak[site] = count if peak is None else torch.maximum(peak, count)
        return idx, count > cap

    def record(self, overflow: torch.Tensor) -> None:
        """Count a render's overflow flag (on the device)."""
        o = overflow.to(torch.long)
        self._overflows = o if self._overflows is None else self._overflows + o

    def poll(self) -> dict:
        """Read the counts since the last poll (one host read) and re-size every site to its largest
        count x margin. Returns {"overflows": renders that overflowed since the last poll, "peak": the
        largest count per site since then, "before": the capacities they were packed into, "capacity": the new ones}."""
        sites = list(self._peak)
        before = dict(self.capacity)
        if not sites:
            return {"overflows": 0, "peak": {}, "before": before, "capacity": before}
        vals = torch.stack([self._peak[s] for s in sites]
                           + [self._overflows if self._overflows is not None else torch.zeros_like(self._peak[sites[0]])]).tolist()
        overflows = int(vals[-1])
        for site, peak in zip(sites, vals[:-1]):
            need, cap = self.size_for(int(peak)), self.capacity[site]
            if need > cap:  # grow at once (past an overflow's true count)
                self.capacity[site] = need
                self.grown += int(overflows > 0)
            elif not overflows and self.size_for(int(peak) * self.margin) < cap:
                # Shrink only with margin^2 to spare, and never after an overflow: an overflowed render
                # under-counts the later sites (its normals were chosen among fewer samples).
                self.capacity[site] = self.size_for(int(peak) * self.margin)
        self._peak, self._overflows = {}, None
        self.overflows += overflows
        return {"overflows": overflows, "peak": {s: int(p) for s, p in zip(sites, vals[:-1])}, "before": before,
                "capacity": dict(self.capacity)}

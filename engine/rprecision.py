"""CLIP R-Precision (DreamFusion Table 1, after Dream Fields): pure functions on a similarity matrix.

``similarity[i, j]`` is how well run i's renders match caption j (any judge: CLIP cosine, a diffusion
prior's denoising gain). Run i is a hit when its own caption ``own[i]`` scores strictly above every
other caption of the set. Ties count as misses: a judge that cannot tell two captions apart has not
retrieved the right one (the conservative rule; a fractional 1/k rule would reward constant judges).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .errors import ConfigError

Z95 = 1.959964  # two-sided 95 % normal quantile


@dataclass
class RPrecision:
    hits: int
    runs: int
    captions: int
    value: float  # hits / runs
    ci_low: float  # Wilson 95 % interval
    ci_high: float

    def to_json(self) -> dict:
        return asdict(self)


def check_captions(captions: list[str]) -> None:
    """The set must hold at least two distinct captions: with one, top-1 is trivially right; with a
    repeat, the run's own caption ties with its copy and could never be retrieved."""
    if len(captions) < 2:
        raise ConfigError(f"R-Precision needs at least two captions to choose among; got {len(captions)}")
    seen: dict[str, int] = {}
    for i, c in enumerate(captions):
        if c in seen:
            raise ConfigError(f"caption {i + 1} repeats caption {seen[c] + 1} ({c!r}); every caption must be distinct")
        seen[c] = i


def top1_hits(similarity: torch.Tensor, own: list[int]) -> list[bool]:
    """Per run: its own caption strictly above all others (a tie is a miss)."""
    sim = torch.as_tensor(similarity, dtype=torch.float64)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be runs x captions, got shape {tuple(sim.shape)}")
    if len(own) != sim.shape[0]:
        raise ValueError(f"{len(own)} own-caption indices for {sim.shape[0]} runs")
    if sim.shape[0] == 0:
        raise ValueError("no runs to score")
    if not torch.isfinite(sim).all():
        raise ValueError("the similarity matrix has non-finite entries")
    hits = []
    for i, j in enumerate(own):
        if not 0 <= j < sim.shape[1]:
            raise ValueError(f"run {i}'s caption index {j} is outside 0..{sim.shape[1] - 1}")
        others = torch.cat([sim[i, :j], sim[i, j + 1:]])
        hits.append(bool(sim[i, j] > others.max()))
    return hits


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial share: sensible at 0/n, n/n and for small n."""
    if n <= 0:
        raise ValueError("the interval needs at least one run")
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    if hits == 0:  # exact ends: rounding must not move them off 0 or 1
        return 0.0, min(1.0, centre + half)
    if hits == n:
        return max(0.0, centre - half), 1.0
    return max(0.0, centre - half), min(1.0, centre + half)


def r_precision(similarity, own: list[int], captions: list[str] | None = None) -> RPrecision:
    """R-Precision (R = 1: one relevant caption per run) with its Wilson 95 % interval."""
    if captions is not None:
        check_captions(captions)
        if len(captions) != torch.as_tensor(similarity).shape[-1]:
            raise ValueError(f"{len(captions)} captions for a matrix of {torch.as_tensor(similarity).shape[-1]} columns")
    hits = top1_hits(similarity, own)
    n, k = len(hits), sum(hits)
    lo, hi = wilson_interval(k, n)
    return RPrecision(hits=k, runs=n, captions=int(torch.as_tensor(similarity).shape[1]), value=k / n, ci_low=lo, ci_high=hi)

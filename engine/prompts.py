"""Prompt processing apart from the diffusion model: view-dependent prompts, azimuth-interpolated view
embeddings, and Perp-Neg's negative view prompts with their weights.

Each view prompt is encoded once per run; per step, a camera batch picks (or blends) embeddings.

- ``labels``: the paper's view-dependent prompting, one of "front/side/back/overhead view" per camera.
- ``interpolate`` (stable-dreamfusion): below the overhead threshold the embedding is blended by
  azimuth, front→side over |azimuth| 0→90° and side→back over 90→180°, so nearby views get nearby
  conditions instead of a hard switch at 45°/135° (one cause of two-faced "Janus" objects).
- Perp-Neg (Armandpour et al. 2023, in both references): the other views' prompts act as negative
  guidance, only through their component perpendicular to the positive direction, so "not the
  front" can be asked of a back view without cancelling the prompt itself. The weights are
  threestudio's defaults (``a·exp(-b·r) + c`` of the interpolation ratio r).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .cameras import VIEW_LABELS, view_label, view_prompt

# threestudio's prompt_processors/base.py defaults: (a, b, c) for a*exp(-b*r) + c.
PERP_NEG_F_FS = (4.0, 0.5, -2.426)  # front view's negative "side" weight: f_fs(1) = 0 at pure side
PERP_NEG_F_SF = (4.0, 0.5, -2.426)
PERP_NEG_F_SB = (1.0, 0.5, -0.606)
PERP_NEG_F_FSB = (1.0, 0.5, 0.967)


def _decay(abc: tuple[float, float, float], r: float) -> float:
    a, b, c = abc
    return a * math.exp(-b * r) + c


@dataclass
class ViewConditioning:
    """Text conditions for one camera batch."""

    cond: torch.Tensor  # (B, L, D)
    uncond: torch.Tensor  # (B, L, D)
    negatives: torch.Tensor | None = None  # (B, K, L, D), Perp-Neg's negative prompts
    negative_weights: torch.Tensor | None = None  # (B, K), <= 0


def interpolation(azimuth: float) -> tuple[str, str, float]:
    """(near label, far label, r): the blend is r * near + (1 - r) * far. Front half: front/side with
    r = 1 - |a|/90; back half: side/back with r = 2 - |a|/90 (threestudio and stable-dreamfusion)."""
    a = abs((azimuth + 180.0) % 360.0 - 180.0)
    if a < 90.0:
        return "front", "side", 1.0 - a / 90.0
    return "side", "back", 2.0 - a / 90.0


def perp_neg_terms(azimuth: float, elevation: float, overhead_elevation: float) -> list[tuple[str | None, float]]:
    """Perp-Neg's two (negative label, weight) pairs for one camera; label None means the
    unconditional embedding with weight 0 (overhead views get no negatives, as in threestudio)."""
    if elevation > overhead_elevation:
        return [(None, 0.0), (None, 0.0)]
    near, _, r = interpolation(azimuth)
    if near == "front":
        return [("front", -_decay(PERP_NEG_F_FS, r)), ("side", -_decay(PERP_NEG_F_SF, 1.0 - r))]
    return [("side", -_decay(PERP_NEG_F_SB, r)), ("front", -_decay(PERP_NEG_F_FSB, r))]


class ViewPrompts:
    """The run's prompt as text embeddings per view; ``for_cameras`` gives a batch's conditions."""

    def __init__(self, encode, prompt: str, negative_prompt: str = "", mode: str = "labels", perp_neg: bool = False,
                 overhead_elevation: float = 60.0):
        if mode not in ("labels", "interpolate"):
            raise ValueError(f"unknown view embedding mode {mode!r}")
        self.mode = mode
        self.perp_neg = perp_neg
        self.overhead_elevation = overhead_elevation
        self.uncond = encode([negative_prompt])[0]
        self.views = {label: encode([view_prompt(prompt, label)])[0] for label in VIEW_LABELS}

    def positive(self, azimuth: float, elevation: float) -> torch.Tensor:
        label = view_label(azimuth, elevation, self.overhead_elevation)
        if self.mode == "labels" or label == "overhead":
            return self.views[label]
        near, far, r = interpolation(azimuth)
        return r * self.views[near] + (1.0 - r) * self.views[far]

    def for_cameras(self, azimuth: torch.Tensor, elevation: torch.Tensor) -> ViewConditioning:
        angles = list(zip(azimuth.tolist(), elevation.tolist()))
        cond = torch.stack([self.positive(a, e) for a, e in angles])
        uncond = self.uncond.expand_as(cond)
        if not self.perp_neg:
            return ViewConditioning(cond, uncond)
        terms = [perp_neg_terms(a, e, self.overhead_elevation) for a, e in angles]
        negatives = torch.stack([torch.stack([self.uncond if lab is None else self.views[lab] for lab, _ in t]) for t in terms])
        weights = torch.tensor([[w for _, w in t] for t in terms], dtype=torch.float32, device=cond.device)
        return ViewConditioning(cond, uncond, negatives, weights)

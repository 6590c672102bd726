"""Cameras: random training cameras (the paper's distribution), fixed orbits for previews, and the
view label ("front", "side", "back", "overhead") each camera appends to the prompt.

World convention (glTF's): +Y is up, the object's front faces +Z. A camera at azimuth ``a`` and
elevation ``e`` (degrees) and distance ``d`` sits at
``d * (cos e * sin a, sin e, cos e * cos a)`` and looks at the origin; azimuth 0 is the front.
Camera space is OpenGL's: the camera looks down -Z, +X is right, +Y is up.

The paper samples distance 1-1.5 for a scene of roughly unit size; our bounding sphere has radius 1
(``bound``), so distances are given in units of the bound and default to 2-3 (see config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

VIEW_LABELS = ("front", "side", "back", "overhead")


@dataclass
class CameraBatch:
    """A batch of B pinhole cameras. Angles in degrees; ``focal`` in units of the image width."""

    c2w: torch.Tensor  # (B, 4, 4) camera-to-world
    focal: torch.Tensor  # (B,) focal length / image width
    azimuth: torch.Tensor  # (B,) degrees in [-180, 180)
    elevation: torch.Tensor  # (B,) degrees
    distance: torch.Tensor  # (B,)

    @property
    def origins(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> "CameraBatch":
        """A sub-batch (slice, index tensor or list); an int keeps its batch dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return CameraBatch(self.c2w[index], self.focal[index], self.azimuth[index], self.elevation[index], self.distance[index])

    def labels(self, overhead_elevation: float = 60.0) -> list[str]:
        return [view_label(float(a), float(e), overhead_elevation) for a, e in zip(self.azimuth, self.elevation)]

    def label_index(self, overhead_elevation: float = 60.0) -> torch.Tensor:
        """Indices into VIEW_LABELS (B,), computed on the cameras' device: the training step picks the
        view's text embedding with them without reading angles back to the host (``view_label``'s rule)."""
        a = ((self.azimuth + 180.0) % 360.0 - 180.0).abs()
        side = torch.where(a <= 45.0, 0, torch.where(a >= 135.0, 2, 1))
        return torch.where(self.elevation > overhead_elevation, 3, side)


def view_label(azimuth: float, elevation: float, overhead_elevation: float = 60.0) -> str:
    """DreamFusion's view-dependent prompt label for a camera direction."""
    if elevation > overhead_elevation:
        return "overhead"
    a = abs((azimuth + 180.0) % 360.0 - 180.0)  # |azimuth| folded into [0, 180]
    if a <= 45.0:
        return "front"
    if a >= 135.0:
        return "back"
    return "side"


def view_prompt(prompt: str, label: str) -> str:
    """The text the diffusion model sees for a prompt seen from one view."""
    return f"{prompt}, {label} view"


def look_at(origins: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-to-world matrices for cameras at ``origins`` (B,3) looking at ``target`` (default 0)."""
    if target is None:
        target = torch.zeros_like(origins)
    forward = torch.nn.functional.normalize(target - origins, dim=-1)  # camera -Z
    up = torch.tensor([0.0, 1.0, 0.0], dtype=origins.dtype, device=origins.device).expand_as(forward)
    right = torch.cross(forward, up, dim=-1)
    # Straight overhead the world up is parallel to the view direction: fall back to +Z as "up".
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    alt_up = torch.tensor([0.0, 0.0, -1.0], dtype=origins.dtype, device=origins.device).expand_as(forward)
    right = torch.where(degenerate, torch.cross(forward, alt_up, dim=-1), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.cross(right, forward, dim=-1)
    c2w = torch.zeros(origins.shape[0], 4, 4, dtype=origins.dtype, device=origins.device)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = true_up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = origins
    c2w[:, 3, 3] = 1.0
    return c2w


def spherical_to_position(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    a = torch.deg2rad(azimuth_deg)
    e = torch.deg2rad(elevation_deg)
    return torch.stack(
        [distance * torch.cos(e) * torch.sin(a), distance * torch.sin(e), distance * torch.cos(e) * torch.cos(a)], dim=-1
    )


def make_cameras(azimuth, elevation, distance, focal, device=None) -> CameraBatch:
    """Cameras from explicit angles (degrees), distances and focal lengths (× image width)."""
    t = lambda v: torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1)  # noqa: E731
    az, el, dist, foc = t(azimuth), t(elevation), t(distance), t(focal)
    n = max(len(az), len(el), len(dist), len(foc))
    az, el, dist, foc = (x.expand(n).clone() if len(x) == 1 else x for x in (az, el, dist, foc))
    c2w = look_at(spherical_to_position(az, el, dist))
    az = (az + 180.0) % 360.0 - 180.0
    return CameraBatch(c2w=c2w, focal=foc, azimuth=az, elevation=el, distance=dist)


def sample_cameras(
    batch: int,
    generator: torch.Generator,
    elevation_range=(-10.0, 90.0),
    distance_range=(2.0, 3.0),
    focal_range=(0.7, 1.35),
    device=None,
    uniform_sphere_rate: float = 0.0,
) -> CameraBatch:
    """Random training cameras as in the paper: azimuth uniform in [0, 360), elevation, distance
    and focal length (× width) uniform in their ranges.

    Elevation uniform in angle (the paper's choice) over-represents the poles; a share
    ``uniform_sphere_rate`` of the cameras instead draws it uniformly on the sphere's surface within
    the same range (threestudio does so for half of its batches), i.e. sin(elevation) uniform."""

    # Drawn on the generator's device: a generator on the training device needs no host copy.
    gen_device = generator.device if generator is not None else "cpu"

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(batch, generator=generator, device=gen_device)

    az = u(0.0, 360.0)
    el = u(*elevation_range)
    if uniform_sphere_rate > 0:
        lo, hi = (math.sin(math.radians(e)) for e in elevation_range)
        on_sphere = torch.rad2deg(torch.asin(u(lo, hi).clamp(-1.0, 1.0)))
        el = torch.where(u(0.0, 1.0) < uniform_sphere_rate, on_sphere, el)
    dist = u(*distance_range)
    foc = u(*focal_range)
    return make_cameras(az, el, dist, foc, device=device)


def orbit_cameras(n_views: int = 4, elevation: float = 15.0, distance: float = 2.5, focal: float = 1.0, device=None) -> CameraBatch:
    """A fixed ring of evenly spaced cameras (front first) for previews and evaluation."""
    az = torch.arange(n_views, dtype=torch.float32) * (360.0 / n_views)
    return make_cameras(az, elevation, distance, focal, device=device)


def sample_light_positions(cameras: CameraBatch, generator: torch.Generator, spread_deg: float = 45.0, distance_scale=(0.8, 1.5)) -> torch.Tensor:
    """Point lights "sampled around the camera position" (paper): the camera direction perturbed by
    up to ``spread_deg`` and placed at a random multiple of the camera distance."""
    b = len(cameras)
    gen_device = generator.device if generator is not None else "cpu"  # draws stay on the generator's device
    cam_dir = torch.nn.functional.normalize(cameras.origins.to(gen_device), dim=-1)
    noise = torch.randn(b, 3, generator=generator, device=gen_device)
    noise = noise - (noise * cam_dir).sum(-1, keepdim=True) * cam_dir
    noise = torch.nn.functional.normalize(noise, dim=-1)
    angle = torch.deg2rad(torch.rand(b, generator=generator, device=gen_device) * spread_deg).unsqueeze(-1)
    direction = cam_dir * torch.cos(angle) + noise * torch.sin(angle)
    lo, hi = distance_scale
    scale = lo + (hi - lo) * torch.rand(b, generator=generator, device=gen_device)
    pos = direction * (cameras.distance.to(gen_device) * scale).unsqueeze(-1)
    return pos.to(cameras.c2w.device)


def focal_to_fov_deg(focal: float) -> float:
    """Horizontal field of view for a focal length given in units of the image width."""
    return math.degrees(2.0 * math.atan(0.5 / focal))

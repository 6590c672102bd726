"""Where does SDS with the builtin prior push an analytic shape? The fixed point of the SDS force.

    python -m engine.priors.sds_probe --prompt "a blue sphere" --param scale --values 0.8 0.9 1 1.1 1.2

For a family of analytic shapes x(θ) (the prompted shape scaled by θ, stretched along its axis by θ,
or a torus with minor radius θ), rendered exactly as the prior's training images (shapes_data) from
the SDS run's cameras and lights, the SDS update moves θ along

    F(θ) = −E_{view, t, ε}[ w(t) (ε̂(z_t) − ε) · ∂x/∂θ ],   ε̂ = ε_u + s (ε_c − ε_u)

(∂x/∂θ by central differences). F > 0: SDS grows θ; F < 0: shrinks it; its zero crossing is where
an optimisation that could only move θ would settle. One U-Net call gives ε_u and ε_c, so every
guidance s and every t sub-range is read off the same samples (common random numbers across θ).
A diagnostic for the recipe (docs/SDS_SHAPES.md): it separates what the prior + SDS want from what
the NeRF, the renderer or the optimiser add.
"""

from __future__ import annotations

import argparse
import json

import torch

from ..cameras import sample_cameras, sample_light_positions, view_prompt
from . import resolve_builtin
from . import shapes_data as sd
from .check_shapes import encode, load

PROBE = "_probe"


def variant_sdf(shape: str, param: str, theta: float):
    """The signed distance of the shape family member θ (1-Lipschitz up to the scale, so safe to trace)."""
    base = sd.SDF[shape]
    if param == "scale":
        return lambda p: base(p / theta) * theta
    if param == "height":  # stretch along the axis (+Y) only
        s = torch.tensor([1.0, theta, 1.0])
        return lambda p: base(p / s) * min(1.0, theta)
    if param == "minor":  # torus tube radius
        def torus(p):
            q = torch.stack([p[..., [0, 2]].norm(dim=-1) - sd.TORUS_R, p[..., 1]], dim=-1)
            return q.norm(dim=-1) - theta
        return torus
    raise ValueError(f"unknown param {param!r}")


def render(sdf_fn, cams, lights, albedo, ambient, size):
    sd.SDF[PROBE] = sdf_fn
    radius, sd.SCENE_RADIUS = sd.SCENE_RADIUS, 0.95  # the tracer starts on this sphere: room for enlarged shapes
    try:
        cd = sd.render_views(PROBE, cams, lights, size, supersample=4)
    finally:
        del sd.SDF[PROBE]
        sd.SCENE_RADIUS = radius
    return sd.compose(cd, albedo.expand(len(cams), 3), ambient) * 2 - 1  # [-1, 1], as SDS sees it


@torch.no_grad()
def probe(model, prompt: str, param: str, values, delta: float, views: int, noises: int, seed: int,
          albedo_share: float = 0.3, ambient: float = 0.1, elevation=(-10.0, 90.0), distance=(2.0, 3.0),
          focal=(0.7, 1.35), labels: bool = True, chunk: int = 64):
    tok, te, unet, sched = model
    colour, shape = sd.parse_prompt(prompt)
    size = unet.config.sample_size
    g = torch.Generator().manual_seed(seed)
    cams = sample_cameras(views, g, elevation, distance, focal)
    lights = sample_light_positions(cams, g)
    amb = torch.where(torch.rand(views, generator=g) < albedo_share, 1.0, ambient)
    texts = [view_prompt(prompt, l) if labels else prompt for l in cams.labels()]
    cond = encode(tok, te, texts)
    uncond = encode(tok, te, [""]).expand(views, -1, -1)
    t = torch.randint(20, 981, (noises, views), generator=g)
    eps = torch.randn(noises, views, 3, size, size, generator=g)
    ac = sched.alphas_cumprod
    albedo = sd.colour_rgb(colour)
    rows = []
    for theta in values:
        x0 = render(variant_sdf(shape, param, theta), cams, lights, albedo, amb, size)
        dx = (render(variant_sdf(shape, param, theta + delta), cams, lights, albedo, amb, size)
              - render(variant_sdf(shape, param, theta - delta), cams, lights, albedo, amb, size)) / (2 * delta)
        A = torch.zeros(noises, views)
        B = torch.zeros(noises, views)
        for k in range(noises):
            for i in range(0, views, chunk):
                sl = slice(i, i + chunk)
                a = ac[t[k, sl]].view(-1, 1, 1, 1)
                z = a.sqrt() * x0[sl] + (1 - a).sqrt() * eps[k, sl]
                n = z.shape[0]
                out = unet(torch.cat([z, z]), torch.cat([t[k, sl]] * 2), encoder_hidden_states=torch.cat([uncond[sl], cond[sl]])).sample
                eu, ec = out.chunk(2)
                w = 1 - a
                A[k, sl] = (w * (eu - eps[k, sl]) * dx[sl]).flatten(1).sum(1)
                B[k, sl] = (w * (ec - eu) * dx[sl]).flatten(1).sum(1)
        rows.append({"theta": theta, "A": A, "B": B})
    return rows, t


def summarise(rows, t, scales=(1, 3, 7.5, 10, 20, 50), t_ranges=((20, 980), (20, 500), (500, 980), (200, 800))):
    out = {}
    for lo, hi in t_ranges:
        sel = (t >= lo) & (t <= hi)
        for s in scales:
            key = f"s={s} t={lo}-{hi}"
            forces = []
            for r in rows:
                f = -(r["A"] + s * r["B"])[sel]
                forces.append((round(f.mean().item(), 3), round(f.std().item() / max(1, sel.sum().item()) ** 0.5, 3)))
            out[key] = forces
    return out


def zero_crossing(values, forces):
    """θ where the force changes sign from + to − (a stable fixed point), linear interpolation; None if none."""
    for (v0, (f0, _)), (v1, (f1, _)) in zip(zip(values, forces), zip(values[1:], forces[1:])):
        if f0 > 0 >= f1:
            return round(v0 + (v1 - v0) * f0 / (f0 - f1), 3)
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", default="a blue sphere")
    ap.add_argument("--param", default="scale", choices=("scale", "height", "minor"))
    ap.add_argument("--values", type=float, nargs="+", default=[0.8, 0.9, 1.0, 1.1, 1.2])
    ap.add_argument("--delta", type=float, default=0.03)
    ap.add_argument("--views", type=int, default=64)
    ap.add_argument("--noises", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--albedo-share", type=float, default=0.3)
    ap.add_argument("--no-labels", action="store_true")
    ap.add_argument("--distance", type=float, nargs=2, default=[2.0, 3.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--raw", default=None, help="torch.save the per-sample terms here (any t range / guidance later)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load(resolve_builtin("builtin:shapes"))
    rows, t = probe(model, args.prompt, args.param, args.values, args.delta, args.views, args.noises, args.seed,
                    albedo_share=args.albedo_share, labels=not args.no_labels, distance=tuple(args.distance))
    summary = summarise(rows, t)
    if args.raw:
        torch.save({"args": vars(args), "rows": rows, "t": t}, args.raw)
    print(f"{args.prompt}: force on {args.param} at {args.values} (mean, std err); fixed point")
    for key, forces in summary.items():
        print(f"  {key:18s} {zero_crossing(args.values, forces)!s:>6}  " + "  ".join(f"{m:+.2f}±{e:.2f}" for m, e in forces))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "summary": summary}, fh, indent=1)


if __name__ == "__main__":
    main()

"""Check that the ``builtin:shapes`` prior draws what it is asked for.

    python -m engine.priors.check_shapes [--model engine/priors/shapes] [--per-label 3] [--steps 40]
        [--guidance 4] [--grid docs/prior_samples.png] [--json out.json]

For every caption ``"a {colour} {shape}, {label} view"`` it samples images with a DDIM loop and
classifier-free guidance (the empty prompt is the unconditional one, as in the engine), then judges
each sample with two simple pixel classifiers:

* colour: mean colour of the foreground (pixels whose darkest channel is far from white); the
  predicted colour is the palette albedo with the highest cosine similarity to it (shading only
  scales the albedo, so the direction of the RGB vector is what identifies the colour).
* shape: silhouette matching against view-matched analytic renders. For each view label, many
  cameras are drawn from the engine's training distribution restricted to that label and every shape
  is rendered from them (exact coverage masks); a sample is assigned the shape whose templates reach
  the highest mask IoU with its foreground mask. Scale (distance x focal) varies 3x in the camera
  distribution, so the template set covers sizes as well as directions.

The same classifiers are first run on held-out ground-truth renders, which gives their ceiling (some
views are ambiguous as silhouettes, e.g. a sphere, a cylinder and a cone are all discs seen from
straight above).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from ..cameras import VIEW_LABELS, CameraBatch, sample_cameras, sample_light_positions
from . import resolve_builtin
from . import shapes_data as sd

FG_THRESHOLD = 0.25  # a pixel is foreground when 1 - min(r, g, b) exceeds this


def load(folder: str | Path, threads: int | None = None):
    """Load the four components exactly as the engine does (safetensors, component by component)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(folder / "tokenizer")
    te = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", use_safetensors=True).eval()
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True).eval()
    sched = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    return tok, te, unet, sched


@torch.no_grad()
def encode(tok, te, texts: list[str]) -> torch.Tensor:
    ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")["input_ids"]
    return te(ids).last_hidden_state


@torch.no_grad()
def sample(model, captions: list[str], steps: int = 40, guidance: float = 4.0, seed: int = 0, eta: float = 0.0) -> torch.Tensor:
    """DDIM (eta=0) / ancestral (eta=1) sampling with CFG. Returns images (B,3,S,S) in [0,1]."""
    from diffusers import DDIMScheduler

    tok, te, unet, sched = model
    ddim = DDIMScheduler.from_config(sched.config)
    ddim.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    b = len(captions)
    cond = encode(tok, te, captions)
    uncond = encode(tok, te, [""]).expand(b, -1, -1)
    emb = torch.cat([uncond, cond])
    x = torch.randn(b, 3, size, size, generator=g)
    for t in ddim.timesteps:
        eps_u, eps_c = unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample.chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        x = ddim.step(eps, t, x, eta=eta, generator=g).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


# --- classifiers ------------------------------------------------------------------------------------

def foreground(images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [0,1] -> (B,H,W) bool."""
    return (1.0 - images.min(dim=1).values) > FG_THRESHOLD


def classify_colour(images: torch.Tensor) -> list[str | None]:
    names = list(sd.COLOURS)
    pal = F.normalize(torch.stack([sd.colour_rgb(c) for c in names]), dim=-1)
    fg = foreground(images)
    out = []
    for img, m in zip(images, fg):
        if m.sum() < 3:
            out.append(None)
            continue
        mean = img[:, m].mean(dim=1)
        out.append(names[int((F.normalize(mean, dim=0) @ pal.T).argmax())])
    return out


class ShapeClassifier:
    """Nearest view-matched analytic silhouette by IoU (see the module docstring)."""

    def __init__(self, size: int = 32, per_label: int = 150, seed: int = 1234):
        g = torch.Generator().manual_seed(seed)
        self.templates = {}  # label -> (n_shapes, K, H*W) bool
        for label in VIEW_LABELS:
            cams = _cameras_with_label(label, per_label, g)
            lights = sample_light_positions(cams, g)
            masks = [sd.render_views(s, cams, lights, size)[:, 0] > 0.5 for s in sd.SHAPES]
            self.templates[label] = torch.stack(masks).flatten(2)

    def scores(self, masks: torch.Tensor, labels: list[str]) -> torch.Tensor:
        """(B,H,W) masks -> (B, n_shapes) best IoU per shape."""
        out = []
        for m, label in zip(masks, labels):
            t = self.templates[label]
            mm = m.flatten()
            inter = (t & mm).sum(-1).float()
            union = (t | mm).sum(-1).float().clamp_min(1)
            out.append((inter / union).max(dim=-1).values)
        return torch.stack(out)

    def __call__(self, images: torch.Tensor, labels: list[str]) -> list[str]:
        s = self.scores(foreground(images), labels)
        return [sd.SHAPES[i] for i in s.argmax(dim=-1).tolist()]


def _cameras_with_label(label: str, n: int, g: torch.Generator) -> CameraBatch:
    """n cameras from the training distribution whose view label is ``label`` (rejection sampling)."""
    parts = []
    count = 0
    while count < n:
        cams = sample_cameras(4 * n, g)
        keep = torch.tensor([l == label for l in cams.labels()])
        idx = keep.nonzero().squeeze(-1)[: n - count]
        parts.append(cams[idx])
        count += len(idx)
    return CameraBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in ("c2w", "focal", "azimuth", "elevation", "distance")))


def ground_truth(per_label: int, size: int = 32, seed: int = 99):
    """Held-out analytic renders for every caption: images (N,3,S,S), colours, shapes, labels."""
    g = torch.Generator().manual_seed(seed)
    imgs, cols, shapes, labels = [], [], [], []
    for label in VIEW_LABELS:
        for shape in sd.SHAPES:
            for colour in sd.COLOURS:
                cams = _cameras_with_label(label, per_label, g)
                lights = sample_light_positions(cams, g)
                cd = sd.render_views(shape, cams, lights, size)
                amb = 0.1 + 0.4 * torch.rand(per_label, generator=g)
                imgs.append(sd.compose(cd, sd.colour_rgb(colour).expand(per_label, 3), amb))
                cols += [colour] * per_label
                shapes += [shape] * per_label
                labels += [label] * per_label
    return torch.cat(imgs), cols, shapes, labels


@torch.no_grad()
def denoising_check(model, timesteps=(300, 500, 700, 850), n: int = 40, seed: int = 0) -> dict:
    """One-step denoising of noised ground-truth renders: what SDS asks of the prior.

    n renders (every shape and colour in turn, random training cameras and lights), noised at each t;
    x̂₀ from one ε prediction with the true caption, with every other colour word and with every
    other shape word. Per t: mean |x̂₀ − x₀| in [-1, 1] units for each, and how often the true word
    gives the lowest error among the colour (resp. shape) alternatives (chance 1/4, resp. 1/5). A
    prior that ignores a word scores about chance there; a broken one has a large true-caption error."""
    tok, te, unet, sched = model
    g = torch.Generator().manual_seed(seed)
    cams = sample_cameras(n, g)
    lights = sample_light_positions(cams, g)
    colours, shapes = list(sd.COLOURS), list(sd.SHAPES)
    item_shape = [i % len(shapes) for i in range(n)]
    item_colour = [(i // len(shapes)) % len(colours) for i in range(n)]
    cd = torch.cat([sd.render_views(shapes[s], cams[i], lights[i:i + 1], unet.config.sample_size) for i, s in enumerate(item_shape)])
    x0 = sd.compose(cd, torch.stack([sd.colour_rgb(colours[c]) for c in item_colour]), torch.full((n,), 0.3)) * 2 - 1

    # Every caption says "front view" whatever the camera: the alternatives differ only in the word
    # under test, so the comparison stays fair. Shift k names the k-th next colour (shape) of each item.
    def errors(xt, t, a, colour_shift=0, shape_shift=0):
        captions = [sd.caption(colours[(item_colour[i] + colour_shift) % len(colours)],
                               shapes[(item_shape[i] + shape_shift) % len(shapes)], "front") for i in range(n)]
        eps = unet(xt, torch.full((n,), t), encoder_hidden_states=encode(tok, te, captions)).sample
        return (((xt - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1) - x0).abs().flatten(1).mean(1)

    out = {}
    for t in timesteps:
        a = sched.alphas_cumprod[t]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)
        by_colour = torch.stack([errors(xt, t, a, colour_shift=k) for k in range(len(colours))], 1)  # column 0: true
        by_shape = torch.stack([by_colour[:, 0]] + [errors(xt, t, a, shape_shift=k) for k in range(1, len(shapes))], 1)
        out[t] = {
            "true": round(by_colour[:, 0].mean().item(), 4),
            "wrong_colour": round(by_colour[:, 1:].mean().item(), 4),
            "wrong_shape": round(by_shape[:, 1:].mean().item(), 4),
            "colour_word_best": round((by_colour.argmin(1) == 0).float().mean().item(), 3),
            "shape_word_best": round((by_shape.argmin(1) == 0).float().mean().item(), 3),
        }
    return out


def report(colours, shapes, labels, pred_c, pred_s) -> dict:
    def acc(pairs):
        pairs = list(pairs)
        return round(sum(a == b for a, b in pairs) / max(1, len(pairs)), 3)

    res = {
        "n": len(colours),
        "colour_acc": acc(zip(colours, pred_c)),
        "shape_acc": acc(zip(shapes, pred_s)),
        "shape_acc_non_overhead": acc((a, b) for a, b, l in zip(shapes, pred_s, labels) if l != "overhead"),
        "both_acc": acc(((c, s), (pc, ps)) for c, s, pc, ps in zip(colours, shapes, pred_c, pred_s)),
        "per_colour": {c: acc((a, b) for a, b in zip(colours, pred_c) if a == c) for c in sd.COLOURS},
        "per_shape": {s: acc((a, b) for a, b in zip(shapes, pred_s) if a == s) for s in sd.SHAPES},
        "per_label_shape": {l: acc((a, b) for a, b, ll in zip(shapes, pred_s, labels) if ll == l) for l in VIEW_LABELS},
        "shape_confusion": {s: {p: sum(1 for a, b in zip(shapes, pred_s) if a == s and b == p) for p in sd.SHAPES} for s in sd.SHAPES},
    }
    return res


def save_grid(images: torch.Tensor, rows: list[str], cols_per_row: int, path: Path, col_titles: list[str], scale: int = 3):
    from PIL import Image, ImageDraw

    n, _, h, w = images.shape
    tw, th = w * scale, h * scale
    left, top = 130, 16
    canvas = Image.new("RGB", (left + cols_per_row * (tw + 2), top + len(rows) * (th + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    arr = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype("uint8")
    for i in range(n):
        r, c = divmod(i, cols_per_row)
        tile = Image.fromarray(arr[i]).resize((tw, th), Image.NEAREST)
        canvas.paste(tile, (left + c * (tw + 2), top + r * (th + 2)))
    for r, text in enumerate(rows):
        draw.text((4, top + r * (th + 2) + th // 2 - 6), text, fill="black")
    for c, text in enumerate(col_titles):
        draw.text((left + c * (tw + 2) + 4, 2), text, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Sample the builtin:shapes prior and check shape and colour.")
    ap.add_argument("--model", default="builtin:shapes")
    ap.add_argument("--per-label", type=int, default=3, help="samples per caption and view label")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--eta", type=float, default=0.0, help="0 = DDIM, 1 = ancestral (DDPM-like)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--templates", type=int, default=150, help="analytic silhouettes per shape and label")
    ap.add_argument("--gt-per-label", type=int, default=4, help="ground-truth renders per caption (classifier ceiling)")
    ap.add_argument("--gt-only", action="store_true", help="only measure the classifiers on ground truth")
    ap.add_argument("--grid", type=Path, default=None, help="write a PNG grid of the samples here")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--denoise-only", action="store_true", help="only run the one-step denoising check (seconds)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = resolve_builtin(args.model) if args.model.startswith("builtin:") else Path(args.model)
    model = load(folder)
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "denoising": denoising_check(model)}
    print("denoising (mean |x0_hat - x0|; fraction where the true word is best):")
    for t, row in results["denoising"].items():
        print(f"  t={t}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    if args.denoise_only:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return results
    t0 = time.time()
    clf = ShapeClassifier(per_label=args.templates)
    print(f"templates: {time.time() - t0:.0f}s")

    if args.gt_per_label:
        imgs, cols, shapes, labels = ground_truth(args.gt_per_label)
        results["ground_truth"] = report(cols, shapes, labels, classify_colour(imgs), clf(imgs, labels))
        print("ground truth (classifier ceiling):", json.dumps(results["ground_truth"]))

    if args.gt_only:
        return results
    captions, cols, shapes, labels = [], [], [], []
    for shape in sd.SHAPES:
        for colour in sd.COLOURS:
            for label in VIEW_LABELS:
                for _ in range(args.per_label):
                    captions.append(sd.caption(colour, shape, label))
                    cols.append(colour)
                    shapes.append(shape)
                    labels.append(label)
    t1 = time.time()
    chunks = [sample(model, captions[i:i + 80], args.steps, args.guidance, args.seed + i, args.eta) for i in range(0, len(captions), 80)]
    images = torch.cat(chunks)
    results["sampling_seconds"] = round(time.time() - t1, 1)
    results["samples"] = report(cols, shapes, labels, classify_colour(images), clf(images, labels))
    print(f"samples ({len(captions)}, {results['sampling_seconds']}s):", json.dumps(results["samples"]))
    if args.grid:
        rows = [f"{c} {s}" for s in sd.SHAPES for c in sd.COLOURS]
        titles = [l for l in VIEW_LABELS for _ in range(args.per_label)]
        save_grid(images, rows, 4 * args.per_label, args.grid, titles)
        print(f"grid: {args.grid}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

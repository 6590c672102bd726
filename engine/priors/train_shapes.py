"""Train the ``builtin:shapes`` prior: a small pixel-space, text-conditioned DDPM (CLIP-style text
encoder + UNet2DConditionModel, both from scratch) on analytic renders of coloured shapes.

    python -m engine.priors.train_shapes --out engine/priors/shapes --steps 4000 --threads 2

Steps: (1) render every shape from many cameras of the engine's training distribution, colour-free
(coverage + diffuse, see shapes_data), cached to an .npz in the temp dir; (2) train with the DDPM
ε-objective, where each batch item draws a shape, a cached view, a colour, an ambient level and a
horizontal flip, and its caption is ``"a {colour} {shape}, {label} view"`` (dropped to "" with
probability --cond-drop for classifier-free guidance); (3) save the EMA weights in diffusers format
(safetensors) with the tokenizer, scheduler, model_index.json and a model card.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..cameras import VIEW_LABELS
from . import shapes_data as sd

MAX_LEN = 16
SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
EXTRA_WORDS = ["a", "an", "the", "of", ",", ".", "view", "3d", "render", "shape", "object"]


def vocabulary() -> list[str]:
    words = list(EXTRA_WORDS) + list(VIEW_LABELS) + list(sd.COLOURS) + list(sd.SHAPES)
    out = list(SPECIAL)
    for w in words:
        if w not in out:
            out.append(w)
    return out


def build_tokenizer():
    """Word-level tokenizer over the caption vocabulary, as a transformers PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]",
        pair="[BOS] $A [EOS] $B:1 [EOS]:1",
        special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]", pad_token="[PAD]",
        model_max_length=MAX_LEN, padding_side="right", truncation_side="right",
    )


def build_text_encoder(vocab_size: int, hidden: int = 64, layers: int = 2):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=MAX_LEN, projection_dim=hidden,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, hidden_act="gelu",
    )
    return CLIPTextModel(cfg)


def build_unet(size: int, cross_dim: int, channels=(32, 64, 64)):
    """Three levels (size, size/2, size/4); cross-attention on the two lower ones and the mid block."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=size, in_channels=3, out_channels=3,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=tuple(channels), layers_per_block=1,
        cross_attention_dim=cross_dim, attention_head_dim=4, norm_num_groups=8,
    )


def build_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", clip_sample=True)


# --- data -----------------------------------------------------------------------------------------

def load_or_render(views: int, size: int, seed: int, cache_dir: Path, log) -> dict:
    path = cache_dir / f"dreamfusion_shapes_v1_{views}x{size}_s{seed}.npz"
    if path.is_file():
        log(f"dataset: cached {path}")
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    t0 = time.time()
    data = sd.render_dataset(views, size, seed, log=log)
    cache_dir.mkdir(parents=True, exist_ok=True)  # a fresh --cache-dir must not cost the render
    np.savez(path, **data)
    log(f"dataset: rendered {len(sd.SHAPES)}x{views} views at {size}px in {time.time() - t0:.0f}s -> {path}")
    return data


class Batcher:
    """Random (shape, view, colour, ambient, flip) combinations from the colour-free cache."""

    def __init__(self, data: dict, captions: list[str], cond_drop: float, albedo_only: float, ambient_range, seed: int):
        self.cd = torch.from_numpy(data["cd"]).float()  # (S, V, 2, H, W)
        self.labels = torch.from_numpy(data["labels"])  # (S, V)
        self.albedos = torch.stack([sd.colour_rgb(c) for c in sd.COLOURS])
        self.captions = captions
        self.index = {c: i for i, c in enumerate(captions)}
        self.cond_drop, self.albedo_only, self.ambient_range = cond_drop, albedo_only, ambient_range
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, batch: int):
        g = self.g
        S, V = self.labels.shape
        s = torch.randint(0, S, (batch,), generator=g)
        v = torch.randint(0, V, (batch,), generator=g)
        c = torch.randint(0, len(self.albedos), (batch,), generator=g)
        lo, hi = self.ambient_range
        amb = lo + (hi - lo) * torch.rand(batch, generator=g)
        amb = torch.where(torch.rand(batch, generator=g) < self.albedo_only, torch.ones_like(amb), amb)
        img = sd.compose(self.cd[s, v], self.albedos[c], amb)
        flip = torch.rand(batch, generator=g) < 0.5
        img = torch.where(flip.view(-1, 1, 1, 1), img.flip(-1), img)
        drop = torch.rand(batch, generator=g) < self.cond_drop
        colours, labels = list(sd.COLOURS), self.labels[s, v]
        cap_idx = torch.tensor([
            self.index[""] if drop[i] else self.index[sd.caption(colours[c[i]], sd.SHAPES[s[i]], VIEW_LABELS[labels[i]])]
            for i in range(batch)
        ])
        return img * 2.0 - 1.0, cap_idx


def all_captions() -> list[str]:
    return [""] + [sd.caption(c, s, l) for s in sd.SHAPES for c in sd.COLOURS for l in VIEW_LABELS]


# --- training -------------------------------------------------------------------------------------

class EMA:
    def __init__(self, modules, decay: float):
        self.modules, self.decay = modules, decay
        self.shadow = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]

    @torch.no_grad()
    def update(self, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        for m, sh in zip(self.modules, self.shadow):
            for k, v in m.state_dict().items():
                if v.dtype.is_floating_point:
                    sh[k].mul_(d).add_(v.detach(), alpha=1 - d)
                else:
                    sh[k].copy_(v)

    def copy_to(self):
        for m, sh in zip(self.modules, self.shadow):
            m.load_state_dict(sh)


def load_init(folder: Path, unet, text_encoder, tokenizer) -> dict:
    """Copy a saved prior's weights into freshly built models of the same architecture.

    Returns the saved run's training.json (recorded in the new card so the chain stays reproducible).
    Fails clearly when the vocabulary or architecture differ instead of loading half the weights."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    if not (folder / "training.json").is_file():
        raise SystemExit(f"--init-from {folder}: no training.json there (not a prior saved by this script)")
    prev = json.loads((folder / "training.json").read_text())
    saved_vocab = json.loads((folder / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    if saved_vocab != tokenizer.get_vocab():
        raise SystemExit(f"--init-from {folder}: its caption vocabulary differs from this script's; retrain from scratch")
    src_unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True)
    src_text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", use_safetensors=True)
    for name, dst, src in (("unet", unet, src_unet), ("text_encoder", text_encoder, src_text)):
        try:
            dst.load_state_dict(src.state_dict(), strict=True)
        except RuntimeError as exc:
            raise SystemExit(f"--init-from {folder}: {name} architecture differs ({str(exc).splitlines()[0]}); "
                             "use the same --channels/--text-hidden/--text-layers/--resolution") from exc
    return prev


def encode(text_encoder, ids: torch.Tensor) -> torch.Tensor:
    return text_encoder(ids)[0]  # last_hidden_state, no attention mask: as engine.guidance does


def save_model(out: Path, unet, text_encoder, tokenizer, scheduler, card: dict):
    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(out / "tokenizer")
    scheduler.save_pretrained(out / "scheduler")
    import diffusers
    import transformers

    index = {
        "_class_name": "DreamFusionShapesPrior",
        "_diffusers_version": diffusers.__version__,
        "_description": "builtin:shapes - pixel-space text-to-image DDPM over 5 shapes x 4 colours (no vae/); "
                        "load component by component, see README.md",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "scheduler": ["diffusers", "DDPMScheduler"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "training.json").write_text(json.dumps(card, indent=2) + "\n")
    _ = transformers


def write_model_card(out: Path) -> Path:
    """README.md for the model folder, from training.json (and sample_check.json when present)."""
    card = json.loads((out / "training.json").read_text())
    a = card["args"]
    check = out / "sample_check.json"
    check_txt = "Not run yet: `python -m engine.priors.check_shapes`."
    c = json.loads(check.read_text()) if check.is_file() else {}
    if "samples" in c:  # absent after `check_shapes --denoise-only`
        s, g = c["samples"], c.get("ground_truth", {})
        ca = c["args"]
        check_txt = (
            f"`python -m engine.priors.check_shapes --per-label {ca['per_label']} --steps {ca['steps']} --guidance {ca['guidance']}` "
            f"({s['n']} samples, DDIM {ca['steps']} steps, CFG {ca['guidance']}):\n\n"
            "| | colour | shape | shape (non-overhead) | both |\n| --- | --- | --- | --- | --- |\n"
            f"| samples | {s['colour_acc']:.3f} | {s['shape_acc']:.3f} | {s['shape_acc_non_overhead']:.3f} | {s['both_acc']:.3f} |\n"
            + (f"| ground-truth renders (classifier ceiling) | {g['colour_acc']:.3f} | {g['shape_acc']:.3f} | "
               f"{g['shape_acc_non_overhead']:.3f} | {g['both_acc']:.3f} |\n" if g else "")
            + "\nPer shape (samples): " + ", ".join(f"{k} {v:.2f}" for k, v in s["per_shape"].items())
            + ". Per colour (samples): " + ", ".join(f"{k} {v:.2f}" for k, v in s["per_colour"].items()) + "."
        )
    if "denoising" in c:
        rows = c["denoising"]
        check_txt = (check_txt if "samples" in c else "Sampling check not run.") + (
            "\n\nOne-step denoising of noised ground-truth renders (what SDS uses; `check_shapes.denoising_check`, 40 renders): "
            "mean |x̂₀ − x₀| with the true caption, a wrong colour word, a wrong shape word, and how often the true word "
            "denoises best (chance 0.25 for colour, 0.20 for shape):\n\n"
            "| t | true | wrong colour | wrong shape | colour word best | shape word best |\n| --- | --- | --- | --- | --- | --- |\n"
            + "".join(f"| {t} | {r['true']:.4f} | {r['wrong_colour']:.4f} | {r['wrong_shape']:.4f} | {r['colour_word_best']:.2f} "
                      f"| {r['shape_word_best']:.2f} |\n" for t, r in rows.items())
        )
    p = card["params"]
    chain, prev = [], card.get("previous")
    while prev:
        chain.append(f"{prev['steps_done']} steps in {prev['train_seconds'] / 60:.1f} min: `{prev['command']}`")
        prev = prev.get("previous")
    chain_txt = ""
    if chain:
        total = card["steps_done"] + sum(int(c.split()[0]) for c in chain)
        chain_txt = ("\n\ncontinuing (`--init-from`) from, newest first:\n" + "\n".join(f"- {c}" for c in chain)
                     + f"\n\n{total} steps in all.")
    text = f"""# builtin:shapes - a tiny text-to-image diffusion prior

A pixel-space, text-conditioned DDPM (epsilon prediction, 1000 steps, cosine schedule) that draws
32x32 images of five shapes ({", ".join(sd.SHAPES)}) in four colours ({", ".join(sd.COLOURS)}) on a
white background, from captions such as `a red cube, side view`. It is the DreamFusion engine's offline
default (`--model builtin:shapes`) and lets CI prove on CPU that Score Distillation Sampling recovers the
prompted 3D shape. It knows nothing else: any other word maps to `[UNK]`.

Trained from scratch (random init) by this project on analytic renders it makes itself
(`engine/priors/shapes_data.py`); no third-party weights or data.

## Components (diffusers layout, no `vae/`)
| folder | class | notes |
| --- | --- | --- |
| `unet/` | diffusers `UNet2DConditionModel` | {p['unet'] / 1e6:.2f}M params, in/out 3 channels, `sample_size` {a['resolution']}, channels {a['channels']}, cross-attention on the two lower levels |
| `text_encoder/` | transformers `CLIPTextModel` | {p['text_encoder'] / 1e6:.2f}M params, hidden {a['text_hidden']}, {a['text_layers']} layers, 16 positions |
| `tokenizer/` | `PreTrainedTokenizerFast` (WordLevel) | lowercase, whitespace + punctuation split, `[BOS] ... [EOS]`, pad to 16 with `[PAD]` |
| `scheduler/` | diffusers `DDPMScheduler` | 1000 steps, `squaredcos_cap_v2`, epsilon |

```python
from diffusers import UNet2DConditionModel, DDPMScheduler
from transformers import AutoTokenizer, CLIPTextModel
from engine.priors import resolve_builtin
f = resolve_builtin("builtin:shapes")
tok = AutoTokenizer.from_pretrained(f / "tokenizer")
te = CLIPTextModel.from_pretrained(f, subfolder="text_encoder", use_safetensors=True)
unet = UNet2DConditionModel.from_pretrained(f, subfolder="unet", use_safetensors=True)
sched = DDPMScheduler.from_pretrained(f, subfolder="scheduler")
ids = tok(["a red cube, side view"], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
cond = te(ids).last_hidden_state        # unconditional: the same for ""
eps = unet(x_t, t, encoder_hidden_states=cond).sample   # x_t: (B,3,32,32) in [-1,1]
```
`engine.priors.check_shapes.sample` is a ready DDIM + classifier-free-guidance sampler.

## Training
Data: {len(sd.SHAPES)} shapes x {a['views']} cameras each from `engine.cameras.sample_cameras` (the engine's
training distribution: azimuth 0-360, elevation -10..90, distance 2-3, focal 0.7-1.35 x width) with
lights from `sample_light_positions`, sphere-traced at 2x supersampling, stored colour-free and
coloured per batch item: Lambertian `albedo * (ambient + (1 - ambient) * max(0, n.l))`, ambient
U{tuple(a['ambient'])}, {a['albedo_only']:.0%} unshaded (albedo only), random horizontal flip. Captions
`a {{colour}} {{shape}}, {{label}} view`, replaced by "" with probability {a['cond_drop']}.
Objective: DDPM epsilon MSE, t uniform; AdamW lr {a['lr']} (warm-up {a['warmup']}, cosine to 10%), batch
{a['batch']}, grad clip 1, EMA {a['ema']} of U-Net and text encoder (the shipped weights are the EMA).

Command: `{card['command']}`{chain_txt}

{card['steps_done']} steps in {card['train_seconds'] / 60:.1f} min ({f"+{card['dataset_seconds']:.0f} s rendering the data set" if card['dataset_seconds'] >= 0.5 else "data set from the cache"});
final loss {card['final_loss']:.4f}. Machine: {card['machine']} (a 2-core CPU shared with other jobs).
Loss every {a['log_every']} steps is in `training.json`.

## Sample check
{check_txt}

## Limits
32x32 pixels, 20 captions x 4 view labels, white backgrounds only; no textureless (white-albedo)
renders were in the training data. Undertrained for sampling: images sampled from pure noise have
tinted backgrounds and blob- or ring-like shapes, so the pixel classifiers above score them poorly; its
one-step denoising of noised renders - what SDS queries - is accurate and follows both the colour and
the shape word (docs/PRIOR.md, "Denoising check").
"""
    (out / "README.md").write_text(text)
    return out / "README.md"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "shapes")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--views", type=int, default=1000, help="cached views per shape")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--channels", type=str, default="32,64,64", help="U-Net channels per level")
    ap.add_argument("--text-hidden", type=int, default=64)
    ap.add_argument("--text-layers", type=int, default=2)
    ap.add_argument("--cond-drop", type=float, default=0.12)
    ap.add_argument("--albedo-only", type=float, default=0.1, help="fraction of unshaded (ambient = 1) images")
    ap.add_argument("--ambient", type=float, nargs=2, default=(0.1, 0.5))
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop (and save) after this much training time")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--bench", type=int, default=0, help="time this many steps and exit without saving")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--init-from", type=Path, default=None,
                    help="continue from a saved prior folder (its EMA weights; fresh optimiser, LR schedule and EMA)")
    ap.add_argument("--write-card", action="store_true", help="only (re)write README.md in --out from its training.json")
    args = ap.parse_args(argv)
    if args.write_card:
        print(write_model_card(args.out))
        return

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.time()

    def log(msg):
        print(f"[{time.time() - t_start:7.1f}s] {msg}", flush=True)

    log(f"args: {vars(args)}")
    data = load_or_render(args.views, args.resolution, args.seed, args.cache_dir, log)
    t_data = time.time() - t_start

    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(len(tokenizer), args.text_hidden, args.text_layers)
    unet = build_unet(args.resolution, args.text_hidden, [int(c) for c in args.channels.split(',')])
    previous = None
    if args.init_from is not None:
        previous = load_init(args.init_from, unet, text_encoder, tokenizer)
        log(f"initialised from {args.init_from} ({previous.get('steps_done', '?')} steps before)")
    scheduler = build_scheduler()
    n_unet = sum(p.numel() for p in unet.parameters())
    n_text = sum(p.numel() for p in text_encoder.parameters())
    log(f"params: unet {n_unet / 1e6:.2f}M, text encoder {n_text / 1e6:.3f}M, vocab {len(tokenizer)}")

    captions = all_captions()
    ids = tokenizer(captions, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt")["input_ids"]
    batcher = Batcher(data, captions, args.cond_drop, args.albedo_only, tuple(args.ambient), args.seed + 1)
    ac = scheduler.alphas_cumprod.float()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    total = args.bench or args.steps

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, total - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))

    ema = EMA([unet, text_encoder], args.ema)
    g = torch.Generator().manual_seed(args.seed + 2)
    unet.train()
    text_encoder.train()
    t_train = time.time()
    running, losses, step = 0.0, [], 0
    for step in range(total):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x0, cap = batcher(args.batch)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        emb = encode(text_encoder, ids)[cap]
        pred = unet(xt, t, encoder_hidden_states=emb).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        running += loss.item()
        if (step + 1) % args.log_every == 0 or step + 1 == total:
            n = (step + 1) % args.log_every or args.log_every
            el = time.time() - t_train
            losses.append((step + 1, running / n))
            log(f"step {step + 1}/{total} loss {running / n:.4f} lr {lr_at(step):.2e} {(step + 1) / el:.2f} it/s "
                f"eta {(total - step - 1) * el / (step + 1) / 60:.1f} min")
            running = 0.0
        if args.max_minutes and time.time() - t_train > args.max_minutes * 60:
            log(f"time budget of {args.max_minutes} min reached at step {step + 1}")
            break
    steps_done = step + 1
    train_s = time.time() - t_train
    log(f"trained {steps_done} steps in {train_s / 60:.1f} min ({steps_done / train_s:.2f} it/s)")
    if args.bench:
        return

    ema.copy_to()
    unet.eval()
    text_encoder.eval()
    card = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "steps_done": steps_done,
        "dataset_seconds": round(t_data, 1),
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "final_loss": losses[-1][1] if losses else None,
        "loss_curve": losses,
        "params": {"unet": n_unet, "text_encoder": n_text},
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, torch {torch.__version__}, "
                   f"{args.threads} threads, python {sys.version.split()[0]}",
        "command": "python -m engine.priors.train_shapes " + " ".join(sys.argv[1:]),
    }
    if previous is not None:
        # The run these weights continued from (nested if it continued too): what reproduces them.
        card["previous"] = previous
    save_model(args.out, unet, text_encoder, tokenizer, scheduler, card)
    write_model_card(args.out)
    log(f"saved to {args.out}")


if __name__ == "__main__":
    main()

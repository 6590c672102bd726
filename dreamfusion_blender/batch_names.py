"""Names for a headless batch's outputs: a file stem per prompt that never overwrites, a prompt cut short
for the one-line log. Shared by batch.py (one prompt at a time) and batch_engine.py (the engine's batch),
which is why they live here and not in either: each of those imports this, neither imports the other's names.
"""

from __future__ import annotations

import re
from pathlib import Path


def slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40].rstrip("-") or "object"


def free_stem(out: Path, prompt: str) -> Path:
    """out/<slug>, with -2, -3... so that existing files are never overwritten."""
    base, n = slug(prompt), 1
    while True:
        stem = out / (base if n == 1 else f"{base}-{n}")
        if not stem.with_suffix(".blend").exists() and not stem.with_suffix(".glb").exists():
            return stem
        n += 1


def short(text: str, n: int = 50) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."

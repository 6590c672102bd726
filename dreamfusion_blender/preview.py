"""The latest preview PNG of a run, as an image data-block the panel can show as a large icon."""

from __future__ import annotations

import os

import bpy

IMAGE_NAME = "DreamFusion Preview"


def show(path: str | None):
    """Load (or reload) ``path`` into the one preview image; returns it, or None if unreadable."""
    if not path or not os.path.isfile(path):
        return None
    img = bpy.data.images.get(IMAGE_NAME)
    try:
        if img is None:
            img = bpy.data.images.load(path, check_existing=False)
            img.name = IMAGE_NAME
        elif bpy.path.abspath(img.filepath) != path:
            img.filepath = path
            img.reload()
    except RuntimeError:  # a PNG half-written or removed between the event and now
        return None
    # 0 users: the preview is never saved into the user's .blend. The icon must be re-rendered after a reload.
    img.preview_ensure()
    if img.preview is not None:
        img.preview.reload()
    return img


def icon_id() -> int:
    img = bpy.data.images.get(IMAGE_NAME)
    if img is None or img.preview is None:
        return 0
    return img.preview.icon_id


def clear() -> None:
    img = bpy.data.images.get(IMAGE_NAME)
    if img is not None:
        bpy.data.images.remove(img)

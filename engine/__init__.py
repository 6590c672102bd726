"""DreamFusion engine: text prompt -> SDS-optimised NeRF -> textured mesh.

Plain PyTorch package with its own CLI (``python -m engine``). It never imports ``bpy``:
the Blender add-on drives it as a separate process through the JSON-lines protocol in
``engine.protocol``.
"""

__version__ = "0.1.0"

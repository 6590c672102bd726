"""Differentiable triangle-mesh renderer in pure PyTorch (CPU, CUDA, MPS): rasterisation to
per-pixel face ids, perspective-correct barycentrics and depth (``rasterize``), attribute
interpolation (``interpolate``), normals, a soft silhouette coverage with gradients to the vertices
(``antialias_alpha``) and shaded renders in the NeRF renderer's conventions (``render_mesh``).
Cameras are engine.cameras.CameraBatch, pixel for pixel as engine.render.rays.camera_rays."""
from .antialias import antialias_alpha, silhouette_coverage
from .normals import face_normals, vertex_normals
from .rasterize import Fragments, interpolate, interpolate_packed, project, rasterize
from .render import MeshRender, render_mesh

__all__ = ["Fragments", "MeshRender", "antialias_alpha", "face_normals", "interpolate", "interpolate_packed", "project",
           "rasterize", "render_mesh", "silhouette_coverage", "vertex_normals"]

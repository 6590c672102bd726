"""Taubin smoothing (Taubin 1995, "A signal processing approach to fair surface design").

Marching cubes on a trained field gives a surface with bumps a few voxels wide (the hash grid's
noise) and the voxel staircase. A plain Laplacian step removes them but shrinks the mesh; Taubin
alternates a shrinking step (lambda > 0) with a slightly larger inflating one (mu < -lambda), a
low-pass filter that leaves the low frequencies (the shape and its volume) alone and damps only
the high ones. Uniform (umbrella) weights over the mesh's edges, as in the paper."""
from __future__ import annotations

import numpy as np
from scipy import sparse

LAMBDA = 0.5
MU = -0.53  # pass-band k = 1/lambda + 1/mu ~ 0.11: wavelengths above ~10 edges are kept


def taubin(verts: np.ndarray, faces: np.ndarray, iterations: int) -> np.ndarray:
    """``iterations`` pairs of (lambda, mu) umbrella steps; returns new vertex positions."""
    if iterations <= 0 or len(faces) == 0:
        return verts
    n = len(verts)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    adj = sparse.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    adj.data[:] = 1.0  # shared edges were counted twice
    deg = np.asarray(adj.sum(1)).reshape(-1)
    avg = sparse.diags(1.0 / np.maximum(deg, 1)) @ adj  # row-normalised: the neighbours' mean
    v = verts.astype(np.float64, copy=True)
    for _ in range(iterations):
        v += LAMBDA * (avg @ v - v)
        v += MU * (avg @ v - v)
    return v

"""Kernel point dispositions of KPConv (supplementary B) and their per-layer placement (§3.2).

The K kernel points are the minimiser of the energy of Eq. 11,

    E_tot = sum_k ( E_att(x~_k) + sum_{l != k} E_rep_k(x~_l) ),
    E_rep_k(x) = 1 / ||x - x~_k||   (Eq. 9),    E_att(x) = ||x||^2   (Eq. 10),

with one point fixed at the centre of the ball, found by gradient descent from random starts. For K = 5, 7, 13
the minimiser is the tetrahedron, the octahedron and the icosahedron around the centre (Table 4).

A layer then rescales the disposition so that the non-centre points have a mean radius of 1.5 sigma (§3.2) and
rotates it randomly (supplementary B). Layers store the result as a buffer, so a loaded checkpoint keeps the
saved kernel points and nothing is regenerated.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..errors import UsageError

# Gradient descent settings (supplementary B gives none): enough random starts and steps that K <= 30 reaches
# the stable dispositions of Table 4 to float precision; the lowest energy start wins.
_STARTS = 16
_STEPS = 3000


def kernel_energy(points: np.ndarray) -> np.ndarray:
    """E_tot of Eq. 11 for dispositions ``points`` (..., K, 3); pairs count twice, as in the double sum."""
    diff = points[..., :, None, :] - points[..., None, :, :]
    dist = np.linalg.norm(diff, axis=-1)
    k = points.shape[-2]
    off = ~np.eye(k, dtype=bool)
    return (points**2).sum(axis=(-1, -2)) + (1.0 / dist[..., off]).sum(axis=-1)


def _energy_gradient(x: np.ndarray) -> np.ndarray:
    """dE_tot/dx for x (S, K, 3): 2 x_k - 2 sum_{l != k} (x_k - x_l) / ||x_k - x_l||^3."""
    diff = x[:, :, None, :] - x[:, None, :, :]
    d2 = (diff**2).sum(-1)
    k = x.shape[1]
    d2[:, np.arange(k), np.arange(k)] = np.inf  # no self-repulsion
    return 2.0 * x - 2.0 * (diff / d2[..., None] ** 1.5).sum(axis=2)


@lru_cache(maxsize=None)
def _stable_disposition(num_points: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Random starts uniform in the unit ball; point 0 is the fixed centre.
    x = rng.normal(size=(_STARTS, num_points, 3))
    x *= (rng.uniform(size=(_STARTS, num_points, 1)) ** (1 / 3)) / np.linalg.norm(x, axis=-1, keepdims=True)
    x[:, 0] = 0.0
    for step in range(_STEPS):
        grad = _energy_gradient(x)
        grad[:, 0] = 0.0  # the centre point is constrained to stay at the centre
        # Clip each point's move: two random starts can be arbitrarily close, where 1/d^2 forces explode.
        norm = np.linalg.norm(grad, axis=-1, keepdims=True)
        grad *= np.minimum(1.0, 1.0 / np.maximum(norm, 1e-12))
        lr = 0.05 * 0.999**step + 1e-3
        x -= lr * grad
    best = x[int(np.argmin(kernel_energy(x)))]
    best.setflags(write=False)
    return best


def stable_disposition(num_points: int, seed: int = 0) -> np.ndarray:
    """(K, 3) float64 minimiser of Eq. 11 with point 0 fixed at the origin, in the energy's natural scale.

    Deterministic for a given ``num_points`` and ``seed`` and cached for the process.
    """
    if num_points < 2:
        raise UsageError(f"KPConv needs at least 2 kernel points, got {num_points}")
    return _stable_disposition(int(num_points), int(seed)).copy()


def random_rotation(generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly distributed 3D rotation (QR of a Gaussian matrix, signs fixed, det = +1), float64."""
    a = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def layer_kernel_points(num_points: int, sigma: float, seed: int = 0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """(K, 3) float32 kernel points of one layer: the stable disposition, non-centre points rescaled to a mean
    radius of 1.5 sigma (§3.2), randomly rotated (supplementary B) with torch's RNG (or ``generator``)."""
    points = torch.from_numpy(stable_disposition(num_points, seed))
    radii = points[1:].norm(dim=1)
    points = points * (1.5 * sigma / radii.mean())
    return (points @ random_rotation(generator).T).to(torch.float32)

"""Spheres over a cloud: regular covering spheres for inference, random spheres for training (KPConv §4.2)."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .subsample import group_by_cell


def covering_centers(xyz: np.ndarray, radius: float, coverage: float = 0.7) -> np.ndarray:
    """Centres of spheres such that every point lies within ``coverage * radius`` of some centre.

    Centres sit on a cubic lattice of spacing ``s = 2 * coverage * radius / sqrt(3)``: a point is never
    farther than half the cell diagonal ``s * sqrt(3) / 2 = coverage * radius`` from the centre of its own
    cell. Only cells that hold points get a centre, and each centre is the centre of such a cell.
    """
    if radius <= 0 or not 0 < coverage <= 1:
        raise ValueError("radius must be positive and coverage in (0, 1]")
    xyz = np.asarray(xyz, dtype=np.float64)
    spacing = 2.0 * coverage * radius / np.sqrt(3.0)
    origin = xyz.min(axis=0)
    cells = np.floor((xyz - origin) / spacing).astype(np.int64)
    inverse, counts = group_by_cell(xyz - origin, spacing)
    first = np.zeros(len(counts), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(xyz))[::-1]  # one representative point per occupied cell
    return origin + (cells[first] + 0.5) * spacing


def class_balanced_weights(labels: np.ndarray, ignore: tuple[int, ...] = ()) -> np.ndarray:
    """Per-point probability proportional to 1 / frequency of its class (ignored classes get 0)."""
    labels = np.asarray(labels).reshape(-1)
    values, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv.reshape(-1)]
    if ignore:
        w[np.isin(labels, list(ignore))] = 0.0
    if w.sum() == 0:
        raise ValueError("every point has an ignored label: nothing to sample")
    return w / w.sum()


def random_centers(
    xyz: np.ndarray,
    n: int,
    rng: np.random.Generator,
    labels: np.ndarray | None = None,
    balance_classes: bool = False,
    ignore: tuple[int, ...] = (),
) -> np.ndarray:
    """``n`` training sphere centres picked among the points, uniformly or weighted toward rare classes."""
    xyz = np.asarray(xyz, dtype=np.float64)
    p = None
    if balance_classes:
        if labels is None:
            raise ValueError("class balancing needs labels")
        p = class_balanced_weights(labels, ignore)
    return xyz[rng.choice(len(xyz), size=n, p=p)]


def points_in_spheres(xyz: np.ndarray, centers: np.ndarray, radius: float, tree: cKDTree | None = None) -> list[np.ndarray]:
    """For each centre, the sorted int64 indices of the points within ``radius``."""
    tree = tree if tree is not None else cKDTree(np.asarray(xyz, dtype=np.float64))
    lists = tree.query_ball_point(np.asarray(centers, dtype=np.float64), radius, workers=-1)
    return [np.sort(np.asarray(ix, dtype=np.int64)) for ix in lists]

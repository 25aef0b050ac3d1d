"""Grid subsampling (KPConv §3.3): one point per non-empty cell, at the barycentre of the cell's points.

Everything is vectorised with numpy: cell keys are packed into one int64 per point, grouped with
``np.unique`` and reduced with ``np.bincount``. Coordinates are centred on the cloud's minimum corner and
handled in float64, so georeferenced clouds (x ~ 7e5 m, y ~ 6.6e6 m) subsample exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BadInputError


@dataclass
class GridSubsample:
    """Result of :func:`grid_subsample`.

    points: (M, 3) float64 barycentres, in the same frame as the input.
    inverse: (N,) int64, for every input point the row of its cell in ``points`` (to project results back).
    counts: (M,) int64, number of input points per cell.
    features: (M, C) float64 averaged features, or None.
    labels: (M,) majority label per cell (input dtype), or None.
    """

    points: np.ndarray
    inverse: np.ndarray
    counts: np.ndarray
    features: np.ndarray | None = None
    labels: np.ndarray | None = None


def _pack(cells: np.ndarray) -> np.ndarray:
    """Pack non-negative (N, 3) int64 cells into one int64 key per point (order-preserving in x, y, z)."""
    dims = cells.max(axis=0) + 1
    if np.prod(dims.astype(np.float64)) >= 2.0**62:
        # A cloud that spans thousands of km at a fine cell: almost always stray points of a damaged file.
        raise BadInputError("the points span too large an extent for this cell size (points thousands of km "
                            "apart?): remove the stray points or choose a larger cell")
    return (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]


def group_by_cell(xyz: np.ndarray, dl: float) -> tuple[np.ndarray, np.ndarray]:
    """(inverse, counts) grouping points by grid cell of size ``dl`` (cells aligned on the minimum corner);
    cells are numbered in key order."""
    xyz = np.asarray(xyz, dtype=np.float64)
    return _group(xyz - xyz.min(axis=0), dl)


def _group(centred: np.ndarray, dl: float) -> tuple[np.ndarray, np.ndarray]:
    """Grouping of non-negative coordinates by cells of size ``dl`` aligned on 0."""
    if dl <= 0:
        raise ValueError(f"cell size must be positive, got {dl}")
    keys = _pack(np.floor(centred / dl).astype(np.int64))
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return inverse.reshape(-1).astype(np.int64), counts.astype(np.int64)


def majority_vote(inverse: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """Most frequent label of each group (ties: the smallest label). Vectorised for any label values."""
    values, lab_idx = np.unique(labels, return_inverse=True)
    lab_idx = lab_idx.reshape(-1)
    n_values = len(values)
    if n_groups * n_values <= 50_000_000:
        hist = np.bincount(inverse * n_values + lab_idx, minlength=n_groups * n_values)
        return values[hist.reshape(n_groups, n_values).argmax(axis=1)]
    # Many groups and many labels: count (group, label) pairs and keep the largest count per group.
    pairs, pair_counts = np.unique(inverse * n_values + lab_idx, return_counts=True)
    group, lab = pairs // n_values, pairs % n_values
    order = np.lexsort((lab, -pair_counts, group))  # per group: highest count first, then smallest label
    first = np.ones(len(order), dtype=bool)
    first[1:] = group[order][1:] != group[order][:-1]
    out = np.empty(n_groups, dtype=np.int64)
    out[group[order][first]] = lab[order][first]
    return values[out]


def grid_subsample(
    xyz: np.ndarray,
    dl: float,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    origin: np.ndarray | None = None,
) -> GridSubsample:
    """Subsample ``xyz`` (N, 3) on a grid of cell size ``dl``: barycentres, averaged features, majority labels.

    Cells are aligned on ``origin`` (default: the minimum corner of ``xyz``); pieces of one cloud subsampled
    with the cloud's origin get exactly the cells the whole cloud would get. No point may lie below ``origin``.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"expected (N, 3) coordinates, got shape {xyz.shape}")
    if len(xyz) == 0:
        raise ValueError("cannot subsample an empty cloud")
    origin = xyz.min(axis=0) if origin is None else np.asarray(origin, dtype=np.float64)
    centred = xyz - origin
    if np.any(centred < 0):
        raise ValueError("points lie below the grid origin")
    inverse, counts = _group(centred, dl)
    m = len(counts)
    points = np.stack([np.bincount(inverse, weights=centred[:, d], minlength=m) for d in range(3)], axis=1)
    points = points / counts[:, None] + origin
    feats = None
    if features is not None:
        f = np.asarray(features, dtype=np.float64).reshape(len(xyz), -1)
        feats = np.stack([np.bincount(inverse, weights=f[:, c], minlength=m) for c in range(f.shape[1])], axis=1)
        feats /= counts[:, None]
    labs = None
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(xyz):
            raise ValueError(f"{len(labels)} labels for {len(xyz)} points")
        labs = majority_vote(inverse, labels, m)
    return GridSubsample(points=points, inverse=inverse, counts=counts, features=feats, labels=labs)

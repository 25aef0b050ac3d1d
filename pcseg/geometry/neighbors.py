"""Radius neighbours as KPConv's fixed-shape neighbour matrix (§3.3 "shadow neighbors").

Rows hold support indices sorted by distance, at most ``max_neighbors`` of them (the nearest are kept);
missing entries hold the shadow index ``len(supports)``. Works on stacked batches: queries of cloud ``b``
only see supports of cloud ``b``. Backed by scipy's C++ cKDTree.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def _splits(lengths: np.ndarray | None, total: int) -> np.ndarray:
    if lengths is None:
        return np.array([0, total], dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.sum() != total:
        raise ValueError(f"lengths sum to {lengths.sum()} but there are {total} points")
    return np.concatenate([[0], np.cumsum(lengths)])


def radius_neighbors(
    queries: np.ndarray,
    supports: np.ndarray,
    radius: float,
    max_neighbors: int | None = None,
    query_lengths: np.ndarray | None = None,
    support_lengths: np.ndarray | None = None,
) -> np.ndarray:
    """(M, H) int64 neighbour matrix of ``queries`` (M, 3) among ``supports`` (N, 3) within ``radius``.

    ``H`` is ``max_neighbors`` when given (nearest kept), else the largest neighbourhood found.
    Shadow entries equal N. ``query_lengths``/``support_lengths`` split stacked batches per cloud.
    """
    queries = np.asarray(queries, dtype=np.float64)
    supports = np.asarray(supports, dtype=np.float64)
    n_total = len(supports)
    qs, ss = _splits(query_lengths, len(queries)), _splits(support_lengths, n_total)
    if len(qs) != len(ss):
        raise ValueError("query and support batches have a different number of clouds")
    trees = [cKDTree(supports[ss[b]:ss[b + 1]]) for b in range(len(ss) - 1)]
    if max_neighbors is None:
        h = 0
        for b, tree in enumerate(trees):
            q = queries[qs[b]:qs[b + 1]]
            if len(q) and tree.n:
                h = max(h, int(tree.query_ball_point(q, radius, return_length=True, workers=-1).max()))
        max_neighbors = max(h, 1)
    out = np.full((len(queries), max_neighbors), n_total, dtype=np.int64)
    for b, tree in enumerate(trees):
        q = queries[qs[b]:qs[b + 1]]
        if not len(q) or not tree.n:
            continue
        _, idx = tree.query(q, k=max_neighbors, distance_upper_bound=radius, workers=-1)
        idx = np.asarray(idx, dtype=np.int64).reshape(len(q), max_neighbors)
        valid = idx < tree.n
        out[qs[b]:qs[b + 1]] = np.where(valid, idx + ss[b], n_total)
    return out


def nearest_neighbor(
    queries: np.ndarray,
    supports: np.ndarray,
    query_lengths: np.ndarray | None = None,
    support_lengths: np.ndarray | None = None,
) -> np.ndarray:
    """(M,) int64 index of the nearest support of each query (within the same cloud of a stacked batch)."""
    queries = np.asarray(queries, dtype=np.float64)
    supports = np.asarray(supports, dtype=np.float64)
    qs, ss = _splits(query_lengths, len(queries)), _splits(support_lengths, len(supports))
    if len(qs) != len(ss):
        raise ValueError("query and support batches have a different number of clouds")
    out = np.empty(len(queries), dtype=np.int64)
    for b in range(len(ss) - 1):
        q = queries[qs[b]:qs[b + 1]]
        if not len(q):
            continue
        if ss[b + 1] == ss[b]:
            raise ValueError(f"cloud {b} has queries but no support points")
        _, idx = cKDTree(supports[ss[b]:ss[b + 1]]).query(q, k=1, workers=-1)
        out[qs[b]:qs[b + 1]] = np.asarray(idx, dtype=np.int64) + ss[b]
    return out


def neighborhood_sizes(points: np.ndarray, radius: float, lengths: np.ndarray | None = None) -> np.ndarray:
    """Number of points (itself included) within ``radius`` of every point: used to calibrate neighbour caps."""
    points = np.asarray(points, dtype=np.float64)
    ss = _splits(lengths, len(points))
    out = np.empty(len(points), dtype=np.int64)
    for b in range(len(ss) - 1):
        p = points[ss[b]:ss[b + 1]]
        if len(p):
            out[ss[b]:ss[b + 1]] = cKDTree(p).query_ball_point(p, radius, return_length=True, workers=-1)
    return out

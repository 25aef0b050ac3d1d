"""Radius neighbours as KPConv's fixed-shape neighbour matrix (§3.3 "shadow neighbors").

Rows hold support indices sorted by distance, at most ``max_neighbors`` of them (the nearest are kept);
missing entries hold the shadow index ``len(supports)``. Works on stacked batches: queries of cloud ``b``
only see supports of cloud ``b``. Backed by scipy's C++ cKDTree.

All clouds of a stacked batch share one tree and one query (:class:`CloudForest`): every point gets a fourth
coordinate, ``b * separation`` for cloud ``b``, with the separation larger than any distance a query asks
about, so a pair from two clouds is never within reach. Within a cloud the fourth difference is exactly 0, so
distances are bit-identical to a 3-D tree of that cloud alone; only the order of equidistant neighbours may
differ. One tree per cloud instead cost one build and one (threaded) query per cloud and per layer.
"""
from __future__ import annotations

import numpy as np

# scipy starts and joins one Python thread per worker on every query. Measured on 2 idle cores (scipy 1.17,
# ALS-like 0.5 m clouds, k = 12): workers=-1 halves a query of 10^4 points (14 -> 8 ms), gains 10% at 3000
# points, loses at 1000 and adds up to 4 ms to a query of a few hundred; with both cores busy it gains nothing.
# Threads are used from about 6000 queries at k = 12 (~8 ms of single-thread work).
_THREADED_WORK = 100_000


def _kdtree(points: np.ndarray):
    """scipy's cKDTree over ``points``; scipy.spatial is imported here, on first use (importing it cost
    `pcseg detect`, which needs no neighbour search, 0.15 s)."""
    from scipy.spatial import cKDTree

    return cKDTree(points, balanced_tree=False)


def _workers(n_queries: int, k: int) -> int:
    return -1 if n_queries * (k + 4) >= _THREADED_WORK else 1


def _splits(lengths: np.ndarray | None, total: int) -> np.ndarray:
    if lengths is None:
        return np.array([0, total], dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.sum() != total:
        raise ValueError(f"lengths sum to {lengths.sum()} but there are {total} points")
    return np.concatenate([[0], np.cumsum(lengths)])


def bounding_diagonal(*clouds: np.ndarray) -> float:
    """Diagonal of the box holding every point of ``clouds``: no two of these points are farther apart."""
    pts = [np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in clouds]
    pts = [p for p in pts if len(p)]
    if not pts:
        return 0.0
    lo = np.min([p.min(axis=0) for p in pts], axis=0)
    hi = np.max([p.max(axis=0) for p in pts], axis=0)
    return float(np.linalg.norm(hi - lo))


class CloudForest:
    """One cKDTree over the (N, 3) ``supports`` of a stacked batch split by ``lengths``.

    ``reach`` bounds every distance a query will resolve: radii, and the distance from a query to the nearest
    support of its cloud (:meth:`nearest` checks it). Clouds lie ``2 * reach + 1`` apart along the fourth axis.
    """

    def __init__(self, supports: np.ndarray, lengths: np.ndarray | None, reach: float):
        supports = np.asarray(supports, dtype=np.float64)
        self.n = len(supports)
        self.splits = _splits(lengths, self.n)
        self.reach = float(reach)
        self.separation = 2.0 * self.reach + 1.0
        self.lo = supports.min(axis=0) if self.n else None
        self.hi = supports.max(axis=0) if self.n else None
        # Sliding-midpoint splits: builds ~40% faster than the median-balanced default and queries as fast here.
        self.tree = _kdtree(self._lift(supports, self.splits, 0.0))

    def _lift(self, points: np.ndarray, splits: np.ndarray, distance: float) -> np.ndarray:
        """(n, 4) points with their cloud coordinate, for queries that resolve ``distance``."""
        if len(splits) != len(self.splits):
            raise ValueError("query and support batches have a different number of clouds")
        if distance > self.reach:
            raise ValueError(f"distance {distance} exceeds the forest's reach {self.reach}")
        cloud = np.repeat(np.arange(len(splits) - 1, dtype=np.float64), np.diff(splits))
        return np.concatenate([points, (cloud * self.separation)[:, None]], axis=1)

    def count(self, queries: np.ndarray, radius: float, query_lengths: np.ndarray | None = None) -> np.ndarray:
        """(M,) number of supports of its cloud within ``radius`` (<= reach) of every query, boundary included."""
        queries = np.asarray(queries, dtype=np.float64)
        lifted = self._lift(queries, _splits(query_lengths, len(queries)), radius)
        if not len(queries) or not self.n:
            return np.zeros(len(queries), dtype=np.int64)
        # Counting costs about as much as a k = 16 query.
        sizes = self.tree.query_ball_point(lifted, radius, return_length=True, workers=_workers(len(queries), 16))
        return np.asarray(sizes, dtype=np.int64)

    def radius(self, queries: np.ndarray, radius: float, max_neighbors: int | None = None,
               query_lengths: np.ndarray | None = None) -> np.ndarray:
        """(M, H) neighbour matrix (see :func:`radius_neighbors`) of ``queries`` within ``radius`` (<= reach)."""
        queries = np.asarray(queries, dtype=np.float64)
        if max_neighbors is None:
            max_neighbors = max(int(self.count(queries, radius, query_lengths).max(initial=0)), 1)
        lifted = self._lift(queries, _splits(query_lengths, len(queries)), radius)
        if not len(queries) or not self.n:
            return np.full((len(queries), max_neighbors), self.n, dtype=np.int64)
        # Rows are distance-sorted and a missing neighbour comes back as index n: the shadow index already.
        _, idx = self.tree.query(lifted, k=max_neighbors, distance_upper_bound=radius,
                                 workers=_workers(len(queries), max_neighbors))
        idx = np.asarray(idx, dtype=np.int64).reshape(len(queries), max_neighbors)
        # Rows are distance-sorted, so shadows come last: drop the columns that are shadows in every row. On
        # sparse clouds the cap is far above the real neighbourhoods (a 0.1 pts/m2 airborne tile has 1-3
        # neighbours per point at layers 0-2 under caps of 25-46) and the padded columns were most of the work.
        # Shadows contribute nothing to any layer here, so the result is unchanged.
        width = max(int((idx < self.n).sum(axis=1).max(initial=0)), 1)
        return idx if width == max_neighbors else np.ascontiguousarray(idx[:, :width])

    def nearest(self, queries: np.ndarray, query_lengths: np.ndarray | None = None,
                within: float | None = None) -> np.ndarray:
        """(M,) index of the nearest support of each query within its own cloud.

        ``within``: a distance (<= reach) under which every query is known to have a support of its cloud;
        the search is then bounded by it (measured 25% faster) and a query without one is an error.
        """
        queries = np.asarray(queries, dtype=np.float64)
        qs = _splits(query_lengths, len(queries))
        if len(qs) != len(self.splits):
            raise ValueError("query and support batches have a different number of clouds")
        empty = (np.diff(qs) > 0) & (np.diff(self.splits) == 0)
        if empty.any():
            raise ValueError(f"cloud {int(np.argmax(empty))} has queries but no support points")
        if not len(queries):
            return np.empty(0, dtype=np.int64)
        if within is None:
            # No query is farther than this from any support of the batch, its nearest included.
            lifted = self._lift(queries, qs, bounding_diagonal(queries, self.lo[None], self.hi[None]))
            _, idx = self.tree.query(lifted, k=1, workers=_workers(len(queries), 1))
        else:
            lifted = self._lift(queries, qs, within)
            _, idx = self.tree.query(lifted, k=1, distance_upper_bound=within, workers=_workers(len(queries), 1))
            if (idx == self.n).any():
                raise ValueError(f"a query has no support of its cloud within {within}")
        return np.asarray(idx, dtype=np.int64).reshape(-1)


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
    forest = CloudForest(supports, support_lengths, reach=radius)
    return forest.radius(queries, radius, max_neighbors, query_lengths)


def nearest_neighbor(
    queries: np.ndarray,
    supports: np.ndarray,
    query_lengths: np.ndarray | None = None,
    support_lengths: np.ndarray | None = None,
) -> np.ndarray:
    """(M,) int64 index of the nearest support of each query (within the same cloud of a stacked batch)."""
    forest = CloudForest(supports, support_lengths, reach=bounding_diagonal(queries, supports))
    return forest.nearest(queries, query_lengths)


def neighborhood_sizes(points: np.ndarray, radius: float, lengths: np.ndarray | None = None) -> np.ndarray:
    """Number of points (itself included) within ``radius`` of every point: used to calibrate neighbour caps."""
    return CloudForest(points, lengths, reach=radius).count(points, radius, lengths)

"""Spheres over a cloud: regular covering spheres and square tiles for inference, random spheres for training
(KPConv §4.2); squares whose border cuts chosen objects, to measure tile-edge effects."""
from __future__ import annotations

import numpy as np

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


HORIZONTAL_SHARE = 0.9
""":func:`column_covering_centers`: share of the covering distance spent horizontally (the rest, vertically:
sqrt(1 - 0.9^2) = 0.44 of it above and below a centre)."""


def column_covering_centers(xyz: np.ndarray, reach: float) -> np.ndarray:
    """Centres such that every point lies within ``reach`` (3D) of one, for scenes that spread horizontally.

    Centres sit above the nodes of a hexagonal lattice in x, y (the thinnest covering of the plane: each node
    serves the points of its hexagon, at most ``rho = 0.9 reach`` away horizontally, node spacing
    sqrt(3) rho). In the column of each occupied hexagon, centres are stacked every ``2 v`` in z, with
    ``v = sqrt(reach^2 - rho^2)``, as many as the column's height needs, and each point goes to the nearest
    one: horizontal <= rho and vertical <= v, so 3D <= reach. On a flat scene this needs 2.3 centres per
    reach^2 of ground, against 4.6 for the cubic lattice of :func:`covering_centers` at the same guarantee.
    """
    if reach <= 0:
        raise ValueError("reach must be positive")
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if not len(xyz):
        return np.zeros((0, 3))
    rho = HORIZONTAL_SHARE * reach
    v = np.sqrt(reach**2 - rho**2)
    s = np.sqrt(3.0) * rho  # node spacing
    origin = xyz[:, :2].min(axis=0)
    p = xyz[:, :2] - origin
    # lattice basis a1 = (s, 0), a2 = (s/2, s sqrt(3)/2); the nearest node is one of the 4 corners of the
    # rhombus holding the point (the Voronoi cell of a node of this lattice is its hexagon).
    b = p[:, 1] / (s * np.sqrt(3.0) / 2.0)
    a = p[:, 0] / s - b / 2.0
    a0, b0 = np.floor(a), np.floor(b)
    best = np.full(len(p), np.inf)
    node = np.zeros((len(p), 2), dtype=np.int64)
    for da in (0, 1):
        for db in (0, 1):
            na, nb = a0 + da, b0 + db
            q = np.stack([(na + nb / 2.0) * s, nb * s * np.sqrt(3.0) / 2.0], axis=1)
            d = np.sum((p - q) ** 2, axis=1)
            better = d < best
            best = np.where(better, d, best)
            node[better] = np.stack([na, nb], axis=1)[better].astype(np.int64)
    keys, inverse = np.unique(node, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    z = xyz[:, 2]
    z_lo = np.full(len(keys), np.inf)
    np.minimum.at(z_lo, inverse, z)
    # layer k of a column covers [z_lo + 2kv, z_lo + 2(k+1)v] from its centre at z_lo + (2k+1)v
    layer = np.floor((z - z_lo[inverse]) / (2.0 * v)).astype(np.int64)
    cells, first = np.unique(np.stack([inverse, layer], axis=1), axis=0, return_index=True)
    na, nb = keys[cells[:, 0], 0], keys[cells[:, 0], 1]
    x = origin[0] + (na + nb / 2.0) * s
    y = origin[1] + nb * s * np.sqrt(3.0) / 2.0
    zc = z_lo[cells[:, 0]] + (2.0 * cells[:, 1] + 1.0) * v
    return np.stack([x, y, zc], axis=1)


def quadtree_tiles(xy: np.ndarray, min_side: float, margin: float, max_points: int):
    """Square inference tiles over a cloud's x, y: the leaves of a quadtree, as large as the point budget allows.

    The root is the square on the cloud's x-y extent; a square splits into four while its tile (the square grown
    by ``margin`` on every side) holds more than ``max_points`` points (estimated from the square's own points and
    the area ratio) and its children stay at least ``min_side`` wide. Dense parts get small tiles, sparse parts
    (a 0.1 pts/m^2 airborne tile) a few large ones, so the margins that every tile adds for context cost little:
    each point goes through the network ((L + 2 margin) / L)^2 times on average, not the 1.8-1.9 of overlapping
    spheres. Returns (``lower`` (T, 2) corners, ``side`` (T,) widths, ``owner`` (N,) the tile whose square holds
    each point; every point has exactly one). The tile of square ``t`` is ``lower[t] - margin`` to
    ``lower[t] + side[t] + margin`` in x and y (all z).
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if min_side <= 0 or margin < 0 or max_points < 1:
        raise ValueError("min_side must be positive, margin non-negative and max_points at least 1")
    n = len(xy)
    owner = np.full(n, -1, dtype=np.int64)
    if not n:
        return np.zeros((0, 2)), np.zeros(0), owner
    origin = xy.min(axis=0)
    root = max(float((xy.max(axis=0) - origin).max()) * (1.0 + 1e-9) + 1e-9, min_side)
    lower, sides = [], []
    active = np.arange(n)
    depth = 0
    while len(active):                                   # loop over quadtree levels
        side = root / 2.0**depth
        cells = np.minimum(np.floor((xy[active] - origin) / side).astype(np.int64), 2**depth - 1)
        packed, inverse, counts = np.unique(cells[:, 0] * 2**depth + cells[:, 1], return_inverse=True,
                                            return_counts=True)
        keys = np.stack([packed // 2**depth, packed % 2**depth], axis=1)
        estimate = counts * ((side + 2.0 * margin) / side) ** 2
        split = (estimate > max_points) & (side / 2.0 >= min_side)
        leaf = np.flatnonzero(~split)
        ids = np.full(len(keys), -1, dtype=np.int64)
        ids[leaf] = len(sides) + np.arange(len(leaf))
        lower.extend(origin + keys[leaf] * side)
        sides.extend([side] * len(leaf))
        owned = ~split[inverse]
        owner[active[owned]] = ids[inverse[owned]]
        active = active[~owned]
        depth += 1
    return np.array(lower).reshape(-1, 2), np.array(sides), owner


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


def points_in_spheres(xyz: np.ndarray, centers: np.ndarray, radius: float, tree=None) -> list[np.ndarray]:
    """For each centre, the sorted int64 indices of the points within ``radius``."""
    from scipy.spatial import cKDTree  # (here, as in pcseg.geometry.neighbors: not on `pcseg detect`'s path)

    tree = tree if tree is not None else cKDTree(np.asarray(xyz, dtype=np.float64))
    lists = tree.query_ball_point(np.asarray(centers, dtype=np.float64), radius, workers=-1)
    return [np.sort(np.asarray(ix, dtype=np.int64)) for ix in lists]


def edge_crop_centres(xy: np.ndarray, anchors: np.ndarray, size: float, count: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(count, 2) centres of ``size`` x ``size`` squares (axis-aligned, in x, y) whose border passes through
    anchor points, to cut objects the way a tile boundary does.

    For each square: an anchor drawn from ``anchors`` ((M, 2) x, y inside the bounding box of ``xy``, e.g.
    building or tree-crown points) and an axis, both at random. Along that axis the centre is half the side
    away from the anchor, towards the middle of the bounding box of ``xy`` (the side with more of the cloud), so
    the anchor lies on one side of the square and that side cuts the object it belongs to. Along the other
    axis the centre is drawn uniformly among the positions that keep the anchor on that side and the square
    inside the bounding box (a square wider than the box: the position that covers the whole box).
    """
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if not len(anchors):
        raise ValueError("no anchor points to place crops on")
    xy = np.asarray(xy, dtype=np.float64)[:, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    middle, half = (lo + hi) / 2, size / 2
    a = anchors[rng.choice(len(anchors), size=count)]
    axis = rng.integers(0, 2, size=count)
    rows, other = np.arange(count), 1 - axis
    centres = a.copy()
    centres[rows, axis] += np.where(middle[axis] >= a[rows, axis], half, -half)
    # along the side: anchor within the side, square within the box where it fits (else centred on the box)
    low = np.maximum(a[rows, other] - half, np.minimum(lo[other] + half, middle[other]))
    high = np.minimum(a[rows, other] + half, np.maximum(hi[other] - half, middle[other]))
    centres[rows, other] = rng.uniform(low, high)
    return centres


def square_crop(xy: np.ndarray, centre: np.ndarray, size: float) -> np.ndarray:
    """Sorted int64 indices of the points within the ``size`` x ``size`` square (axis-aligned, in x, y) centred
    on ``centre``, borders included."""
    offset = np.abs(np.asarray(xy, dtype=np.float64)[:, :2] - np.asarray(centre, dtype=np.float64)[:2])
    return np.flatnonzero(np.all(offset <= size / 2, axis=1)).astype(np.int64)

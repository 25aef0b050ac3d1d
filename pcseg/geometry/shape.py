"""Local shape and room levels of indoor clouds, label-free: what the ``shape`` input channel reads
(:mod:`pcseg.data.features`).

Local shape (:func:`eigen_features`): the covariance of each point's neighbourhood, its eigenvalues
``l1 >= l2 >= l3`` and the eigenvector of ``l3`` (the normal). Per point:

* verticality of the normal ``|n_z|``: 1 on floors, ceilings and table tops, 0 on walls, doors and the sides
  of furniture;
* planarity ``(l2 - l3) / l1`` and linearity ``(l1 - l2) / l1`` (Demantke et al. 2011, Weinmann et al. 2015):
  near 1 on a plane / on a line (a pole, a table edge, the crease where a wall meets the floor), both low
  where the neighbourhood is scattered (clutter, plants, noise).

Neighbourhood: the ``k`` nearest points of a copy of the cloud grid-subsampled at ``cell`` (4 cm, the S3DIS
models' first cell), each point reading its cell's values (:func:`local_shape`). Why not the raw points, and why
k nearest rather than a radius:

* the same neighbourhood at any density: S3DIS stores a room in millions of points (~5 mm apart), ScanNet's
  meshes ~2 cm, the generated rooms 3-4 cm, and a model trained on one is run on another. On raw points the k
  nearest of an S3DIS room span 1-2 cm, mostly scanner noise, and a radius holds thousands of points. The grid
  caps the density, so 24 neighbours span ~11 cm on a plane wherever the scan is at least as dense as the grid,
  and the cost no longer grows with the raw density. Fewer neighbours make the eigenvalue ratios noisy (a plane
  sampled at random reads a planarity of ~0.6 with 16, ~0.7 with 24), more blur thin furniture;
* k nearest gives a fixed-shape (M, k) index array: covariances of a block of points in one batched
  ``matmul`` and one batched ``eigh``, no ragged lists; and every point has a neighbourhood, also where the
  scan is sparse (a radius would leave far-away points with two or three neighbours and no defined normal;
  there the k nearest reach further, which is the better default for a normal);
* cells aligned on multiples of ``cell`` (not on the cloud's corner), so a piece of a cloud with a margin gets
  the cells, hence the values, the whole cloud gets.

Room levels (:func:`room_levels`): the floor and the ceiling of a room estimated from its points. Horizontal
points (``|n_z| > 0.9``) are binned in z (2 cm); a slab of 10 cm scores the share of the room's footprint it
covers: the number of distinct 25 cm x-y cells holding a horizontal point of the slab over the number of x-y
cells holding any point (the footprint). Shares count cells, not points, so the scanner's density (higher near
the scanner) does not favour one surface. A level is a slab whose share is a local maximum (within 10 cm);
its height is the median z of its horizontal points.

* floor: the lowest strong level (share >= 0.2). A crop without any (a piece above the floor, a shelf)
  falls back to the lowest point, the height the ``z`` channel measures from;
* ceiling: the highest level with share >= 0.25 that lies at least 2 m above the floor and closes the room:
  fewer than 10% of the wall points (``|n_z| < 0.3``) above the floor's first 30 cm lie more than 10 cm
  above it (walls end at a ceiling, they continue above the top of a bookcase or a wardrobe). A room scanned
  without its ceiling, or cropped below it, gets ``None``: the top of a bookcase (a few % of the footprint,
  walls above it) or a table is never taken for a ceiling. A ceiling seen on a quarter of the footprint is
  enough (hand-held scans see little of it; ScanNet's scene0000_00 saw a seventh of its ceiling, mostly not
  level, and gets none).

The estimate is per call (per cloud, or per piece of a cloud processed in pieces): a cloud holding several
rooms at one level gets their common floor; several storeys are one room to it (the lowest floor); a sloping
ceiling (``|n_z|`` below 0.9) is no ceiling.

Everything is vectorised numpy/scipy; the neighbourhoods are processed in blocks of ``block`` points to bound
memory (a block of 65536 points and 24 neighbours holds ~40 MB of coordinates).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPE_CELL = 0.04
"""Grid cell (m) of the points whose neighbourhoods are analysed."""
SHAPE_K = 24
"""Neighbours per point (the point itself included) on the subsampled grid: ~11 cm on a plane at 4 cm cells."""
BLOCK = 65_536
"""Points per block of neighbourhood computations."""

HORIZONTAL_NZ = 0.9
"""A point is horizontal (floor, ceiling, a table top) when ``|n_z|`` exceeds this (within ~26 degrees)."""
WALL_NZ = 0.3
"""A point lies on a vertical surface when ``|n_z|`` is below this (within ~17 degrees of vertical)."""
LEVEL_BIN, LEVEL_SLAB, LEVEL_XY_CELL = 0.02, 0.10, 0.25
"""Room levels: z bin, slab thickness and footprint cell (m)."""
FLOOR_SHARE, CEILING_SHARE = 0.2, 0.25
"""Least share of the footprint a floor / a ceiling covers."""
MIN_ROOM_HEIGHT = 2.0
"""Least height of a ceiling above the floor (m)."""
WALLS_ABOVE_CEILING = 0.1
"""Largest share of the wall points (above the floor's first 30 cm) that may lie above a ceiling."""


def _tree(points: np.ndarray):
    from scipy.spatial import cKDTree

    return cKDTree(points, balanced_tree=False)


def eigen_features(points: np.ndarray, k: int = SHAPE_K, workers: int = -1, block: int = BLOCK) -> np.ndarray:
    """(M, 3) float64 ``|n_z|``, planarity, linearity of each of ``points`` (M, 3) from its ``k`` nearest
    points (itself included; all of them when there are fewer).

    Covariance ``C = sum (p - mean)(p - mean)^T / k`` over the neighbourhood, eigenvalues ``l1 >= l2 >= l3``
    (clipped at 0), normal = eigenvector of ``l3``. A neighbourhood of coincident points (``l1 == 0``) gets
    zero planarity and linearity and ``|n_z| = 0``. ``workers``: scipy's query threads.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    m = len(points)
    out = np.zeros((m, 3), np.float64)
    if m == 0:
        return out
    k = int(min(k, m))
    if k < 2:  # a single point: nothing to analyse
        return out
    centre = points.mean(axis=0)
    local = points - centre  # small coordinates: georeferenced clouds keep their precision
    tree = _tree(local)
    for s in range(0, m, block):
        e = min(s + block, m)
        _, idx = tree.query(local[s:e], k=k, workers=workers)
        nb = np.take(local, idx, axis=0)  # (B, k, 3)
        nb -= nb.mean(axis=1, keepdims=True)
        cov = np.matmul(nb.transpose(0, 2, 1), nb) / k  # batched matmul: 3x faster than einsum here
        w, normal = symmetric_eigen3(cov)  # ascending: l3, l2, l1; the eigenvector of l3
        w = np.maximum(w, 0.0)
        l3, l2, l1 = w[:, 0], w[:, 1], w[:, 2]
        ok = l1 > 0
        inv = np.where(ok, 1.0 / np.where(ok, l1, 1.0), 0.0)
        out[s:e, 0] = np.where(ok, np.abs(normal[:, 2]), 0.0)
        out[s:e, 1] = (l2 - l3) * inv
        out[s:e, 2] = (l1 - l2) * inv
    return out


def symmetric_eigen3(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (M, 3), ascending, and the unit eigenvector of the smallest (M, 3) of symmetric 3 x 3
    matrices (M, 3, 3), in closed form: 4-8x faster than ``np.linalg.eigh`` on many small matrices.

    Eigenvalues: the trigonometric solution of the characteristic cubic (Smith 1961, "Eigenvalues of a symmetric
    3 x 3 matrix", CACM 4(4)): with q = tr(C) / 3, p = sqrt(tr((C - q I)^2) / 6) and B = (C - q I) / p,
    l = q + 2 p cos(phi + 2 pi j / 3), phi = acos(det(B) / 2) / 3. Eigenvector of the smallest l: the largest
    of the cross products of two rows of C - l I (each row is orthogonal to it). Where that cross product
    vanishes against the matrix's scale (the two smallest eigenvalues equal: a line, or every eigenvalue equal)
    ``np.linalg.eigh`` answers for those rows.
    """
    cov = np.asarray(cov, dtype=np.float64)
    q = np.trace(cov, axis1=1, axis2=2) / 3.0
    a = cov - q[:, None, None] * np.eye(3)
    p2 = (a * a).sum(axis=(1, 2)) / 6.0
    p = np.sqrt(p2)
    safe = np.where(p > 0, p, 1.0)
    b = a / safe[:, None, None]
    r = np.clip(np.linalg.det(b) / 2.0, -1.0, 1.0)
    phi = np.arccos(r) / 3.0
    big = q + 2.0 * p * np.cos(phi)
    small = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    mid = 3.0 * q - big - small
    w = np.stack([small, mid, big], axis=1)
    m = cov - small[:, None, None] * np.eye(3)
    c = np.stack([np.cross(m[:, 0], m[:, 1]), np.cross(m[:, 0], m[:, 2]), np.cross(m[:, 1], m[:, 2])], axis=1)
    n2 = (c * c).sum(axis=2)
    best = n2.argmax(axis=1)
    vec = c[np.arange(len(c)), best]
    norm = np.sqrt(n2[np.arange(len(c)), best])
    scale = np.maximum(np.abs(w).max(axis=1), 1e-300)
    weak = norm <= 1e-6 * scale * scale       # the two smallest eigenvalues (nearly) equal
    vec = vec / np.where(weak, 1.0, norm)[:, None]
    if weak.any():
        ew, ev = np.linalg.eigh(cov[weak])
        w[weak], vec[weak] = ew, ev[:, :, 0]
    return w, vec


def grid_cells(xyz: np.ndarray, cell: float = SHAPE_CELL):
    """The grid the local shape is computed on: ``(points (M, 3) barycentres, inverse (N,))``, cells aligned on
    multiples of ``cell`` in absolute coordinates."""
    from .subsample import grid_subsample

    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    origin = np.floor(xyz.min(axis=0) / cell) * cell
    origin = np.minimum(origin, xyz.min(axis=0))  # rounding of the division never puts a point below it
    sub = grid_subsample(xyz, cell, origin=origin)
    return sub.points, sub.inverse


@dataclass(frozen=True)
class LocalShape:
    """Local shape of a cloud: ``features`` (N, 3) ``|n_z|``, planarity, linearity per point (each point reads its
    grid cell's), and the grid: ``points`` (M, 3), their ``grid_features`` (M, 3) and ``inverse`` (N,)."""

    features: np.ndarray
    points: np.ndarray
    grid_features: np.ndarray
    inverse: np.ndarray


def local_shape(xyz: np.ndarray, cell: float = SHAPE_CELL, k: int = SHAPE_K, workers: int = -1) -> LocalShape:
    """:func:`eigen_features` of the cloud grid-subsampled at ``cell``, read back by every point."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if not len(xyz):
        z = np.zeros((0, 3))
        return LocalShape(z, z, z, np.zeros(0, np.int64))
    points, inverse = grid_cells(xyz, cell)
    grid = eigen_features(points, k, workers)
    return LocalShape(grid[inverse], points, grid, inverse)


@dataclass(frozen=True)
class RoomLevels:
    """A room's floor and ceiling heights (m, in the cloud's z), ``ceiling`` None where none was found, and the
    share of the footprint each covers (``floor_share`` 0 when the floor fell back to the lowest point)."""

    floor: float
    ceiling: float | None
    floor_share: float
    ceiling_share: float


def level_shares(xyz: np.ndarray, nz: np.ndarray, horizontal: float = HORIZONTAL_NZ, bin_size: float = LEVEL_BIN,
                 slab: float = LEVEL_SLAB, xy_cell: float = LEVEL_XY_CELL):
    """Footprint share of horizontal surfaces per z slab: ``(z0, share, bins)``: slab ``b`` spans
    ``[z0 + b * bin_size, z0 + b * bin_size + slab)``; ``share[b]`` is the number of x-y cells holding a
    horizontal point of slab ``b`` over the number of cells holding any point; ``bins`` (N,) each point's bin."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    z0 = float(xyz[:, 2].min())
    bins = np.floor((xyz[:, 2] - z0) / bin_size).astype(np.int64)
    nb = int(bins.max()) + 1
    ij = np.floor((xyz[:, :2] - xyz[:, :2].min(axis=0)) / xy_cell).astype(np.int64)
    cell = ij[:, 0] * (int(ij[:, 1].max()) + 1) + ij[:, 1]
    footprint = len(np.unique(cell))
    h = np.abs(nz) > horizontal
    width = max(1, int(round(slab / bin_size)))
    hb, hc = bins[h], cell[h]
    # a point of bin b lies in the slabs starting at b - width + 1 .. b
    starts = (hb[:, None] - np.arange(width)[None, :]).ravel()
    cells = np.repeat(hc, width)
    keep = starts >= 0
    pairs = np.unique(starts[keep] * (int(cell.max()) + 1) + cells[keep])
    cover = np.bincount(pairs // (int(cell.max()) + 1), minlength=nb)[:nb]
    return z0, cover / max(footprint, 1), bins


def _levels(share: np.ndarray, least: float, width: int) -> np.ndarray:
    """Slabs whose share is at least ``least`` and a local maximum within ``width`` bins (the first of a
    plateau), ascending."""
    n = len(share)
    if n == 0:
        return np.zeros(0, np.int64)
    pad = np.concatenate([np.full(width, -1.0), share, np.full(width, -1.0)])
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * width + 1)  # (n, 2w+1), centre at width
    peak = (share >= win.max(axis=1)) & (share > win[:, :width].max(axis=1))
    return np.flatnonzero(peak & (share >= least))


def room_levels(xyz: np.ndarray, nz: np.ndarray, horizontal: float = HORIZONTAL_NZ, bin_size: float = LEVEL_BIN,
                slab: float = LEVEL_SLAB, xy_cell: float = LEVEL_XY_CELL, floor_share: float = FLOOR_SHARE,
                ceiling_share: float = CEILING_SHARE, min_height: float = MIN_ROOM_HEIGHT,
                walls_above: float = WALLS_ABOVE_CEILING) -> RoomLevels:
    """Floor and ceiling of a room (rules in the module docstring) from its points ``xyz`` (N, 3) and their
    normals' ``|n_z|`` (N,) (best on the grid points of :func:`local_shape`: a cell counts once)."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    nz = np.abs(np.asarray(nz, dtype=np.float64).reshape(-1))
    if not len(xyz):
        return RoomLevels(0.0, None, 0.0, 0.0)
    z0, share, bins = level_shares(xyz, nz, horizontal, bin_size, slab, xy_cell)
    width = max(1, int(round(slab / bin_size)))
    h = nz > horizontal
    z = xyz[:, 2]

    def height(b: int) -> float:
        sel = h & (bins >= b) & (bins < b + width)
        return float(np.median(z[sel]))

    floors = _levels(share, floor_share, width)
    if len(floors):
        floor, f_share = height(int(floors[0])), float(share[floors[0]])
    else:
        floor, f_share = float(z.min()), 0.0
    walls = (nz < WALL_NZ) & (z > floor + 0.3)
    wz = np.sort(z[walls])
    for b in _levels(share, ceiling_share, width)[::-1]:
        level = height(int(b))
        if level < floor + min_height:
            break
        above = len(wz) - np.searchsorted(wz, level + 0.1, side="right")
        if above <= walls_above * len(wz):
            return RoomLevels(floor, level, f_share, float(share[b]))
    return RoomLevels(floor, None, f_share, 0.0)

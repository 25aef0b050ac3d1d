"""Ground surfaces of airborne scans, as rasters sampled bilinearly.

Four surfaces, four uses:

* :func:`opening_surface`, label-free: the lowest point of every cell (low outliers dropped), empty cells filled from the nearest
  non-empty one, then a grey-scale morphological opening (erosion then dilation) with a square window. The
  opening removes everything narrower than the window that stands above its surroundings (trees, houses,
  cars) and returns planar terrain unchanged, whatever its slope: the erosion of a plane z = a.x by a window
  of half-width w is a.x - |a| w, and the dilation adds |a| w back. Objects wider than the window (a large
  warehouse) stay in the surface. The network reads the height above this surface as an input channel
  (``hag``), so a tile whose ground spans 60 m gives the same input for a house on the hill as in the valley;
  a sensor's intensity scale or the tile's lowest point never enters.
* :func:`terrain_surface`, label-free: a progressive morphological terrain model (windows up to 256 m, a step test
  that keeps hills, roofs cut by the tile's edge removed too) that the ``terrain`` input channel reads; unlike the
  fixed-window opening, a roof wider than any one window stands above it.
* :func:`local_plane_height`: the height of each point above the plane fitted to its nearest other points (the
  predicted ground points): the per-point test of whether a point the network called ground lies on the ground.
* :func:`points_surface`: the mean height of given points per cell (the predicted ground points), empty cells
  filled from the nearest non-empty one. The IGN LiDAR HD specification splits vegetation by height above
  the ground surface (0-0.5 m low, 0.5-1.5 m medium, above 1.5 m high vegetation): :func:`vegetation_codes`.

Rasters are sampled bilinearly between cell centres (clamped at the border).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MAX_CELLS = 16_000_000
"""Largest raster built; a wider extent gets coarser cells."""

IGN_VEGETATION_HEIGHTS = (0.5, 1.5)
"""Upper bounds of low and of medium vegetation, in metres above ground (IGN LiDAR HD specification)."""
ASPRS_VEGETATION_CODES = (3, 4, 5)
"""ASPRS codes of low, medium and high vegetation."""


@dataclass(frozen=True)
class Surface:
    """A height raster: ``z[i, j]`` is the surface height at the centre of cell (i, j), whose lower corner is
    ``origin + (i, j) * cell`` in x, y."""

    origin: np.ndarray  # (2,) x, y of the raster corner
    cell: float
    z: np.ndarray       # (nx, ny) float64

    def at(self, xy: np.ndarray) -> np.ndarray:
        """Bilinear surface height at (N, 2) positions (clamped to the raster's cell centres)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        nx, ny = self.z.shape
        u = np.clip((xy[:, 0] - self.origin[0]) / self.cell - 0.5, 0.0, nx - 1.0)
        v = np.clip((xy[:, 1] - self.origin[1]) / self.cell - 0.5, 0.0, ny - 1.0)
        i0 = np.minimum(np.floor(u).astype(np.int64), max(nx - 2, 0))
        j0 = np.minimum(np.floor(v).astype(np.int64), max(ny - 2, 0))
        i1, j1 = np.minimum(i0 + 1, nx - 1), np.minimum(j0 + 1, ny - 1)
        fu, fv = u - i0, v - j0
        z = self.z
        return ((1 - fu) * (1 - fv) * z[i0, j0] + fu * (1 - fv) * z[i1, j0]
                + (1 - fu) * fv * z[i0, j1] + fu * fv * z[i1, j1])

    def height(self, xyz: np.ndarray) -> np.ndarray:
        """Height of (N, 3) points above the surface."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        return xyz[:, 2] - self.at(xyz[:, :2])


def _grid(xy: np.ndarray, cell: float, lo: np.ndarray | None = None, hi: np.ndarray | None = None):
    lo = xy.min(axis=0) if lo is None else np.asarray(lo, dtype=np.float64)
    hi = xy.max(axis=0) if hi is None else np.asarray(hi, dtype=np.float64)
    extent = np.maximum(hi - lo, 0.0)
    cell = max(float(cell), float(np.sqrt(extent[0] * extent[1] / MAX_CELLS)) * 1.001)
    shape = (np.floor(extent / cell).astype(np.int64) + 1).clip(min=1)
    ij = np.floor((xy - lo) / cell).astype(np.int64)
    ij = np.clip(ij, 0, shape - 1)
    return lo, cell, (int(shape[0]), int(shape[1])), ij[:, 0] * shape[1] + ij[:, 1]


def _fill_nearest(z: np.ndarray) -> np.ndarray:
    empty = ~np.isfinite(z)
    if not empty.any():
        return z
    idx = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
    return z[tuple(idx)]


LOW_OUTLIER_NEIGHBOURS, LOW_OUTLIER_DROP, LOW_OUTLIER_SLOPE = 8, 3.0, 1.0
"""A cell minimum is a low outlier (a noise return below the ground) when it lies more than
``LOW_OUTLIER_DROP + LOW_OUTLIER_SLOPE * d`` metres below the median minimum of its nearest non-empty cells,
d being their mean distance: a 45-degree slope never triggers it."""


def _drop_low_outliers(z: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``z`` (flat cell minima, inf = empty) with low-outlier cells emptied (an opening keeps pits)."""
    from scipy.spatial import cKDTree

    full = np.flatnonzero(np.isfinite(z))
    if len(full) <= LOW_OUTLIER_NEIGHBOURS:
        return z
    ij = np.stack(np.divmod(full, shape[1]), axis=1).astype(np.float64)
    dist, nb = cKDTree(ij).query(ij, k=LOW_OUTLIER_NEIGHBOURS + 1, workers=-1)  # each query on its own: same result
    around = np.median(z[full[nb[:, 1:]]], axis=1)
    outlier = z[full] < around - (LOW_OUTLIER_DROP + LOW_OUTLIER_SLOPE * dist[:, 1:].mean(axis=1))
    z = z.copy()
    z[full[outlier]] = np.inf
    return z


def opening_surface(xyz: np.ndarray, cell: float = 1.0, window: float = 30.0) -> Surface:
    """Label-free ground estimate: per-cell minimum, low outliers dropped, nearest fill, grey opening with a
    ``window`` (metres) square (see the module docstring). ``xyz``: (N, 3), N >= 1."""
    return opening_surfaces(xyz, cell, (window,))[0]


def opening_surfaces(xyz: np.ndarray, cell: float, windows) -> list[Surface]:
    """:func:`opening_surface` for several windows: the cell minima (with low outliers dropped, the costly part)
    are computed once and opened with each window."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if not len(xyz):
        raise ValueError("a ground surface needs at least one point")
    lo, cell, shape, flat = _grid(xyz[:, :2], cell)
    z = np.full(shape[0] * shape[1], np.inf)
    np.minimum.at(z, flat, xyz[:, 2])
    z = _fill_nearest(_drop_low_outliers(z, shape).reshape(shape))
    out = []
    for window in windows:
        size = max(1, int(round(window / cell)) | 1)  # odd number of cells
        # Near the raster's border the window runs out of data. Padding by point reflection about the border
        # (z(b + t) = 2 z(b) - z(b - t)) continues a plane exactly, so sloped terrain stays right up to the edge;
        # padding with the edge value would bend the surface down by up to slope * window / 2 there.
        pad = size // 2
        padded = np.pad(z, pad, mode="reflect", reflect_type="odd") if pad and min(z.shape) > 1 else z
        opened = ndimage.grey_opening(padded, size=(size, size), mode="nearest")
        if padded is not z:
            opened = opened[pad:-pad, pad:-pad]
        out.append(Surface(lo, cell, opened))
    return out


def points_surface(ground_xyz: np.ndarray, cell: float, lo: np.ndarray, hi: np.ndarray) -> Surface:
    """Mean height of ``ground_xyz`` per cell over the box ``lo``-``hi`` (x, y), empty cells from the nearest
    non-empty cell. ``ground_xyz`` must hold at least one point."""
    g = np.asarray(ground_xyz, dtype=np.float64).reshape(-1, 3)
    if not len(g):
        raise ValueError("a ground surface needs at least one ground point")
    lo, cell, shape, flat = _grid(g[:, :2], cell, lo, hi)
    total = np.bincount(flat, weights=g[:, 2], minlength=shape[0] * shape[1])
    count = np.bincount(flat, minlength=shape[0] * shape[1])
    z = np.where(count > 0, total / np.maximum(count, 1), np.inf).reshape(shape)
    return Surface(lo, cell, _fill_nearest(z))


PLANE_SLOPE_RIDGE = 1e-3
"""Ridge term (m^2 per neighbour) on the slope coefficients of :func:`local_plane_height`: it keeps the plane
defined when the neighbours lie on a line (a row of points along a scan line) and changes a real slope's fit by
well under a millimetre at the spacings of airborne scans."""


def local_plane_height(xyz: np.ndarray, neighbours: int = 8, rows: int = 262_144) -> np.ndarray:
    """Height of every point of ``xyz`` (N, 3) above the least-squares plane z = a + b x + c y through its
    ``neighbours`` nearest *other* points in x, y (leave one out: a point never supports its own plane, and a
    duplicate of it counts as another point). NaN for every point when N <= 3. Processed ``rows`` points at a
    time to bound memory."""
    from scipy.spatial import cKDTree

    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    n = len(xyz)
    k = min(int(neighbours), n - 1)
    if k < 3:
        return np.full(n, np.nan)
    tree = cKDTree(xyz[:, :2])
    out = np.empty(n)
    ridge = PLANE_SLOPE_RIDGE * k
    for s in range(0, n, rows):
        q = xyz[s:s + rows]
        _, nb = tree.query(q[:, :2], k=k + 1)
        own = nb == np.arange(s, s + len(q))[:, None]
        # the point itself moves to the last column (stable), which is dropped; a row without it drops its
        # farthest neighbour
        nb = np.take_along_axis(nb, np.argsort(own, axis=1, kind="stable"), axis=1)[:, :k]
        rel = xyz[nb] - q[:, None, :]                    # neighbours relative to the point
        x, y, z = rel[:, :, 0], rel[:, :, 1], rel[:, :, 2]
        # normal equations of z = a + b x + c y (ridge on b, c), solved for a alone by Cramer's rule
        sx, sy, sz = x.sum(1), y.sum(1), z.sum(1)
        sxx, syy, sxy = (x * x).sum(1) + ridge, (y * y).sum(1) + ridge, (x * y).sum(1)
        sxz, syz = (x * z).sum(1), (y * z).sum(1)
        minor = sxx * syy - sxy * sxy
        det = k * minor - sx * (sx * syy - sxy * sy) + sy * (sx * sxy - sxx * sy)
        det_a = sz * minor - sx * (sxz * syy - sxy * syz) + sy * (sxz * sxy - sxx * syz)
        out[s:s + len(q)] = -det_a / det                 # the plane's height at the point is a; the point is at 0
    return out


def vegetation_codes(height: np.ndarray, thresholds: tuple[float, float] = IGN_VEGETATION_HEIGHTS,
                     codes: tuple[int, int, int] = ASPRS_VEGETATION_CODES) -> np.ndarray:
    """ASPRS code of vegetation points by height above ground: low below ``thresholds[0]``, medium below
    ``thresholds[1]``, high from there on (IGN LiDAR HD: 0-0.5 m, 0.5-1.5 m, above 1.5 m)."""
    low, medium = float(thresholds[0]), float(thresholds[1])
    if not low <= medium:
        raise ValueError(f"vegetation thresholds must be increasing, got {low} and {medium}")
    h = np.asarray(height, dtype=np.float64)
    return np.where(h < low, codes[0], np.where(h < medium, codes[1], codes[2])).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# Progressive morphological terrain model (PMF, Zhang et al. 2003; SMRF, Pingel et al. 2013), with a step test
# that tells a building wider than any fixed window from a hill.

TERRAIN_MAX_WINDOW = 256.0
"""Widest opening window of :func:`terrain_surface`, in metres: a building up to this wide (and a tile-edge cut
of one up to half as wide) is removed from the terrain."""
TERRAIN_SLOPE = 0.2
"""PMF's terrain slope s: the elevation-difference threshold grows by s per metre of window growth."""
TERRAIN_DH0, TERRAIN_DH_MAX = 0.5, 2.5
"""PMF's initial and largest elevation-difference thresholds dh_0 and dh_max (metres)."""
TERRAIN_STEP, TERRAIN_STEP_SLOPE, TERRAIN_STEP_SHARE = 1.5, 0.2, 0.35
"""Step test: a region removed by the openings is an object (not terrain) when at least ``TERRAIN_STEP_SHARE``
of its border cells stand more than ``TERRAIN_STEP`` metres plus ``TERRAIN_STEP_SLOPE`` times the diagonal of a
cell above their lowest neighbour outside it. Roofs, canopies and cars end in a step; hills and ridges, which
the wide windows also cut, slope down gently. ``TERRAIN_STEP_SLOPE`` was chosen on the sparse training tile
test_semis_2023_0299_6802: 1.0 left 9.8 % of its building points within 1 m of the terrain, 0.2 left 1.8 %."""


TERRAIN_ISLAND_CELLS = 8
"""Kept regions of at most this many cells enclosed by removed cells are removed too (see
:func:`terrain_surface`)."""


def terrain_cell(xyz: np.ndarray) -> float:
    """Raster cell of :func:`terrain_surface` for a cloud: 1 m, or the mean point spacing 1 / sqrt(density) where
    points are sparser (at most 5 m), the density being counted over the occupied 5 m cells (water and the area
    outside an irregular tile do not dilute it). A cell that holds a point most of the time keeps the cell
    minima close to the ground a sparse survey sees."""
    xy = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)[:, :2]
    if len(xy) < 2:
        return 1.0
    occupied = len(np.unique(np.floor((xy - xy.min(axis=0)) / 5.0).astype(np.int64) @ np.array([1, 1 << 31])))
    density = len(xy) / (occupied * 25.0)
    return float(np.clip(1.0 / np.sqrt(density), 1.0, 5.0))


def pmf_windows(cell: float, max_window: float = TERRAIN_MAX_WINDOW) -> list[int]:
    """Window sizes in cells, w_k = 2^k + 1 (PMF's exponential series, Zhang et al. 2003 Eq. 5 with b = 2), up to
    the first that spans ``max_window`` metres."""
    out, k = [], 1
    while True:
        w = 2 ** k + 1
        out.append(w)
        if w * cell >= max_window:
            return out
        k += 1


def pmf_thresholds(windows: list[int], cell: float, slope: float = TERRAIN_SLOPE, dh0: float = TERRAIN_DH0,
                   dh_max: float = TERRAIN_DH_MAX) -> np.ndarray:
    """PMF's elevation-difference thresholds (Zhang et al. 2003 Eq. 7): dh_0 for the first window, then
    s (w_k - w_{k-1}) c + dh_0, at most dh_max."""
    w = np.asarray(windows, dtype=np.float64)
    dh = np.full(len(w), dh0)
    dh[1:] = slope * (w[1:] - w[:-1]) * cell + dh0
    return np.minimum(dh, dh_max)


def _step_test(z: np.ndarray, removed: np.ndarray, before: np.ndarray, cell: float,
               inside: np.ndarray | None = None) -> np.ndarray:
    """``removed`` cells that belong to a connected region (8-connectivity) ending in a step (see
    :data:`TERRAIN_STEP`) above the cells kept so far (inside the survey's footprint ``inside``, neither
    ``removed`` nor removed ``before``). Cells outside the footprint hold no return: a step to them is invented by
    the fill and is no evidence either way."""
    labels, n = ndimage.label(removed, structure=np.ones((3, 3), bool))
    if n == 0:
        return removed
    blocked = removed | before if inside is None else removed | before | ~inside
    outside = ndimage.minimum_filter(np.where(blocked, np.inf, z), size=3, mode="nearest")
    border = removed & np.isfinite(outside)            # removed cells with a neighbour that was kept
    step = (z - outside) > TERRAIN_STEP + TERRAIN_STEP_SLOPE * cell * np.sqrt(2.0)
    ids = labels[border]
    n_border = np.bincount(ids, minlength=n + 1)
    n_step = np.bincount(ids, weights=step[border], minlength=n + 1)
    keep = n_step >= TERRAIN_STEP_SHARE * np.maximum(n_border, 1)
    keep[0] = False
    keep[n_border == 0] = True                          # a region with no kept neighbour: the whole raster moved
    return keep[labels] & removed


def _fill_linear(z: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``z`` with the ``hole`` cells interpolated linearly (Delaunay) from the kept cells on the holes' borders;
    cells outside their convex hull (holes at the raster's edge) from the nearest kept cell."""
    from scipy.interpolate import LinearNDInterpolator

    if not hole.any():
        return z
    z = z.copy()
    rim = ndimage.binary_dilation(hole, structure=np.ones((3, 3), bool)) & ~hole
    if rim.sum() >= 3:
        src = np.argwhere(rim).astype(np.float64)
        try:
            z[hole] = LinearNDInterpolator(src, z[rim])(np.argwhere(hole).astype(np.float64))
        except Exception:  # collinear rim cells (a hole along a one-cell strip): nearest below
            z[hole] = np.nan
    else:
        z[hole] = np.nan
    return _fill_nearest(np.where(np.isnan(z), np.inf, z) if np.isnan(z).any() else z)


def _opening(z: np.ndarray, w: int, inside: np.ndarray | None) -> np.ndarray:
    """Grey opening of ``z`` with a w x w square restricted to the cells ``inside`` (all when None): at an inside
    cell, the maximum over its window's inside cells of their minima over their windows' inside cells. Cells
    outside keep ``z``."""
    if inside is None:
        return ndimage.grey_opening(z, size=(w, w), mode="nearest")
    eroded = ndimage.grey_erosion(np.where(inside, z, np.inf), size=(w, w), mode="nearest")
    opened = ndimage.grey_dilation(np.where(inside, eroded, -np.inf), size=(w, w), mode="nearest")
    return np.where(inside, opened, z)


def _pmf(z0: np.ndarray, windows: list[int], thresholds: np.ndarray, cell: float, reflect: bool,
         inside: np.ndarray | None = None) -> np.ndarray:
    """Cells removed by the progressive openings of ``z0`` (each opening applied to the previous one, as SMRF),
    with the step test on the windows whose threshold is capped at dh_max.

    reflect=True pads the raster by point reflection about its border (z(b + t) = 2 z(b) - z(b - t)), which
    continues a plane exactly, so a slope is not cut near the tile's edge; but it continues a roof cut by the
    edge as a higher plateau, which no window removes. reflect=False restricts every window to the raster
    (``mode="nearest"`` is the same for minima and maxima): a plateau touching the edge is removed once the
    window is more than twice as wide as what remains of it, and slopes near the edge are cut.

    ``inside`` (None: every cell; only with reflect=False) is the survey's footprint: windows are restricted
    to it as to the raster, and only its cells can be removed. The cells outside it (a rotated or irregular
    tile's corners, filled from the nearest return) would otherwise extend whatever the footprint's edge holds,
    a roof as a plateau wider than the tile. (Reflecting about an irregular edge is not defined: the reflected
    pass keeps the nearest fill.)
    """
    if reflect and inside is not None:
        raise ValueError("a footprint restricts the windows; the reflected pass has none")
    removed = np.zeros(z0.shape, bool)
    last = z0
    for w, dh in zip(windows, thresholds):
        if w > 2 * max(z0.shape) + 1:   # wider than twice the raster: it would open to the raster's minimum
            break
        pad = w // 2 if reflect and min(z0.shape) > 1 else 0
        padded = np.pad(last, pad, mode="reflect", reflect_type="odd") if pad else last
        opened = _opening(padded, w, inside)
        opened = opened[pad:-pad, pad:-pad] if pad else opened
        new = ((last - opened) > dh) & ~removed
        new = new if inside is None else new & inside
        removed |= _step_test(z0, new, removed, cell, inside) if dh >= TERRAIN_DH_MAX else new
        last = opened
    return removed


def outside_footprint(empty: np.ndarray) -> np.ndarray:
    """Empty raster cells outside the survey's footprint (a rotated or irregular tile's corners, a lake at its
    edge, the void around a few stray returns): those farther than r cells from any non-empty cell, connected
    to the raster's border, grown back by r cells into the empty cells. r = 5 s, s being the spacing of the
    non-empty cells: 1 when most of them have a non-empty neighbour, else the median distance from one to the
    nearest other. A sparse survey's scattered empty cells and a survey thinned to a few points per hectare stay
    inside; so do gaps enclosed by returns (a lake, a dark roof)."""
    from scipy.spatial import cKDTree

    if not empty.any() or empty.all():
        return np.zeros(empty.shape, bool)
    full = ~empty
    spacing = 1.0
    crowded = ndimage.convolve(full.astype(np.int32), np.ones((3, 3), np.int32), mode="constant") > 1
    if (crowded & full).sum() < 0.5 * full.sum():
        ij = np.argwhere(full).astype(np.float64)
        spacing = float(np.median(cKDTree(ij).query(ij, k=2)[0][:, 1]))
    r = 5.0 * spacing
    far = ndimage.distance_transform_edt(empty) > r
    labels, _ = ndimage.label(far)
    ids = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    out = np.isin(labels, ids[ids > 0])
    if not out.any():
        return out
    return (ndimage.distance_transform_edt(~out) <= r) & empty


def terrain_surface(xyz: np.ndarray, cell: float | None = None, max_window: float = TERRAIN_MAX_WINDOW,
                    slope: float = TERRAIN_SLOPE) -> Surface:
    """Label-free terrain model (a DTM) that wide roofs and tile edges do not fool.

    1. Cell minima (cell :func:`terrain_cell` unless given), low outliers dropped, empty cells from the nearest.
    2. Progressive morphological filter (PMF, Zhang et al. 2003; opening the previous surface as SMRF, Pingel et
       al. 2013): open with square windows w_k = 2^k + 1 cells up to ``max_window`` metres; a cell whose opened
       height drops by more than dh_k (:func:`pmf_thresholds`) is removed. Run twice (:func:`_pmf`): with the
       raster padded by point reflection (slopes stay whole up to the tile's edge), and with windows restricted
       to the raster and to the survey's footprint (:func:`outside_footprint`), of which only regions touching
       the edge of either are kept (a roof cut by the tile's or the footprint's edge is removed while what
       remains of it is narrower than half the widest window).
    3. Step test (:func:`_step_test`): the capped thresholds (dh_max) of wide windows also cut hilltops and
       ridges; of the cells a capped window removes, only regions ending in a step stay removed.
    4. Kept islands of at most :data:`TERRAIN_ISLAND_CELLS` cells inside removed regions are removed too; the
       removed cells, grown by one cell (the cells along an outline hold both), are interpolated linearly from
       the kept cells around them.
    """
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if not len(xyz):
        raise ValueError("a ground surface needs at least one point")
    cell = terrain_cell(xyz) if cell is None else float(cell)
    lo, cell, shape, flat = _grid(xyz[:, :2], cell)
    z = np.full(shape[0] * shape[1], np.inf)
    np.minimum.at(z, flat, xyz[:, 2])
    outside = outside_footprint(~np.isfinite(z).reshape(shape))
    inside = ~outside if outside.any() else None
    z0 = _fill_nearest(_drop_low_outliers(z, shape).reshape(shape))
    windows = pmf_windows(cell, max_window)
    thresholds = pmf_thresholds(windows, cell, slope)
    removed = _pmf(z0, windows, thresholds, cell, True)
    # regions only the restricted windows remove (roofs cut by the edge, and slopes near the edge) that touch
    # the edge (of the raster or of the footprint) and end in a step there
    extra = _pmf(z0, windows, thresholds, cell, False, inside) & ~removed
    labels, _ = ndimage.label(extra, structure=np.ones((3, 3), bool))
    edge = ndimage.binary_dilation(outside, structure=np.ones((3, 3), bool))
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    edge_ids = np.unique(labels[edge])
    removed |= _step_test(z0, np.isin(labels, edge_ids[edge_ids > 0]), removed, cell, inside)
    # a few kept cells enclosed by removed ones are a roof's or a canopy's own cells the openings missed (a
    # sparse survey leaves some); a courtyard is larger
    enclosed = ndimage.binary_fill_holes(removed) & ~removed
    labels, n = ndimage.label(enclosed)
    small = np.bincount(labels.ravel(), minlength=n + 1) <= TERRAIN_ISLAND_CELLS
    small[0] = False
    removed |= small[labels]
    # the kept cells around a removed region straddle its outline (a cell holding a few roof points and no
    # ground point keeps the roof's height): the fill starts one cell further out; the cells outside the
    # footprint are filled from the terrain too (points at the footprint's edge are sampled between them)
    grown = ndimage.binary_dilation(removed, structure=np.ones((3, 3), bool))
    grown = removed if grown.all() else grown      # only a few kept cells: the fill starts at them
    if grown.all():
        # nothing kept (a steep tile can be one region that the capped windows cut and that touches no kept
        # cell): no support to fill from; the cell minima are the best estimate there is
        return Surface(lo, cell, z0)
    hole = grown | outside
    return Surface(lo, cell, _fill_linear(z0, hole if not hole.all() else grown))

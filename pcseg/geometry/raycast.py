"""Exact ray casting against triangle meshes from one origin (virtual lidar and terrestrial scans of CAD scenes).

:func:`cast_rays` returns, for every ray ``origin + t d``, the nearest triangle hit with ``0 < t <= max_range``
(``t`` in metres along the unit direction) or ``inf`` / ``-1``. Every (ray, triangle) pair it tests goes
through Möller-Trumbore in float64, two-sided (back faces are hit too); the acceleration only decides which
pairs to test, and it never drops a pair that can hit.

Method. Every ray leaves the same origin, so a triangle can only be hit by rays whose direction lies in the
solid angle it subtends. The rays are binned in a spherical image (azimuth x elevation, square cells in angle,
about two rays per cell, over the azimuth and elevation ranges the rays cover; the azimuth frame starts in the
widest gap between ray azimuths, so that a cone of rays across the -x axis is still one compact range). Each
triangle gets a conservative angular box as seen from the origin:

* azimuth: the vertex azimuths, unwrapped about the first one (a triangle that straddles the +-pi seam is one
  interval that wraps, split in two in the image); a triangle whose x, y projection contains the origin, or
  comes within 1e-7 of its size of it, spans every azimuth;
* elevation: not from the vertices (the extremes can lie inside an edge or the face): the highest elevation is
  at most ``atan2(z_max, h_min)`` (``atan2(z_max, h_max)`` when ``z_max < 0``) and the lowest at least
  ``atan2(z_min, h_min)`` (``atan2(z_min, h_max)`` when ``z_min > 0``), with ``h_min`` the horizontal distance
  from the origin to the triangle's x, y projection (0 when the projection contains it: the box then reaches
  +-90 degrees) and ``h_max`` the largest vertex one;
* a slack of 1e-9 of the triangle's size on ``h`` and ``z`` and 1e-9 rad on the angles covers rounding.

Rays are sorted by cell, so the rays of one row of cells of a box are one contiguous range: each (triangle,
row) gives one segment of candidate rays. Segments are expanded into pairs with ``np.repeat`` / ``cumsum`` in
blocks of about ``chunk`` pairs (at most twice that), intersected, and each ray keeps its nearest hit
(``np.minimum.at``; the lowest face index on exact ties). Since all rays share the origin, the Möller-Trumbore
factors that depend on the triangle alone (``T = O - v0``, ``Q = T x e1``, ``e2 . Q``, ``e2 x T``,
``e2 x e1``) are computed once per triangle; a pair then costs three dot products: ``det = d . (e2 x e1)``,
``u = d . (e2 x T) / det``, ``v = d . Q / det``, ``t = e2 . Q / det``: the textbook quantities (by the scalar
triple product), in float64, with the three per-triangle vectors and ``e2 . Q`` divided by ``|e1 x e2|`` so that
``det`` is the cosine between the ray and the normal. ``|det| <= 1e-12`` (a ray in the triangle's plane, or a
degenerate triangle) is no hit. With a finite ``max_range``, triangles whose bounding box lies farther are
dropped first. Against a textbook one-ray-at-a-time loop (tests/test_raycast.py) ``t`` agrees within 2e-14
relative and the face is the same wherever the nearest hit is not within rounding of an edge or a tie.

Cost: ``O(F)`` for the triangles' factors and boxes, ``O(R log R)`` for the rays' image (about 0.2 us a ray:
normalising, two ``arctan2``, sorting) and about 0.1 us per candidate pair. The pairs are the sum over the
triangles of the rays in their box: about 2 per ray in a room (each ray is a candidate of the one or two big
wall, floor or ceiling triangles whose box holds it), plus a few cells of rays per small triangle. Memory:
about 125 bytes a ray and 140 a pair of a block (``chunk`` = 2^18: at most about 75 MB of pairs).

Measured on this project's AMD EPYC (2 cores; /proc/cpuinfo names it "AMD EPYC" only) with one thread
(``OMP_NUM_THREADS=1``), numpy 2.4, while a training and another job ran on the two cores (``uptime`` load
average 3.7-4.1), best / median of 7 runs, twice:

* a 6 x 5 x 3 m room of 12 triangles with 3 CAD objects (two chairs and a table, 5,300 faces in all), scanned
  from inside (1.6 m high, off-centre) with 1800 x 900 rays over the whole sphere (1.62 M rays, every one hits,
  2.2 pairs a ray): 0.59-0.63 s best (2.6-2.75 M rays/s), 0.70-0.86 s median (1.9-2.3 M rays/s);
* a KITTI-like frame: a 160 x 160 m ground of 2 triangles and 10 CAD cars 5-60 m away (24,765 faces), 64
  beams (-24.8..+2 degrees) x 2048 azimuths from 1.73 m height, ``max_range`` 120 m (131 k rays, 88% hit,
  3.6 pairs a ray): 0.10-0.12 s best (1.05-1.3 M rays/s), 0.11-0.19 s median (0.7-1.2 M rays/s).
"""
from __future__ import annotations

import numpy as np

__all__ = ["cast_rays", "spherical_directions"]

_TWO_PI = 2.0 * np.pi
_ANGLE_SLACK = 1e-9      # rad added on every side of a triangle's angular box
_SIZE_SLACK = 1e-9       # of the triangle's size, taken off h_min and added to z_max / h_max / taken off z_min
_FULL_AZIMUTH = 1e-7     # h_min below this fraction of the size: the triangle spans every azimuth
_PARALLEL = 1e-12        # |det| <= this * |e1 x e2|: the ray runs along the triangle's plane, no hit
_NO_FACE = np.iinfo(np.int64).max
_RAYS_PER_CELL = 2.0
_MAX_CELLS = 1 << 22
_GAP_BINS = 4096         # azimuth histogram that finds the widest gap between ray azimuths
_ROWS_PER_BLOCK = 1 << 20  # (triangle, row) segments expanded at once


def spherical_directions(n_azimuth: int, elevations_rad, azimuth_start: float = -np.pi) -> np.ndarray:
    """(len(elevations) * n_azimuth, 3) float64 unit directions, one row of ``n_azimuth`` per elevation
    (elevation-major: ray ``i * n_azimuth + j`` has elevation ``elevations_rad[i]`` and azimuth
    ``azimuth_start + 2 pi j / n_azimuth``, counter-clockwise from +x seen from +z)."""
    el = np.asarray(elevations_rad, dtype=np.float64).reshape(-1)
    az = azimuth_start + _TWO_PI * np.arange(int(n_azimuth)) / int(n_azimuth)
    ce, se = np.cos(el)[:, None], np.sin(el)[:, None]
    d = np.stack([ce * np.cos(az)[None, :], ce * np.sin(az)[None, :], np.broadcast_to(se, (len(el), len(az)))],
                 axis=-1)
    return d.reshape(-1, 3)


def _azimuth_frame(az: np.ndarray) -> tuple[float, float]:
    """(start, span): ray azimuths lie in [start, start + span] (mod 2 pi), the complement being the widest run
    of empty bins of a histogram of them; (-pi, 2 pi) when no bin is empty."""
    k = np.clip(((az + np.pi) * (_GAP_BINS / _TWO_PI)).astype(np.int64), 0, _GAP_BINS - 1)
    occupied = np.bincount(k, minlength=_GAP_BINS) > 0
    if occupied.all():
        return -np.pi, _TWO_PI
    # Widest circular run of empty bins: unroll the circle from an occupied bin.
    first = int(np.flatnonzero(occupied)[0])
    ring = np.roll(occupied, -first)
    idx = np.flatnonzero(ring)  # ring[0] is occupied
    gaps = np.diff(np.concatenate([idx, [_GAP_BINS]])) - 1
    g = int(np.argmax(gaps))
    width = _TWO_PI / _GAP_BINS
    # the bin after the gap (first occupied one) starts the frame; one bin of the gap's border kept either side
    start_bin = (idx[(g + 1) % len(idx)] + first) % _GAP_BINS
    start = -np.pi + (start_bin - 1) * width
    span = _TWO_PI - max(int(gaps[g]) - 2, 0) * width
    return float(start), float(min(span, _TWO_PI))


def _min3(a: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(a[0], a[1]), a[2])


def _max3(a: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(a[0], a[1]), a[2])


def _horizontal_min_distance(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(h_min, inside) for triangles with corner coordinates x, y (3, F) relative to the origin: the distance
    from (0, 0) to the filled triangle, 0 where it contains (0, 0) (edges included, degenerate triangles too)."""
    x1, y1 = np.roll(x, -1, axis=0), np.roll(y, -1, axis=0)
    cross = x * y1 - y * x1  # which side of edge k -> k+1 the origin is on
    inside = ~(_max3(cross) > 0) | ~(_min3(cross) < 0)
    ex, ey = x1 - x, y1 - y
    ll = ex * ex + ey * ey
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(ll > 0, np.clip(-(x * ex + y * ey) / ll, 0.0, 1.0), 0.0)
    h = _min3(np.hypot(x + s * ex, y + s * ey))
    return np.where(inside, 0.0, h), inside


def _angular_boxes(x: np.ndarray, y: np.ndarray, z: np.ndarray):
    """Conservative boxes of triangles with corners x, y, z (3, F) relative to the origin: (az_lo, az_width,
    el_lo, el_hi), azimuth as a start and a width (2 pi for the full circle)."""
    hmax = _max3(np.hypot(x, y))
    zmin, zmax = _min3(z), _max3(z)
    size = np.maximum(hmax, np.maximum(np.abs(zmin), np.abs(zmax)))
    hmin, inside = _horizontal_min_distance(x, y)
    slack = _SIZE_SLACK * size
    hmin_s = np.maximum(hmin - slack, 0.0)
    hmax_s = hmax + slack
    zmax_s, zmin_s = zmax + slack, zmin - slack
    el_hi = np.where(zmax_s >= 0, np.arctan2(zmax_s, hmin_s), np.arctan2(zmax_s, hmax_s)) + _ANGLE_SLACK
    el_lo = np.where(zmin_s <= 0, np.arctan2(zmin_s, hmin_s), np.arctan2(zmin_s, hmax_s)) - _ANGLE_SLACK
    full = inside | (hmin <= _FULL_AZIMUTH * size)
    a = np.arctan2(y, x)
    d = np.mod(a - a[0] + np.pi, _TWO_PI) - np.pi  # unwrapped about the first corner: span < pi here
    d_lo, d_hi = _min3(d), _max3(d)
    az_lo = a[0] + d_lo - _ANGLE_SLACK
    width = d_hi - d_lo + 2 * _ANGLE_SLACK
    full |= width >= np.pi
    az_lo = np.where(full, 0.0, az_lo)
    width = np.where(full, _TWO_PI, width)
    return az_lo, width, el_lo, el_hi


def _check(vertices, faces, origin, directions, max_range):
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or (len(f) and f.dtype.kind not in "iu"):
        raise ValueError(f"faces must be (F, 3) integers, got {f.shape} {f.dtype}")
    f = f.astype(np.int64, copy=False)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"face indices run from {f.min()} to {f.max()} for {len(v)} vertices")
    o = np.asarray(origin, dtype=np.float64).reshape(-1)
    if o.shape != (3,) or not np.isfinite(o).all():
        raise ValueError(f"origin must be 3 finite numbers, got {origin!r}")
    d = np.asarray(directions, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != 3:
        raise ValueError(f"directions must be (R, 3), got {d.shape}")
    norm = np.sqrt(np.einsum("ij,ij->i", d, d))
    bad = ~(np.isfinite(norm) & (norm > 0))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} directions are zero or not finite (first: ray {np.flatnonzero(bad)[0]})")
    max_range = float(max_range)
    if not max_range > 0:
        raise ValueError(f"max_range must be > 0, got {max_range}")
    return v, f, o, d / norm[:, None], max_range


def cast_rays(vertices, faces, origin, directions, max_range: float = np.inf,
              chunk: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of every ray ``origin + t * directions[i]`` on the triangles ``vertices[faces]``.

    ``directions`` (R, 3) need not be unit: they are normalised and ``t`` is in the units of ``vertices`` along
    the unit direction. Returns ``t`` float64 (R,) and ``face`` int64 (R,): the nearest hit with
    ``0 < t <= max_range`` (two-sided, exact float64 Möller-Trumbore), ``inf`` and ``-1`` where there is none.
    ``chunk`` bounds the (ray, triangle) pairs tested at once (about 140 bytes a pair; a block holds at most
    twice ``chunk``). Zero or non-finite directions, bad shapes, out-of-range face indices and
    ``max_range <= 0`` raise ``ValueError``.
    """
    v, f, o, d, max_range = _check(vertices, faces, origin, directions, max_range)
    n_rays = len(d)
    best_t = np.full(n_rays, np.inf)
    best_f = np.full(n_rays, _NO_FACE, dtype=np.int64)
    if n_rays == 0 or len(f) == 0:
        return best_t, np.full(n_rays, -1, dtype=np.int64)

    c = (v - o)[f.T].transpose(0, 2, 1)  # (corner, coordinate, F), relative to the origin
    e1, e2 = c[1] - c[0], c[2] - c[0]     # (3, F)
    normal = np.cross(e2, e1, axis=0)
    area2 = np.sqrt(np.einsum("ij,ij->j", normal, normal))
    keep = np.isfinite(area2) & (area2 > 0)
    if np.isfinite(max_range):
        gap = np.maximum(np.maximum(_min3(c), -_max3(c)), 0.0)  # (3, F) from the origin to the bounding box
        keep &= np.sqrt(np.einsum("ij,ij->j", gap, gap)) <= max_range * (1 + 1e-12)
    ids = np.flatnonzero(keep)
    if len(ids) == 0:
        return best_t, np.full(n_rays, -1, dtype=np.int64)
    c, e1, e2, normal = c[:, :, ids], e1[:, ids], e2[:, ids], normal[:, ids]
    tvec = -c[0]                              # T = O - v0
    q = np.cross(tvec, e1, axis=0)            # Q = T x e1
    # Per-triangle rows (e2 x e1 | e2 x T | Q): det, u * det, v * det are their dot products with d. Divided by
    # |e1 x e2|, so that det is the cosine between the ray and the plane's normal.
    scale = 1.0 / area2[ids]
    rows = (np.concatenate([normal, np.cross(e2, tvec, axis=0), q]) * scale).T.copy()
    t_num = np.einsum("ij,ij->j", e2, q) * scale

    # Spherical image of the rays.
    az = np.arctan2(d[:, 1], d[:, 0])
    el = np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1]))
    az0, az_span = _azimuth_frame(az)
    az_r = np.mod(az - az0, _TWO_PI)
    az_r[az_r > az_span + 0.5 * (_TWO_PI - az_span)] -= _TWO_PI  # rounding just below the frame's start
    el_min, el_max = float(el.min()), float(el.max())
    el_span = el_max - el_min
    cells = int(np.clip(n_rays / _RAYS_PER_CELL, 1, _MAX_CELLS))
    if el_span > 0:
        side = np.sqrt(az_span * el_span / cells)
        n_el = int(np.clip(np.ceil(el_span / side), 1, cells))
        n_az = int(np.clip(np.ceil(az_span / side), 1, max(cells // n_el, 1)))
    else:
        n_az, n_el = cells, 1
    w_az = az_span / n_az
    w_el = el_span / n_el if el_span > 0 else 1.0
    ia = np.clip(np.floor(az_r / w_az), 0, n_az - 1).astype(np.int64)
    ie = np.clip(np.floor((el - el_min) / w_el), 0, n_el - 1).astype(np.int64)
    cell = ie * n_az + ia
    perm = np.argsort(cell, kind="stable")
    starts = np.zeros(n_az * n_el + 1, dtype=np.int64)
    np.cumsum(np.bincount(cell, minlength=n_az * n_el), out=starts[1:])
    ds = np.take(d, perm, axis=0)
    del az, el, az_r, ia, ie, cell

    # Triangles' boxes in image cells: up to two azimuth intervals each (a box across the frame's end wraps).
    a_lo, a_w, e_lo, e_hi = _angular_boxes(c[:, 0], c[:, 1], c[:, 2])
    e_in = (e_hi >= el_min) & (e_lo <= el_max)
    r0 = np.clip(np.floor((e_lo - el_min) / w_el), 0, n_el - 1).astype(np.int64)
    r1 = np.clip(np.floor((e_hi - el_min) / w_el), 0, n_el - 1).astype(np.int64)
    full = a_w >= _TWO_PI
    lo = np.where(full, 0.0, np.mod(a_lo - az0, _TWO_PI))
    hi = np.where(full, _TWO_PI, lo + a_w)
    first_hi = np.minimum(hi, _TWO_PI)
    wraps = hi > _TWO_PI
    iv_tri = np.concatenate([np.arange(len(ids)), np.flatnonzero(wraps)])
    iv_lo = np.concatenate([lo, np.zeros(int(wraps.sum()))])
    iv_hi = np.concatenate([first_hi, hi[wraps] - _TWO_PI])
    ok = e_in[iv_tri] & (iv_lo <= az_span)
    iv_tri, iv_lo, iv_hi = iv_tri[ok], iv_lo[ok], iv_hi[ok]
    c0 = np.clip(np.floor(iv_lo / w_az), 0, n_az - 1).astype(np.int64)
    c1 = np.clip(np.floor(iv_hi / w_az), 0, n_az - 1).astype(np.int64)
    n_rows = r1[iv_tri] - r0[iv_tri] + 1

    # (triangle, row) segments, in blocks of rows; pairs in blocks of about `chunk`.
    chunk = max(int(chunk), 1)
    row_end = np.cumsum(n_rows)
    block_edges = np.searchsorted(row_end, np.arange(0, int(row_end[-1]) if len(row_end) else 0,
                                                     _ROWS_PER_BLOCK), side="right")
    block_edges = np.unique(np.concatenate([block_edges, [len(iv_tri)]]))
    prev = 0
    for b in block_edges:
        sel = slice(prev, int(b))
        prev = int(b)
        if sel.stop <= sel.start:
            continue
        nr = n_rows[sel]
        seg_iv = np.repeat(np.arange(sel.start, sel.stop), nr)
        first_row = np.cumsum(nr) - nr
        seg_row = r0[iv_tri[seg_iv]] + (np.arange(len(seg_iv)) - np.repeat(first_row, nr))
        s0 = starts[seg_row * n_az + c0[seg_iv]]
        s1 = starts[seg_row * n_az + c1[seg_iv] + 1]
        length = s1 - s0
        nz = length > 0
        seg_tri, s0, length = iv_tri[seg_iv[nz]], s0[nz], length[nz]
        if len(length) == 0:
            continue
        if length.max() > chunk:  # a segment longer than a block: cut it in pieces
            pieces = -(-length // chunk)
            k = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
            seg_tri = np.repeat(seg_tri, pieces)
            s0 = np.repeat(s0, pieces) + k * chunk
            length = np.minimum(np.repeat(length, pieces) - k * chunk, chunk)
        cum = np.cumsum(length)
        group = (cum - length) // chunk  # a block holds the segments starting in its window: <= 2 chunk pairs
        g_edges = np.concatenate([[0], np.flatnonzero(np.diff(group)) + 1, [len(length)]])
        for g0, g1 in zip(g_edges[:-1], g_edges[1:]):
            _intersect(seg_tri[g0:g1], s0[g0:g1], length[g0:g1], ds, rows, t_num, ids, max_range, best_t, best_f)

    t_out = np.empty(n_rays)
    f_out = np.empty(n_rays, dtype=np.int64)
    t_out[perm] = best_t
    f_out[perm] = np.where(np.isfinite(best_t), best_f, -1)
    return t_out, f_out


def _intersect(seg_tri, s0, length, ds, rows, t_num, ids, max_range, best_t, best_f) -> None:
    """Test every pair of one block of segments and fold the nearest hits into ``best_t`` / ``best_f`` (indexed
    by sorted ray position; ``best_f`` may hold ``_NO_FACE`` for a ray whose hit this block improves)."""
    total = int(length.sum())
    offset = np.cumsum(length) - length
    ray = np.arange(total, dtype=np.int64) + np.repeat(s0 - offset, length)
    tri = np.repeat(seg_tri, length)
    x = np.einsum("pj,pkj->pk", np.take(ds, ray, axis=0), np.take(rows, tri, axis=0).reshape(-1, 3, 3))
    det, u_det, v_det = x[:, 0], x[:, 1], x[:, 2]  # det, u * det, v * det
    # u >= 0, v >= 0, u + v <= 1 without dividing: multiplied by det^2 > 0 (two-sided: either sign of det)
    hit = (u_det * det >= 0) & (v_det * det >= 0) & ((u_det + v_det) * det <= det * det) & (np.abs(det) > _PARALLEL)
    k = np.flatnonzero(hit)
    if len(k) == 0:
        return
    tri_k = tri[k]
    t = t_num[tri_k] / det[k]
    ok = (t > 0) & (t <= max_range)
    ray_k, t, face = ray[k[ok]], t[ok], ids[tri_k[ok]]
    if len(t) == 0:
        return
    before = best_t[ray_k]
    np.minimum.at(best_t, ray_k, t)
    after = best_t[ray_k]
    best_f[ray_k[after < before]] = _NO_FACE  # a nearer hit: the old face goes
    win = t == after
    np.minimum.at(best_f, ray_k[win], face[win])  # lowest face index among equally near hits

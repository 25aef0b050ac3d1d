"""Points into pictures with numpy only: view projections, a pixel frame and a z-buffer.

Images are ``(H, W)`` arrays, row 0 at the top, column 0 on the left. Rasterising happens in three steps:

1. :func:`project` maps points to view coordinates ``uv`` and a depth *priority* (larger wins a pixel):

   ``top``    looking down: ``u = x``, ``v = y`` (north / +y up), priority ``z`` (the highest point is seen).
   ``side``   looking north from the south: ``u = x``, ``v = z``, priority ``-y`` (the nearest point is seen).
   ``persp``  a pinhole camera above the south-west corner looking at the centre of the cloud (azimuth and
              elevation adjustable): ``u, v`` on the image plane, priority minus the depth along the view axis.

2. :func:`fit_frame` fits the ``uv`` extent into a ``width x height`` pixel area, keeping the aspect ratio
   (one scale for both axes, the extent centred): :meth:`Frame.pixels` turns ``uv`` into integer columns and
   rows. For ``top`` and ``side`` :attr:`Frame.scale` is pixels per unit of the cloud.

3. :func:`zbuffer` keeps, for every pixel, the point with the largest priority (``np.maximum.at`` on the
   priorities, then one winner among the points that reach the maximum), optionally splatting each point onto
   a disc of ``radius`` pixels. Splatting runs on the per-pixel winners only: every point of a pixel shares
   that pixel's footprint, so the pixel's winner also wins the whole footprint over the others and dropping
   them first is exact. The cost is linear in the points (no sort): 10 M points take a fraction of a second.

:func:`rasterize` chains the three; it returns the index of the point seen at each pixel (-1 for none), so
that colours are computed for the visible points only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VIEWS", "Frame", "project", "fit_frame", "zbuffer", "splat_offsets", "rasterize", "auto_point_size"]

VIEWS = ("top", "side", "persp")

# The perspective camera: azimuth of the camera seen from the cloud centre (degrees counter-clockwise from +x;
# 225 = south-west), elevation above the horizon (degrees), distance in bounding-sphere radii.
PERSP_AZIMUTH = 225.0
PERSP_ELEVATION = 35.0
PERSP_DISTANCE = 2.5


def project(xyz: np.ndarray, view: str = "top", azimuth: float = PERSP_AZIMUTH,
            elevation: float = PERSP_ELEVATION, distance: float = PERSP_DISTANCE
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(uv (N, 2) float32, priority (N,) float32, uv lo (2,), uv hi (2,)) of points in a view (see the module
    docstring); lo and hi bound ``uv``.

    Coordinates are centred on the cloud's minimum corner first (in float64, then float32), so georeferenced
    clouds (x ~ 7e5 m) keep their precision; ``uv`` of ``top`` and ``side`` are offsets in the cloud's units
    from that corner.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, not {view!r}")
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ValueError(f"points must have shape (N, >=3), got {xyz.shape}")
    if len(xyz) == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(2), np.zeros(2)
    # per column: 10x faster than min(axis=0) on (N, 3), and no float64 temporaries of the whole cloud
    lo3 = np.array([xyz[:, i].min() for i in range(3)])
    span = np.array([xyz[:, i].max() for i in range(3)]) - lo3

    def local(*axes: int) -> np.ndarray:
        """float32 (N, len(axes)) offsets from the minimum corner along ``axes``."""
        out = np.empty((len(xyz), len(axes)), dtype=np.float32)
        for k, i in enumerate(axes):
            np.subtract(xyz[:, i], lo3[i], out=out[:, k], casting="same_kind")
        return out

    if view == "top":
        return local(0, 1), local(2)[:, 0], np.zeros(2), span[:2]
    if view == "side":
        return local(0, 2), np.negative(local(1)[:, 0]), np.zeros(2), span[[0, 2]]
    p = local(0, 1, 2)
    centre = 0.5 * span
    radius = max(float(np.linalg.norm(span)) * 0.5, 1e-6)
    az, el = np.radians(azimuth), np.radians(elevation)
    back = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])  # centre -> camera
    eye = centre + distance * radius * back
    fwd = -back
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    basis = np.stack([right, up, fwd]).astype(np.float32)             # rows: camera axes in the cloud frame
    cam = (p - eye.astype(np.float32)) @ basis.T                      # (N, 3): right, up, depth
    depth = np.maximum(cam[:, 2], np.float32(1e-3 * radius))          # the camera is outside the cloud
    uv = cam[:, :2] / depth[:, None]
    return uv, -depth, uv.min(axis=0).astype(np.float64), uv.max(axis=0).astype(np.float64)


@dataclass(frozen=True)
class Frame:
    """How view coordinates land on pixels: ``col = left + (u - u0) * scale``, ``row = top + (v1 - v) * scale``,
    rounded to the nearest pixel (``u0`` the smallest ``u``, ``v1`` the largest ``v``)."""

    width: int
    height: int
    scale: float          # pixels per unit of u and v
    u0: float
    v1: float
    left: float           # pixel column of u0
    top: float            # pixel row of v1

    def pixels(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cols, rows) int64 of ``uv``; may fall outside the image for points outside the fitted extent.
        float32 ``uv`` are computed in float32 (exact enough for pixels, and half the memory traffic)."""
        uv = np.asarray(uv).reshape(-1, 2)
        ft = np.float32 if uv.dtype == np.float32 else np.float64
        s = ft(self.scale)
        cols = np.floor(uv[:, 0] * s + ft(self.left - self.u0 * self.scale + 0.5)).astype(np.int64)
        rows = np.floor(uv[:, 1] * -s + ft(self.top + self.v1 * self.scale + 0.5)).astype(np.int64)
        return cols, rows

    def points(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) float pixel positions (x = column, y = row) of ``uv``, for drawing lines and polygons."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        return np.stack([self.left + (uv[:, 0] - self.u0) * self.scale,
                         self.top + (self.v1 - uv[:, 1]) * self.scale], axis=1)


def fit_frame(lo, hi, width: int, height: int, margin: int = 0) -> Frame:
    """The frame that fits the box ``lo..hi`` (u, v) into ``width x height`` pixels, ``margin`` pixels kept free
    on each side: ``lo`` and ``hi`` land on pixel centres, the aspect ratio is kept and the box is centred."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    span = np.maximum(hi - lo, 0.0)
    room = np.array([max(width - 2 * margin - 1, 0), max(height - 2 * margin - 1, 0)], dtype=np.float64)
    ratios = [room[i] / span[i] for i in range(2) if span[i] > 0]
    scale = min(ratios) if ratios else 1.0
    left = margin + 0.5 * (room[0] - span[0] * scale)
    top = margin + 0.5 * (room[1] - span[1] * scale)
    return Frame(int(width), int(height), float(scale), float(lo[0]), float(hi[1]), float(left), float(top))


def splat_offsets(radius: int) -> np.ndarray:
    """(K, 2) int64 (dcol, drow) of the pixels of a disc of ``radius`` pixels, centre first."""
    r = int(radius)
    if r <= 0:
        return np.zeros((1, 2), dtype=np.int64)
    d = np.arange(-r, r + 1)
    dc, dr = np.meshgrid(d, d)
    keep = dc**2 + dr**2 <= r * r + r  # a round disc (r=1: the 3x3 square)
    off = np.stack([dc[keep], dr[keep]], axis=1).astype(np.int64)
    return off[np.argsort(np.abs(off).sum(axis=1), kind="stable")]


def _winners(pix: np.ndarray, priority: np.ndarray, index: np.ndarray | None,
             size: int) -> tuple[np.ndarray, np.ndarray]:
    """(best priority per pixel, index of one point reaching it, -1 for empty) over flat pixel ids ``pix``;
    ``index`` names the points (None: their positions)."""
    best = np.full(size, -np.inf, dtype=np.float32)
    np.maximum.at(best, pix, priority)
    win = np.flatnonzero(priority >= best[pix])
    owner = np.full(size, -1, dtype=np.int64)
    owner[pix[win]] = win if index is None else index[win]  # ties: any one of the points at the top
    return best, owner


def zbuffer(cols: np.ndarray, rows: np.ndarray, priority: np.ndarray, width: int, height: int,
            radius: int = 0) -> np.ndarray:
    """(height, width) int64: the index of the point with the largest ``priority`` at each pixel, -1 where no
    point lands. Points outside the image are skipped (they do not splat into it); ``radius`` > 0 splats each point onto a disc of that
    many pixels (see the module docstring)."""
    cols, rows = np.asarray(cols, dtype=np.int64), np.asarray(rows, dtype=np.int64)
    priority = np.asarray(priority, dtype=np.float32)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height) & np.isfinite(priority)
    if inside.all():
        index = None
        pix = rows * width + cols
    else:
        index = np.flatnonzero(inside)
        pix = rows[index] * width + cols[index]
        priority = priority[index]
    best, owner = _winners(pix, priority, index, width * height)
    if radius <= 0:
        return owner.reshape(height, width)
    # Splat the per-pixel winners only (exact, see the module docstring).
    filled = np.flatnonzero(owner >= 0)
    pts, pr = owner[filled], best[filled]
    r0, c0 = np.divmod(filled, width)
    offsets = splat_offsets(radius)
    all_pix, all_pr, all_idx = [], [], []
    for dc, dr in offsets:  # a few dozen offsets at most; every step is vectorised over the points
        c, r = c0 + dc, r0 + dr
        ok = (c >= 0) & (c < width) & (r >= 0) & (r < height)
        all_pix.append(r[ok] * width + c[ok])
        all_pr.append(pr[ok])
        all_idx.append(pts[ok])
    _, owner = _winners(np.concatenate(all_pix), np.concatenate(all_pr), np.concatenate(all_idx), width * height)
    return owner.reshape(height, width)


def auto_point_size(n_points: int, frame: Frame, lo, hi) -> int:
    """A splat radius that closes the gaps between points: three quarters of the mean point spacing in pixels,
    assuming the points spread evenly over the fitted extent (airborne scans are uneven, and points under a
    canopy are hidden from above: half the spacing leaves holes); 0 for dense clouds, at most 4."""
    if n_points <= 0:
        return 0
    span = np.maximum(np.asarray(hi, np.float64) - np.asarray(lo, np.float64), 0.0) * frame.scale
    area = max(float(span[0]) * float(span[1]), float(max(span.max(), 1.0)))  # a line of points: its length
    spacing = np.sqrt(area / n_points)
    return int(np.clip(np.round(0.75 * spacing), 0, 4))


def rasterize(xyz: np.ndarray, view: str, width: int, height: int, radius: int | None = 0, margin: int = 0,
              **camera) -> tuple[np.ndarray, Frame, np.ndarray, np.ndarray]:
    """(index image (H, W) int64 with -1 where empty, frame, uv lo, uv hi) of points seen in a view.

    ``radius``: splat radius in pixels (None: :func:`auto_point_size`). ``camera``: azimuth, elevation and
    distance of the ``persp`` view (see :func:`project`).
    """
    uv, priority, lo, hi = project(xyz, view, **camera)
    frame = fit_frame(lo, hi, width, height, margin)
    if radius is None:
        radius = auto_point_size(len(uv), frame, lo, hi)
    cols, rows = frame.pixels(uv)
    return zbuffer(cols, rows, priority, width, height, radius), frame, lo, hi

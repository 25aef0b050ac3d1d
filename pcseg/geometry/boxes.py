"""Oriented 3D boxes on numpy arrays: corners, point-in-box, exact rotated IoU (BEV and 3D), rotated NMS.

A box is ``[x, y, z, dx, dy, dz, yaw]`` in the lidar frame (x forward, y left, z up): ``(x, y, z)`` is the box
centre (not the bottom centre), ``dx`` the length along the heading, ``dy`` the width, ``dz`` the height and
``yaw`` the heading angle about +z measured from +x (the OpenPCDet convention). Arrays are (B, 7).

The rotated IoU is exact: the intersection of two rectangles is a convex polygon whose vertices are the corners
of each rectangle that lie inside the other plus the crossings of their edges; ordering those vertices by angle
around their mean and applying the shoelace formula gives its area. This is done for all box pairs at once
(the pairs whose bounding circles do not touch are skipped: their IoU is 0).
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "wrap_angle", "boxes_corners_bev", "boxes_corners_3d", "points_in_boxes",
    "iou_bev", "iou_3d", "nms_bev", "intersection_area_bev",
]

# Pairs processed per vectorised chunk in the IoU (each pair holds 24 candidate vertices).
_PAIR_CHUNK = 16384
# Tolerance (in m^2 for cross products, unitless for segment parameters) for points on an edge.
_EPS = 1e-9


def _as_boxes(boxes, name: str = "boxes") -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 1 and b.size == 0:
        b = b.reshape(0, 7)
    if b.ndim != 2 or b.shape[1] != 7:
        raise ValueError(f"{name} must have shape (B, 7) [x, y, z, dx, dy, dz, yaw], got {b.shape}")
    return b


def wrap_angle(angle):
    """Angles wrapped to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def boxes_corners_bev(boxes) -> np.ndarray:
    """(B, 4, 2) corners in the x-y plane, counter-clockwise: front-left, rear-left, rear-right, front-right."""
    b = _as_boxes(boxes)
    local = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])  # in units of (dx, dy)
    xy = local[None] * b[:, None, 3:5]                                       # (B, 4, 2) before rotation
    c, s = np.cos(b[:, 6])[:, None], np.sin(b[:, 6])[:, None]
    x = c * xy[..., 0] - s * xy[..., 1] + b[:, None, 0]
    y = s * xy[..., 0] + c * xy[..., 1] + b[:, None, 1]
    return np.stack([x, y], axis=-1)


def boxes_corners_3d(boxes) -> np.ndarray:
    """(B, 8, 3) corners: the 4 bottom corners (z - dz/2) then the 4 top ones, each in `boxes_corners_bev` order."""
    b = _as_boxes(boxes)
    bev = boxes_corners_bev(b)
    bottom = (b[:, 2] - 0.5 * b[:, 5])[:, None, None].repeat(4, axis=1)
    top = (b[:, 2] + 0.5 * b[:, 5])[:, None, None].repeat(4, axis=1)
    return np.concatenate([np.concatenate([bev, bottom], -1), np.concatenate([bev, top], -1)], axis=1)


def points_in_boxes(points, boxes) -> np.ndarray:
    """(N,) int64: index of the box containing each point (faces included), -1 for none.

    Where boxes overlap, the lowest box index wins. Points are sorted by x once; each box then tests only the
    points inside its axis-aligned x-extent (a loop over boxes, vectorised over points).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must have shape (N, >=3), got {pts.shape}")
    b = _as_boxes(boxes)
    out = np.full(len(pts), -1, dtype=np.int64)
    if len(pts) == 0 or len(b) == 0:
        return out
    order = np.argsort(pts[:, 0], kind="stable")
    xs = pts[order, 0]
    c, s = np.abs(np.cos(b[:, 6])), np.abs(np.sin(b[:, 6]))
    half_x = 0.5 * (c * b[:, 3] + s * b[:, 4])  # half x-extent of the rotated rectangle
    lo = np.searchsorted(xs, b[:, 0] - half_x - _EPS, side="left")
    hi = np.searchsorted(xs, b[:, 0] + half_x + _EPS, side="right")
    for k in range(len(b) - 1, -1, -1):  # reverse, so the lowest index is written last and wins
        if hi[k] <= lo[k]:
            continue
        idx = order[lo[k]:hi[k]]
        d = pts[idx, :3] - b[k, :3]
        ck, sk = np.cos(b[k, 6]), np.sin(b[k, 6])
        lx = ck * d[:, 0] + sk * d[:, 1]   # coordinates in the box frame: R(yaw)^T (p - centre)
        ly = -sk * d[:, 0] + ck * d[:, 1]
        inside = ((np.abs(lx) <= 0.5 * b[k, 3] + _EPS) & (np.abs(ly) <= 0.5 * b[k, 4] + _EPS)
                  & (np.abs(d[:, 2]) <= 0.5 * b[k, 5] + _EPS))
        out[idx[inside]] = k
    return out


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _inside_convex(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """p (P, M, 2), poly (P, 4, 2) counter-clockwise -> (P, M) bool, boundary included."""
    edges = np.roll(poly, -1, axis=1) - poly                                # (P, 4, 2)
    rel = p[:, :, None, :] - poly[:, None, :, :]                            # (P, M, 4, 2)
    return np.all(_cross(edges[:, None], rel) >= -_EPS, axis=-1)


def _convex_intersection_area(ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Exact area of the intersection of rectangles ca, cb (P, 4, 2), counter-clockwise corners."""
    P = len(ca)
    if P == 0:
        return np.zeros(0)
    # Edge crossings: a_i + t (a_{i+1} - a_i) = b_j + u (b_{j+1} - b_j), 0 <= t, u <= 1.
    da = np.roll(ca, -1, axis=1) - ca                                       # (P, 4, 2)
    db = np.roll(cb, -1, axis=1) - cb
    denom = _cross(da[:, :, None], db[:, None, :])                          # (P, 4, 4)
    ab = cb[:, None, :, :] - ca[:, :, None, :]                              # b_j - a_i
    parallel = np.abs(denom) < 1e-12
    safe = np.where(parallel, 1.0, denom)
    t = _cross(ab, db[:, None, :]) / safe
    u = _cross(ab, da[:, :, None]) / safe
    ok_cross = ~parallel & (t >= -_EPS) & (t <= 1 + _EPS) & (u >= -_EPS) & (u <= 1 + _EPS)
    crossings = ca[:, :, None, :] + t[..., None] * da[:, :, None, :]       # (P, 4, 4, 2)
    # Parallel edges never add a vertex of their own: where they overlap, their end points are corners
    # that lie inside the other rectangle and are found below.
    pts = np.concatenate([ca, cb, crossings.reshape(P, 16, 2)], axis=1)    # (P, 24, 2)
    valid = np.concatenate([_inside_convex(ca, cb), _inside_convex(cb, ca), ok_cross.reshape(P, 16)], axis=1)
    count = valid.sum(axis=1)
    center = (pts * valid[..., None]).sum(axis=1) / np.maximum(count, 1)[:, None]
    rel = pts - center[:, None, :]
    angle = np.where(valid, np.arctan2(rel[..., 1], rel[..., 0]), np.inf)
    order = np.argsort(angle, axis=1, kind="stable")
    rel = np.take_along_axis(rel, order[..., None], axis=1)
    # Invalid slots (sorted to the end) repeat the last valid vertex: they add zero-area terms below.
    last = np.maximum(count - 1, 0)
    slot = np.minimum(np.arange(24)[None, :], last[:, None])
    rel = np.take_along_axis(rel, slot[..., None], axis=1)
    area = 0.5 * _cross(rel, np.roll(rel, -1, axis=1)).sum(axis=1)         # shoelace
    return np.where(count >= 3, np.abs(area), 0.0)


def _candidate_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) whose bounding circles in the x-y plane overlap (all others have IoU 0)."""
    ra = 0.5 * np.hypot(a[:, 3], a[:, 4])
    rb = 0.5 * np.hypot(b[:, 3], b[:, 4])
    d2 = ((a[:, None, :2] - b[None, :, :2]) ** 2).sum(-1)
    return np.nonzero(d2 < (ra[:, None] + rb[None, :]) ** 2)


def intersection_area_bev(a, b) -> np.ndarray:
    """(A, B) exact area of the intersection of the boxes' footprints in the x-y plane."""
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    inter = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return inter
    ia, ib = _candidate_pairs(a, b)
    ca, cb = boxes_corners_bev(a), boxes_corners_bev(b)
    for start in range(0, len(ia), _PAIR_CHUNK):
        i, j = ia[start:start + _PAIR_CHUNK], ib[start:start + _PAIR_CHUNK]
        inter[i, j] = _convex_intersection_area(ca[i], cb[j])
    return inter


def _ratio(inter: np.ndarray, size_a: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    # edge tolerances can add ~1e-9 of area for nearly coincident boxes: the overlap never exceeds either box
    inter = np.minimum(inter, np.minimum(size_a[:, None], size_b[None, :]))
    union = size_a[:, None] + size_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def iou_bev(a, b) -> np.ndarray:
    """(A, B) exact intersection-over-union of the rotated footprints in the x-y plane."""
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    return _ratio(intersection_area_bev(a, b), a[:, 3] * a[:, 4], b[:, 3] * b[:, 4])


def iou_3d(a, b) -> np.ndarray:
    """(A, B) exact 3D IoU: footprint intersection times the overlap of the z-intervals, over the union volume."""
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    inter = intersection_area_bev(a, b)
    top = np.minimum((a[:, 2] + 0.5 * a[:, 5])[:, None], (b[:, 2] + 0.5 * b[:, 5])[None, :])
    bottom = np.maximum((a[:, 2] - 0.5 * a[:, 5])[:, None], (b[:, 2] - 0.5 * b[:, 5])[None, :])
    inter = inter * np.clip(top - bottom, 0.0, None)
    return _ratio(inter, a[:, 3] * a[:, 4] * a[:, 5], b[:, 3] * b[:, 4] * b[:, 5])


def nms_bev(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression with the exact rotated BEV IoU.

    Boxes are visited by descending score (ties: lower index first); a box is dropped when its IoU with an
    already kept box is strictly greater than ``iou_threshold``. Returns the kept indices (int64) in that order.
    Cost grows with the square of the number of boxes: keep the top few hundred before calling it.
    """
    b = _as_boxes(boxes)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    if len(order) == 0:
        return order.astype(np.int64)
    over = iou_bev(b[order], b[order]) > iou_threshold
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for k in range(len(order)):  # loop over boxes
        if suppressed[k]:
            continue
        keep.append(k)
        suppressed |= over[k]
    return order[np.asarray(keep, dtype=np.int64)]


KITTI_CAR_SIZE = (3.88, 1.63, 1.53)
"""Mean length, width and height (m) of the cars labelled in KITTI's training set (OpenPCDet's anchor size)."""


END_FACE = 1.35
"""A scanned object no longer than this many full widths shows one end only (its length is hidden)."""


def fit_object_box(xyz, full_size=KITTI_CAR_SIZE, sensor=(0.0, 0.0), angle_step: float = 1.0) -> np.ndarray:
    """(7,) box around the points of one object seen by a lidar at ``sensor`` (x, y), sized like a full object.

    A scan sees an object's near sides only, so the points' own rectangle is too small and off-centre. Here:
    1. heading: the rectangle of least area around the points' x-y (angles 0-90 degrees every ``angle_step``,
       all at once); its longer side is the length, unless the points span no more than ``END_FACE`` widths:
       then only an end is seen (a car from behind), and the length is the rectangle axis closer to the ray
       from the sensor. The heading's sign is not observable from points: yaw is returned in (-pi/2, pi/2].
    2. size: each horizontal side grows to at least ``full_size`` (length, width), and the growth goes to the far
       side of the box, away from the sensor: the visible faces stay where the points are.
    3. height: from the lowest point up, at least ``full_size[2]``.
    """
    p = np.asarray(xyz, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 3 or len(p) < 3:
        raise ValueError(f"need (N >= 3, 3) points, got {p.shape}")
    xy = p[:, :2] - p[:, :2].mean(axis=0)
    theta = np.radians(np.arange(0.0, 90.0, angle_step))
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    u, v = c * xy[None, :, 0] + s * xy[None, :, 1], -s * xy[None, :, 0] + c * xy[None, :, 1]   # (A, N)
    area = (u.max(1) - u.min(1)) * (v.max(1) - v.min(1))
    a = int(np.argmin(area))
    lo, hi = np.array([u[a].min(), v[a].min()]), np.array([u[a].max(), v[a].max()])
    yaw = float(theta[a])
    centre_xy = p[:, :2].mean(axis=0)
    seen = hi - lo
    if seen.max() <= END_FACE * float(full_size[1]):
        # Only an end (rear or front) is seen, no longer than a width: the length runs away from the sensor, along
        # the rectangle axis closest to the ray sensor -> object.
        ray = centre_xy - np.asarray(sensor, dtype=np.float64)
        along_v = abs(-np.sin(yaw) * ray[0] + np.cos(yaw) * ray[1]) > abs(np.cos(yaw) * ray[0] + np.sin(yaw) * ray[1])
    else:
        along_v = seen[1] > seen[0]  # the longer side is the length
    if along_v:  # turn the frame by 90 degrees: v becomes the length axis
        yaw += np.pi / 2
        lo, hi = np.array([lo[1], -hi[0]]), np.array([hi[1], -lo[0]])
    c1, s1 = np.cos(yaw), np.sin(yaw)
    axes = np.array([[c1, s1], [-s1, c1]])                       # rows: length axis, width axis
    to_sensor = axes @ (np.asarray(sensor, dtype=np.float64) - centre_xy)
    for k in range(2):  # grow the far side of each axis to the full size
        grow = max(float(full_size[k]) - (hi[k] - lo[k]), 0.0)
        if to_sensor[k] > 0:  # the sensor is on the + side: the hidden side is the - one
            lo[k] -= grow
        else:
            hi[k] += grow
    mid = 0.5 * (lo + hi)
    centre = centre_xy + mid[0] * axes[0] + mid[1] * axes[1]
    z0 = float(p[:, 2].min())
    dz = max(float(p[:, 2].max()) - z0, float(full_size[2]))
    yaw = float(wrap_angle(yaw))
    if yaw <= -np.pi / 2:
        yaw += np.pi
    elif yaw > np.pi / 2:
        yaw -= np.pi
    return np.array([centre[0], centre[1], z0 + dz / 2, hi[0] - lo[0], hi[1] - lo[1], dz, yaw])

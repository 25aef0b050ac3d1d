"""Lidar -> camera image projection (KITTI calibration), for fusing image features with lidar voxels.

KITTI's object calibration maps a lidar point ``x`` (x forward, y left, z up) into the rectified camera frame
and then into image 2 by

    x_rect = R0_rect (Tr_velo_to_cam [x; 1]),      [u w; v w; w] = P2 [x_rect; 1]

which is one 3 x 4 matrix ``M = P2 [R0_rect 0; 0 1] [Tr_velo_to_cam; 0 0 0 1]`` acting on ``[x; 1]``
(:func:`lidar_to_image_matrix`). ``w`` is the depth in front of camera 2 (P2's last row is
``[0 0 1 t]``, so ``w = z_rect + t``); ``u, v`` are pixel coordinates with pixel ``(i, j)`` at ``u = i, v = j``.

A point is *in the image* (:func:`in_image`) when it is in front of the camera and projects inside the picture:
``w > 0, 0 <= u < width, 0 <= v < height``, the same test as ``pcseg.io.kitti.Calibration.fov_mask``, so the
points that get image features are exactly those KITTI labels.

The calibration comes in as plain arrays (geometry does not read files). :func:`project_to_image` and
:func:`in_image` use only ``@``, ``+``, ``*``, ``/`` and comparisons, so they take numpy arrays and torch tensors
alike: the detector projects its voxel centres on its own device with them.
"""
from __future__ import annotations

import numpy as np

__all__ = ["lidar_to_image_matrix", "project_to_image", "in_image"]


def lidar_to_image_matrix(P2, R0_rect, Tr_velo_to_cam, undo=None) -> np.ndarray:
    """(3, 4) float64 ``M`` with ``[u w, v w, w] = M [x; 1]`` for lidar points ``x``.

    ``undo`` (optional (3, 3)): a linear map applied to the points *before* the calibration, e.g. the inverse of
    a flip / rotation / scaling augmentation (Focals Conv §3.3 "Feature alignment": augmented coordinates are
    taken back to the frame's own before projecting); ``M`` then projects augmented points.
    """
    P2 = np.asarray(P2, dtype=np.float64).reshape(3, 4)
    R0 = np.eye(4)
    R0[:3, :3] = np.asarray(R0_rect, dtype=np.float64).reshape(3, 3)
    Tr = np.eye(4)
    Tr[:3, :] = np.asarray(Tr_velo_to_cam, dtype=np.float64).reshape(3, 4)
    m = P2 @ R0 @ Tr
    if undo is not None:
        u = np.eye(4)
        u[:3, :3] = np.asarray(undo, dtype=np.float64).reshape(3, 3)
        m = m @ u
    return m


def project_to_image(xyz, matrix):
    """(N, 3) lidar points -> ((N, 2) pixel coordinates u, v, (N,) depth w) through a (3, 4) matrix of
    :func:`lidar_to_image_matrix`, or through one matrix per point ((N, 3, 4), e.g. each point's frame's).
    Points at depth <= 0 (behind the camera) get ``u, v = (u w, v w)`` (no division by a non-positive depth):
    they are meaningless there and :func:`in_image` leaves them out."""
    if matrix.ndim == 3:
        p = (matrix[:, :, :3] @ xyz[:, :3, None])[..., 0] + matrix[:, :, 3]
    else:
        p = xyz[:, :3] @ matrix[:, :3].T + matrix[:, 3]
    depth = p[:, 2]
    behind = depth <= 0
    safe = depth * ~behind + behind * 1.0                      # 1 where behind: finite, no warning, masked later
    return p[:, :2] / safe[:, None], depth


def in_image(uv, depth, width, height):
    """(N,) bool: in front of the camera and inside a ``width`` x ``height`` image (scalars, or per point)."""
    return (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
